"""cma (the harness's pycma adapter) against raw pycma, time per generation (on demand, not in CI).

    OMP_NUM_THREADS=1 python benchmarks/cma_overhead.py                  # bbob-f1 at 5 and 40 dims
    OMP_NUM_THREADS=1 python benchmarks/cma_overhead.py --function 10 --dims 40 --gens 200

Both sides run the same strategy on the same COCO function in one process, one thread:
  raw     pycma as its documentation writes it: `xs = es.ask(); es.tell(xs, [f(x) for x in
          xs])` and `es.stop()`, f the cocoex function (minus f_opt, the harness's loss);
  harness `cma`'s step (decode, objective, tell, best-so-far, logged extras) and the runner's
          `is_finished()` per generation.
Same seed, settings and start point (the parity test in tests/test_runner.py checks the two
give identical generations). One repeat is --gens generations of each side, the sides
interleaved in rotated order (benchmarks/interleave.py); the ratio printed is the median of
the per-repeat ratios harness / raw with its spread (min-max). The harness side does all the
raw side's work and more, so a median below 1 is flagged as a measurement error.
Goal: <= 1.10 at 5 and 40 dims.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's packages

import torch  # noqa: E402
from interleave import impossible_below_one, interleaved, ratios, summary  # noqa: E402

GOAL = 1.10


def sides(function: int, dim: int, gens: int, seed: int = 0):
    """The two sides' callables (each runs `gens` generations) on fresh strategies per repeat."""
    import cma

    from harness import registry
    from optimizers.cmaes import initial_point, pycma_seed

    name = f"bbob-f{function}-d{dim}"

    def harness_side():
        prob = registry.problem(name).create(seed=seed)
        prob.build(torch.device("cpu"))
        opt = registry.optimizer("cma").build(prob, seed)
        opt.setup()
        return lambda: [(opt.step(k), opt.is_finished()) for k in range(gens)]

    def raw_side():
        prob = registry.problem(name).create(seed=seed)
        prob.build(torch.device("cpu"))
        f, fopt = prob._f, prob._fopt   # the same cocoex function the harness side calls
        lo, hi = prob.space.bounds()
        es = cma.CMAEvolutionStrategy(initial_point(prob.space, seed), 0.3, {
            "seed": pycma_seed(seed), "verbose": -9, "bounds": [list(lo), list(hi)], "CMA_stds": list(hi - lo)})

        def run():
            for _ in range(gens):
                xs = es.ask()
                es.tell(xs, [f(x) - fopt for x in xs])
                es.stop()
        return run

    return {"harness": harness_side, "raw": raw_side}


def measure(function: int, dim: int, gens: int, reps: int):
    """Per-repeat ratios (harness / raw) of the time of `gens` generations, and the times;
    each repeat starts both sides from fresh strategies, built outside the timing."""
    makers = sides(function, dim, gens)
    ready = {label: make() for label, make in makers.items()}

    def rebuild(label):
        ready[label] = makers[label]()

    times = interleaved({label: (lambda r, label=label: ready[label]()) for label in makers}, reps,
                        after=rebuild)
    return ratios(times["harness"], times["raw"]), times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--function", type=int, default=1, help="BBOB function index")
    ap.add_argument("--dims", default="5,40")
    ap.add_argument("--gens", type=int, default=50, help="generations per repeat")
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    flags = []
    print(f"cma (harness) / raw pycma, time per generation on bbob-f{args.function}, one thread, "
          f"{args.gens} generations per repeat, sides interleaved in rotated order")
    for dim in (int(d) for d in args.dims.split(",")):
        ratio, times = measure(args.function, dim, args.gens, args.reps)
        raw_ms = statistics.median(times["raw"]) / args.gens * 1e3
        verdict = "met" if statistics.median(ratio) <= GOAL else "not met"
        print(f"  {dim:>3} dims: raw {raw_ms:.3f} ms/generation; ratio {summary(ratio)}  "
              f"(goal <= {GOAL:.2f}: {verdict})")
        flag = impossible_below_one(f"{dim}-dim ratio", ratio)
        if flag:
            flags.append(flag)
            print("  " + flag)
    if flags:
        sys.exit(1)


if __name__ == "__main__":
    main()
