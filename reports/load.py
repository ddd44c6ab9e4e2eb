"""Read a run store into pandas: one row per run, and each run's metrics stream.

Reports are built from these files alone (config.json, summary.json, env.json,
metrics.jsonl), never from the memory of a process.
"""

from __future__ import annotations

import json
import sys
import math
from pathlib import Path

import pandas as pd

from harness import store

RUN_COLUMNS = [
    "run_id", "optimizer", "problem", "family", "seed", "status", "reason", "steps", "evals",
    "wall_clock_s", "optimizer_time_s", "final_loss", "best_loss", "final_metric", "best_metric",
    "metric_name", "metric_higher_is_better", "peak_memory_bytes", "peak_memory_method",
    "param_count", "device", "label", "harness", "git_commit", "python", "torch", "cpu", "gpu",
    "forwards", "tokens", "flops", "mfu", "backprop", "framework_bytes", "budget",
]
NUMERIC = ["steps", "evals", "wall_clock_s", "optimizer_time_s", "final_loss", "best_loss",
           "final_metric", "best_metric", "peak_memory_bytes", "param_count",
           "forwards", "tokens", "flops", "mfu", "framework_bytes"]   # cost totals (harness.costs); NaN for older runs


def _num(value):
    """Stored numbers; "nan"/"inf" strings (JSON has no NaN) become floats, None NaN."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _family(problem: str) -> str:
    from harness import registry

    try:
        return registry.problem(problem).family or problem
    except Exception:  # a run of a problem this checkout does not register
        return problem.rsplit("-", 1)[0]


def _budget(budget: dict | None) -> str | None:
    """The stopping rule as the tables show it: "forwards=600", "steps=50"."""
    given = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in (budget or {}).items() if v is not None]
    return ", ".join(given) or None


def _backprop(optimizer: str) -> bool | None:
    """Runs recorded before config.json held `backprop`: the registered class says."""
    from harness import registry

    try:
        return bool(registry.optimizer(optimizer).factory.BACKPROP)
    except Exception:  # an optimizer this checkout does not register
        return None


def _trial_params(problem: str) -> tuple[str, ...]:
    from harness import registry

    try:
        return registry.problem(problem).factory.TRIAL_PARAMS
    except Exception:  # a run of a problem this checkout does not register
        return ()


def _read(path: Path) -> dict:
    try:
        return store.read_json(path)
    except (OSError, json.JSONDecodeError):
        return {}


def load_runs(runs_dir: Path) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """(runs, curves): runs has RUN_COLUMNS; curves maps run_id to its metrics records."""
    rows, curves, configs = [], {}, {}
    for run_dir in store.iter_runs(runs_dir):
        cfg = _read(run_dir / "config.json")
        summary = _read(run_dir / "summary.json")
        env = _read(run_dir / "env.json")
        run_id = str(run_dir.relative_to(runs_dir))
        row = {
            "run_id": run_id,
            "optimizer": cfg.get("optimizer", summary.get("optimizer")),
            "problem": cfg.get("problem", summary.get("problem")),
            "seed": cfg.get("seed", summary.get("seed")),
            "status": summary.get("status", "unknown"),
            "reason": summary.get("reason"),
            "metric_name": summary.get("metric_name") or cfg.get("metric_name"),
            "metric_higher_is_better": cfg.get("metric_higher_is_better"),
            "peak_memory_method": summary.get("peak_memory_method"),
            "device": summary.get("device") or env.get("device"),
            **{k: env.get(k) for k in ("harness", "git_commit", "python", "torch", "cpu", "gpu")},
        }
        for key in NUMERIC:
            row[key] = _num(summary.get(key))
        row["family"] = _family(row["problem"])
        row["backprop"] = cfg.get("backprop", _backprop(row["optimizer"]))
        row["budget"] = _budget(cfg.get("budget"))
        rows.append(row)
        trials = _trial_params(row["problem"])   # pooled like seeds: not part of the label
        configs[run_id] = {"budget": cfg.get("budget"), "optimizer_params": cfg.get("optimizer_params", {}),
                           "problem_params": {k: v for k, v in (cfg.get("problem_params") or {}).items()
                                              if k not in trials}}
        problems: list[str] = []
        records = store.read_metrics(run_dir / "metrics.jsonl", problems)
        for problem in problems:   # a curve with a hole says so, never stops short silently
            print(f"warning: {problem}", file=sys.stderr)
        frame = pd.DataFrame.from_records(records) if records else pd.DataFrame(
            columns=["step", "evals", "time_s", "loss"])
        for col in ("loss", "metric", "evals", "time_s", "forwards", "tokens", "flops"):
            if col in frame:
                frame[col] = frame[col].map(_num)
        for col in ("forwards", "tokens", "flops"):   # cumulative costs: 0 before the first step
            if col in frame:
                frame.loc[frame["step"] == 0, col] = frame.loc[frame["step"] == 0, col].fillna(0.0)
        curves[run_id] = frame
    runs = pd.DataFrame(rows, columns=[c for c in RUN_COLUMNS if c != "label"])
    runs["label"] = _labels(runs, configs)
    runs = runs[RUN_COLUMNS]
    return runs.sort_values(["problem", "label", "seed"], kind="stable").reset_index(drop=True), curves


def _labels(runs: pd.DataFrame, configs: dict) -> list[str]:
    """The optimizer's name, plus the settings that differ when one optimizer appears on
    one problem with several configurations (so their seeds are never pooled). A problem's
    TRIAL_PARAMS (bbob's instance) are left out: those runs are pooled like seeds."""
    labels = {}
    for (_, opt), group in runs.groupby(["problem", "optimizer"], sort=False):
        flat = {rid: _flatten(configs[rid]) for rid in group["run_id"]}
        signatures = {json.dumps(f, sort_keys=True, default=str) for f in flat.values()}
        if len(signatures) == 1:
            labels.update({rid: opt for rid in flat})
            continue
        keys = sorted({k for f in flat.values() for k in f
                       if len({json.dumps(g.get(k), default=str) for g in flat.values()}) > 1})
        for rid, f in flat.items():
            labels[rid] = f"{opt} [" + ", ".join(f"{k.split('.')[-1]}={f.get(k)}" for k in keys) + "]"
    return [labels[rid] for rid in runs["run_id"]]


def _flatten(cfg: dict) -> dict:
    out = {}
    for section, values in cfg.items():
        for key, value in (values or {}).items():
            if value is not None:
                out[f"{section}.{key}"] = value
    return out
