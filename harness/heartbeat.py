"""The heartbeat of a batch of runs: every interval, one line per running item with its
step, loss and ETA read from its metrics.jsonl, so a sweep is never silent (its children
run with --no-progress; their output goes to their logs). The same plain lines on a
terminal and in a log file."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from harness.progress import _fmt_s

DEFAULT_INTERVAL_S = 30.0
# the budget axis -> the cumulative field of a metrics record that spends it
_SPENT_BY = {"steps": "step", "evals": "evals", "time_s": "time_s", "forwards": "forwards"}


def interval_s() -> float:
    """$HARNESS_HEARTBEAT_S, else 30 s."""
    try:
        value = float(os.environ.get("HARNESS_HEARTBEAT_S", DEFAULT_INTERVAL_S))
    except ValueError:
        value = DEFAULT_INTERVAL_S
    return value if value > 0 else DEFAULT_INTERVAL_S


def last_record(path: Path, tail_bytes: int = 65536) -> dict | None:
    """The last whole record of a metrics.jsonl, reading only its end."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - tail_bytes))
            lines = fh.read().split(b"\n")
    except OSError:
        return None
    for line in reversed(lines[:-1]):   # the last element is "" or a torn line
        try:
            record = json.loads(line)
            if isinstance(record, dict):
                return record
        except ValueError:
            continue
    return None


class Heartbeat:
    """Tracks the items now running; a thread echoes their state every interval."""

    def __init__(self, echo, interval: float | None = None):
        self.echo, self.interval = echo, interval or interval_s()
        self.running: dict[str, tuple] = {}   # name -> (label, run_dir, budget, t0, first)
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="heartbeat")

    def start(self) -> "Heartbeat":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def started(self, item, run_dir: Path) -> None:
        with self._guard:
            self.running[item.name] = (item.label, Path(run_dir), dict(item.budget), time.monotonic(), None)

    def ended(self, item) -> None:
        with self._guard:
            self.running.pop(item.name, None)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            line = self.line()
            if line:
                self.echo(line)

    def line(self) -> str | None:
        """'running 2: es on qwen3-tiny seed=0 step 12/50 loss 4.2 eta 1:10; ...', or None."""
        with self._guard:
            items = list(self.running.items())
        if not items:
            return None
        parts = []
        now = time.monotonic()
        for name, (label, run_dir, budget, t0, first) in items:
            record = last_record(run_dir / "metrics.jsonl")
            if record is None:
                parts.append(f"{label} starting ({_fmt_s(now - t0)})")
                continue
            (axis, total), = [(k, v) for k, v in budget.items() if v is not None][:1] or [("steps", None)]
            spent = record.get(_SPENT_BY.get(axis, "step")) or 0
            if first is None:   # progress is measured from what this batch saw first
                with self._guard:
                    if name in self.running:
                        self.running[name] = (label, run_dir, budget, now, spent)
                first, t0 = spent, now
            text = f"{label} step {record.get('step')}"
            text += f" ({axis} {spent:g}/{total:g})" if axis != "steps" and total else \
                (f"/{total}" if total else "")
            loss = record.get("loss")
            if isinstance(loss, (int, float)):
                text += f" loss {loss:.4g}"
            if total and spent > first and now > t0:
                text += f" eta {_fmt_s((now - t0) / (spent - first) * max(0.0, total - spent))}"
            parts.append(text)
        return f"running {len(parts)}: " + "; ".join(parts)
