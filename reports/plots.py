"""Figures: learning curves per problem, peak memory per optimizer and per model size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reports.style import colour, mib, spans_decades
from reports.tables import slug

import matplotlib.pyplot as plt  # noqa: E402  (after reports.style chose the Agg backend)

X_AXES = {"evals": "evaluations (loss / objective calls)", "forwards": "forward-pass equivalents",
          "time_s": "optimizer wall-clock (s)"}
BOOTSTRAP = 1000
SEED = 12345
LABEL_CHARS = 22


def short_label(label: str, chars: int = LABEL_CHARS) -> str:
    """A legend label of at most `chars` characters ("cma [popsize=8, sigma0=...]" -> "cma [popsize=8, sig…]")."""
    return label if len(label) <= chars else label[: chars - 1] + "…"


def _grid(series, points: int) -> tuple[np.ndarray, bool]:
    """A shared x grid spanning every seed; log-spaced (and a log axis) when the positive
    x values span more than two decades."""
    lo = min(s[0].min() for s in series)
    hi = max(s[0].max() for s in series)
    positive = np.concatenate([s[0][s[0] > 0] for s in series])
    if positive.size and spans_decades([positive.min(), hi]):
        return np.geomspace(positive.min(), hi, points), True
    return (np.array([lo]) if hi <= lo else np.linspace(lo, hi, points)), False


def _band(curves: list[pd.DataFrame], x: str, y: str, points: int = 200):
    """Median of several seeds' y(x) on a shared grid spanning every seed, and the 95%
    percentile-bootstrap interval of that median (scipy.stats.bootstrap, seeded; none
    for one seed); a seed that ended earlier holds its last value (np.interp clamps)."""
    from scipy import stats

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
    grid, log = _grid(series, points)
    ys = np.vstack([np.interp(grid, sx, sy) for sx, sy in series])
    med = np.median(ys, axis=0)
    lo = hi = med
    if len(series) > 1 and np.ptp(ys, axis=0).max() > 0:
        res = stats.bootstrap((ys,), np.median, axis=0, vectorized=True, n_resamples=BOOTSTRAP,
                              method="percentile", random_state=np.random.default_rng(SEED))
        lo, hi = res.confidence_interval.low, res.confidence_interval.high
    return grid, med, lo, hi, len(series), log


def curves_figure(problem: str, runs: pd.DataFrame, curves: dict, out: Path) -> str | None:
    """(train loss, eval metric) against each cost axis the runs recorded (evaluations,
    forward-pass equivalents, optimizer seconds); legend below the panels."""
    sub = runs[(runs["problem"] == problem) & runs["status"].isin(["ok", "diverged"])]
    if sub.empty:
        return None
    metric = sub["metric_name"].dropna().iloc[0] if sub["metric_name"].notna().any() else "metric"
    higher = sub["metric_higher_is_better"].dropna()
    direction = ("higher is better" if bool(higher.iloc[0]) else "lower is better") if len(higher) else ""
    rows = [("loss", "train loss as recorded per step (lower is better)"),
            ("metric", f"{metric} at eval steps ({direction})")]
    x_axes = {x: lab for x, lab in X_AXES.items() if x != "forwards"
              or all("forwards" in curves[r] for r in sub["run_id"])}
    fig, axes = plt.subplots(2, len(x_axes), figsize=(5.2 * len(x_axes), 8.5), squeeze=False)
    handles = {}
    counts = {}
    for i, (y, ylabel) in enumerate(rows):
        for j, (x, xlabel) in enumerate(x_axes.items()):
            ax = axes[i][j]
            values = []
            for label, g in sub.groupby("label", sort=True):
                band = _band([curves[r] for r in g["run_id"]], x, y)
                if band is None:
                    continue
                grid, med, lo, hi, n, log = band
                c = colour(label)
                (line,) = ax.plot(grid, med, color=c, lw=1.8, marker="o" if len(grid) == 1 else None)
                handles.setdefault(label, line)
                if y == "metric" and x != "time_s":   # the evaluations (on the count axes, alike for every seed)
                    first = curves[g["run_id"].iloc[0]]
                    xs = first.loc[first["metric"].notna(), x].dropna().to_numpy(float) if x in first else []
                    ax.plot(xs, np.interp(xs, grid, med), ls="", marker="o", ms=3.5, color=c)
                counts[label] = max(counts.get(label, 0), n)
                if n > 1:
                    ax.fill_between(grid, lo, hi, color=c, alpha=0.18, lw=0)
                values.extend(np.concatenate([lo, hi]))
                if log:
                    ax.set_xscale("log")
            if spans_decades(values):
                ax.set_yscale("log")
            ax.set_xlabel(xlabel + (" (log)" if ax.get_xscale() == "log" else ""))
            ax.set_ylabel(ylabel if j == 0 else "")
            ax.grid(True, alpha=0.3)
    fig.legend(list(handles.values()), [f"{short_label(k)} (n={counts[k]})" for k in handles],
               loc="lower center", ncol=min(len(handles), 6), fontsize=9, frameon=False)
    fig.suptitle(f"{problem}: median over seeds (line), 95% bootstrap interval of the median (shaded), "
                 "dots: evaluations of the metric (count axes); a seed that ended earlier holds its last value",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.05 + 0.03 * ((len(handles) - 1) // 6), 1, 1))
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
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(out / "memory.png", dpi=110, bbox_inches="tight")
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
