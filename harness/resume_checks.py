"""What --resume checks before it writes anything: the stored summary (a finished run
is left alone), and the checkpoint (a damaged one is one line, exit 2)."""

from __future__ import annotations

from pathlib import Path

from harness import store
from harness.errors import NothingToDo, UsageError
from harness.spec import Budget


def summary(run_dir: Path) -> dict:
    path = run_dir / "summary.json"
    try:
        return store.read_json(path) if path.exists() else {}
    except (OSError, ValueError):
        return {}   # rewritten by this run


def check_unfinished(run_dir: Path, summary: dict, budget: Budget | None) -> None:
    if summary.get("status") not in ("ok", "diverged"):
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
