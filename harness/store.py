"""The run store: one directory per run, written atomically or append-only.

A run killed at any moment leaves files that parse: JSON files are replaced
by rename, metrics.jsonl only grows by whole lines (a torn last line, which
only a crash mid-write can leave, is ignored by the reader and cut on resume).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import torch


def _json_default(obj: Any):
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: store them as strings so every file stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def dumps(obj: Any, **kw) -> str:
    return json.dumps(_clean(obj), default=_json_default, allow_nan=False, **kw)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    with open(path) as fh:
        return json.load(fh)


def save_checkpoint(path: Path, obj: Any) -> None:
    """torch.save to a temp file in the same directory, then rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: Path) -> Any:
    # Our own file: it holds optimizer objects (pycma, RNG states), not only tensors.
    return torch.load(path, map_location="cpu", weights_only=False)


class MetricsWriter:
    """Appends one JSON object per line and flushes it, so readers see whole records."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fh = open(self.path, "a", buffering=1)

    def write(self, record: dict) -> None:
        self._fh.write(dumps(record) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()


class NullWriter:
    """What ranks other than 0 write to: nothing."""

    def write(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


def read_metrics(path: Path) -> list[dict]:
    """Every whole record of a metrics.jsonl (a torn last line is skipped)."""
    records = []
    path = Path(path)
    if not path.exists():
        return records
    with open(path) as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep records with step <= last_step (used when resuming from a checkpoint)."""
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= last_step]
    atomic_write_bytes(Path(path), "".join(dumps(r) + "\n" for r in kept).encode())


def new_run_dir(runs_dir: Path, run_id: str | None, prefix: str) -> Path:
    """A new, empty run directory: runs_dir/run_id, or runs_dir/<prefix>_<time>[-i]."""
    from datetime import datetime

    from harness.errors import UsageError

    runs_dir.mkdir(parents=True, exist_ok=True)
    if run_id:
        path = runs_dir / run_id
        if path.exists():
            raise UsageError(f"--run-id {run_id!r}: {path} exists; use --resume {path} or a new id")
        path.mkdir()
        return path
    base = f"{prefix}_{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    for i in range(1000):
        path = runs_dir / (base if i == 0 else f"{base}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a fresh run directory under {runs_dir}")


def iter_runs(runs_dir: Path) -> Iterable[Path]:
    """Run directories (those with a config.json) below runs_dir, sorted."""
    runs_dir = Path(runs_dir)
    if not runs_dir.exists():
        return []
    return sorted(p.parent for p in runs_dir.glob("*/config.json"))
