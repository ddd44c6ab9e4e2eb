"""Fixed-target analysis: targets per problem, each run's runtime to each target, aRT.

The quantity is the problem's held-out metric as recorded (the like-for-like
comparison), oriented so that lower is better (f = metric, or -metric when
higher is better), best so far. Targets per problem:

- a known optimum (SearchSpaceProblem.OPTIMUM): the 51 COCO targets
  f_opt + 10^k, k = 2, 1.8, ..., -8 (Hansen et al., "COCO: performance
  assessment", arXiv:1605.03560, section 2);
- otherwise the IOHprofiler default: 10 values spaced evenly between the worst
  initial value and the best final value over all runs of the problem
  (Doerr et al., IOHanalyzer, ACM TELO 2022); the worst initial value itself
  is left out, every run starts there;
- or given: `report --targets PROBLEM=v1,v2,...` in the metric's own units.

The runtime of a run to a target, on a cost axis (evals, forwards, seconds,
tokens, flops), is the cumulative cost at the first record whose best-so-far
value reaches the target; a run that never does is unsuccessful and
contributes its whole spent budget. aRT (COCO) = ERT (Auger and Hansen 2005):

    aRT = (sum of runtimes of successful runs + sum of budgets of unsuccessful runs) / successes

(infinite with no success). With `--memory-limit`, a run whose peak memory
exceeds the limit counts as unsuccessful on every target.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from harness.errors import UsageError

# cost axes: column in metrics.jsonl -> name in the tables (ert_<name>)
AXES = {"evals": "evals", "forwards": "forwards", "time_s": "seconds", "tokens": "tokens", "flops": "flops"}
COCO_TARGETS = np.logspace(2, -8, 51)
IOH_TARGETS = 10
BOOTSTRAP = 1000
SEED = 12345   # bootstrap resampling is seeded: the same runs give the same report


def optimum(problem: str) -> float | None:
    """The problem's known optimal value (SearchSpaceProblem.OPTIMUM), if it declares one."""
    from harness import registry
    from harness.problem import SearchSpaceProblem

    try:
        cls = registry.problem(problem).factory
    except Exception:  # a run of a problem this checkout does not register
        return None
    return cls.OPTIMUM if isinstance(cls, type) and issubclass(cls, SearchSpaceProblem) else None


def parse_targets(items: list[str] | None) -> dict[str, list[float]]:
    """--targets PROBLEM=v1,v2,... (repeatable) -> {problem: [values]}."""
    out = {}
    for item in items or []:
        name, sep, values = item.partition("=")
        try:
            parsed = [float(v) for v in values.split(",") if v.strip()]
        except ValueError:
            parsed = []
        if not sep or not name.strip() or not parsed:
            raise UsageError(f"--targets {item}: expected PROBLEM=v1,v2,... with numbers, "
                             f"e.g. --targets sphere-2=1,0.1,0.01")
        out[name.strip()] = parsed
    return out


def parse_bytes(text: str | None) -> float | None:
    """--memory-limit 80GiB / 512MiB / 1e9 -> bytes."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([KMGT]i?B|B)?\s*", text)
    units = {None: 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
             "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
    try:
        value = float(m.group(1)) * units[m.group(2)] if m else -1.0
    except ValueError:
        value = -1.0
    if not value > 0:
        raise UsageError(f"--memory-limit {text}: expected a positive size such as 80GiB, 512MiB or 1e9")
    return value


def higher_is_better(runs: pd.DataFrame) -> bool:
    """The metric's direction as the runs' config.json recorded it (default: lower)."""
    h = runs["metric_higher_is_better"].dropna()
    return bool(h.iloc[0]) if len(h) else False


def _oriented(curve: pd.DataFrame, higher: bool) -> pd.DataFrame:
    """Records with a metric: the cost axes and f = best-so-far oriented metric."""
    if "metric" not in curve:
        return curve.iloc[0:0].assign(f=[])
    d = curve[curve["metric"].notna()].copy()
    f = -d["metric"].astype(float) if higher else d["metric"].astype(float)
    d["f"] = f.where(np.isfinite(f), np.inf).cummin()
    return d


def problem_targets(problem: str, runs: pd.DataFrame, oriented: dict, given: dict) -> tuple[str, np.ndarray]:
    """(source, targets as oriented f values, easiest first)."""
    higher = higher_is_better(runs)
    if problem in given:
        values = np.asarray(given[problem], float)
        f = -values if higher else values
        return "given", np.sort(f)[::-1]
    opt = optimum(problem)
    if opt is not None:
        f_opt = -opt if higher else opt
        return "coco", f_opt + COCO_TARGETS
    starts = [d["f"].iloc[0] for d in oriented.values() if len(d) and np.isfinite(d["f"].iloc[0])]
    ends = [d["f"].iloc[-1] for d in oriented.values() if len(d) and np.isfinite(d["f"].iloc[-1])]
    if not starts or not ends or max(starts) <= min(ends):
        return "ioh", np.array([])
    return "ioh", np.linspace(max(starts), min(ends), IOH_TARGETS + 1)[1:]


def runtimes(runs: pd.DataFrame, curves: dict, given: dict | None = None,
             memory_limit: float | None = None) -> pd.DataFrame:
    """One row per (run, target): problem, optimizer, seed, target (metric units), target_f,
    target_index, source, success, and per axis runtime_<axis> (NaN unless success) and
    budget_<axis> (the run's whole spent cost)."""
    given = given or {}
    rows = []
    for problem, prob in runs.groupby("problem", sort=True):
        higher = higher_is_better(prob)
        oriented = {r: _oriented(curves[r], higher) for r in prob["run_id"]}
        source, targets = problem_targets(problem, prob, oriented, given)
        axes = [a for a in AXES if all(a in curves[r] for r in prob["run_id"])]
        for _, run in prob.iterrows():
            d, full = oriented[run["run_id"]], curves[run["run_id"]]
            over = memory_limit is not None and run["peak_memory_bytes"] > memory_limit
            budget = {a: float(pd.to_numeric(full[a], errors="coerce").max()) if len(full) else math.nan
                      for a in axes}
            for i, t in enumerate(targets):
                reached = d[d["f"] <= t] if not over else d.iloc[0:0]
                hit = reached.iloc[0] if len(reached) else None
                row = {"problem": problem, "optimizer": run["label"], "run_id": run["run_id"],
                       "seed": run["seed"], "source": source, "target_index": i,
                       "target": -t if higher else t, "target_f": t, "success": hit is not None}
                for a in axes:
                    cost = float(hit[a]) if hit is not None and hit[a] == hit[a] else 0.0
                    row[f"runtime_{AXES[a]}"] = cost if hit is not None else math.nan
                    row[f"budget_{AXES[a]}"] = budget[a]
                rows.append(row)
    return pd.DataFrame(rows)


def ert(runtime: np.ndarray, budget: np.ndarray, success: np.ndarray) -> float:
    """aRT: (successful runtimes + unsuccessful budgets) / successes; inf with none."""
    n = int(success.sum())
    if n == 0:
        return math.inf
    return float((runtime[success].sum() + budget[~success].sum()) / n)


def _bootstrap_ert(runtime, budget, success, rng) -> tuple[float, float, float]:
    """10/50/90 percentiles of aRT over runs resampled with replacement (COCO's bootstrap
    of aRT); percentiles without interpolation so an infinite aRT stays infinite."""
    n = len(success)
    idx = rng.integers(0, n, size=(BOOTSTRAP, n))
    s = success[idx]
    num = np.where(s, runtime[idx], budget[idx]).sum(1)
    k = s.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = np.where(k > 0, num / np.maximum(k, 1), np.inf)
    return tuple(float(np.quantile(values, q, method="inverted_cdf")) for q in (0.1, 0.5, 0.9))


def table(rt: pd.DataFrame) -> pd.DataFrame:
    """targets.csv: optimizer, problem, target, runs, successes, success_rate, then per
    axis ert_<axis> and ert_<axis>_p10/_p50/_p90 (bootstrap)."""
    if rt.empty:
        return pd.DataFrame()
    rng = np.random.default_rng(SEED)
    axes = [c[len("runtime_"):] for c in rt.columns if c.startswith("runtime_")]
    rows = []
    keys = ["problem", "optimizer", "target_index"]
    for (problem, label, i), g in rt.groupby(keys, sort=True):
        success = g["success"].to_numpy(bool)
        row = {"optimizer": label, "problem": problem, "target": g["target"].iloc[0],
               "target_index": i, "source": g["source"].iloc[0],
               "runs": len(g), "successes": int(success.sum()), "success_rate": success.mean()}
        for a in axes:
            rt_a = g[f"runtime_{a}"].to_numpy(float)
            bud = g[f"budget_{a}"].to_numpy(float)
            if np.isnan(bud).all():
                continue
            row[f"ert_{a}"] = ert(rt_a, bud, success)
            row[f"ert_{a}_p10"], row[f"ert_{a}_p50"], row[f"ert_{a}_p90"] = _bootstrap_ert(rt_a, bud, success, rng)
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(t: pd.DataFrame, problem: str, every: int = 5) -> str:
    """One problem's fixed-target table: every `every`-th target and the last (COCO's 51
    targets would make 51 rows per optimizer), aRT with its 10-90% bootstrap range."""
    sub = t[t["problem"] == problem]
    idx = sorted(sub["target_index"].unique())
    keep = set(idx[::every]) | {idx[-1]} if idx else set()
    sub = sub[sub["target_index"].isin(keep)]
    axes = [c[len("ert_"):] for c in sub.columns if c.startswith("ert_") and not c.endswith(("_p10", "_p50", "_p90"))]
    axes = [a for a in axes if sub[f"ert_{a}"].notna().any()]
    view = pd.DataFrame({"target": [f"{v:.4g}" for v in sub["target"]], "optimizer": sub["optimizer"],
                         "successes": [f"{s}/{n}" for s, n in zip(sub["successes"], sub["runs"])]})
    for a in axes:
        view[f"aRT {a} [p10, p90]"] = [_fmt_ert(e, lo, hi) for e, lo, hi in
                                      zip(sub[f"ert_{a}"], sub[f"ert_{a}_p10"], sub[f"ert_{a}_p90"])]
    return view.to_markdown(index=False)


def _fmt_ert(e, lo, hi) -> str:
    if not e == e:
        return "-"
    if math.isinf(e):
        return "inf"
    return f"{e:.3g} [{lo:.3g}, {hi:.3g}]"
