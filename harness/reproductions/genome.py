"""GENOME (arXiv 2503.01155) on the offline LoRA world: best-expert, uniform-merge,
genome, genome+ without and with ensemble, on several tasks x seeds.

    python -m harness reproduce genome [--tasks count,max,pattern] [--seeds 0,1,2]
                                       [--iterations 10] [--out reports/genome]

Every run is an ordinary harness run (stored under OUT/runs, one directory each);
the table is built from their summary.json files: mean and std over seeds of the
test exact-match accuracy, and the mean over tasks of each method's gain over
best-expert, next to the paper's claim (GENOME+ +24.06% over the best single
expert on average over 12 tasks). The world is the problems' default (world
seed 0) for every run seed: the seeds vary the optimizers' randomness.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

PAPER_GAIN = 24.06   # %, GENOME+ over the best single expert, paper's average over 12 tasks
METHODS = [          # (label, optimizer, --set overrides)
    ("best-expert", "best-expert", {}),
    ("uniform-merge", "uniform-merge", {}),
    ("genome", "genome", {}),
    ("genome+ (no ensemble)", "genome+", {"ensemble": "false"}),
    ("genome+ (ensemble)", "genome+", {}),
]


def main(argv) -> int:
    from harness import registry, runner, store
    from harness.errors import UsageError
    from problems.lora_tasks import parse_tasks

    p = argparse.ArgumentParser(prog="python -m harness reproduce genome", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="count,max,pattern")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--iterations", type=int, default=None,
                   help="iterations K (= --steps) of every genome method; default: each method's own "
                        "(genome 50, genome+ 20, as in the authors' scripts)")
    p.add_argument("--out", default="reports/genome")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra problem settings for every run (e.g. world_experts=3)")
    args = p.parse_args(argv)
    tasks = parse_tasks(args.tasks)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds {args.seeds!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if args.iterations is not None and args.iterations < 1:
        raise UsageError(f"--iterations {args.iterations}: must be >= 1")
    from harness.params import parse_set_args

    extra = {f"problem.{k}": v for k, v in parse_set_args(args.set).items()}
    out = Path(args.out)
    runs_dir = out / "runs"
    rows = []
    for task in tasks:
        for seed in seeds:
            for label, opt, sets in METHODS:
                overrides = {**extra, **{f"optimizer.{k}": v for k, v in sets.items()}}
                steps = 1
                if opt.startswith("genome"):
                    steps = args.iterations or registry.optimizer(opt).schema()[0]["iterations"].default
                    overrides["optimizer.iterations"] = str(steps)
                run_id = f"{label.replace(' ', '').replace('(', '-').replace(')', '')}_{task}_s{seed}"
                path = runs_dir / run_id
                if (path / "summary.json").exists() and store.read_json(path / "summary.json")["status"] == "ok":
                    summary = store.read_json(path / "summary.json")   # finished before: reuse
                else:
                    if path.exists():
                        import shutil

                        shutil.rmtree(path)
                    spec = runner.RunSpec(opt, f"lora-{task}", seed=seed, budget=runner.Budget(steps=steps),
                                          overrides=overrides, runs_dir=str(runs_dir), run_id=run_id,
                                          checkpoint_every=0, eval_every=steps)
                    _, summary = runner.run(spec, progress=False)
                if summary["status"] != "ok":
                    raise RuntimeError(f"{run_id}: {summary['status']}: {summary['reason']}")
                rows.append({"task": task, "seed": seed, "method": label,
                             "test_accuracy": summary["final_metric"],
                             "val_accuracy": 1.0 - summary["final_loss"],
                             "evals": summary["evals"], "optimizer_time_s": round(summary["optimizer_time_s"], 2),
                             "peak_memory_mb": round(summary["peak_memory_bytes"] / 2**20, 1)})
                print(f"{task:8s} seed {seed} {label:22s} test {rows[-1]['test_accuracy']:.3f} "
                      f"val {rows[-1]['val_accuracy']:.3f}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "genome_runs.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    table = render(rows, tasks, seeds, args)
    (out / "genome_table.md").write_text(table)
    print(table)
    print(f"written: {out / 'genome_table.md'}, {out / 'genome_runs.csv'}, runs under {runs_dir}")
    return 0


def render(rows, tasks, seeds, args) -> str:
    labels = [m[0] for m in METHODS]

    def acc(task, label):
        return [r["test_accuracy"] for r in rows if r["task"] == task and r["method"] == label]

    k = (f"K={args.iterations} iterations" if args.iterations
         else "K = each method's default iterations: genome 50, genome+ 20")
    k_flag = f" --iterations {args.iterations}" if args.iterations else ""
    lines = [f"Test exact-match accuracy, mean ± std over seeds {','.join(map(str, seeds))} "
             f"({k}; command: `python -m harness reproduce genome "
             f"--tasks {','.join(tasks)} --seeds {args.seeds}{k_flag}`)", "",
             "| method | " + " | ".join(tasks) + " | mean | gain over best-expert |",
             "| --- | " + " | ".join("---" for _ in tasks) + " | --- | --- |"]
    best = {t: statistics.mean(acc(t, "best-expert")) for t in tasks}
    for label in labels:
        cells, means = [], []
        for t in tasks:
            a = acc(t, label)
            m = statistics.mean(a)
            sd = statistics.stdev(a) if len(a) > 1 else 0.0
            cells.append(f"{m:.3f} ± {sd:.3f}")
            means.append(m)
        mean = statistics.mean(means)
        base = statistics.mean(best.values())
        rel = 100 * (mean - base) / base if base > 0 else float("nan")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {mean:.3f} | "
                     f"{100 * (mean - base):+.1f} points ({rel:+.1f}%) |")
    lines += ["", f"Paper (gemma-2-2b-it, 12 tasks): GENOME+ {PAPER_GAIN:+.2f}% over the best single expert "
              "on average."]
    return "\n".join(lines) + "\n"
