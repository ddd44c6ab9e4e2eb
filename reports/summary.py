"""The answer first: one sentence per problem for the top of the index, and the table of
compute-equivalent multipliers (reports/equivalence.py).

The sentence names the optimizer with the best median final metric at the budget,
its margin over the runner-up (difference of medians with a 95% percentile
bootstrap interval, scipy.stats.bootstrap, seeded), the effect size (A12) and what
the tests say (significance.csv: the rank test's verdict, "too few seeds" included,
and Welch's t), then each other optimizer's multiplier against the reference.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from reports import equivalence
from reports.stats import ALPHA, CONFIDENCE, RESAMPLES, SEED
from reports.tables import slug
from reports.targets import higher_is_better

AXIS_UNITS = {"forwards": "forward-pass equivalents", "tokens": "tokens", "flops": "FLOPs",
              "seconds": "optimizer seconds"}


def margin_ci(better: np.ndarray, other: np.ndarray) -> tuple[float, float, float]:
    """median(better) - median(other) with its 95% percentile-bootstrap interval (the two
    samples resampled independently)."""
    from scipy import stats

    diff = float(np.median(better) - np.median(other))
    if len(better) < 2 or len(other) < 2:
        return diff, math.nan, math.nan
    res = stats.bootstrap((better, other), lambda x, y, axis: np.median(x, axis=axis) - np.median(y, axis=axis),
                          confidence_level=CONFIDENCE, n_resamples=RESAMPLES, method="percentile",
                          vectorized=True, random_state=np.random.default_rng(SEED))
    return diff, float(res.confidence_interval.low), float(res.confidence_interval.high)


def _pair(sig: pd.DataFrame, problem: str, a: str, b: str) -> pd.Series | None:
    rows = sig[(sig["problem"] == problem) & (sig["quantity"] == "final_metric")
               & (((sig["optimizer_a"] == a) & (sig["optimizer_b"] == b))
                  | ((sig["optimizer_a"] == b) & (sig["optimizer_b"] == a)))]
    return rows.iloc[0] if len(rows) else None


def _budget(prob: pd.DataFrame) -> str:
    for col, unit in (("forwards", "forwards"), ("evals", "evaluations"), ("steps", "steps")):
        values = prob[col].dropna()
        if len(values):
            return f"{values.median():.4g} {unit}"
    return "its budget"


def sentence(problem: str, runs: pd.DataFrame, sig: pd.DataFrame, mult: pd.DataFrame, axis: str = "forwards") -> str:
    """One problem's answer in one paragraph."""
    prob = runs[(runs["problem"] == problem) & (runs["status"] == "ok") & runs["final_metric"].notna()]
    if prob.empty:
        return f"**{problem}**: no run finished ok with a final metric."
    higher = higher_is_better(prob)
    metric = prob["metric_name"].dropna().iloc[0] if prob["metric_name"].notna().any() else "final metric"
    sign = -1.0 if higher else 1.0
    samples = {label: g["final_metric"].to_numpy(float) for label, g in prob.groupby("label")}
    order = sorted(samples, key=lambda k: sign * float(np.median(samples[k])))
    win = order[0]
    text = (f"**{problem}**: at the budget ({_budget(prob)}) **{win}** has the best median final {metric} "
            f"({'higher' if higher else 'lower'} is better), {np.median(samples[win]):.4g} "
            f"over {len(samples[win])} seeds")
    if len(order) > 1:
        second = order[1]
        diff, lo, hi = margin_ci(samples[win], samples[second])
        ci = f" [95% CI {lo:.3g}, {hi:.3g}]" if lo == lo else ""
        text += f"; ahead of {second} ({np.median(samples[second]):.4g}) by {abs(diff):.3g}{ci}"
        pair = _pair(sig, problem, win, second)
        if pair is not None:
            a12 = pair["a12"] if pair["optimizer_a"] == win else 1.0 - pair["a12"]
            welch = pair.get("p_welch_holm", math.nan)
            welch_text = (f"; Welch's t: p_holm = {welch:.2g} ({'significant' if welch < ALPHA else 'not significant'}"
                          f" at {ALPHA})" if welch == welch else "")
            text += (f", A12 = {a12:.2f} (the chance that a run of {win} beats one of {second}); Mann-Whitney U: "
                     f"{pair['verdict']} (p_holm = {pair['p_holm']:.2g}){welch_text}")
    rows = mult[(mult["problem"] == problem) & (mult["axis"] == axis) & (mult["status"] != "reference")]
    if len(rows):
        ref = rows["reference"].iloc[0]
        parts = [f"{r['optimizer']} {equivalence.describe(r)}" for _, r in rows.iterrows()]
        text += (f". Compute multiplier against {ref} ({AXIS_UNITS.get(axis, axis)} to reach the same final "
                 f"{metric}; > 1 = needs more): " + "; ".join(parts))
    return text + "."


def multiplier_tables(mult: pd.DataFrame, out: Path) -> dict[str, dict]:
    """equivalence.csv (every problem, optimizer, axis) and equivalence_<problem>.md: one row
    per optimizer, one column per cost axis; returns {problem: {"md": name, "markdown": text}}."""
    mult.to_csv(out / "equivalence.csv", index=False)
    files = {}
    for problem, g in mult.groupby("problem", sort=True):
        view = g.assign(text=[equivalence.describe(r) for _, r in g.iterrows()])
        table = view.pivot(index="optimizer", columns="axis", values="text")
        table = table[[a for a in equivalence_axes(g) if a in table]]
        table.columns = [f"{a} (x, 95% CI) ↓" for a in table.columns]
        text = table.reset_index().to_markdown(index=False)
        name = f"equivalence_{slug(problem)}.md"
        ref = g["reference"].iloc[0]
        (out / name).write_text(f"# Compute-equivalent multiplier: {problem} (reference {ref})\n\n{text}\n\n"
                                f"{LEGEND}\n")
        files[problem] = {"md": name, "markdown": text, "reference": ref}
    return files


def equivalence_axes(g: pd.DataFrame) -> list[str]:
    return [a for a in ("forwards", "tokens", "flops", "seconds") if a in set(g["axis"])]


LEGEND = ("The optimizer's cost over the reference's cost to reach the optimizer's median final metric "
          "(> 1: it needs more compute; lower is better), median over seeds with a 95% bootstrap interval over "
          "both sides' seeds; '>=': the reference was already there at its first evaluation, so only a bound; "
          "'never reached' / 'beyond the reference's budget': the reference did not get there (an upper "
          "bound). Definitions: reports/equivalence.py and docs/analysis.md; all axes: equivalence.csv.")
