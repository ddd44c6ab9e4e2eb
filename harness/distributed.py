"""torch.distributed for runs launched with torchrun (gloo on CPU, NCCL on GPU).

Population methods shard their members over ranks and exchange only fitness
scalars: each rank fills its members' entries of a length-N vector with zeros
elsewhere, and one all-reduce (sum) gives every rank the whole vector, so
every rank applies the identical update. Only rank 0 writes the run store.

Collectives run under the process group's timeout (HARNESS_DIST_TIMEOUT
seconds, default 300), so a rank that dies or hangs ends the run instead of
blocking it forever.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

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
    timeout = timedelta(seconds=float(os.environ.get("HARNESS_DIST_TIMEOUT", "300")))
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
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    return rank() == 0


def shard(n: int) -> list[int]:
    """This rank's member indices: a contiguous block, sizes differing by at most one."""
    w, r = world_size(), rank()
    base, extra = divmod(n, w)
    start = r * base + min(r, extra)
    return list(range(start, start + base + (1 if r < extra else 0)))


def exchange_fitness(local: dict[int, float], n: int, device: torch.device) -> list[float]:
    """Every rank's {member index: fitness} merged into one list of n floats on all ranks."""
    global EXCHANGED_BYTES
    vec = torch.zeros(n, dtype=torch.float64)
    for i, f in local.items():
        vec[i] = f
    if active():
        comm_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
        buf = vec.to(comm_device)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        vec = buf.cpu()
        EXCHANGED_BYTES += vec.numel() * vec.element_size()
    return vec.tolist()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's obj on every rank (e.g. the run directory name)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_object(obj: Any) -> list[Any]:
    if not active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
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
