"""Runtime ECDFs over (problem, target) pairs, their AUC, per cost axis.

For one optimizer and a set of problems (one family: the optimizers of a family
ran on the same problems), ECDF(x) is the fraction of (run, problem, target)
triples whose runtime to the target is at most x, each (problem, target) pair
weighted equally (COCO's runtime distributions, Hansen et al. arXiv:1605.03560;
IOHprofiler's fixed-target ECDF). Unsuccessful runs never count. The band is
the 5-95% percentile range of the ECDF over bootstrap resamples of each
problem's runs. AUC is the area under the ECDF over log10(cost) from the
smallest positive runtime to the largest budget of the family, divided by that
width (IOHprofiler's AUC, in [0, 1], higher is better).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.integrate import trapezoid
import pandas as pd

from reports.style import colour
from reports.tables import slug

import matplotlib.pyplot as plt  # noqa: E402

BOOTSTRAP = 200
SEED = 12345
POINTS = 200
LABELS = {"evals": "evaluations", "forwards": "forward-pass equivalents", "seconds": "optimizer seconds",
          "tokens": "tokens", "flops": "FLOPs (analytic)"}


def axes_of(rt: pd.DataFrame) -> list[str]:
    return [c[len("runtime_"):] for c in rt.columns if c.startswith("runtime_")]


def _matrices(rt: pd.DataFrame, axis: str) -> dict[str, dict[str, np.ndarray]]:
    """{optimizer: {problem: runs x targets runtimes, inf where unsuccessful}}."""
    out: dict[str, dict[str, np.ndarray]] = {}
    col = f"runtime_{axis}"
    for (label, problem), g in rt.groupby(["optimizer", "problem"], sort=True):
        if g[f"budget_{axis}"].isna().all():
            continue
        wide = g.pivot_table(index="run_id", columns="target_index", values=col, aggfunc="first", dropna=False)
        succ = g.pivot_table(index="run_id", columns="target_index", values="success", aggfunc="first")
        m = np.where(succ.to_numpy(bool), wide.reindex_like(succ).to_numpy(float), np.inf)
        out.setdefault(label, {})[problem] = m
    return out


def _ecdf(mats: dict[str, np.ndarray], grid: np.ndarray) -> np.ndarray:
    """Weighted over problems by their number of targets (each pair counts once)."""
    total = sum(m.shape[1] for m in mats.values())
    acc = np.zeros_like(grid)
    for m in mats.values():
        acc += (m.reshape(-1)[None, :] <= grid[:, None]).mean(1) * m.shape[1]
    return acc / max(total, 1)


def curves(rt: pd.DataFrame, axis: str, family_of: dict[str, str]) -> tuple[pd.DataFrame, dict]:
    """(auc table, {family: (grid, {label: (ecdf, lo, hi)})})."""
    rng = np.random.default_rng(SEED)
    mats = _matrices(rt, axis)
    rows, plots = [], {}
    families = sorted({family_of[p] for per in mats.values() for p in per})
    for family in families:
        fam = {label: {p: m for p, m in per.items() if family_of[p] == family} for label, per in mats.items()}
        fam = {k: v for k, v in fam.items() if v}
        sub = rt[rt["problem"].map(family_of) == family]
        finite = sub[f"runtime_{axis}"].to_numpy(float)
        finite = finite[np.isfinite(finite) & (finite > 0)]
        hi = float(np.nanmax(sub[f"budget_{axis}"].to_numpy(float)))
        lo = float(finite.min()) if finite.size else hi / 10
        if not (hi > 0 and lo > 0):
            continue
        hi = max(hi, lo * 10)
        grid = np.geomspace(lo, hi, POINTS)
        plots[family] = (grid, {})
        for label, per in sorted(fam.items()):
            y = _ecdf(per, grid)
            boots = np.vstack([_ecdf({p: m[rng.integers(0, len(m), len(m))] for p, m in per.items()}, grid)
                               for _ in range(BOOTSTRAP)])
            band = np.percentile(boots, [5, 95], axis=0)
            plots[family][1][label] = (y, band[0], band[1])
            auc = float(trapezoid(y, np.log10(grid)) / (np.log10(hi) - np.log10(lo)))
            auc_b = trapezoid(boots, np.log10(grid), axis=1) / (np.log10(hi) - np.log10(lo))
            rows.append({"axis": axis, "family": family, "optimizer": label,
                         "problems": len(per), "pairs": sum(m.shape[1] for m in per.values()),
                         "auc": auc, "auc_p5": float(np.percentile(auc_b, 5)),
                         "auc_p95": float(np.percentile(auc_b, 95)),
                         "final_fraction": float(y[-1])})
    auc = pd.DataFrame(rows)
    if not auc.empty:
        auc["rank"] = auc.groupby(["axis", "family"])["auc"].rank(ascending=False, method="min").astype(int)
        auc = auc.sort_values(["axis", "family", "rank"]).reset_index(drop=True)
    return auc, plots


def figure(axis: str, plots: dict, out: Path, problems: dict[str, list[str]] | None = None) -> str | None:
    """One panel per family, titled by its problems (`problems`: family -> names)."""
    from matplotlib.ticker import NullFormatter

    if not plots:
        return None
    n = len(plots)
    fig, axes = plt.subplots(1, n, figsize=(6.2 * n, 4.6), squeeze=False)
    for ax, (family, (grid, lines)) in zip(axes[0], plots.items()):
        for label, (y, lo, hi) in lines.items():
            c = colour(label)
            ax.step(grid, y, where="post", color=c, lw=2, label=label)
            ax.fill_between(grid, lo, hi, step="post", color=c, alpha=0.18, lw=0)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())   # decade labels only: minor labels overlap
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"{LABELS.get(axis, axis)} (log scale)")
        ax.set_ylabel("fraction of (run, target) pairs reached")
        names = (problems or {}).get(family, [])
        ax.set_title(", ".join(names) if 0 < len(names) <= 3 else f"{family} ({len(names)} problems)"
                     if names else family)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.suptitle(f"Runtime ECDF on {LABELS.get(axis, axis)}\neach (problem, target) pair weighted equally; "
                 "band = 5-95% bootstrap over runs", fontsize=9)
    fig.tight_layout()
    name = f"ecdf_{slug(axis)}.png"
    fig.savefig(out / name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return name
