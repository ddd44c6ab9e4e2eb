"""The AlgoPerf performance profile on time to target, and its integrated score.

AlgoPerf (Dahl et al., "Benchmarking Neural Network Training Algorithms",
arXiv:2306.07179, section 4.5): per workload (here: problem) the time of a
submission (optimizer) is its time to reach the workload's target; the
performance ratio r = t / min over optimizers of t; the profile
rho(tau) = fraction of problems with r <= tau; the score is

    score = 1 / (tau_max - 1) * integral from 1 to tau_max of rho(tau) dtau,  tau_max = 4

(1: fastest everywhere, 0: never within 4x of the fastest or never reached).
Here the target of a problem is the hardest of its targets (reports.targets)
that the median run of at least one optimizer reaches, the time is optimizer
seconds (evaluation untimed, as in AlgoPerf), and an optimizer's time is the
median over its seeds (infinite when fewer than half reach the target).
Optimizers are compared within a family of problems (the ones they all ran).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.integrate import trapezoid
import pandas as pd

from reports.style import colour

import matplotlib.pyplot as plt  # noqa: E402

TAU_MAX = 4.0


def times(rt: pd.DataFrame, axis: str = "seconds") -> pd.DataFrame:
    """One row per (problem, optimizer): target, median time to it (inf if unreached)."""
    col = f"runtime_{axis}"
    rows = []
    if rt.empty or col not in rt:
        return pd.DataFrame(rows)
    for problem, sub in rt.groupby("problem", sort=True):
        med = (sub.assign(t=sub[col].where(sub["success"], np.inf))
               .groupby(["optimizer", "target_index"])["t"].median().unstack())
        finite = med.columns[np.isfinite(med.to_numpy()).any(axis=0)]
        if not len(finite):
            continue
        i = int(max(finite))
        target = sub[sub["target_index"] == i]["target"].iloc[0]
        for label, t in med[i].items():
            rows.append({"problem": problem, "optimizer": label, "target_index": i, "target": target,
                         f"median_{axis}": float(t)})
    return pd.DataFrame(rows)


def profile(t: pd.DataFrame, family_of: dict[str, str], axis: str = "seconds"):
    """(scores table, {family: (taus, {label: rho})})."""
    rows, curves = [], {}
    if t.empty:
        return pd.DataFrame(rows), curves
    taus = np.linspace(1.0, TAU_MAX, 301)
    for family, fam in t.groupby(t["problem"].map(family_of), sort=True):
        wide = fam.pivot(index="problem", columns="optimizer", values=f"median_{axis}")
        best = wide.min(axis=1)
        r = wide.div(best.replace(0, np.nan), axis=0)
        r[wide == 0] = 1.0
        curves[family] = (taus, {})
        for label in wide.columns:
            col = r[label].to_numpy(float)
            rho = np.array([(col <= tau).mean() for tau in taus])
            curves[family][1][label] = rho
            rows.append({"family": family, "optimizer": label, "problems": len(col),
                         "score": float(trapezoid(rho, taus) / (TAU_MAX - 1.0))})
    return pd.DataFrame(rows).sort_values(["family", "score"], ascending=[True, False]), curves


def figure(curves: dict, out: Path) -> str | None:
    if not curves:
        return None
    n = len(curves)
    fig, axes = plt.subplots(1, n, figsize=(6 * n, 4.4), squeeze=False)
    for ax, (family, (taus, lines)) in zip(axes[0], curves.items()):
        for label, rho in lines.items():
            ax.step(taus, rho, where="post", color=colour(label), lw=2, label=label)
        ax.set_xlim(1, TAU_MAX)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("tau: within this factor of the fastest (optimizer seconds to target)")
        ax.set_ylabel("fraction of problems")
        ax.set_title(family)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("AlgoPerf performance profile on time to target (median over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "algoperf_profile.png", dpi=110)
    plt.close(fig)
    return "algoperf_profile.png"
