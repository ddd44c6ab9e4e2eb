"""Seed paper 003: evolutionary vs gradient vs Bayesian methods on Digits.

The paper's claims this reproduction checks (its numbers as the issue states
them): Adam trains the digits MLP to macro-F1 about 0.97; at 98% sparsity
CMA-ES guided by SynFlow with energy compensation keeps F1 = 0.81 and beats
magnitude pruning; at <= 90% magnitude pruning is better; in HPO CMA-ES
matches Optuna TPE in quality and is much faster in high dimension; SynFlow
as a zero-cost HPO objective is "over 250 times" faster per evaluation but
reaches a lower final accuracy (the objective part: time per evaluation of
each objective and the test F1 of the configuration each chooses, trained
for `final_steps`). The pruning table also runs softmask, the paper's
gradient-based baseline.

Every number comes from ordinary runs executed by the one executor (stored
under --runs-dir, one directory and one process each: resumable, each with its
own peak memory); the report is computed from their summary.json and
metrics.jsonl files only. Budgets are small by default so that the whole
reproduction takes minutes on 2 CPU cores; raise them with --set.

    python -m harness reproduce seed003 [--seeds 0,1,2] [--out DIR] [--runs-dir DIR]
        [--jobs J] [--set KEY=VALUE ...]
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import UsageError
from harness.experiments import Experiment, item, register_experiment
from harness.params import Param

PAPER = {
    "adam_f1": 0.97,
    "synflow_cma_98": 0.81,
}

PARAMS = {
    "adam_steps": Param(300, int, "AdamW steps of adam on digits-mlp (0 = skip)", low=0),
    "sparsities": Param("50,70,90,95,98", str, "digits-prune-<s> problems to run (empty = skip)"),
    "prune_optimizers": Param("magnitude,synflow,synflow-cma,softmask", str, "pruning optimizers"),
    "softmask_steps": Param(400, int, "AdamW steps of softmask on the mask logits (its budget)", low=1),
    "prune_sets": Param("", str, "extra --set KEY=VALUE for every pruning run, ';'-separated (e.g. "
                        "'problem.hidden=512;optimizer.compensation=neuron')"),
    "prune_evals": Param(100, int, "evaluation budget of synflow-cma (validation F1 calls)", low=1),
    "prune_train_steps": Param(None, int, "AdamW steps of the dense net to prune (default: the "
                               "problem's 2000)", low=1, optional=True),
    "hpo_problems": Param("digits-hpo,digits-hpo-31", str, "search-space problems to run "
                          "(empty = skip)"),
    "hpo_optimizers": Param("tpe,cma,nevergrad,random", str, "HPO optimizers"),
    "hpo_evals": Param(30, int, "evaluations (trained configurations) per HPO run", low=1),
    "hpo_train_steps": Param(None, int, "AdamW steps per configuration (default: the problem's "
                             "100)", low=1, optional=True),
    "objectives": Param("trained,synflow", str, "digits-hpo objectives compared (empty = skip)"),
    "objective_problem": Param("digits-hpo", str, "search-space problem of the objective comparison"),
    "objective_optimizer": Param("tpe", str, "optimizer of the objective comparison"),
    "objective_evals": Param(30, int, "evaluations per objective-comparison run", low=1),
    "final_steps": Param(1000, int, "AdamW steps the configuration each objective chose is trained for "
                         "(its reported F1)", low=1),
}


def _sets(text: str) -> dict:
    """'k=v;k2=v2' -> {k: v, k2: v2}."""
    out = {}
    for part in (p.strip() for p in text.split(";")):
        if part:
            key, eq, value = part.partition("=")
            if not eq or not key.strip():
                raise UsageError(f"--set prune_sets: {part!r} is not KEY=VALUE (pairs separated by ';')")
            out[key.strip()] = value.strip()
    return out


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def check(options: dict) -> None:
    """Every name resolves and every pair is compatible before any run starts."""
    from harness import registry
    from harness.pair import resolve_pair

    sparsities = _names(options["sparsities"])
    for s in sparsities:
        registry.problem(f"digits-prune-{s}")
    pairs = [(o, f"digits-prune-{sparsities[0]}") for o in _names(options["prune_optimizers"]) if sparsities]
    pairs += [(o, p) for o in _names(options["hpo_optimizers"]) for p in _names(options["hpo_problems"])]
    for o, p in pairs:
        resolve_pair(o, p)
    for p in _names(options["hpo_problems"]):
        if "search-space" not in registry.problem(p).kinds:
            raise UsageError(f"--set hpo_problems: {p!r} is not a search-space problem")
    _sets(options["prune_sets"])
    if _names(options["objectives"]):
        from problems.digits_hpo import OBJECTIVES

        prob = registry.problem(options["objective_problem"])
        if prob.family != "digits-hpo":
            raise UsageError(f"--set objective_problem: {prob.name!r} is not a digits-hpo problem")
        resolve_pair(options["objective_optimizer"], prob)
        for o in _names(options["objectives"]):
            if o not in OBJECTIVES:
                raise UsageError(f"--set objectives: {o!r} is not one of {', '.join(OBJECTIVES)}")


def _last_eval(run_dir: Path) -> dict:
    """The last metrics record that carries eval fields."""
    from harness import store

    last = {}
    for rec in store.read_metrics(run_dir / "metrics.jsonl"):
        if "metric" in rec:
            last = rec
    return last


def labelled(seeds: list[int], options: dict) -> list[tuple[dict, object]]:
    """(row fields, run item) of every run of the reproduction, in report order."""
    from harness import registry

    registry.load_all()
    out = []
    for seed in seeds if options["adam_steps"] else ():
        out.append(({"part": "adam"}, item("adam", "digits-mlp", seed, {"steps": options["adam_steps"]},
                                           checkpoint_every=0)))
    prune_over = _sets(options["prune_sets"])
    if options["prune_train_steps"]:
        prune_over["problem.train_steps"] = options["prune_train_steps"]
    for s in _names(options["sparsities"]):
        for opt in _names(options["prune_optimizers"]):
            budget, over = {"evals": options["prune_evals"]}, prune_over
            if opt == "softmask":   # its budget is its own number of gradient steps
                budget = {"steps": options["softmask_steps"]}
                over = {**prune_over, "optimizer.steps": options["softmask_steps"]}
            for seed in seeds:
                out.append(({"part": "prune", "sparsity_target": int(s)},
                            item(opt, f"digits-prune-{s}", seed, budget, over, checkpoint_every=0)))
    hpo_over = {}
    if options["hpo_train_steps"]:
        hpo_over["problem.train_steps"] = options["hpo_train_steps"]
    evals = options["hpo_evals"]
    for prob in _names(options["hpo_problems"]):
        dim = len(registry.problem(prob).create({"train_steps": "1"}).space)
        for opt in _names(options["hpo_optimizers"]):
            over = dict(hpo_over)
            # every optimizer gets exactly `evals` evaluations: whole generations/batches
            if opt == "cma":
                over["popsize"] = min(10, evals)
            if opt == "random":
                over["batch"] = 1
            if opt == "nevergrad":
                over["budget"] = evals
            for seed in seeds:
                # eval only at the end: the metric is the final solution's validation F1
                out.append(({"part": "hpo", "dim": dim},
                            item(opt, prob, seed, {"evals": evals}, over, eval_every=10**9,
                                 checkpoint_every=0)))
    for objective in _names(options["objectives"]):
        for seed in seeds:
            out.append(({"part": "objective", "objective": objective},
                        item(options["objective_optimizer"], options["objective_problem"], seed,
                             {"evals": options["objective_evals"]},
                             {"problem.objective": objective, "problem.final_steps": options["final_steps"]},
                             eval_every=10**9, checkpoint_every=0)))
    return out


def rows_from_runs(runs_dir: str, labelled_items) -> list[dict]:
    """One row per run, from its summary.json and last eval record only."""
    from harness.experiments import ok_summary

    rows = []
    for fields, it in labelled_items:
        run_dir = Path(runs_dir) / it.name
        summary = ok_summary(runs_dir, it)
        row = {"optimizer": it.optimizer, "problem": it.problem, "seed": it.seed, "run_dir": str(run_dir),
               "evals": summary["evals"], "steps": summary["steps"], "final_metric": summary["final_metric"],
               "best_loss": summary["best_loss"], "optimizer_time_s": summary["optimizer_time_s"],
               "wall_clock_s": summary["wall_clock_s"], "objective_s": summary["objective_s"],
               "overhead_s": summary["overhead_s"],
               "peak_memory_mb": round(summary["peak_memory_bytes"] / 2**20, 1), "dim": None, **fields}
        last = _last_eval(run_dir)
        for key in ("test_f1", "val_f1", "dense_f1", "sparsity", "finetuned_f1"):
            if key in last:
                row[key] = last[key]
        rows.append(row)
    return rows


@register_experiment("seed003", help="seed paper 003 on digits: Adam, pruning (magnitude, synflow, "
                                    "synflow-cma, softmask), HPO (tpe, cma, nevergrad, random), HPO objective "
                                    "trained vs synflow (docs/seed003.md)")
class Seed003(Experiment):
    DEFAULT_RUNS_DIR = "runs/seed003"

    def add_arguments(self, p) -> None:
        p.add_argument("--seeds", default="0,1,2", help="comma-separated run seeds (default 0,1,2)")
        p.add_argument("--out", default="reports/seed003", help="report directory (default reports/seed003)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="reproduction option (budgets, which problems/optimizers): " + "; ".join(
                           f"{k} ({v.describe()}): {v.help}" for k, v in PARAMS.items()))

    def _parsed(self, args):
        from harness.params import parse_seeds, parse_set_args, resolve

        options = resolve(PARAMS, parse_set_args(args.set), "reproduction 'seed003'")
        check(options)
        return parse_seeds(args.seeds), options

    def items(self, args):
        from harness.experiments import validate

        seeds, options = self._parsed(args)
        rows = labelled(seeds, options)
        if options["prune_sets"]:   # user-given --set values: refused before any run starts
            validate([it for fields, it in rows if fields["part"] == "prune"])
        return [it for _, it in rows]

    def render(self, args, outcomes) -> str:
        seeds, options = self._parsed(args)
        rows = rows_from_runs(args.runs_dir, labelled(seeds, options))
        from reports.seed003 import write_report   # pandas: only when rendering

        path = write_report(rows, seeds, options, args.out, sum(r["wall_clock_s"] for r in rows), PAPER)
        return path.read_text() + f"\nwritten: {path}"
