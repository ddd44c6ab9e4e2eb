"""Final-results tables: per problem, one row per optimizer, mean and spread over seeds."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from reports.stats import median_ci
from reports.style import mib

# (column in the runs frame, name in the table); statistics are over the seeds whose
# run finished with status ok; failed and diverged runs are counted, not averaged.
# The median and its 95% bootstrap interval (reports.stats.median_ci) of these:
MEDIANS = ["final_loss", "final_metric"]
STATS = [
    ("final_loss", "final_loss"), ("best_loss", "best_loss"),
    ("final_metric", "final_metric"), ("best_metric", "best_metric"),
    ("wall_clock_s", "wall_clock_s"), ("optimizer_time_s", "optimizer_time_s"),
    ("evals", "evals"), ("peak_memory_mib", "peak_memory_mib"),
    ("forwards", "forwards"), ("tokens", "tokens"), ("flops", "flops"), ("mfu", "mfu"),   # harness.costs
]


LEGEND = ("↑ higher is better, ↓ lower is better, the best of a column in bold; `budget`: the stopping rule each "
          "optimizer ran under (the same budget axis for all). "
          "Mean ± sample standard deviation over the seeds with status ok; the median with its 95% "
          "percentile-bootstrap interval (scipy.stats.bootstrap); ★: better than every other optimizer "
          "on the final metric, two-sided Mann-Whitney U, Holm-corrected p < 0.05 (significance.csv).")


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name)


def final_results(runs: pd.DataFrame) -> pd.DataFrame:
    """All problems: problem, optimizer, seeds (ok), failed, diverged, then X_mean and X_std
    (sample std, ddof=1; empty for one seed) for every statistic."""
    runs = runs.assign(peak_memory_mib=runs["peak_memory_bytes"].map(mib))
    rows = []
    for (problem, label), g in runs.groupby(["problem", "label"], sort=True):
        ok = g[g["status"] == "ok"]
        row = {"problem": problem, "optimizer": label, "seeds": len(ok),
               "seed_list": ",".join(str(int(s)) for s in sorted(ok["seed"])),
               "failed": int((g["status"] == "failed").sum()),
               "diverged": int((g["status"] == "diverged").sum()),
               "other": int((~g["status"].isin(["ok", "failed", "diverged"])).sum()),
               "metric_name": g["metric_name"].dropna().iloc[0] if g["metric_name"].notna().any() else None,
               "metric_higher_is_better": g["metric_higher_is_better"].dropna().iloc[0]
               if g["metric_higher_is_better"].notna().any() else None,
               "budget": ", ".join(sorted(set(g["budget"].dropna().astype(str)))) if "budget" in g else ""}
        for col, name in STATS:
            values = ok[col].astype(float)
            row[f"{name}_mean"] = values.mean() if len(values) else math.nan
            row[f"{name}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
            if col in MEDIANS:
                row[f"{name}_median"], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = median_ci(values)
        rows.append(row)
    return pd.DataFrame(rows)


def number_format(values) -> str:
    """One format for a whole column: fixed decimals giving 4 significant digits to its largest
    magnitude, or scientific when it spans beyond 1e-3..1e6 (never 527.9 beside 9.3e+02)."""
    v = np.abs(np.asarray([x for x in values if x == x and np.isfinite(x)], float))
    if v.size == 0:
        return ".4g"
    top = float(v.max())
    if np.all(v == np.round(v)) and top < 1e6:   # counts: evaluations, forwards
        return ".0f"
    if top >= 1e6 or (0 < top < 1e-3):
        return ".3e"
    digits = 0 if top == 0 else int(math.floor(math.log10(top)))
    return f".{max(0, 3 - digits)}f"


def _cells(means, spreads, lower_better: bool | None, ci=None) -> list[str]:
    """A column's cells in one number format: 'mean ± std' (or 'median [lo, hi]' when `ci` gives
    (lo, hi) lists); the best value bold when the column has a direction."""
    los, his = ci if ci is not None else ([math.nan] * len(means), [math.nan] * len(means))
    fmt = number_format(list(means) + list(los) + list(his))
    known = [m for m in means if m == m]
    best = (min(known) if lower_better else max(known)) if known and lower_better is not None else None
    out = []
    for m, sd, lo, hi in zip(means, spreads, los, his):
        if m != m:
            out.append("-")
            continue
        text = format(m, fmt)
        if best is not None and m == best and len(known) > 1:
            text = f"**{text}**"
        if ci is not None and lo == lo:
            text += f" [{format(lo, fmt)}, {format(hi, fmt)}]"
        elif ci is None and sd == sd:
            text += f" ± {format(sd, fmt)}"
        out.append(text)
    return out


def _budget_column(table: pd.DataFrame) -> list[str]:
    return [b if isinstance(b, str) and b else "-" for b in table.get("budget", [""] * len(table))]


def markdown(table: pd.DataFrame, winner: str | None = None) -> str:
    """One problem's table, readable: each column's direction (↑ higher is better, ↓ lower),
    its best value in bold, one number format per column, mean ± std and the median with its
    95% bootstrap interval; the budget each optimizer ran under; `winner` (significantly
    better than every other optimizer, reports.stats.winners) is marked with a star."""
    metric = table["metric_name"].dropna().iloc[0] if table["metric_name"].notna().any() else "metric"
    higher = bool(table["metric_higher_is_better"].dropna().iloc[0]) \
        if "metric_higher_is_better" in table and table["metric_higher_is_better"].notna().any() else False
    m_arrow, m_lower = ("↑", False) if higher else ("↓", True)

    def col(name, lower_better):
        return _cells(table[f"{name}_mean"], table[f"{name}_std"], lower_better)

    view = pd.DataFrame({
        "optimizer": [f"{o} ★" if o == winner else o for o in table["optimizer"]],
        "budget": _budget_column(table),
        "seeds": table["seeds"],
        "failed": table["failed"],
        "diverged": table["diverged"],
        "final loss ↓": col("final_loss", True),
        "best loss ↓": col("best_loss", True),
        f"final {metric} {m_arrow}": col("final_metric", m_lower),
        f"median final {metric} [95% CI] {m_arrow}": _cells(
            table["final_metric_median"], table["final_metric_median"], m_lower,
            ci=(list(table["final_metric_ci_low"]), list(table["final_metric_ci_high"]))),
        f"best {metric} {m_arrow}": col("best_metric", m_lower),
        "wall-clock (s) ↓": col("wall_clock_s", True),
        "evaluations": col("evals", None),
        "forward-pass equivalents": col("forwards", None),
        "peak memory (MiB) ↓": col("peak_memory_mib", True),
    })
    if view["forward-pass equivalents"].eq("-").all():
        view = view.drop(columns=["forward-pass equivalents"])
    return view.to_markdown(index=False, disable_numparse=True)


def write(runs: pd.DataFrame, out: Path, winners: dict[str, str] | None = None) -> dict[str, dict]:
    """final_results.csv (all problems) and final_<problem>.csv/.md; returns
    {problem: {"csv": name, "md": name, "markdown": text}}."""
    out.mkdir(parents=True, exist_ok=True)
    table = final_results(runs)
    table.to_csv(out / "final_results.csv", index=False)
    files = {}
    for problem, t in table.groupby("problem", sort=True):
        t = t.drop(columns=["problem"]).reset_index(drop=True)
        base = f"final_{slug(problem)}"
        t.to_csv(out / f"{base}.csv", index=False)
        text = markdown(t, (winners or {}).get(problem))
        (out / f"{base}.md").write_text(f"# Final results: {problem}\n\n{text}\n\n{LEGEND}\n")
        files[problem] = {"csv": f"{base}.csv", "md": f"{base}.md", "markdown": text, "frame": t}
    return files
