"""The CI quality check: reference runs against stored expectations.

studies/expected/reference.json lists entries (optimizer, problem, seeds,
budget, --set values) and, per entry, the expected mean of each checked
quantity with a bound derived from the seed spread:

    tolerance = max(K_STD * std over seeds, REL * |mean|, ABS)
    bound     = mean - tolerance (higher is better) or mean + tolerance (lower)

A run that does not end ok, or a mean beyond its bound, is a regression.
Runs are seeded, so on the same software they reproduce the reference
exactly; the tolerance absorbs platform and library drift, not luck.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from harness import registry, store
from harness.errors import UsageError
from harness.executor import DONE, execute
from harness.experiments import RunItem, item

REFERENCE = Path(__file__).resolve().parent / "expected" / "reference.json"
K_STD, REL, ABS = 3.0, 0.02, 1e-9
# quantity -> where its direction comes from ("metric": the problem's own)
QUANTITIES = {"final_metric": "metric", "best_loss": "lower"}


def entry_key(entry: dict) -> str:
    return f"{entry['optimizer']}:{entry['problem']}"


def load(path: Path = REFERENCE) -> dict:
    if not Path(path).exists():
        raise UsageError(f"--reference {path}: no such file")
    return store.read_json(path)


def select(ref: dict, only: str | None) -> list[dict]:
    entries = ref["entries"]
    if not only:
        return entries
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    keys = {entry_key(e): e for e in entries}
    unknown = [w for w in wanted if w not in keys]
    if unknown:
        raise UsageError(f"--only {unknown[0]!r}: not in the reference suite; entries: {', '.join(keys)}")
    return [keys[w] for w in wanted]


def runnable(entry: dict) -> str | None:
    """Why an entry cannot run in this checkout (None when it can)."""
    registry.load_all()
    if entry["optimizer"] not in registry.OPTIMIZERS:
        return f"optimizer {entry['optimizer']!r} is not registered in this checkout"
    if entry["problem"] not in registry.PROBLEMS:
        return f"problem {entry['problem']!r} is not registered in this checkout"
    return None


def items_of(entry: dict) -> list[RunItem]:
    """The reference suite as an experiment: one run item per seed of each entry."""
    return [item(entry["optimizer"], entry["problem"], s, entry["budget"], entry.get("sets", {}))
            for s in entry["seeds"]]


def higher_is_better(entry: dict, quantity: str) -> bool:
    if QUANTITIES[quantity] == "metric":
        return bool(registry.problem(entry["problem"]).factory.METRIC_HIGHER_IS_BETTER)
    return False


def expectation(entry: dict, values: list[float], quantity: str) -> dict:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    tol = max(K_STD * std, REL * abs(mean), ABS)
    higher = higher_is_better(entry, quantity)
    return {"mean": mean, "std": std, "per_seed": values, "tolerance": tol,
            "bound": mean - tol if higher else mean + tol, "higher_is_better": higher}


@dataclass
class Line:
    key: str
    quantity: str
    reference: str
    bound: str
    now: str
    verdict: str              # ok, better, REGRESSION, FAILED, skipped, no-reference


def _f(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6g}"


def compare(entry: dict, summaries: list[dict]) -> list[Line]:
    key = entry_key(entry)
    bad = [s for s in summaries if s.get("status") not in DONE[:1]]
    if bad:
        return [Line(key, "status", "ok", "ok", f"{s.get('status')} (seed {s.get('seed')}): {s.get('reason')}",
                     "FAILED") for s in bad]
    expected = entry.get("expected")
    if not expected:
        return [Line(key, "-", "-", "-", "-", "no-reference")]
    lines = []
    for quantity, exp in expected.items():
        values = [float(s[quantity]) for s in summaries if s.get(quantity) is not None]
        now = statistics.fmean(values) if values else math.nan
        higher = exp["higher_is_better"]
        if not math.isfinite(now):
            verdict = "REGRESSION"
        elif (now < exp["bound"]) if higher else (now > exp["bound"]):
            verdict = "REGRESSION"
        elif (now > exp["mean"] + exp["tolerance"]) if higher else (now < exp["mean"] - exp["tolerance"]):
            verdict = "better"
        else:
            verdict = "ok"
        lines.append(Line(key, quantity, f"{_f(exp['mean'])} ± {_f(exp['std'])} (n={len(exp['per_seed'])})",
                          f"{'>=' if higher else '<='} {_f(exp['bound'])}", _f(now), verdict))
    return lines


def run_entries(entries: list[dict], runs_dir: Path, jobs: int, echo=print) -> dict[str, list[dict]]:
    """Run every seed of every entry; {entry key: [summary per seed]}."""
    items = [it for e in entries for it in items_of(e)]
    outcomes = execute(items, runs_dir, jobs=jobs, device="cpu", echo=echo)
    by_key: dict[str, list[dict]] = {}
    for o in outcomes:
        summary = store.read_json(o.run_dir / "summary.json") if (o.run_dir / "summary.json").exists() else {
            "status": o.status, "reason": o.reason, "seed": o.item.seed}
        by_key.setdefault(f"{o.item.optimizer}:{o.item.problem}", []).append(summary)
    return by_key


def table(lines: list[Line]) -> str:
    head = Line("entry", "quantity", "reference mean ± std", "bound", "now", "verdict")
    rows = [head] + lines
    cols = list(vars(head))
    widths = {c: max(len(str(getattr(r, c))) for r in rows) for c in cols}
    fmt = lambda r: "  ".join(str(getattr(r, c)).ljust(widths[c]) for c in cols).rstrip()  # noqa: E731
    return "\n".join([fmt(head), "  ".join("-" * widths[c] for c in cols)] + [fmt(r) for r in lines])
