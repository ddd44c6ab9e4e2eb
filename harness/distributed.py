"""torch.distributed for runs launched with torchrun (gloo on CPU, NCCL on GPU).

Population methods shard their members over ranks and exchange only fitness
scalars (`evaluate_population`: each rank scores its `shard(n)`, fills its
members' entries of a length-n vector with zeros elsewhere, and one all-reduce
(sum) gives every rank the whole vector, exactly), so every rank applies the
identical update. Gradient methods use DistributedDataParallel on
`shard_batch` slices. Only rank 0 writes the run store. See docs/distributed.md.

Collectives run under the process group's timeout (HARNESS_DIST_TIMEOUT
seconds, default 300), so a rank that dies or hangs ends the run instead of
blocking it forever; a failed collective is re-raised as CollectiveError, one
line naming the collective, this rank and the timeout.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Callable

import torch
import torch.distributed as dist

# bytes moved by exchange_fitness in this process (for the benchmark's report)
EXCHANGED_BYTES = 0


def launched() -> bool:
    """True when started by torchrun (or any launcher setting WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> torch.device:
    """Join the process group if launched with torchrun; returns this rank's device."""
    if not launched() or dist.is_initialized():
        return device
    timeout = timedelta(seconds=timeout_s())
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        dist.init_process_group("nccl", timeout=timeout, device_id=device)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    return device


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    # before the process group is joined (resume takes the run's lock first), torchrun's
    # RANK says which process this is: only rank 0 may take the lock
    if active():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched() else 0


def is_main() -> bool:
    return rank() == 0


def shard(n: int) -> list[int]:
    """This rank's member indices: a contiguous block, sizes differing by at most one."""
    w, r = world_size(), rank()
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return list(range(start, start + base + (1 if r < extra else 0)))


class CollectiveError(RuntimeError):
    """A collective did not complete: a peer rank died, failed or hung past the timeout."""


def _collective(name: str, fn, *args, **kwargs):
    """Run one collective; a failure names the collective and the likely cause in one line."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # gloo: "Connection closed by peer", timeouts; nccl: watchdog
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise CollectiveError(
            f"{name} failed on rank {rank()} of {world_size()} (a peer rank died, failed or "
            f"did not answer within HARNESS_DIST_TIMEOUT={timeout_s():g}s): {first}") from exc


def timeout_s() -> float:
    return float(os.environ.get("HARNESS_DIST_TIMEOUT", "300"))


def all_reduce_sum(values, device: torch.device) -> list[float]:
    """Element-wise sum over ranks of a list of floats (float64), returned on every rank."""
    global EXCHANGED_BYTES
    vec = torch.as_tensor(list(values), dtype=torch.float64)
    if not active():
        return vec.tolist()
    comm_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
    buf = vec.to(comm_device)
    _collective("all_reduce", dist.all_reduce, buf, op=dist.ReduceOp.SUM)
    EXCHANGED_BYTES += buf.numel() * buf.element_size()
    return buf.cpu().tolist()


def exchange_fitness(local: dict[int, float], n: int, device: torch.device) -> list[float]:
    """Every rank's {member index: fitness} merged into one list of n floats on all ranks.

    Each member is filled by exactly one rank and the others add 0.0, so the sum is
    exact: every rank gets bit for bit the values their owner computed (NaN included).
    """
    vec = [0.0] * n
    for i, f in local.items():
        vec[i] = f
    return all_reduce_sum(vec, device)


def evaluate_population(n: int, evaluate: Callable[[list[int]], list[float]],
                        device: torch.device) -> list[float]:
    """Score a population of n members sharded over the ranks: this rank calls
    evaluate(its shard(n) indices) -> one float per index, and one all-reduce of n
    float64 gives every rank all n scores in member order. The single place where
    population methods (es, mezo, genome) split their work, so they all shard alike.
    A rank whose shard is empty (n < world size) still calls evaluate([]): a method
    that must replay every member to stay bit-identical does so there."""
    mine = shard(n)
    scores = list(evaluate(mine))
    if len(scores) != len(mine):
        raise RuntimeError(f"evaluate returned {len(scores)} scores for {len(mine)} members")
    return exchange_fitness(dict(zip(mine, scores)), n, device)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's obj on every rank (e.g. the run directory name)."""
    if not active():
        return obj
    box = [obj]
    _collective("broadcast_object", dist.broadcast_object_list, box, src=0)
    return box[0]


def gather_object(obj: Any) -> list[Any]:
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    _collective("all_gather_object", dist.all_gather_object, out, obj)
    return out


def shard_batch(batch: Any) -> Any:
    """This rank's equal slice (dim 0) of every tensor in a batch (tuple/list/dict)."""
    if not active():
        return batch
    if isinstance(batch, torch.Tensor):
        idx = shard(batch.shape[0])
        return batch[idx[0]: idx[-1] + 1] if idx else batch[:0]
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard_batch(b) for b in batch)
    if isinstance(batch, dict):
        return {k: shard_batch(v) for k, v in batch.items()}
    return batch


def shutdown() -> None:
    if active():
        dist.destroy_process_group()


# -- failure attribution --------------------------------------------------------
# What a rank sees when a peer is gone: our collectives' error, torchrun's SIGTERM,
# and the transport's own words for collectives inside torch (DDP's gradient all-reduce).
_PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Timed out waiting",
              "DistBackendError", "NCCL communicator was aborted")


def secondary(reason: str | None) -> bool:
    """A failure caused by another rank's, not by this rank's own error."""
    return (reason is None or reason.startswith(("CollectiveError:", "Terminated:"))
            or any(text in reason for text in _PEER_LOST))


def error_file_name() -> str:
    """Where this rank writes the traceback of its own failure, in the run directory."""
    return "error.txt" if is_main() else f"error-rank{rank()}.txt"


def attribute_failure(reason: str, run_dir, wait_s: float = 3.0) -> str:
    """The cause of a failed multi-rank run: this rank's reason unless it only saw a
    peer go (a broken collective, torchrun's SIGTERM); then the first line another
    rank wrote about its own failure (it may take a moment to land), prefixed with
    that rank."""
    import time
    from pathlib import Path

    if world_size() <= 1 or not secondary(reason):
        return reason
    deadline = time.monotonic() + wait_s
    while True:
        for path in sorted(Path(run_dir).glob("error-rank*.txt")):
            lines = path.read_text().splitlines()
            if lines and not secondary(lines[0]):
                return f"rank {path.stem.replace('error-rank', '')}: {lines[0]}"
        if time.monotonic() > deadline:
            return reason
        time.sleep(0.1)
