"""The figure of an ablation study (studies/reproductions/ea4llm_ablation.py): held-out
loss against iterations and against estimated forward FLOPs, one panel row per ablated
setting, one curve per level (the mean over seeds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import reports.style  # noqa: F401  (the Agg backend, before pyplot)
import matplotlib.pyplot as plt  # noqa: E402


def ablation_figure(rows: list[dict], curves: dict, fixed: dict[str, str], path: Path) -> None:
    """rows: one per (ablation, level, seed) with its run name; curves: run name ->
    (iterations, FLOPs so far, held-out loss) at each evaluation; fixed: per ablation, what
    was held fixed (the panel's title)."""
    ablations = list(fixed)
    fig, axes = plt.subplots(len(ablations), 2, figsize=(11, 4 * len(ablations)), squeeze=False)
    for r, ablation in enumerate(ablations):
        levels = list(dict.fromkeys(x["level"] for x in rows if x["ablation"] == ablation))
        cmap = plt.get_cmap("viridis")
        for i, level in enumerate(levels):
            runs = [x["run"] for x in rows if x["ablation"] == ablation and x["level"] == level]
            steps, flops, _ = curves[runs[0]]
            loss = np.mean([curves[name][2] for name in runs], axis=0)
            colour = cmap(i / max(len(levels) - 1, 1))
            axes[r, 0].plot(steps, loss, marker="o", ms=3, color=colour, label=f"{ablation}={level}")
            axes[r, 1].plot(flops, loss, marker="o", ms=3, color=colour, label=f"{ablation}={level}")
        axes[r, 0].set_title(f"{ablation} ablation ({fixed[ablation]})")
        axes[r, 0].set_xlabel("iteration")
        axes[r, 1].set_xlabel("forward FLOPs, all members (estimate, harness.costs)")
        for ax in axes[r]:
            ax.set_ylabel("held-out loss")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
