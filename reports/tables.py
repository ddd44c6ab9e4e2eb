"""Final-results tables: per problem, one row per optimizer, mean and spread over seeds."""

from __future__ import annotations

import math
import re
from pathlib import Path

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


LEGEND = ("Mean ± sample standard deviation over the seeds with status ok; the median with its 95% "
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
               "metric_name": g["metric_name"].dropna().iloc[0] if g["metric_name"].notna().any() else None}
        for col, name in STATS:
            values = ok[col].astype(float)
            row[f"{name}_mean"] = values.mean() if len(values) else math.nan
            row[f"{name}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
            if col in MEDIANS:
                row[f"{name}_median"], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = median_ci(values)
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(mean: float, std: float) -> str:
    if mean != mean:
        return "-"
    text = f"{mean:.4g}"
    return text + (f" ± {std:.2g}" if std == std else "")


def _fmt_ci(med: float, lo: float, hi: float) -> str:
    if med != med:
        return "-"
    return f"{med:.4g}" + (f" [{lo:.4g}, {hi:.4g}]" if lo == lo else "")


def markdown(table: pd.DataFrame, winner: str | None = None) -> str:
    """One problem's table, readable: mean ± std in one cell, the median with its 95%
    bootstrap interval beside it; `winner` (significantly better than every other
    optimizer, reports.stats.winners) is marked with a star."""
    metric = table["metric_name"].dropna().iloc[0] if table["metric_name"].notna().any() else "metric"
    view = pd.DataFrame({
        "optimizer": [f"{o} ★" if o == winner else o for o in table["optimizer"]],
        "seeds": table["seeds"],
        "failed": table["failed"],
        "diverged": table["diverged"],
        "final loss": [_fmt(m, s) for m, s in zip(table["final_loss_mean"], table["final_loss_std"])],
        "best loss": [_fmt(m, s) for m, s in zip(table["best_loss_mean"], table["best_loss_std"])],
        f"final {metric}": [_fmt(m, s) for m, s in zip(table["final_metric_mean"], table["final_metric_std"])],
        f"median final {metric} [95% CI]": [_fmt_ci(m, lo, hi) for m, lo, hi in zip(
            table["final_metric_median"], table["final_metric_ci_low"], table["final_metric_ci_high"])],
        f"best {metric}": [_fmt(m, s) for m, s in zip(table["best_metric_mean"], table["best_metric_std"])],
        "wall-clock (s)": [_fmt(m, s) for m, s in zip(table["wall_clock_s_mean"], table["wall_clock_s_std"])],
        "evaluations": [_fmt(m, s) for m, s in zip(table["evals_mean"], table["evals_std"])],
        "peak memory (MiB)": [_fmt(m, s) for m, s in zip(table["peak_memory_mib_mean"], table["peak_memory_mib_std"])],
    })
    return view.to_markdown(index=False)


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
