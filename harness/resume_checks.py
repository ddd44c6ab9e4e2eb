"""What --resume checks before it writes anything: the stored summary (a finished run
is left alone), and the checkpoint (a damaged one is one line, exit 2)."""

from __future__ import annotations

import sys
from pathlib import Path

from harness import repair, store
from harness.errors import NothingToDo, UsageError
from harness.spec import Budget

DONE = ("ok", "diverged")


def summary(run_dir: Path) -> dict:
    """The stored summary; a damaged or missing one of a run that its metrics show finished
    is rebuilt first (harness.repair), said on stderr; {} when there is none to go by."""
    path = run_dir / "summary.json"
    if not repair.summary_is_sound(run_dir) or store.read_json(path).get("status") == "running":
        rebuilt = repair.rebuild(run_dir)
        if rebuilt is not None:
            print(f"repaired: {path} rebuilt from metrics.jsonl and config.json (the damaged file "
                  f"kept as {repair.DAMAGED})", file=sys.stderr, flush=True)
            return rebuilt
    try:
        return store.read_json(path) if path.exists() else {}
    except (OSError, ValueError, AttributeError):
        return {}   # rewritten by this run


def check_extends(run_dir: Path, budget: Budget | None) -> None:
    """A budget given with --resume extends the stored one (same kind, not smaller): it
    never shrinks a run nor turns an unfinished one into a finished one by fiat."""
    if budget is None:
        return
    stored_budget = store.read_json(run_dir / "config.json").get("budget") or {}
    given = budget.as_dict()
    have = {k: v for k, v in stored_budget.items() if v is not None}
    flag = {"steps": "--steps", "evals": "--evals", "time_s": "--time", "forwards": "--forwards"}
    if set(given) != set(have) or any(given[k] < have[k] for k in given):
        was = ", ".join(f"{flag[k]} {v:g}" for k, v in have.items())
        now = ", ".join(f"{flag[k]} {v:g}" for k, v in given.items())
        raise UsageError(f"--resume {run_dir} {now}: its budget is {was}; a budget given with --resume "
                         "may only extend it (the same flag, a value at least as large)")


def check_unfinished(run_dir: Path, summary: dict, budget: Budget | None) -> None:
    if summary.get("status") not in DONE:
        return
    steps, evals, time_s = summary.get("steps", 0), summary.get("evals", 0), summary.get("optimizer_time_s", 0)
    spent = budget is None or budget.spent(steps, evals, time_s, summary.get("forwards") or 0.0)
    if spent or summary.get("status") == "diverged":
        raise NothingToDo(f"{run_dir}: already finished ({summary['status']} at step {steps}); nothing "
                          "changed (give a larger --steps/--evals/--time with --resume to extend it)")


def checkpoint(run_dir: Path) -> dict | None:
    path = run_dir / "checkpoint.pt"
    if not path.exists():
        return None
    try:
        ckpt = store.load_checkpoint(path)
        if not isinstance(ckpt, dict) or not {"state", "optimizer", "problem", "rng"} <= set(ckpt):
            raise ValueError("not a harness checkpoint")
        return ckpt
    except Exception as exc:   # empty, truncated, another file
        why = f"{type(exc).__name__}: {str(exc).strip()[:200]}"
        raise UsageError(f"--resume {run_dir}: checkpoint.pt cannot be read ({why}); "
                         "restore it, or delete it to restart the run from step 0") from None
