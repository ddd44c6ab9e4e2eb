"""The report of the scaling study (studies/reproductions/scaling_gap.py), from stored runs.

- multipliers per size: reports.equivalence.multipliers (the one multiplier), against
  the best gradient optimizer of each size, on forwards and on the optimizer's seconds;
- the trend: log10(multiplier) against log10(N) fitted by least squares
  (scipy.stats.linregress) on the sizes where the multiplier is a value, with the 95%
  confidence band of the fitted line (Student t, n - 2 degrees of freedom), drawn on
  through 0.5B-32B as an extrapolation;
- final quality against size: median held-out log-prob over seeds with its bootstrap
  interval (reports.stats.median_ci);
- memory against size: each run's measured peak (CPU peak RSS) and harness.planner's plan.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

import reports.style  # noqa: F401  (the Agg backend, before pyplot)
import matplotlib.pyplot as plt  # noqa: E402

from reports.equivalence import describe, multipliers  # noqa: E402
from reports.load import load_runs  # noqa: E402
from reports.stats import median_ci  # noqa: E402

GIB = 2**30
CAPACITIES_GIB = (80, 141)   # one A100/H100 80 GB; one H200 141 GB
CONFIDENCE = 0.95


def build(entries: list[dict], runs_dir: Path, out: Path, *, planned: list[dict], extrapolate_to: dict[str, int],
          gradient=("adam", "muon")) -> dict:
    """Tables (written as CSV) and figures (PNG) under `out`; returns them for markdown()."""
    out.mkdir(parents=True, exist_ok=True)
    plan = pd.DataFrame([{k: v for k, v in e.items() if k != "item"} | {"run_id": e["item"].name}
                         for e in entries])
    runs, curves = load_runs(runs_dir)
    runs = runs[runs["run_id"].isin(set(plan["run_id"]))].copy()
    runs["label"] = runs["optimizer"]   # one configuration per optimizer and size here
    runs = runs.merge(plan[["run_id", "size", "params", "forwards"]].rename(columns={"forwards": "budget_forwards"}),
                      on="run_id")
    missing = sorted(set(plan["run_id"]) - set(runs.loc[runs["status"] == "ok", "run_id"]))
    mult = multipliers(runs, curves, axes=("forwards", "seconds"), n_boot=2000, seed=0)
    mult = mult.merge(plan[["size", "params"]].drop_duplicates(), left_on="problem", right_on="size")
    mult = mult.drop(columns="size").sort_values(["params", "optimizer", "axis"], kind="stable")
    free = mult[~mult["optimizer"].isin(gradient)]
    trends = fit_trends(free[free["axis"] == "forwards"], extrapolate_to)
    quality = final_quality(runs)
    memory = memory_table(runs, planned)
    mult.to_csv(out / "multipliers.csv", index=False)
    trends.to_csv(out / "trend.csv", index=False)
    quality.to_csv(out / "quality.csv", index=False)
    memory.to_csv(out / "memory.csv", index=False)
    runs.drop(columns=[c for c in ("harness", "python", "torch", "cpu", "gpu") if c in runs]).to_csv(
        out / "runs.csv", index=False)
    multiplier_figure(free[free["axis"] == "forwards"], trends, extrapolate_to, out / "multiplier_vs_size.png")
    quality_figure(quality, out / "quality_vs_size.png")
    memory_figure(memory, out / "memory_vs_size.png")
    return {"multipliers": mult, "trends": trends, "quality": quality, "memory": memory, "runs": runs,
            "missing": missing, "extrapolate_to": extrapolate_to}


def fit_trends(mult: pd.DataFrame, extrapolate_to: dict[str, int]) -> pd.DataFrame:
    """Per optimizer: log10 m = a + b log10 N over the sizes with a value (lower bounds and
    upper bounds are not values), with b's standard error, and the fitted multiplier with its
    95% band at every extrapolation size. Fewer than 3 sizes: no band (n - 2 = 0 degrees of
    freedom); fewer than 2: no fit."""
    from scipy import stats

    rows = []
    for opt, g in mult.groupby("optimizer", sort=True):
        g = g[(g["status"] == "value") & (g["multiplier"] > 0) & np.isfinite(g["multiplier"])]
        x, y = np.log10(g["params"].to_numpy(float)), np.log10(g["multiplier"].to_numpy(float))
        base = {"optimizer": opt, "n_sizes": len(x)}
        if len(x) < 2:
            rows.append({**base, "status": f"no fit: {len(x)} size(s) with a value"})
            continue
        fit = stats.linregress(x, y)
        dof = len(x) - 2
        resid = y - (fit.intercept + fit.slope * x)
        s = math.sqrt(float(resid @ resid) / dof) if dof > 0 else math.nan
        sxx = float(((x - x.mean()) ** 2).sum())
        t = stats.t.ppf(0.5 + CONFIDENCE / 2, dof) if dof > 0 else math.nan
        base.update(slope=fit.slope, slope_se=fit.stderr if dof > 0 else math.nan, intercept=fit.intercept,
                    r2=fit.rvalue ** 2, status="fit" if dof > 0 else "fit through 2 points: no uncertainty")
        for name, n in extrapolate_to.items():
            xn = math.log10(n)
            half = t * s * math.sqrt(1 / len(x) + (xn - x.mean()) ** 2 / sxx) if dof > 0 else math.nan
            mid = fit.intercept + fit.slope * xn
            rows.append({**base, "size": name, "params": n, "multiplier": 10 ** mid,
                         "lo": 10 ** (mid - half) if dof > 0 else math.nan,
                         "hi": 10 ** (mid + half) if dof > 0 else math.nan})
    return pd.DataFrame(rows)


def band(trend_rows: pd.DataFrame, xs: np.ndarray, fitted_x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fitted line and its 95% band over log10 N = xs, from one optimizer's trend rows."""
    from scipy import stats

    r = trend_rows.iloc[0]
    mid = r["intercept"] + r["slope"] * xs
    dof = len(fitted_x) - 2
    if dof <= 0:
        return mid, mid, mid
    resid_s = r["slope_se"] * math.sqrt(float(((fitted_x - fitted_x.mean()) ** 2).sum()))
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, dof) * resid_s * np.sqrt(
        1 / len(fitted_x) + (xs - fitted_x.mean()) ** 2 / float(((fitted_x - fitted_x.mean()) ** 2).sum()))
    return mid, mid - half, mid + half


def final_quality(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (size, opt), g in runs[runs["status"] == "ok"].groupby(["problem", "optimizer"], sort=False):
        med, lo, hi = median_ci(g["final_metric"].astype(float))
        rows.append({"problem": size, "params": int(g["params"].iloc[0]), "optimizer": opt, "n_seeds": len(g),
                     "heldout_logprob": med, "lo": lo, "hi": hi,
                     "forwards": float(g["forwards"].median()),
                     "optimizer_time_s": float(g["optimizer_time_s"].median()),
                     "wall_clock_s": float(g["wall_clock_s"].median())})
    return pd.DataFrame(rows).sort_values(["params", "optimizer"], kind="stable")


def memory_table(runs: pd.DataFrame, planned: list[dict]) -> pd.DataFrame:
    """Planned peaks (CUDA, CPU) beside the median measured peak of the runs."""
    plan = pd.DataFrame(planned)
    ok = runs[runs["status"] == "ok"]
    measured = (ok.groupby(["problem", "optimizer"])["peak_memory_bytes"].median().rename("measured_bytes")
                .reset_index().rename(columns={"problem": "size"}))
    method = ok.groupby(["problem", "optimizer"])["peak_memory_method"].first().reset_index().rename(
        columns={"problem": "size", "peak_memory_method": "measured_as"})
    wide = plan.pivot_table(index=["size", "params", "optimizer"], columns="device", values="planned_bytes",
                            aggfunc="first").reset_index()
    wide.columns = [f"planned_{c}_bytes" if c in ("cuda", "cpu") else c for c in wide.columns]
    merged = wide.merge(measured, on=["size", "optimizer"], how="left").merge(method, on=["size", "optimizer"],
                                                                              how="left")
    return merged.sort_values(["params", "optimizer"], kind="stable").reset_index(drop=True)


def _colours(names) -> dict:
    cmap = plt.get_cmap("tab10")
    return {n: cmap(i % 10) for i, n in enumerate(sorted(names))}


def _save(fig, ax, path: Path, ylabel: str, *, log_y: bool) -> None:
    """Every figure here: parameters on a log x axis, the legend top left, PNG at 110 dpi."""
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("parameters N")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def multiplier_figure(mult: pd.DataFrame, trends: pd.DataFrame, extrapolate_to: dict[str, int], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 5.5))
    colours = _colours(mult["optimizer"].unique())
    top = max(extrapolate_to.values()) if extrapolate_to else mult["params"].max()
    for opt, g in mult.groupby("optimizer", sort=True):
        c = colours[opt]
        val = g[g["status"] == "value"]
        err = np.vstack([val["multiplier"] - val["lo"].clip(upper=val["multiplier"]),
                         (val["hi"].clip(lower=val["multiplier"]) - val["multiplier"]).replace(np.inf, np.nan)])
        ax.errorbar(val["params"], val["multiplier"], yerr=np.nan_to_num(err), fmt="o", color=c, capsize=3,
                    label=f"{opt} (95% CI over seeds)")
        bound = g[(g["status"] != "value") & np.isfinite(g["multiplier"])]   # no_progress: no point to draw
        if len(bound):
            ax.scatter(bound["params"], bound["multiplier"], marker="^", facecolors="none", edgecolors=c,
                       label=f"{opt}: a bound, not a value")
        tr = trends[(trends["optimizer"] == opt) & trends.get("slope", pd.Series(dtype=float)).notna()] \
            if "slope" in trends else trends.iloc[0:0]
        if len(tr):
            fitted_x = np.log10(val["params"].to_numpy(float))
            xs_in = np.linspace(fitted_x.min(), fitted_x.max(), 50)
            xs_out = np.linspace(fitted_x.max(), math.log10(top), 80)
            for xs, style in ((xs_in, "-"), (xs_out, "--")):
                mid, lo, hi = band(tr, xs, fitted_x)
                ax.plot(10 ** xs, 10 ** mid, style, color=c)
                ax.fill_between(10 ** xs, 10 ** lo, 10 ** hi, color=c, alpha=0.12 if style == "-" else 0.06)
            r = tr.iloc[0]
            ax.plot([], [], "-", color=c, label=f"{opt} fit: slope {r['slope']:.2f}"
                    + (f" ± {r['slope_se']:.2f} (se)" if r["slope_se"] == r["slope_se"] else ""))
    for name, n in extrapolate_to.items():
        ax.axvline(n, color="grey", lw=0.5, ls=":")
        ax.text(n, 1.02, name.removeprefix("qwen3-"), transform=ax.get_xaxis_transform(), ha="center", fontsize=7)
    if extrapolate_to:
        lo_x = min(extrapolate_to.values())
        ax.axvspan(lo_x, top, color="grey", alpha=0.06)
        ax.text(math.sqrt(lo_x * top), 0.04, "EXTRAPOLATION (dashed): not measured", transform=ax.get_xaxis_transform(),
                ha="center", fontsize=8, color="dimgrey")
    ax.axhline(1, color="black", lw=0.6)
    _save(fig, ax, path, "compute-equivalent multiplier on forwards\n"
          "(optimizer's forwards / best gradient method's to the same quality)", log_y=True)


def quality_figure(quality: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = _colours(quality["optimizer"].unique())
    for opt, g in quality.groupby("optimizer", sort=True):
        err = np.vstack([g["heldout_logprob"] - g["lo"], g["hi"] - g["heldout_logprob"]])
        ax.errorbar(g["params"], g["heldout_logprob"], yerr=np.nan_to_num(err), marker="o", capsize=3,
                    color=colours[opt], label=opt)
    _save(fig, ax, path, "heldout_logprob at the budget (median, 95% CI)", log_y=False)


def memory_figure(memory: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 6))
    colours = _colours(memory["optimizer"].unique())
    markers = dict(zip(sorted(memory["optimizer"].unique()), "osD^v<>p"))
    widths = dict(zip(sorted(memory["optimizer"].unique()), (4.5, 3.5, 2.5, 1.5, 1.0, 0.8, 0.6, 0.5)))
    for opt, g in memory.groupby("optimizer", sort=True):   # equal plans overlap: thinner lines on top
        c = colours[opt]
        ax.plot(g["params"], g["planned_cuda_bytes"] / GIB, "-", color=c, lw=widths[opt], marker=markers[opt],
                ms=4, alpha=0.8, label=f"{opt}: planned, one GPU (bf16)")
        if "planned_cpu_bytes" in g:
            ax.plot(g["params"], g["planned_cpu_bytes"] / GIB, ":", color=c, lw=1)
        m = g[g["measured_bytes"].notna()]
        if len(m):
            ax.scatter(m["params"], m["measured_bytes"] / GIB, marker="x", color=c, s=40)
    ax.plot([], [], ":", color="grey", label="planned, CPU (fp32, with the framework)")
    ax.scatter([], [], marker="x", color="grey", label="measured peak of the runs (CPU RSS)")
    for cap in CAPACITIES_GIB:
        ax.axhline(cap, color="red", lw=0.8, ls="--")
        ax.text(memory["params"].max(), cap * 1.06, f"one GPU: {cap} GiB", color="red", fontsize=8, ha="right")
    ax.text(0.01, 0.01, "ladder (<= 10M): 64 tokens x 8 samples, byte vocabulary; 0.5B and up: the problems' GPU "
            "defaults\n(512 tokens x 16 samples, micro-batch 4, vocabulary 151,936); eggroll in place (K = 1: "
            "its auto mode stacks more members only where they fit)", transform=ax.transAxes, fontsize=7,
            color="dimgrey")
    _save(fig, ax, path, "peak memory, GiB", log_y=True)


def _md(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False) if len(frame) else "(none)"


def markdown(result: dict, command: str, rules: dict, budget: str) -> str:
    mult, trends, quality, memory = (result[k] for k in ("multipliers", "trends", "quality", "memory"))
    lines = ["# The gap across scale: scaling-gap report", "",
             f"Command: `{command}`", "", f"Budget rule: {budget}.", "",
             "Hyperparameters: tuned on qwen3-tiny (docs/tuning.md), carried up by these rules:", ""]
    lines += [f"- {opt}: {rule}" for opt, rule in rules.items() if opt in set(mult["optimizer"])] + [""]
    if result["missing"]:
        lines += [f"**Incomplete**: {len(result['missing'])} run(s) not finished ok (e.g. {result['missing'][0]}); "
                  "the tables use the runs that finished. Rerun the command to continue.", ""]
    lines += ["## Compute-equivalent multiplier against the best gradient optimizer of each size", "",
              "multiplier = the optimizer's cost to its final quality / the reference's cost to the same quality "
              "(reports/equivalence.py); > 1: the gradient-free method pays more. 95% bootstrap CI over seeds.", ""]
    table = mult.assign(value=[describe(r) for _, r in mult.iterrows()])
    for axis in ("forwards", "seconds"):
        t = table[table["axis"] == axis]
        if len(t):
            lines += [f"On {axis}:", "", _md(t[["problem", "params", "optimizer", "reference", "value", "n_seeds",
                                                "quality"]]), ""]
    lines += ["## Trend: log10 multiplier = a + b log10 N (forwards)", "",
              "Least squares over the sizes with a value; the band is the 95% confidence band of the fitted line. "
              "**Rows at 0.5B-32B are an extrapolation**, far beyond the measured sizes: they say where the fitted "
              "line goes, not what was measured.", ""]
    if len(trends):
        cols = [c for c in ("optimizer", "n_sizes", "slope", "slope_se", "r2", "status", "size", "params",
                            "multiplier", "lo", "hi") if c in trends]
        lines += [_md(trends[cols].round(4)), ""]
    lines += ["![multiplier vs size](multiplier_vs_size.png)", "", "## Final quality against size", "",
              _md(quality.round(4)), "", "![quality vs size](quality_vs_size.png)", "",
              "## Memory against size (planned: harness.planner; measured: the runs' peak)", ""]
    mem = memory.copy()
    for c in [c for c in mem if c.endswith("_bytes")]:
        mem[c.replace("_bytes", "_GiB")] = (mem.pop(c) / GIB).round(4)
    lines += [_md(mem), "", f"Capacity lines: one GPU of {' and '.join(map(str, CAPACITIES_GIB))} GiB.", "",
              "![memory vs size](memory_vs_size.png)", ""]
    return "\n".join(lines)
