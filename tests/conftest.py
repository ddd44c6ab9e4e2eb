"""Shared fixtures: run the CLI in a subprocess (as a user would) or in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict | None = None, timeout: float = 600, cwd=None) -> subprocess.CompletedProcess:
    """`python -m harness ARGS` in a fresh process; returns the CompletedProcess."""
    full_env = dict(os.environ)
    full_env.setdefault("OMP_NUM_THREADS", "1")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], capture_output=True, text=True,
        timeout=timeout, env=full_env, cwd=cwd or ROOT,
    )


def load_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def without_time(records: list[dict]) -> list[dict]:
    """Metrics records minus the wall-clock fields (the only ones allowed to differ)."""
    return [{k: v for k, v in r.items() if k not in TIME_FIELDS} for r in records]


TIME_FIELDS = ("time_s", "objective_s", "overhead_s")


def only_run_dir(runs_dir: Path) -> Path:
    dirs = [p for p in Path(runs_dir).iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.fixture
def cli():
    return run_cli
