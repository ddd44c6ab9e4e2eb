"""Time of one forward (problem.loss under no_grad) and of one forward+backward at each
size of the qwen3 scaling ladder, with the scaling study's data settings (run on demand).

    OMP_NUM_THREADS=1 python benchmarks/ladder_forward.py [--sizes qwen3-tiny,...] [--reps 5]

Each size is built as the study builds it (64 tokens x 8 samples) in this process, on the
CPU, one thread; the figures are the median and the spread (min-max) of --reps
repetitions after one warm-up, in milliseconds. They are what docs/scaling.md uses to
size the study's budgets; on a shared machine they move with its load (say which).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    from harness import registry
    from studies.reproductions.scaling_gap import COMMON, SIZES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=",".join(SIZES))
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    registry.load_all()
    for size in args.sizes.split(","):
        prob = registry.problem(size).create({k: str(v) for k, v in COMMON.items()}, 0)
        prob.build(torch.device("cpu"))
        batch = prob.batch(0)
        fwd, both = [], []
        for i in range(args.reps + 1):
            t = time.perf_counter()
            with torch.no_grad():
                prob.loss(batch)
            t1 = time.perf_counter()
            prob.loss(batch).backward()
            t2 = time.perf_counter()
            prob.model.zero_grad(set_to_none=True)
            if i:   # the first pass is the warm-up
                fwd.append((t1 - t) * 1e3)
                both.append((t2 - t1) * 1e3)
        print(f"{size:12s} {prob.param_count():>12,} params  forward {statistics.median(fwd):7.1f} ms "
              f"[{min(fwd):.1f}-{max(fwd):.1f}]  forward+backward {statistics.median(both):7.1f} ms "
              f"[{min(both):.1f}-{max(both):.1f}]")


if __name__ == "__main__":
    main()
