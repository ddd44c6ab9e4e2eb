"""Figures: learning curves per problem, peak memory per optimizer and per model size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reports.style import colour, mib, spans_decades
from reports.tables import slug

import matplotlib.pyplot as plt  # noqa: E402  (after reports.style chose the Agg backend)

X_AXES = {"evals": "evaluations (loss / objective calls)", "time_s": "optimizer wall-clock (s)"}


def _band(curves: list[pd.DataFrame], x: str, y: str, points: int = 200):
    """Mean and min-max band of several seeds' y(x) on a shared grid spanning every seed;
    a seed that ended earlier holds its last value (np.interp clamps at the ends)."""
    series = []
    for c in curves:
        if x not in c or y not in c:
            continue
        d = c[[x, y]].dropna()
        d = d[np.isfinite(d[y])]
        if len(d) >= 1:
            series.append((d[x].to_numpy(float), d[y].to_numpy(float)))
    if not series:
        return None
    lo = min(s[0].min() for s in series)
    hi = max(s[0].max() for s in series)
    if hi <= lo:
        grid = np.array([lo])
    else:
        grid = np.linspace(lo, hi, points)
    ys = np.vstack([np.interp(grid, sx, sy) for sx, sy in series])
    return grid, ys.mean(0), ys.min(0), ys.max(0), len(series)


def curves_figure(problem: str, runs: pd.DataFrame, curves: dict, out: Path) -> str | None:
    """2 x 2: (train loss, eval metric) against (evaluations, optimizer seconds)."""
    sub = runs[(runs["problem"] == problem) & runs["status"].isin(["ok", "diverged"])]
    if sub.empty:
        return None
    metric = sub["metric_name"].dropna().iloc[0] if sub["metric_name"].notna().any() else "metric"
    higher = sub["metric_higher_is_better"].dropna()
    direction = ("higher is better" if bool(higher.iloc[0]) else "lower is better") if len(higher) else ""
    rows = [("loss", "train loss as recorded per step (lower is better)"),
            ("metric", f"{metric} at eval steps ({direction})")]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), squeeze=False)
    for i, (y, ylabel) in enumerate(rows):
        for j, (x, xlabel) in enumerate(X_AXES.items()):
            ax = axes[i][j]
            values = []
            for label, g in sub.groupby("label", sort=True):
                band = _band([curves[r] for r in g["run_id"]], x, y)
                if band is None:
                    continue
                grid, mean, lo, hi, n = band
                c = colour(label)
                ax.plot(grid, mean, color=c, lw=1.8, label=f"{label} (n={n})", marker="o" if len(grid) == 1 else None)
                if n > 1:
                    ax.fill_between(grid, lo, hi, color=c, alpha=0.18, lw=0)
                values.extend(np.concatenate([lo, hi]))
            if spans_decades(values):
                ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel if j == 0 else "")
            ax.grid(True, alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=9, loc="best")
    fig.suptitle(f"{problem}: mean over seeds (line), min-max band (shaded); "
                 "a seed that ended earlier holds its last value", fontsize=12)
    fig.tight_layout()
    name = f"curves_{slug(problem)}.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def _memory_axis_label(runs: pd.DataFrame) -> str:
    methods = set(runs["peak_memory_method"].dropna())
    if methods and all(m.startswith("peak_rss") for m in methods):
        return "peak memory (MiB): resident set size of the run's process"
    if methods == {"cuda_max_memory_allocated"}:
        return "peak memory (MiB): CUDA allocator peak (tensors)"
    return "peak memory (MiB): RSS on CPU runs, CUDA allocator peak on GPU runs"


def memory_figure(runs: pd.DataFrame, out: Path) -> str | None:
    """Horizontal bars: peak memory of each optimizer on each problem (mean, min-max whisker)."""
    sub = runs[runs["peak_memory_bytes"] > 0]
    if sub.empty:
        return None
    problems = sorted(sub["problem"].unique())
    labels = sorted(sub["label"].unique())
    height = max(3.0, 0.45 * len(problems) * len(labels) + 1.5)
    fig, ax = plt.subplots(figsize=(10, height))
    yticks, yticklabels, y = [], [], 0.0
    seen = set()
    values = []
    for problem in problems:
        for label in labels:
            g = sub[(sub["problem"] == problem) & (sub["label"] == label)]["peak_memory_bytes"].map(mib)
            if g.empty:
                continue
            mean = g.mean()
            ax.barh(y, mean, color=colour(label), height=0.8,
                    xerr=[[mean - g.min()], [g.max() - mean]] if len(g) > 1 else None,
                    label=label if label not in seen else None, capsize=3)
            ax.text(g.max(), y, f"  {mean:,.0f}", va="center", fontsize=8)
            seen.add(label)
            values.extend(g)
            yticks.append(y)
            yticklabels.append(f"{problem} / {label}")
            y += 1
        y += 0.6
    ax.set_yticks(yticks, yticklabels, fontsize=9)
    ax.invert_yaxis()
    if spans_decades(values):
        ax.set_xscale("log")
    ax.set_xlabel(_memory_axis_label(sub))
    ax.set_title("Peak memory per optimizer and problem (all runs incl. failed; whisker = min-max over seeds)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=9, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "memory.png", dpi=110)
    plt.close(fig)
    return "memory.png"


def memory_by_size_figures(runs: pd.DataFrame, out: Path) -> dict[str, str]:
    """Families run at several sizes: peak memory against parameter count, one line per optimizer."""
    files = {}
    sub = runs[(runs["peak_memory_bytes"] > 0) & (runs["param_count"] > 0)]
    for family, fam in sub.groupby("family", sort=True):
        if fam["problem"].nunique() < 2:
            continue
        fig, ax = plt.subplots(figsize=(8, 5.5))
        values = []
        for label, g in fam.groupby("label", sort=True):
            agg = g.groupby("param_count")["peak_memory_bytes"].agg(["mean", "min", "max"]).sort_index()
            agg = agg.map(mib)
            ax.errorbar(agg.index, agg["mean"], yerr=[agg["mean"] - agg["min"], agg["max"] - agg["mean"]],
                        color=colour(label), marker="o", capsize=3, label=label)
            values.extend(agg["mean"])
        names = fam.groupby("param_count")["problem"].first().sort_index()
        for count, name in names.items():
            ax.annotate(name, (count, 1), xycoords=("data", "axes fraction"), xytext=(0, -4),
                        textcoords="offset points", rotation=90, fontsize=8, ha="center", va="top",
                        color="0.35")
        ax.set_xscale("log")
        if spans_decades(values, 10):
            ax.set_yscale("log")
        ax.set_xlabel("model parameters (count, log scale)")
        ax.set_ylabel(_memory_axis_label(fam))
        ax.set_title(f"{family}: peak memory against model size (mean, min-max over seeds)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=9)
        fig.tight_layout()
        name = f"memory_by_size_{slug(family)}.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files[family] = name
    return files
