"""ES iteration time, 1 process x 1 thread vs P processes x 1 thread (torchrun, gloo).

    python benchmarks/dist_speedup.py                      # qwen3-small, population 30, P = 2
    python benchmarks/dist_speedup.py --problem qwen3-tiny --iters 3

Each side runs in fresh processes with OMP_NUM_THREADS=1: the 1-process side
is this script's worker started directly (world size 1), the P-process side
the same worker under `python -m torch.distributed.run --nproc_per_node P`.
The worker builds the problem and ES exactly as a run does, does one warm-up
iteration, then times --iters iterations of `ES.step` (the runner's step:
the shared batch, each rank scoring its shard while replaying the others'
perturb/restore, the all-reduce of N fitness values, the identical update
on every rank), with a barrier before each so that every rank starts
together. Reported: the median wall time per iteration, the speed-up
(1-process / P-process), and the bytes exchanged per iteration, counted by
harness.distributed (the all-reduce payload of N float64; gloo's ring moves
about 2 (P-1)/P of it in and out of each rank). The median process CPU time
per iteration is printed too: on a machine shared with other jobs the wall
ratio is noisy, and max-rank CPU time shows what the split itself achieves.

The machine's own ceiling is measured too: P copies of the 1-process worker
started at once, with no communication at all. P x (alone / slowest copy) is
the best speed-up P single-thread processes can get on this machine (shared
memory bandwidth and caches, or vCPUs that are not whole cores, lower it
below P); the ES speed-up is quoted against it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's packages


def worker(args) -> None:
    import torch

    from harness import distributed, registry

    torch.set_num_threads(1)
    device = distributed.init(torch.device("cpu"))
    prob = registry.problem(args.problem).create()
    prob.check()
    prob.build(device)
    es = registry.optimizer("es").build(prob, 0, population=args.population)
    es.setup()
    es.step(0)  # warm-up: lazy allocations, first-call overheads
    walls, cpus, sent = [], [], []
    for k in range(1, args.iters + 1):
        if distributed.active():
            torch.distributed.barrier()
        before = distributed.EXCHANGED_BYTES
        w0, c0 = time.perf_counter(), time.process_time()
        es.step(k)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        sent.append(distributed.EXCHANGED_BYTES - before)
    # every rank's CPU time: the slowest rank bounds the iteration
    per_rank_cpu = distributed.gather_object(statistics.median(cpus))
    if distributed.is_main():
        Path(args.out).write_text(json.dumps({
            "world_size": distributed.world_size(), "wall_s": statistics.median(walls),
            "cpu_s_max_rank": max(per_rank_cpu), "bytes_per_iter": statistics.median(sent),
            "param_count": prob.param_count()}))
    distributed.shutdown()


def _worker_cmd(args, out: Path) -> list[str]:
    return [__file__, "--worker", "--problem", args.problem, "--population", str(args.population),
            "--iters", str(args.iters), "--out", str(out)]


def launch_independent(args, copies: int) -> list[dict]:
    """`copies` 1-process workers at once, no process group: the machine's ceiling."""
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"result{i}.json" for i in range(copies)]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        procs = [subprocess.Popen([sys.executable, *_worker_cmd(args, out)], env=env, cwd=ROOT)
                 for out in outs]
        if any(p.wait() for p in procs):
            raise SystemExit("an independent worker failed")
        return [json.loads(out.read_text()) for out in outs]


def launch(args, procs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        base = _worker_cmd(args, out)
        if procs == 1:
            cmd = [sys.executable, *base]
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
                   "--master_addr", "127.0.0.1", "--master_port", str(port), *base]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        subprocess.run(cmd, check=True, env=env, cwd=ROOT)
        return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="qwen3-small")
    ap.add_argument("--population", type=int, default=30)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--iters", type=int, default=2, help="timed iterations (after one warm-up)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    one = launch(args, 1)
    many = launch(args, args.procs)
    alone_vs_crowd = one["wall_s"] / max(r["wall_s"] for r in launch_independent(args, args.procs))
    n, p = args.population, args.procs
    print(f"ES on {args.problem} ({one['param_count']:,} parameters), population {n}, "
          f"median of {args.iters} iterations, OMP_NUM_THREADS=1")
    print(f"1 process:   {one['wall_s'] * 1e3:9.1f} ms/iteration (CPU {one['cpu_s_max_rank'] * 1e3:.1f} ms)")
    print(f"{p} processes: {many['wall_s'] * 1e3:9.1f} ms/iteration (CPU of the slowest rank "
          f"{many['cpu_s_max_rank'] * 1e3:.1f} ms)")
    speedup, ceiling = one["wall_s"] / many["wall_s"], p * alone_vs_crowd
    print(f"speed-up (wall) = {speedup:.2f}x  (target >= 1.8x); "
          f"CPU-time ratio = {one['cpu_s_max_rank'] / many['cpu_s_max_rank']:.2f}x")
    print(f"this machine's ceiling: {p} independent 1-thread copies run at {alone_vs_crowd:.2f}x the "
          f"speed of one alone, so at most {ceiling:.2f}x; ES reaches {speedup / ceiling:.0%} of it")
    print(f"bytes exchanged per iteration: {many['bytes_per_iter']:.0f} "
          f"(all-reduce payload of {n} float64 fitness values; nothing else per iteration)")


if __name__ == "__main__":
    main()
