"""Time of one member's noise draw against one forward: what bounds a bit-identical,
memory-lean ES (three draws per member: perturb, restore, update; docs/overheads.md).

    OMP_NUM_THREADS=1 python benchmarks/noise_draw.py [--problem qwen3-tiny] [--reps 30]

Draws every trainable tensor's float32 noise as es does (optimizers._perturb.tensor_noise)
and times one no-grad forward of the problem's step batch, the two interleaved in rotated
order; prints the medians and what three draws add to a forward.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from es_overhead import build   # this checkout's packages on the path, the problem built as there
from interleave import interleaved, summary


def main() -> None:
    from optimizers._perturb import tensor_noise

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="qwen3-tiny")
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(1)
    prob, es = build(args.problem, "cpu", {"_pop": 30})
    params = es.pert.params
    batch = prob.batch(0)

    def draw(r):
        for i, p in enumerate(params):
            tensor_noise(r, i, p)

    def forward(_r):
        with torch.no_grad():
            prob.loss(batch)

    times = interleaved({"draw": draw, "forward": forward}, args.reps, sync=lambda: None)
    d, f = statistics.median(times["draw"]), statistics.median(times["forward"])
    print(f"{args.problem}: {sum(p.numel() for p in params):,} weights in {len(params)} tensors; "
          f"one member's noise draw {summary([t * 1e3 for t in times['draw']])} ms; "
          f"one forward {f * 1e3:.2f} ms; three draws = {3 * d / f:.0%} of a forward")


if __name__ == "__main__":
    main()
