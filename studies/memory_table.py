"""The EA4LLM memory comparison: predicted peak of es, mezo and adam at every size.

Every figure is a plan (harness.planner: the model built on the meta device,
each optimizer's declared memory model); runs stored under --runs-dir add
their measured peaks next to the plan of their own settings. Output: a
Markdown table, the same as CSV, and a PNG bar chart on a log scale, made by
reports/memory_table.py.
"""

from __future__ import annotations

from pathlib import Path

from harness import registry, store
from harness.registry import select_problems
from harness.errors import UsageError
from harness.pair import resolve_pair
from harness.params import unused_sets
from reports import memory_table as memory_report

# The comparison of the EA4LLM paper's memory table, the default; "all" tables every
# registered optimizer of weights problems that declares a memory model.
EA4LLM_OPTIMIZERS = ("es", "mezo", "adam")


def tabled_optimizers(spec: str | None) -> tuple[list[str], bool]:
    """The optimizers of --optimizers (a comma-separated list, "all", or None for the
    paper's) and whether one without a memory model is left out (all) or refused."""
    if spec is None:
        return list(EA4LLM_OPTIMIZERS), False
    if spec.strip() == "all":
        registry.load_all()
        return [name for name, e in sorted(registry.OPTIMIZERS.items())
                if "weights" in e.kinds and not e.presets], True
    return [o.strip() for o in spec.split(",") if o.strip()], False


def _pair_sets(opt: str, prob: str, overrides: dict, population: int | None) -> dict:
    """The --set items that apply to this pair (harness.params.route_sets), plus the
    population where the optimizer has one (its POPULATION_PARAM) and the user did not set it."""
    pair = resolve_pair(opt, prob)
    routed = pair.route(overrides, partial=True)
    out = dict(routed.used)
    key = pair.optimizer.factory.POPULATION_PARAM
    if population and key is not None and key not in routed.optimizer:
        out[f"optimizer.{key}"] = population
    return out


def _check_overrides(optimizers, problems, overrides) -> None:
    used = set()
    for opt in optimizers:
        for prob in problems:
            used |= set(_pair_sets(opt, prob, overrides, None))
    unused_sets(overrides, used, "table")


def measure_items(optimizers: list[str], problems: list[str], overrides: dict | None,
                  population: int | None, steps: int, device: str = "cpu") -> list:
    """Runs that measure the table's own settings on this machine: every optimizer on
    each of `problems` (sizes that fit here), `steps` steps, no eval beyond the first."""
    from harness.experiments import item

    overrides = dict(overrides or {})
    for name in optimizers:
        registry.optimizer(name)
    names = select_problems(",".join(problems))
    _check_overrides(optimizers, names, overrides)
    return [item(opt, prob, 0, {"steps": steps}, _pair_sets(opt, prob, overrides, population),
                 eval_every=10**9, checkpoint_every=0)
            for prob in names for opt in optimizers]


def measured_runs(runs_dir, problems, optimizers, device: str) -> list[dict]:
    """Finished runs with a recorded peak on this device type, with the plan of their own config."""
    from harness.planner import plan

    rows = []
    for run_dir in store.iter_runs(Path(runs_dir)):
        try:
            summary = store.read_json(run_dir / "summary.json")
            cfg = store.read_json(run_dir / "config.json")
        except (OSError, ValueError):
            continue
        if (summary.get("status") != "ok" or not summary.get("peak_memory_bytes")
                or cfg.get("problem") not in problems or cfg.get("optimizer") not in optimizers
                or str(summary.get("device", "")).split(":")[0] != device):
            continue
        overrides = {f"optimizer.{k}": v for k, v in cfg["optimizer_params"].items()}
        overrides.update({f"problem.{k}": v for k, v in cfg["problem_params"].items()})
        try:
            planned = plan(cfg["optimizer"], cfg["problem"], overrides, device=device).peak_bytes
        except Exception:
            planned = None
        rows.append({"problem": cfg["problem"], "optimizer": cfg["optimizer"],
                     "measured_bytes": int(summary["peak_memory_bytes"]), "planned_bytes": planned,
                     "method": summary.get("peak_memory_method"), "run": str(run_dir)})
    return rows


def build(optimizers: list[str], problems: str, device: str = "cuda", overrides: dict | None = None,
          population: int | None = 30, out_dir="reports/memory", runs_dir="runs",
          skip_undeclared: bool = False) -> dict:
    """The table: a plan of every optimizer on every problem; an optimizer without a memory
    model is refused, or left out with skip_undeclared. Beside each backprop optimizer's
    figure, its ratio to each other optimizer's (what the others save)."""
    from harness.planner import Plan, plan_run
    from harness.spec import Prepared, RunSpec

    overrides = dict(overrides or {})
    names = select_problems(problems)
    for name in optimizers:
        registry.optimizer(name)
    _check_overrides(optimizers, names, overrides)
    rows, undeclared = [], set()
    for prob in names:
        facts = None
        row: dict = {"problem": prob}
        for opt in optimizers:
            sets = _pair_sets(opt, prob, overrides, population)
            prepared = Prepared(RunSpec(optimizer=opt, problem=prob, device="cpu", overrides=sets))
            p: Plan = plan_run(opt, prepared.optimizer_class, prepared.opt_hp, prepared.problem, device,
                               facts=facts)
            facts = p.facts  # the model's facts do not depend on the optimizer
            if not p.declared:
                if skip_undeclared:
                    undeclared.add(opt)
                    continue
                raise UsageError(f"optimizer {opt!r} declares no memory model; it cannot be tabled")
            row["params"] = p.facts.param_count
            row["problem_settings"] = {k: prepared.prob_hp[k] for k in ("seq_len", "micro_batch", "dtype")
                                       if k in prepared.prob_hp}
            row["weight_dtype_bytes"] = p.facts.dtype_bytes
            row[f"{opt}_bytes"] = p.peak_bytes
            row[f"{opt}_breakdown"] = p.breakdown
            row[f"{opt}_settings"] = {k.split(".")[-1]: v for k, v in sets.items()}
        rows.append(row)
    optimizers = [o for o in optimizers if o not in undeclared]
    backprop = [o for o in optimizers if registry.optimizer(o).factory.BACKPROP]
    ratios = [(g, o) for g in backprop for o in optimizers if o not in backprop]
    for row in rows:
        for g, o in ratios:
            if f"{g}_bytes" in row and f"{o}_bytes" in row:
                row[f"{g}_over_{o}"] = row[f"{g}_bytes"] / row[f"{o}_bytes"]
    rows.sort(key=lambda r: r["params"])
    measured = measured_runs(runs_dir, names, optimizers, device) if runs_dir else []

    markdown, files = memory_report.write(rows, optimizers, ratios, measured, device, overrides, population,
                                          Path(out_dir))
    return {"rows": rows, "measured": measured, "markdown": markdown, "files": files}
