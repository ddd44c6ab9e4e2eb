"""Uncertainty: bootstrap intervals of the median, pairwise rank tests with Holm's
correction, and a score normalized against random search.

- median_ci: the median over seeds with a 95% percentile bootstrap interval
  (scipy.stats.bootstrap, Efron and Tibshirani 1993), seeded.
- significance: two-sided Mann-Whitney U (scipy.stats.mannwhitneyu) between
  every pair of optimizers of a problem, on the final metric and on the
  runtime to the hardest target every optimizer of the problem reached at
  least once (unsuccessful runs rank last: infinite runtime). p-values are
  Holm-corrected (statsmodels multipletests, method "holm"; Holm 1979) within
  each (problem, quantity) family. `better` names the optimizer with the better
  median only when p_holm < ALPHA (COCO uses rank-sum tests with Bonferroni,
  IOHprofiler KS tests with Holm). Beside it: the effect size (Vargha-Delaney A12,
  the probability that a run of a beats a run of b), Welch's t-test
  (scipy.stats.ttest_ind, equal_var=False: it can reach significance with 3 seeds
  per side, at the price of assuming roughly normal finals) and an exact
  permutation test of the difference in means (scipy.stats.permutation_test),
  both Holm-corrected; `min_seeds` is the seeds per side the rank test needs to be
  able to reach ALPHA after Holm, and `verdict` says "too few seeds" below it
  rather than leaving `better` blank.
- normalized score (Bayesmark): 100 (f_random - f) / (f_random - f_best), f the
  oriented final metric (lower is better), f_random the median of random
  search's runs on the problem, f_best the known optimum or else the best final
  value of any run: 0 = as good as random search, 100 = the best.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from reports.targets import higher_is_better, optimum

ALPHA = 0.05
CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 12345
RANDOM = "random"     # the optimizer the normalized score is relative to


def median_ci(values) -> tuple[float, float, float]:
    """(median, low, high): the 95% percentile-bootstrap interval of the median; with
    one value or all values equal, the interval is that value."""
    from scipy import stats

    v = np.asarray([x for x in values if x == x], dtype=float)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    med = float(np.median(v))
    if np.all(v == v[0]):
        return med, med, med
    if not np.isfinite(v).all():   # an interval with infinite ends says nothing
        return med, math.nan, math.nan
    res = stats.bootstrap((v,), np.median, confidence_level=CONFIDENCE, n_resamples=RESAMPLES,
                          method="percentile", random_state=np.random.default_rng(SEED))
    return med, float(res.confidence_interval.low), float(res.confidence_interval.high)


def a12(statistic: float, n_a: int, n_b: int, lower_better: bool) -> float:
    """Vargha-Delaney A12 from Mann-Whitney's U of sample a: the probability that a run of a
    is better than a run of b (ties count half); 0.5 = no effect, 1 = every a beats every b."""
    greater = statistic / (n_a * n_b)            # P(a > b) + P(a = b) / 2
    return 1.0 - greater if lower_better else greater


def smallest_rank_p(n_a: int, n_b: int) -> float:
    """The smallest two-sided p Mann-Whitney U (exact) can give n_a vs n_b runs: samples that
    do not overlap. The exact permutation test of a difference in means has the same floor."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(np.arange(n_a), np.arange(n_a, n_a + n_b), method="exact").pvalue)


def seeds_needed(pairs: int, alpha: float = ALPHA) -> int:
    """Seeds per side for the rank test to be able to reach `alpha` after Holm over `pairs`
    comparisons (Holm's first step multiplies the smallest p by the number of pairs)."""
    n = 2
    while smallest_rank_p(n, n) * max(pairs, 1) >= alpha:
        n += 1
    return n


def _permutation_p(xa: np.ndarray, xb: np.ndarray) -> float:
    """Two-sided permutation test of the difference in means (scipy.stats.permutation_test):
    exact when the partitions number under 9999, else 9999 seeded resamples."""
    from scipy.stats import permutation_test

    res = permutation_test((xa, xb), lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
                           permutation_type="independent", alternative="two-sided", vectorized=True,
                           n_resamples=9999, random_state=np.random.default_rng(SEED))
    return float(res.pvalue)


def _pairs_tests(problem: str, quantity: str, samples: dict[str, np.ndarray], lower_better: bool) -> list[dict]:
    """Mann-Whitney U (p_value, p_holm, better), beside it Vargha-Delaney A12, Welch's t and a
    permutation test (each Holm-corrected), and whether the seeds are enough for the rank test."""
    from scipy.stats import mannwhitneyu, ttest_ind
    from statsmodels.stats.multitest import multipletests

    rows = []
    for a, b in itertools.combinations(sorted(samples), 2):
        xa, xb = samples[a], samples[b]
        if len(xa) == 0 or len(xb) == 0:
            continue
        finite = np.isfinite(xa).all() and np.isfinite(xb).all() and len(xa) > 1 and len(xb) > 1
        if np.array_equal(np.sort(xa), np.sort(xb)) or len(set(np.concatenate([xa, xb]))) == 1:
            stat, p, p_welch, p_perm = float(len(xa) * len(xb) / 2), 1.0, 1.0, 1.0   # identical: no evidence
        else:
            res = mannwhitneyu(xa, xb, alternative="two-sided")
            stat, p = float(res.statistic), float(res.pvalue)
            # Welch's t needs a spread in both samples (runtimes on an evaluation grid often have none);
            # centring (t is shift-invariant) avoids cancellation for seeds close to a large value
            shift = np.median(np.concatenate([xa, xb])) if finite else 0.0
            spread = finite and np.ptp(xa) > 0 and np.ptp(xb) > 0
            p_welch = float(ttest_ind(xa - shift, xb - shift, equal_var=False).pvalue) if spread else math.nan
            p_perm = _permutation_p(xa, xb) if finite else math.nan
        rows.append({"problem": problem, "quantity": quantity, "optimizer_a": a, "optimizer_b": b,
                     "n_a": len(xa), "n_b": len(xb), "statistic": stat, "p_value": p,
                     "a12": a12(stat, len(xa), len(xb), lower_better),
                     "p_welch": p_welch, "p_permutation": p_perm,
                     "median_a": float(np.median(xa)), "median_b": float(np.median(xb))})
    if rows:
        p_holm = multipletests([r["p_value"] for r in rows], alpha=ALPHA, method="holm")[1]
        for key in ("p_welch", "p_permutation"):
            values = np.array([r[key] for r in rows], float)
            adjusted = np.full(len(rows), math.nan)
            known = ~np.isnan(values)
            if known.any():
                adjusted[known] = multipletests(values[known], alpha=ALPHA, method="holm")[1]
            for r, v in zip(rows, adjusted):
                r[f"{key}_holm"] = float(v)
        needed = seeds_needed(len(rows))
        for r, ph in zip(rows, p_holm):
            r["p_holm"] = float(ph)
            better_a = r["median_a"] < r["median_b"] if lower_better else r["median_a"] > r["median_b"]
            tie = r["median_a"] == r["median_b"]
            r["better"] = (r["optimizer_a"] if better_a else r["optimizer_b"]) if ph < ALPHA and not tie else ""
            r["min_seeds"] = needed
            too_few = smallest_rank_p(r["n_a"], r["n_b"]) * len(rows) >= ALPHA
            # a rejection stands (scipy's asymptotic p with ties can fall below the exact floor)
            r["verdict"] = (f"{r['better']} better" if r["better"] else
                            f"too few seeds ({min(r['n_a'], r['n_b'])} per side; {needed} needed)" if too_few
                            else "no significant difference")
    return rows


def hardest_common_target(rt: pd.DataFrame) -> int | None:
    """Index of the hardest target of one problem that every optimizer reached at least once."""
    if rt.empty:
        return None
    reached = rt[rt["success"]].groupby("optimizer")["target_index"].max()
    if len(reached) < rt["optimizer"].nunique():
        return None
    return int(reached.min())


SIGNIFICANCE_COLUMNS = ["problem", "quantity", "optimizer_a", "optimizer_b", "n_a", "n_b", "statistic",
                        "p_value", "p_holm", "better", "a12", "p_welch", "p_welch_holm", "p_permutation",
                        "p_permutation_holm", "min_seeds", "verdict"]


def significance(runs: pd.DataFrame, rt: pd.DataFrame, axis: str = "forwards") -> pd.DataFrame:
    """significance.csv: one row per (problem, quantity, pair of optimizers)."""
    cols = SIGNIFICANCE_COLUMNS
    rows = []
    ok = runs[runs["status"] == "ok"]
    for problem, prob in ok.groupby("problem", sort=True):
        higher = higher_is_better(prob)
        samples = {label: g["final_metric"].dropna().to_numpy(float) for label, g in prob.groupby("label")}
        rows += _pairs_tests(problem, "final_metric", samples, lower_better=not higher)
        sub = rt[rt["problem"] == problem] if not rt.empty else rt
        col = f"runtime_{axis}" if f"runtime_{axis}" in sub else "runtime_evals"
        i = hardest_common_target(sub)
        if i is None or col not in sub:
            continue
        at = sub[sub["target_index"] == i]
        target = at["target"].iloc[0]
        samples = {label: g[col].fillna(np.inf).to_numpy(float) for label, g in at.groupby("optimizer")}
        rows += _pairs_tests(problem, f"{col[len('runtime_'):]}_to_target {target:.4g}", samples, lower_better=True)
    return pd.DataFrame(rows, columns=cols + ["median_a", "median_b"])[cols] if rows else pd.DataFrame(columns=cols)


def winners(sig: pd.DataFrame, quantity: str = "final_metric") -> dict[str, str]:
    """{problem: optimizer} where one optimizer is significantly better (p_holm < ALPHA)
    than every other optimizer of the problem on `quantity`."""
    out = {}
    for problem, g in sig[sig["quantity"] == quantity].groupby("problem"):
        names = set(g["optimizer_a"]) | set(g["optimizer_b"])
        for name in names:
            mine = g[(g["optimizer_a"] == name) | (g["optimizer_b"] == name)]
            if len(mine) == len(names) - 1 and (mine["better"] == name).all():
                out[problem] = name
    return out


def normalized_scores(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (problem, optimizer): the median normalized score over its ok seeds, on problems
    where random search ran (Bayesmark's normalization)."""
    rows = []
    ok = runs[runs["status"] == "ok"]
    for problem, prob in ok.groupby("problem", sort=True):
        rand = prob[prob["optimizer"] == RANDOM]["final_metric"].dropna()
        if rand.empty:
            continue
        sign = -1.0 if higher_is_better(prob) else 1.0
        f = prob["final_metric"].astype(float) * sign
        f_rand = float(np.median(rand.astype(float) * sign))
        opt = optimum(problem)
        f_best = opt * sign if opt is not None else float(f.min())
        if not f_rand > f_best:
            continue
        for label, g in prob.assign(f=f).groupby("label", sort=True):
            scores = 100.0 * (f_rand - g["f"].dropna()) / (f_rand - f_best)
            med, lo, hi = median_ci(scores)
            rows.append({"problem": problem, "optimizer": label, "seeds": len(scores),
                         "score_median": med, "score_ci_low": lo, "score_ci_high": hi,
                         "f_random": f_rand * sign, "f_best": f_best * sign})
    return pd.DataFrame(rows)
