"""Progress of a run: a bar on a terminal, a plain line at a bounded interval elsewhere
(a log file, a CI console, a SLURM output file), so long work is never silent."""

from __future__ import annotations

import sys
import time

from harness.callbacks import Callback


def _fmt_s(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class Progress(Callback):
    """A run callback: a tqdm bar on a terminal, a line every interval_s elsewhere."""

    def __init__(self, label: str, total_steps: int | None, interval_s: float = 30.0, stream=None):
        self.label, self.total, self.interval_s = label, total_steps, interval_s
        self.stream = stream or sys.stdout
        self.bar = None
        self.t0 = self.last = 0.0
        self.first_step = 0

    def on_start(self, state) -> None:
        self.t0 = self.last = time.monotonic()
        self.first_step = state.step
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=state.step, desc=self.label, unit="step",
                            leave=False, file=self.stream)

    def on_step(self, state, record: dict) -> None:
        loss = record.get("loss")
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4g}", evals=state.evals)
            return
        now = time.monotonic()
        if now - self.last < self.interval_s:
            return
        self.last = now
        elapsed = now - self.t0
        done = state.step - self.first_step
        eta = ""
        if self.total and done > 0:
            eta = f" eta {_fmt_s(elapsed / done * (self.total - state.step))}"
        steps = f"{state.step}/{self.total}" if self.total else str(state.step)
        print(f"{self.label}: step {steps} evals {state.evals} loss {loss:.4g} "
              f"elapsed {_fmt_s(elapsed)}{eta}", file=self.stream, flush=True)

    def on_end(self, summary: dict) -> None:
        if self.bar is not None:
            self.bar.close()
