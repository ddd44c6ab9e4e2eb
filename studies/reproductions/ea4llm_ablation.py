"""EA4LLM's two ablations of ES pretraining (arXiv:2510.10603, on its 1.7B model):
evaluation samples per iteration (paper: 1000, 3000, 5000, 7000) and population
size (paper: 20, 30, 40).

    python -m harness reproduce ea4llm-ablation [--problem qwen3-small] [--seeds 0]
        [--steps N] [--samples A,B,..] [--populations A,B,..] [--fixed-samples S]
        [--fixed-population P] [--set KEY=VALUE ...] [--out DIR] [--runs-dir DIR] [--jobs J]

"Evaluation samples per iteration" is the qwen3 problem's `samples`: the
sequences drawn by the iteration seed on which every member of that iteration
is scored (problems/qwen3.py). Each ablation varies one factor and holds the
other (--fixed-population, default 30, the middle of the paper's levels;
--fixed-samples, default the second sample level; the paper's fixed values are
not in our sources). Both ablations share their centre run, which the executor
runs once.

Sizes: at the paper's sizes (qwen3-0.5b and up) the sample levels are the
paper's. At the CPU sizes (qwen3-tiny, qwen3-small) they are the paper's
divided by 500 (2, 6, 10, 14 samples), so that one ablation runs in minutes
on 2 cores: at seq_len 256 (small) that is 512 to 3,584 tokens per fitness
evaluation against the paper's 1000 to 7000 sequences. The step budget is ours
(CPU 20, GPU 100 iterations), not the paper's. Everything else is es's
defaults (sigma 0.01, alpha 0.05, zscore shaping) and the problem's.

Every run is an ordinary harness run (its own process, resumable, stored
under --runs-dir; names carry the grid values, e.g.
es-population=30-samples=6_qwen3-small_s0_steps20). The report (Markdown table,
CSV, PNG) is built from their summary.json and metrics.jsonl files only.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from harness.experiments import Experiment, item, register_experiment

PAPER_SAMPLES = (1000, 3000, 5000, 7000)
PAPER_POPULATIONS = (20, 30, 40)
CPU_DIVISOR = 500
STEPS = {"cpu": 20, "gpu": 100}


def _ints(text: str, flag: str) -> list[int]:
    from harness.errors import UsageError

    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1 or len(set(values)) != len(values):
        raise UsageError(f"{flag} {text!r}: expected distinct positive integers, e.g. 20,30,40")
    return values


@register_experiment("ea4llm-ablation", help="EA4LLM's ablations of es: evaluation samples per iteration "
                                             "and population size on a qwen3 problem (docs/ea4llm_ablation.md)")
class EA4LLMAblation(Experiment):
    DEFAULT_RUNS_DIR = "reports/ea4llm_ablation/runs"

    def add_arguments(self, p) -> None:
        p.add_argument("--problem", default="qwen3-small", help="a qwen3-* problem (default qwen3-small)")
        p.add_argument("--seeds", default="0", help="comma-separated run seeds (default 0)")
        p.add_argument("--steps", type=int, default=None,
                       help=f"ES iterations per run (default {STEPS['cpu']} at CPU sizes, {STEPS['gpu']} "
                            f"at the paper's sizes)")
        p.add_argument("--samples", default=None,
                       help="sample levels (default: the paper's 1000,3000,5000,7000; divided by "
                            f"{CPU_DIVISOR} at CPU sizes)")
        p.add_argument("--populations", default=",".join(map(str, PAPER_POPULATIONS)),
                       help="population levels (default the paper's 20,30,40)")
        p.add_argument("--fixed-population", type=int, default=30,
                       help="population of the samples ablation (default 30)")
        p.add_argument("--fixed-samples", type=int, default=None,
                       help="samples of the population ablation (default the second sample level)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="extra es or problem settings for every run (e.g. sigma=0.02, seq_len=128)")
        p.add_argument("--out", default="reports/ea4llm_ablation")

    def plan(self, args) -> dict:
        """The resolved levels, budget and items: (ablation, level, item) in report order."""
        from harness import experiments, registry
        from harness.errors import UsageError
        from harness.params import parse_seeds, parse_set_args
        from problems.qwen3 import CPU_SIZES

        prob = registry.problem(args.problem)
        if not prob.name.startswith("qwen3-"):
            raise UsageError(f"--problem {args.problem!r}: the ablation runs on a qwen3-* problem "
                             f"(e.g. qwen3-small, qwen3-1.7b)")
        size = "cpu" if prob.name.removeprefix("qwen3-") in CPU_SIZES else "gpu"
        if args.samples is not None:
            samples = _ints(args.samples, "--samples")
        else:
            samples = [s // CPU_DIVISOR for s in PAPER_SAMPLES] if size == "cpu" else list(PAPER_SAMPLES)
        populations = _ints(args.populations, "--populations")
        fixed_pop = _ints(str(args.fixed_population), "--fixed-population")[0]
        fixed_samples = (_ints(str(args.fixed_samples), "--fixed-samples")[0] if args.fixed_samples
                         else samples[1 % len(samples)])
        steps = args.steps if args.steps is not None else STEPS[size]
        if steps < 1:
            raise UsageError(f"--steps {steps}: must be >= 1")
        extra = parse_set_args(args.set)
        for key in ("population", "samples"):
            if key in extra:
                raise UsageError(f"--set {key}: this experiment varies it; use --populations/--samples "
                                 f"and --fixed-population/--fixed-samples")
        labelled = []
        for seed in parse_seeds(args.seeds):
            for s in samples:
                labelled.append(("samples", s, self._item(prob.name, seed, steps, fixed_pop, s, extra)))
            for n in populations:
                labelled.append(("population", n, self._item(prob.name, seed, steps, n, fixed_samples, extra)))
        items = list({it.name: it for _, _, it in labelled}.values())   # the shared centre runs once
        experiments.validate(items, args.device)   # every setting checked as `run` would, first
        return {"size": size, "samples": samples, "populations": populations, "fixed_population": fixed_pop,
                "fixed_samples": fixed_samples, "steps": steps, "labelled": labelled, "items": items,
                "extra": extra}

    @staticmethod
    def _item(problem, seed, steps, population, samples, extra):
        sets = {**extra, "population": population, "samples": samples}
        return item("es", problem, seed, {"steps": steps}, sets, axes=("population", "samples"))

    def items(self, args):
        return self.plan(args)["items"]

    def render(self, args, outcomes) -> str:
        from harness import store
        from reports.ablation import ablation_figure   # matplotlib: only when rendering

        plan = self.plan(args)
        rows, curves = collect(args.runs_dir, plan["labelled"])
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        store.write_csv(out / "ea4llm_ablation_runs.csv", rows)
        fixed = {"samples": f"population {plan['fixed_population']}",
                 "population": f"samples {plan['fixed_samples']}"}
        ablation_figure(rows, curves, fixed, out / "ea4llm_ablation.png")
        text = table(rows, plan, args)
        (out / "ea4llm_ablation.md").write_text(text)
        return text + f"\nwritten: {out / 'ea4llm_ablation.md'}, {out / 'ea4llm_ablation.png'}, " \
                      f"{out / 'ea4llm_ablation_runs.csv'}"


def collect(runs_dir, labelled) -> tuple[list[dict], dict]:
    """One row per (ablation, level, seed) from the stored runs; curves by run name:
    (iterations, estimated forward FLOPs so far, held-out loss) at each evaluation."""
    from harness import store
    from harness.experiments import ok_summary

    rows, curves = [], {}
    for ablation, level, it in labelled:
        s = ok_summary(runs_dir, it)
        records = store.read_metrics(Path(runs_dir) / it.name / "metrics.jsonl")
        evals = [r for r in records if "heldout_loss" in r]
        curves[it.name] = ([r["step"] for r in evals], [r.get("flops") or 0.0 for r in evals],
                           [r["heldout_loss"] for r in evals])
        sets = dict(it.sets)
        rows.append({"ablation": ablation, "level": level, "seed": it.seed,
                     "population": int(sets["population"]), "samples": int(sets["samples"]),
                     "steps": s["steps"], "heldout_loss_start": evals[0]["heldout_loss"],
                     "heldout_loss_end": evals[-1]["heldout_loss"],
                     "train_loss_end": records[-1]["loss"], "forwards": s["forwards"], "tokens": s["tokens"],
                     "flops": s["flops"],
                     "optimizer_time_s": round(s["optimizer_time_s"], 2),
                     "peak_memory_mb": round(s["peak_memory_bytes"] / 2**20, 1), "run": it.name})
    return rows, curves


def _ms(values) -> str:
    m = statistics.mean(values)
    return f"{m:.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{m:.3f}"


def table(rows, plan, args) -> str:
    seeds = sorted({r["seed"] for r in rows})
    cmd = (f"python -m harness reproduce ea4llm-ablation --problem {args.problem} --seeds {args.seeds}"
           + (f" --steps {args.steps}" if args.steps is not None else "")
           + (f" --samples {args.samples}" if args.samples is not None else "")
           + "".join(f" --set {s}" for s in args.set))
    scaled = (f"sample levels = the paper's / {CPU_DIVISOR} (CPU size)" if plan["size"] == "cpu"
              and args.samples is None else "sample levels as given" if args.samples else "the paper's sample levels")
    lines = [f"es on {args.problem}, {plan['steps']} iterations, seeds {','.join(map(str, seeds))}; "
             f"{scaled}; held-out loss = -heldout_logprob (mean token negative log-likelihood on the "
             f"held-out chunks), mean ± sd over seeds; forwards = population x iterations; data tokens = "
             f"samples x seq_len x iterations (every member scores the same batch); forward FLOPs: "
             f"harness.costs' estimate over all members. Command: `{cmd}`", ""]
    for ablation, fixed in (("samples", f"population {plan['fixed_population']}"),
                            ("population", f"samples {plan['fixed_samples']}")):
        lines += [f"Ablation: {'evaluation samples per iteration' if ablation == 'samples' else 'population'} "
                  f"({fixed})", "",
                  f"| {ablation} | held-out loss, start | held-out loss, end | train loss, last iteration | "
                  "forwards per run | data tokens per run | forward FLOPs per run (est.) | optimizer time s |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for level in dict.fromkeys(r["level"] for r in rows if r["ablation"] == ablation):
            g = [r for r in rows if r["ablation"] == ablation and r["level"] == level]
            lines.append(f"| {level} | {_ms([r['heldout_loss_start'] for r in g])} | "
                         f"{_ms([r['heldout_loss_end'] for r in g])} | {_ms([r['train_loss_end'] for r in g])} | "
                         f"{int(g[0]['forwards']):,} | {int(g[0]['tokens']):,} | {g[0]['flops']:.3g} | "
                         f"{_ms([r['optimizer_time_s'] for r in g])} |")
        lines.append("")
    lines.append(f"Paper levels (1.7B): samples {', '.join(map(str, PAPER_SAMPLES))}; population "
                 f"{', '.join(map(str, PAPER_POPULATIONS))}.")
    return "\n".join(lines) + "\n"
