"""Dolan-More performance profile across problems.

Criterion (stated on the figure and in the index): the cost of a run is the
number of evaluations, or the optimizer seconds, until its best-so-far train
loss reaches the problem's target

    target = f_best + TAU_TARGET * (f_0 - f_best)

(the Moré-Wild convergence test), where f_0 is the median first-step loss of
the problem's runs and f_best the best loss any run reached. An optimizer's
cost on a problem is the median over its seeds; a run that never reaches the
target, or failed, costs infinity. rho_s(tau) is the fraction of problems on
which optimizer s costs at most tau times the cheapest optimizer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reports.style import colour

import matplotlib.pyplot as plt  # noqa: E402

TAU_TARGET = 0.1
NOTE = ("cost of a run = evaluations (or optimizer seconds) until its best-so-far train loss reaches "
        f"target = f_best + {TAU_TARGET} (f_0 - f_best) (More-Wild convergence test; f_0 = median first-step "
        "loss of the problem's runs, f_best = best loss any run reached); an optimizer's cost is the "
        "median over its seeds, a run that never reaches the target or failed costs infinity; "
        "rho(tau) = fraction of problems on which the optimizer costs at most tau times the cheapest.")
COSTS = {"evals": "evaluations to target", "time_s": "optimizer seconds to target"}


def _first_loss(curve: pd.DataFrame) -> float:
    d = curve[curve["step"] > 0]["loss"].dropna() if "loss" in curve else []
    return float(d.iloc[0]) if len(d) else np.nan


def costs(runs: pd.DataFrame, curves: dict) -> pd.DataFrame:
    """One row per (problem, optimizer): target, cost_evals, cost_time_s, seeds reaching it."""
    rows = []
    for problem, prob in runs.groupby("problem", sort=True):
        f0 = np.nanmedian([_first_loss(curves[r]) for r in prob["run_id"]] or [np.nan])
        finite = prob["best_loss"][np.isfinite(prob["best_loss"]) & (prob["status"] != "failed")]
        if finite.empty or not np.isfinite(f0):
            continue
        fbest = float(finite.min())
        target = fbest + TAU_TARGET * max(f0 - fbest, 0.0)
        for label, g in prob.groupby("label", sort=True):
            per_seed = {"evals": [], "time_s": []}
            for _, run in g.iterrows():
                c = curves[run["run_id"]]
                hit = None
                if run["status"] != "failed" and "loss" in c:
                    d = c[(c["step"] > 0) & c["loss"].notna()]
                    reached = d[d["loss"].cummin() <= target]
                    hit = reached.iloc[0] if len(reached) else None
                for key in per_seed:
                    per_seed[key].append(float(hit[key]) if hit is not None else np.inf)
            rows.append({"problem": problem, "optimizer": label, "target_loss": target, "f0": f0,
                         "f_best": fbest, "seeds": len(g),
                         "reached": int(np.isfinite(per_seed["evals"]).sum()),
                         "cost_evals": float(np.median(per_seed["evals"])),
                         "cost_time_s": float(np.median(per_seed["time_s"]))})
    return pd.DataFrame(rows)


def ratios(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Performance ratio r_{p,s} = cost / min over optimizers, problems x optimizers."""
    wide = table.pivot(index="problem", columns="optimizer", values=column)
    best = wide.min(axis=1).replace(0, np.nan)
    # a cost of 0 (reached at the first record) is the best possible: ratio 1
    r = wide.div(best, axis=0)
    r[(wide == 0)] = 1.0
    return r


def figure(table: pd.DataFrame, out: Path) -> str | None:
    if table.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), squeeze=False)
    n_problems = table["problem"].nunique()
    for ax, (column, what) in zip(axes[0], (("cost_evals", COSTS["evals"]), ("cost_time_s", COSTS["time_s"]))):
        r = ratios(table, column)
        finite = r.to_numpy()[np.isfinite(r.to_numpy())]
        tau_max = max(2.0, float(finite.max()) * 1.5) if finite.size else 2.0
        taus = np.geomspace(1.0, tau_max, 400)
        for label in r.columns:
            col = r[label].to_numpy()
            rho = [(col <= t).sum() / n_problems for t in taus]
            ax.step(taus, rho, where="post", color=colour(label), lw=2, label=label)
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"tau: within this factor of the best ({what}; log2 scale)")
        ax.set_ylabel(f"fraction of the {n_problems} problems")
        ax.set_title(f"cost = {what}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=9, loc="lower right")
    fig.suptitle(f"Performance profile (Dolan-Moré): target loss = f_best + {TAU_TARGET} (f_0 - f_best), "
                 "median over seeds; never reached = infinite", fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "profile.png", dpi=110)
    plt.close(fig)
    return "profile.png"
