"""Compute-equivalent multipliers: how much more compute an optimizer spends than a
reference optimizer to reach the same quality.

For one problem, an optimizer O and a reference R (default: the best gradient
optimizer of the problem, i.e. the backprop run with the best median final metric):

    q     = median over O's seeds of O's final metric (oriented, lower is better)
    c_O   = median over O's seeds of the cost O spent up to that final evaluation
    c_R   = median over R's seeds of the cost at R's first evaluation whose
            best-so-far value reaches q (infinite for a seed that never does)
    multiplier = c_O / c_R     (> 1: O needs more compute than R for the same quality)

on every cost axis the runs record (forwards, tokens, flops, seconds = the
optimizer's own time, as in targets.py). Medians are the lower sample median
(numpy's "inverted_cdf"), so a median is one seed's value and an infinite cost stays
infinite. R's cost is read at its evaluations, as the fixed-target tables read it:
the level is crossed somewhere between R's last evaluation short of it and the first
at or beyond it, so the multiplier is resolved to R's evaluation grid and errs low
by at most the ratio of two consecutive evaluation costs (log-spaced evaluation
steps keep that ratio constant). `status` says what the number is:

- "value": the multiplier, to that grid;
- "lower_bound": R already reached q at its first evaluation after the start, so
  all the data can say is multiplier >= c_O / (cost of that first evaluation);
- "no_progress": q is no better than R's start (its evaluation at cost 0): O ended
  no better than the initial model, so no multiplier exists (it is infinite); a
  bootstrap resample of that kind counts as infinite in another row's interval;
- "never_reached": R spent at least c_O and never reached q: O is better than R at
  the same compute; multiplier is the upper bound c_O / R's spent budget (<= 1);
- "beyond_budget": R stopped short of c_O without reaching q: its budget is too
  small to tell; multiplier is the upper bound c_O / R's spent budget;
- "reference": the reference itself (1).

lo/hi: a 95% percentile bootstrap interval over seeds, O's and R's seeds resampled
with replacement independently (numpy Generator, seeded, `n_boot` resamples), of
the same statistic; a resample in which R never reaches q gives an infinite
multiplier for lower_bound/value rows or the budget ratio otherwise.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from reports.targets import AXES, _oriented, higher_is_better

COLUMNS = ["problem", "optimizer", "reference", "axis", "multiplier", "lo", "hi", "status", "n_seeds",
           "n_reference_seeds", "quality", "cost", "reference_cost"]
CONFIDENCE = 0.95
STATUS_TEXT = {"value": "{}", "lower_bound": ">= {}", "no_progress": "no better than the start",
               "never_reached": "never reached (< {})",
               "beyond_budget": "beyond the reference's budget (< {})", "reference": "reference"}


def _median(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.quantile(values, 0.5, axis=axis, method="inverted_cdf")


def default_reference(runs: pd.DataFrame) -> str | None:
    """The gradient (backprop) optimizer with the best median final metric on the problem
    of `runs` (one problem's runs), or None when no backprop optimizer ran."""
    ok = runs[(runs["status"] == "ok") & runs["backprop"].fillna(False).astype(bool)]
    ok = ok[ok["final_metric"].notna()]
    if ok.empty:
        return None
    sign = -1.0 if higher_is_better(runs) else 1.0
    medians = ok.groupby("label")["final_metric"].median() * sign
    return str(medians.sort_values(kind="stable").index[0])


def _seed_arrays(prob: pd.DataFrame, label: str, curves: dict, higher: bool, axes: list[str]):
    """Per seed of `label`: final f, final cost per axis, and the oriented best-so-far curve."""
    finals, costs, paths = [], {a: [] for a in axes}, []
    for rid in prob.loc[prob["label"] == label, "run_id"]:
        d = _oriented(curves[rid], higher)
        d = d[np.isfinite(d["f"])]
        if d.empty:
            continue
        raw = curves[rid]["metric"].dropna().astype(float).iloc[-1]
        finals.append(-raw if higher else raw)
        for a in axes:
            costs[a].append(float(d[a].iloc[-1]))
        paths.append(d)
    return np.asarray(finals, float), {a: np.asarray(v, float) for a, v in costs.items()}, paths


def _reach(paths: list[pd.DataFrame], q: np.ndarray, axis: str):
    """For each reference seed and each level in q: the cost of its first evaluation at or
    beyond the level (inf if none), whether that was its first evaluation after the
    start, whether it was the start itself, and its spent budget. Shapes (seeds, levels)
    x 3, (seeds,)."""
    cost = np.full((len(paths), len(q)), np.inf)
    first = np.zeros((len(paths), len(q)), bool)
    at_start = np.zeros((len(paths), len(q)), bool)
    budget = np.zeros(len(paths))
    for i, d in enumerate(paths):
        f, c = d["f"].to_numpy(float), d[axis].to_numpy(float)
        budget[i] = c[-1]
        k = np.searchsorted(-f, -q, side="left")          # f is non-increasing: first f <= q
        hit = k < len(f)
        cost[i, hit] = c[k[hit]]
        start = c <= 0                                    # evaluations at the start (cost 0)
        n_start = int(start.sum())
        first[i, hit] = k[hit] <= n_start
        at_start[i, hit] = k[hit] < n_start
    return cost, first, at_start, budget


def _multiplier(q, c_o, paths, axis, o_idx, r_idx) -> tuple[np.ndarray, np.ndarray]:
    """(multipliers, statuses) for resamples given as seed indices o_idx (B, n_o), r_idx (B, n_r)."""
    levels = _median(q[o_idx], axis=1)
    spent = _median(c_o[o_idx], axis=1)
    cost, first, at_start, budget = _reach(paths, levels, axis)
    b = np.arange(len(levels))
    c_r = cost[r_idx, b[:, None]]                        # (B, n_r): resampled reference seeds
    order = np.argsort(c_r, axis=1, kind="stable")
    mid = order[:, (r_idx.shape[1] - 1) // 2]             # the lower median seed of each resample
    seed = r_idx[b, mid]
    c_med = c_r[b, mid]
    r_budget = _median(budget[r_idx], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        reached = np.isfinite(c_med)
        mult = np.where(reached, spent / c_med, spent / r_budget)
    status = np.where(reached, np.where(at_start[seed, b], "no_progress",
                                        np.where(first[seed, b], "lower_bound", "value")),
                      np.where(r_budget >= spent, "never_reached", "beyond_budget"))
    return mult, status


def multipliers(runs: pd.DataFrame, curves: dict[str, pd.DataFrame], reference: str | None = None,
                axes=("forwards", "tokens", "flops", "seconds"), n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per (problem, optimizer, axis) with COLUMNS; `reference` a label or optimizer
    name (default per problem: default_reference). Problems without the reference, and axes
    a run does not record, are left out."""
    columns = {v: k for k, v in AXES.items()}            # table name -> metrics.jsonl column
    rows = []
    ok = runs[runs["status"] == "ok"]
    if "backprop" not in ok:
        ok = ok.assign(backprop=False)
    for problem, prob in ok.groupby("problem", sort=True):
        ref = reference if reference is not None else default_reference(prob)
        if ref is not None and ref not in set(prob["label"]):
            named = prob.loc[prob["optimizer"] == ref, "label"].unique()
            ref = named[0] if len(named) == 1 else None
        if ref is None:
            continue
        higher = higher_is_better(prob)
        cols = [columns[a] for a in axes if a in columns and all(columns[a] in curves[r] for r in prob["run_id"])]
        rng = np.random.default_rng(seed)
        _, _, ref_paths = _seed_arrays(prob, ref, curves, higher, cols)
        for label in sorted(prob["label"].unique()):
            q, costs, _ = _seed_arrays(prob, label, curves, higher, cols)
            if len(q) == 0 or not ref_paths:
                continue
            o_boot = rng.integers(0, len(q), size=(n_boot, len(q)))
            r_boot = rng.integers(0, len(ref_paths), size=(n_boot, len(ref_paths)))
            for col in cols:
                row = {"problem": problem, "optimizer": label, "reference": ref, "axis": AXES[col],
                       "n_seeds": len(q), "n_reference_seeds": len(ref_paths),
                       "quality": float(-_median(q) if higher else _median(q)), "cost": float(_median(costs[col]))}
                if label == ref:
                    rows.append({**row, "multiplier": 1.0, "lo": 1.0, "hi": 1.0, "status": "reference",
                                 "reference_cost": row["cost"]})
                    continue
                all_o = np.arange(len(q))[None, :]
                all_r = np.arange(len(ref_paths))[None, :]
                mult, status = _multiplier(q, costs[col], ref_paths, col, all_o, all_r)
                boot, _ = _multiplier(q, costs[col], ref_paths, col, o_boot, r_boot)
                tail = (1 - CONFIDENCE) / 2
                lo, hi = (float(np.quantile(boot, p, method="inverted_cdf")) for p in (tail, 1 - tail))
                rows.append({**row, "multiplier": float(mult[0]), "lo": lo, "hi": hi, "status": str(status[0]),
                             "reference_cost": row["cost"] / float(mult[0]) if mult[0] else math.nan})
    return pd.DataFrame(rows, columns=COLUMNS)


def _num(x: float) -> str:
    return "inf" if math.isinf(x) else f"{x:.3g}"


def describe(row) -> str:
    """A multiplier as a reader says it: '29 [20, 35]', '>= 20 [...]', 'never reached (< 0.5)'."""
    text = STATUS_TEXT[row["status"]].format(_num(row["multiplier"]))
    if row["status"] in ("value", "lower_bound"):
        text += f" [{_num(row['lo'])}, {_num(row['hi'])}]"
    return text
