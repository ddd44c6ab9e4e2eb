"""GENOME (arXiv 2503.01155) on the offline LoRA world: best-expert, uniform-merge,
genome, genome+ without and with ensemble, on several tasks x seeds.

    python -m harness reproduce genome [--tasks count,max,pattern] [--seeds 0,1,2]
        [--world-seeds 0,1,2] [--iterations K] [--out reports/genome]
        [--runs-dir reports/genome/runs] [--jobs J]

Every run is an ordinary harness run executed by the one executor (its own
process, so its own peak memory; resumable; stored under --runs-dir); the
table is built from their summary.json files: mean and std over seeds of the
test exact-match accuracy, and the mean over tasks of each method's gain over
best-expert, next to the paper's claim (GENOME+ +24.06% over the best single
expert on average over 12 tasks). One world (its base and experts) per
--world-seeds entry, every run seed on each: the seeds vary the optimizers'
randomness, the worlds the experts. One rebuild of a single world once moved
GENOME+ from +25.6% to +5.4%, so the gain table gives, per method, the gain over
best-expert (mean over tasks) of every (world, seed) pair, as a mean with a 95%
percentile-bootstrap interval (reports.stats.mean_ci) over those pairs.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from harness.experiments import Experiment, item, register_experiment

PAPER_GAIN = 24.06   # %, GENOME+ over the best single expert, paper's average over 12 tasks
METHODS = [          # (label, optimizer, --set overrides)
    ("best-expert", "best-expert", {}),
    ("uniform-merge", "uniform-merge", {}),
    ("genome", "genome", {}),
    ("genome+ (no ensemble)", "genome+", {"ensemble": "false"}),
    ("genome+ (ensemble)", "genome+", {}),
    ("m2n2", "m2n2", {}),
]


@register_experiment("genome", help="GENOME/GENOME+ vs best-expert and uniform-merge on the offline "
                                    "LoRA world (docs/genome.md)")
class GenomeReproduction(Experiment):
    DEFAULT_RUNS_DIR = "reports/genome/runs"

    def add_arguments(self, p) -> None:
        p.add_argument("--tasks", default="count,max,pattern")
        p.add_argument("--seeds", default="0,1,2")
        p.add_argument("--world-seeds", default="0,1,2",
                       help="offline worlds (world_seed of the lora problems), every seed on each")
        p.add_argument("--iterations", type=int, default=None,
                       help="iterations K (= --steps) of every genome method; default: each method's "
                            "own (genome 50, genome+ 20, as in the authors' scripts)")
        p.add_argument("--out", default="reports/genome")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="extra problem settings for every run (e.g. world_experts=3)")

    def labelled(self, args) -> list[tuple[str, str, object]]:
        """(task, method label, run item) for every run, in table order."""
        from harness import registry
        from harness.errors import UsageError
        from harness.params import parse_seeds, parse_set_args
        from problems.lora_tasks import parse_tasks

        if args.iterations is not None and args.iterations < 1:
            raise UsageError(f"--iterations {args.iterations}: must be >= 1")
        extra = {f"problem.{k}": v for k, v in parse_set_args(args.set).items()}
        if "problem.world_seed" in extra:
            raise UsageError("--set world_seed=...: use --world-seeds (every world is run)")
        out = []
        for world in parse_seeds(args.world_seeds):
            for task in parse_tasks(args.tasks):
                for seed in parse_seeds(args.seeds):
                    for label, opt, sets in METHODS:
                        steps = 1
                        overrides = {**extra, "problem.world_seed": str(world),
                                     **{f"optimizer.{k}": v for k, v in sets.items()}}
                        schema = registry.optimizer(opt).schema()
                        if "iterations" in schema:   # the evolving methods: K iterations = K steps
                            steps = args.iterations or schema["iterations"].default
                            overrides["optimizer.iterations"] = steps
                        # evaluate once at the end, no checkpoints: each run takes seconds
                        out.append((task, label, item(opt, f"lora-{task}", seed, {"steps": steps}, overrides,
                                                      eval_every=steps, checkpoint_every=0)))
        return out

    def items(self, args):
        return [it for _, _, it in self.labelled(args)]

    def render(self, args, outcomes) -> str:
        from harness import store
        from harness.experiments import ok_summary

        rows = []
        for task, label, it in self.labelled(args):
            s = ok_summary(args.runs_dir, it)
            rows.append({"world": int(dict(it.sets)["problem.world_seed"]), "task": task, "seed": it.seed,
                         "method": label,
                         "test_accuracy": s["final_metric"], "val_accuracy": 1.0 - s["final_loss"],
                         "evals": s["evals"], "optimizer_time_s": round(s["optimizer_time_s"], 2),
                         "peak_memory_mb": round(s["peak_memory_bytes"] / 2**20, 1),
                         "run": it.name})
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        store.write_csv(out / "genome_runs.csv", rows)
        table = render_table(rows, args) + "\n" + "\n".join(world_checks(self.labelled(args))) + "\n"
        (out / "genome_table.md").write_text(table)
        return table + f"\nwritten: {out / 'genome_table.md'}, {out / 'genome_runs.csv'}"


def render_table(rows, args) -> str:
    labels = [m[0] for m in METHODS]
    tasks = list(dict.fromkeys(r["task"] for r in rows))

    def acc(task, label):
        return [r["test_accuracy"] for r in rows if r["task"] == task and r["method"] == label]

    k = (f"K={args.iterations} iterations" if args.iterations
         else "K = each method's default iterations: genome 50, genome+ 20")
    k_flag = f" --iterations {args.iterations}" if args.iterations else ""
    worlds = args.world_seeds
    lines = [f"Test exact-match accuracy, mean ± std over every (world, seed) pair: worlds {worlds} x "
             f"seeds {args.seeds} ({k}; command: `python -m harness reproduce genome "
             f"--tasks {','.join(tasks)} --seeds {args.seeds} --world-seeds {worlds}{k_flag}`)", "",
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
    lines += ["", *gain_table(rows, labels, tasks),
              "", f"Paper (gemma-2-2b-it, 12 tasks): GENOME+ {PAPER_GAIN:+.2f}% over the best single expert "
              "on average."]
    return "\n".join(lines) + "\n"


def world_checks(labelled) -> list[str]:
    """The specialist check of each world the runs used (problems.lora_world, at build time)."""
    import json

    from harness import registry
    from problems.lora_world import world_dir

    lines, seen = ["Specialist check of each world (problems/lora_world.specialist_findings):", ""], set()
    for task, _, it in labelled:
        problem = registry.problem(it.problem).create({k.split(".", 1)[1]: v for k, v in it.sets
                                                       if k.startswith("problem.")}, it.seed)
        spec = problem.world_spec()
        if problem.real() or spec in seen:
            continue
        seen.add(spec)
        info = json.loads((world_dir(spec) / "world.json").read_text())
        findings = info.get("specialist_findings", ["not checked (built before the check existed)"])
        lines.append(f"- world {spec.seed} ({spec.key()}): " + ("every task has its own clear specialists"
                                                                if not findings else "; ".join(findings)))
    return lines


def gains(rows, labels, tasks) -> dict[str, list[float]]:
    """Per method, the relative gain (%) over best-expert of each (world, seed) pair: the
    mean over tasks of the method's test accuracy against best-expert's, same world and seed."""
    pairs = sorted({(r["world"], r["seed"]) for r in rows})

    def mean_acc(label, world, seed):
        return statistics.mean(r["test_accuracy"] for r in rows if r["method"] == label
                               and r["world"] == world and r["seed"] == seed and r["task"] in tasks)

    out = {}
    for label in labels:
        vals = []
        for w, s in pairs:
            base = mean_acc("best-expert", w, s)
            vals.append(100 * (mean_acc(label, w, s) - base) / base if base > 0 else float("nan"))
        out[label] = vals
    return out


def gain_table(rows, labels, tasks) -> list[str]:
    from reports.stats import mean_ci

    worlds = sorted({r["world"] for r in rows})
    n = len({(r["world"], r["seed"]) for r in rows})
    lines = [f"Gain over best-expert (%, mean over tasks), mean with 95% bootstrap interval over "
             f"{n} (world, seed) pairs (worlds {','.join(map(str, worlds))}):", "",
             "| method | gain over best-expert, mean [95% CI] | n |", "| --- | --- | --- |"]
    for label, vals in gains(rows, labels, tasks).items():
        if label == "best-expert":
            continue
        m, lo, hi = mean_ci(vals)
        lines.append(f"| {label} | {m:+.1f}% [{lo:+.1f}, {hi:+.1f}] | {len(vals)} |")
    return lines
