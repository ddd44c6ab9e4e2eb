"""The run callback contract: what the runner calls on the objects in `callbacks`.

The runner calls bind(run_dir) once the run directory holds config.json and env.json,
then on_start(state), on_step(state, record) after each step's record is written to
metrics.jsonl, and on_end(summary) after summary.json. Every hook has a default, so a
callback (the progress display, harness.tracking's loggers) overrides what it needs.
A callback watches; it never changes the run.
"""

from __future__ import annotations

from pathlib import Path


class Callback:
    def bind(self, run_dir: Path) -> None:
        """The run's directory (every rank; distributed.is_main() says which writes)."""

    def on_start(self, state) -> None:
        """Before the first step of this process (state.step > 0 on resume)."""

    def on_step(self, state, record: dict) -> None:
        """After one step; `record` is the line just written to metrics.jsonl."""

    def on_end(self, summary: dict) -> None:
        """After summary.json is written, whatever the status."""
