"""The memory-quality trade-off: peak memory (log) against final quality, one panel per
problem, each seed a point, the Pareto front of all points drawn.

On CPU a run's peak memory is its process's peak RSS, which includes the interpreter
and libraries. Where every run of a problem recorded the planner's measured framework
RSS (summary.json `framework_bytes`, harness.planner.framework) the panel shows the
peak minus that baseline, the run's own memory; otherwise the whole RSS, and says so.
On CUDA it is the allocator's peak (tensors only) and nothing is subtracted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reports.plots import short_label
from reports.style import colour
from reports.targets import higher_is_better

import matplotlib.pyplot as plt  # noqa: E402  (after reports.style chose the Agg backend)
from matplotlib.ticker import FuncFormatter  # noqa: E402

MIB = 2**20


def pareto_front(memory: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats on both axes (less memory, quality at
    least as good; quality oriented so that lower is better), by increasing memory."""
    order = np.lexsort((quality, memory))
    front, best = [], np.inf
    for i in order:
        if quality[i] < best:
            front.append(i)
            best = quality[i]
    return np.asarray(front, int)


def memory_of(prob: pd.DataFrame) -> tuple[pd.Series, str]:
    """(MiB per run, axis label) for one problem's runs."""
    methods = set(prob["peak_memory_method"].dropna())
    peak = prob["peak_memory_bytes"].astype(float)
    cpu = methods and all(str(m).startswith("peak_rss") for m in methods)
    fw = prob["framework_bytes"].astype(float) if "framework_bytes" in prob else pd.Series(np.nan, prob.index)
    if cpu and fw.notna().all() and len(fw):
        return ((peak - fw) / MIB, f"peak RSS minus the framework baseline ({fw.median() / MIB:.0f} MiB: interpreter, "
                                   "torch, libraries, measured by the planner), MiB, log")
    if cpu:
        return peak / MIB, "peak RSS of the run's process (includes interpreter + libraries), MiB, log"
    if methods == {"cuda_max_memory_allocated"}:
        return peak / MIB, "CUDA allocator peak (tensors only), MiB, log"
    return peak / MIB, "peak memory (RSS on CPU runs, CUDA allocator peak on GPU runs), MiB, log"


def figure(runs: pd.DataFrame, out: Path) -> str | None:
    """memory_quality.png, or None when no run finished ok with a metric and a peak."""
    ok = runs[(runs["status"] == "ok") & runs["final_metric"].notna() & (runs["peak_memory_bytes"] > 0)]
    problems = sorted(ok["problem"].unique())
    if not problems:
        return None
    cols = min(len(problems), 3)
    rows = -(-len(problems) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.8 * rows), squeeze=False)
    handles = {}
    for ax, problem in zip(axes.flat, problems):
        prob = ok[ok["problem"] == problem]
        mem, ylabel = memory_of(prob)
        keep = mem > 0                      # log axis; a run at or below the baseline cannot show
        prob, mem = prob[keep], mem[keep]
        higher = higher_is_better(prob)
        quality = prob["final_metric"].astype(float)
        for label, g in prob.groupby("label", sort=True):
            handles[label] = ax.scatter(quality[g.index], mem[g.index], color=colour(label), s=36,
                                        edgecolor="black", linewidth=0.4, zorder=3)
        oriented = (-quality if higher else quality).to_numpy()
        front = pareto_front(mem.to_numpy(), oriented)
        if len(front):
            ax.step(quality.to_numpy()[front], mem.to_numpy()[front], where="post", color="0.3", lw=1.2,
                    ls="--", zorder=2, label="Pareto front")
        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")   # 420, not 4.2x10^2, on a narrow log range
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.tick_params(axis="y", which="minor", labelsize=7)
        metric = prob["metric_name"].dropna().iloc[0] if prob["metric_name"].notna().any() else "final metric"
        ax.set_xlabel(f"final {metric} ({'higher' if higher else 'lower'} is better "
                      f"{'→' if higher else '←'})")
        ax.set_ylabel("\n".join(_wrap(ylabel, 48)), fontsize=8)
        ax.set_title(problem)
        ax.grid(True, which="both", alpha=0.3)
        dropped = int((~keep).sum())
        if dropped:
            ax.text(0.01, 0.01, f"{dropped} run(s) at or below the baseline not shown", transform=ax.transAxes,
                    fontsize=7, color="0.35")
    for ax in list(axes.flat)[len(problems):]:
        ax.axis("off")
    labels = list(handles)
    front_handle = plt.Line2D([], [], color="0.3", ls="--", lw=1.2)
    fig.legend([handles[k] for k in labels] + [front_handle], [short_label(k) for k in labels] + ["Pareto front"],
               loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=9, frameon=False)
    fig.suptitle("Memory against final quality: each point one seed; dashed: the Pareto front "
                 "(no point has less memory and better quality)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "memory_quality.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "memory_quality.png"


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width)
