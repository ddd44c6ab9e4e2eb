"""Population throughput: es (sequential), es batched and eggroll (run on demand, not in CI).

    OMP_NUM_THREADS=1 python benchmarks/population_throughput.py            # the figures in docs
    OMP_NUM_THREADS=1 python benchmarks/population_throughput.py --quick    # seconds, a smoke run

Throughput: members per second = N / (time of one iteration: scoring all N
members and the update), the median of --reps iterations per method, and each
method's ratio to es as the median (min-max) of per-repeat ratios. The methods
share one built problem and are interleaved in rotated order (benchmarks/
interleave.py) in one process on one torch thread, so machine load hits all alike;
the weights are restored after each timed iteration (outside the timing).
es batched is `es --set members_per_forward=N`, eggroll runs with its defaults
(rank 1, members_per_forward auto: in place on a CPU, so the same as eggroll-inplace
there; stacked on CUDA), as eggroll-inplace (`--set members_per_forward=1`: W + sigma
A B^T formed in place, one member at a time) and as eggroll-stacked (all N members in
one forward, `--set members_per_forward=N`: the default before auto).

Held-out loss: es and eggroll with the hyperparameters a run gets by default
(sigma 1e-2, zscore shaping, population N; alpha 5e-2 for es, 8e-2 for eggroll,
qwen3's recommendation from a screen on seed 7) on qwen3-tiny for --evals member
evaluations (evals / N iterations), seeds 0..--seeds-1, through the runner as a
run does; the figure is the held-out loss (the problem's heldout_loss) at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's packages

import torch  # noqa: E402
from interleave import interleaved, ratios, summary  # noqa: E402

METHODS = {"es": ("es", {}), "es-batched": ("es", {"members_per_forward": None}), "eggroll": ("eggroll", {}),
           "eggroll-inplace": ("eggroll", {"members_per_forward": 1}),
           "eggroll-stacked": ("eggroll", {"members_per_forward": None})}


def throughput(problem: str, n: int, reps: int, overrides: dict, chunks=(), only=None) -> dict[str, list[float]]:
    """Members per second of each method on `problem`, one figure per repeat (interleaved in
    rotated order); `chunks`: extra eggroll rows with members_per_forward=K."""
    from harness import registry

    prob = registry.problem(problem).create({k: str(v) for k, v in overrides.items()})
    prob.build(torch.device("cpu"))
    opts = {}
    methods = dict(METHODS, **{f"eggroll-k{k}": ("eggroll", {"members_per_forward": k}) for k in chunks})
    if only:
        methods = {label: m for label, m in methods.items() if label in only or label == "es"}
    for label, (name, hp) in methods.items():
        hp = {k: (n if v is None else v) for k, v in hp.items()}
        opts[label] = registry.optimizer(name).build(prob, 0, population=n, **hp)
        opts[label].setup()
    saved = {k: v.clone() for k, v in prob.model.state_dict().items()}
    batch = prob.batch(0)

    def iteration(opt):
        return lambda rep: opt.update(rep, opt.gather_fitness(rep, batch))

    # rotated order (es, es-batched, ..., then es-batched, ..., es): load drift hits all alike;
    # the weights are restored after each timed iteration, outside the timing
    times = interleaved({label: iteration(opt) for label, opt in opts.items()}, reps,
                        after=lambda _label: prob.model.load_state_dict(saved))
    return {label: [n / t for t in ts] for label, ts in times.items()}


def heldout(problem: str, optimizer: str, n: int, evals: int, seed: int) -> float:
    from harness import runner, store

    steps = evals // n
    with tempfile.TemporaryDirectory() as tmp:
        spec = runner.RunSpec(optimizer, problem, seed=seed, budget=runner.Budget(steps=steps),
                              overrides={"optimizer.population": str(n)}, eval_every=steps,
                              checkpoint_every=0, runs_dir=tmp)
        run_dir, summary = runner.run(spec, progress=False)
        assert summary["status"] == "ok", summary
        last = store.read_metrics(run_dir / "metrics.jsonl")[-1]
        assert last["evals"] == steps * n
        return float(last["heldout_loss"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--population", type=int, default=30)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--problems", default="qwen3-tiny,qwen3-small")
    ap.add_argument("--evals", type=int, default=1500, help="member evaluations per held-out run")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--eggroll-k", default="", help="extra eggroll rows with members_per_forward=K, e.g. 1,5")
    ap.add_argument("--methods", help="only these rows (and es), e.g. eggroll,eggroll-inplace")
    ap.add_argument("--no-heldout", action="store_true", help="throughput only")
    ap.add_argument("--quick", action="store_true", help="tiny settings: a smoke run in seconds")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from harness import registry

    registry.load_all()
    problems = args.problems.split(",")
    overrides: dict = {}
    if args.quick:
        args.reps, args.evals, args.seeds, problems = 1, 4 * args.population, 1, ["qwen3-tiny"]
        overrides = {"samples": 2}
    n = args.population
    out: dict = {"population": n, "reps": args.reps, "threads": 1, "throughput": {}, "throughput_over_es": {},
                 "heldout": {}}
    print(f"members per second, population {n}, one torch thread, median of {args.reps} "
          f"iterations (scoring + update) interleaved in rotated order; ratios: median (min-max)")
    for problem in problems:
        chunks = [int(k) for k in args.eggroll_k.split(",") if k]
        mps = throughput(problem, n, args.reps, overrides, chunks, args.methods and args.methods.split(","))
        # per-repeat ratios to es (adjacent timings), median and spread
        rel = {k: ratios(v, mps["es"]) for k, v in mps.items() if k != "es"}
        out["throughput"][problem] = {k: statistics.median(v) for k, v in mps.items()}
        out["throughput_over_es"][problem] = {k: {"median": statistics.median(v), "min": min(v), "max": max(v)}
                                              for k, v in rel.items()}
        print(f"  {problem}: " + ", ".join(f"{k} {statistics.median(v):.1f}/s" for k, v in mps.items()))
        for k, v in rel.items():
            print(f"    {k}/es members per second ratio: {summary(v, '{:.2f}')}")
    if args.no_heldout:
        return
    print(f"held-out loss on qwen3-tiny after {args.evals} member evaluations "
          f"({args.evals // n} iterations of {n}), default hyperparameters")
    for optimizer in ("es", "eggroll"):
        losses = [heldout("qwen3-tiny", optimizer, n, args.evals, s) for s in range(args.seeds)]
        out["heldout"][optimizer] = losses
        print(f"  {optimizer}: " + ", ".join(f"{x:.3f}" for x in losses)
              + f" (mean {statistics.mean(losses):.3f})")
    diff = statistics.mean(out["heldout"]["eggroll"]) - statistics.mean(out["heldout"]["es"])
    out["heldout_eggroll_minus_es"] = diff
    print(f"  eggroll - es: {diff:+.3f} nats (mean over seeds)")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
