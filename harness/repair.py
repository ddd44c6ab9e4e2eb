"""A finished run whose summary.json is missing or damaged, told from its other files.

metrics.jsonl (one whole line per step) and config.json (the budget) say whether a
run reached its end: when they do, the summary is rebuilt from them and the damaged
file is kept beside it (summary.json.damaged), so no command ever deletes or reruns
a finished run because one file of it was cut short.
"""

from __future__ import annotations

import math
import os
from datetime import datetime, timezone
from pathlib import Path

from harness import store

DAMAGED = "summary.json.damaged"


def summary_is_sound(run_dir: Path) -> bool:
    """summary.json exists, parses and names a status."""
    try:
        return isinstance(store.read_json(Path(run_dir) / "summary.json").get("status"), str)
    except (OSError, ValueError, AttributeError):
        return False


def _number(value) -> float | None:
    """A stored loss or metric as a float (non-finite values are stored as strings)."""
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def finished_summary(run_dir: Path) -> dict | None:
    """The summary of the run as metrics.jsonl and config.json tell it, when they show it
    finished (its budget spent, or a non-finite loss: diverged); None otherwise."""
    from harness.spec import Budget

    run_dir = Path(run_dir)
    try:
        cfg = store.read_json(run_dir / "config.json")
        budget = Budget(**cfg["budget"])
    except Exception:   # noqa: BLE001 - no readable budget: nothing can be told
        return None
    records = [r for r in store.read_metrics(run_dir / "metrics.jsonl") if isinstance(r.get("step"), int)]
    if not records:
        return None
    last = records[-1]
    losses = [x for x in (_number(r.get("loss")) for r in records) if x is not None]
    diverged = bool(losses) and not math.isfinite(losses[-1]) and last.get("loss") is not None
    steps, evals = last["step"], last.get("evals", 0) or 0
    if not diverged and not budget.spent(steps, evals, last.get("time_s", 0.0) or 0.0,
                                         last.get("forwards") or 0.0):
        return None
    finite = [x for x in losses if math.isfinite(x)]
    metrics = [x for x in (_number(r.get("metric")) for r in records if "metric" in r) if x is not None]
    good = [m for m in metrics if math.isfinite(m)]
    higher = cfg.get("metric_higher_is_better")
    return {
        "status": "diverged" if diverged else "ok",
        "reason": (f"summary.json was damaged or missing; rebuilt from metrics.jsonl and config.json "
                   f"(the damaged file is kept as {DAMAGED}); wall-clock and peak memory are unknown"),
        "optimizer": cfg.get("optimizer"), "problem": cfg.get("problem"), "kind": cfg.get("kind"),
        "seed": cfg.get("seed"), "steps": steps, "evals": evals,
        "wall_clock_s": None, "optimizer_time_s": last.get("time_s"),
        "objective_s": None, "overhead_s": None,
        "final_loss": losses[-1] if losses else None, "best_loss": min(finite) if finite else None,
        "final_metric": metrics[-1] if metrics else None,
        "best_metric": ((max(good) if higher else min(good)) if good else None),
        "metric_name": cfg.get("metric_name"),
        **{k: last.get(k) for k in ("forwards", "tokens", "flops", "mfu")},
        "peak_memory_bytes": None, "peak_memory_method": None,
        "device": cfg.get("device"), "param_count": None, "world_size": cfg.get("world_size"),
        "finished": None, "rebuilt": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def rebuild(run_dir: Path) -> dict | None:
    """Write the rebuilt summary of a finished run whose summary.json is unsound, keeping
    the damaged file as summary.json.damaged; the summary, or None (nothing written)."""
    run_dir = Path(run_dir)
    summary = finished_summary(run_dir)
    if summary is None:
        return None
    path = run_dir / "summary.json"
    store.remove_stale_temps(run_dir)   # the summary write a kill cut short, if that was it
    if path.exists():
        os.replace(path, run_dir / DAMAGED)
    store.write_json(path, summary)
    return summary
