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


def _umask() -> int:
    mask = os.umask(0o022)   # read it (the only portable way) and put it back at once
    os.umask(mask)
    return mask


# Files are created as open() creates them, 0666 less the umask (mkstemp gives 0600,
# which colleagues on a shared file system cannot read). Read once, at import.
FILE_MODE_MASK = _umask()
FILE_MODE = 0o666 & ~FILE_MODE_MASK


def _mkstemp(path: Path) -> tuple[int, str]:
    """A temp file beside `path` (hidden, .tmp), with the mode a new file gets."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, FILE_MODE)
    return fd, tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = _mkstemp(path)
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


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows (dicts with the first row's keys) as a CSV file with a header, written atomically."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(Path(path), buf.getvalue().encode())


def read_json(path: Path) -> Any:
    with open(path) as fh:
        return json.load(fh)


def save_checkpoint(path: Path, obj: Any) -> None:
    """torch.save to a temp file in the same directory, then rename.

    torch.save writes through our unbuffered file object, so a write the disk refuses
    (full: ENOSPC, over a size limit: EFBIG) raises OSError inside it; torch reports it as
    "[enforce fail at inline_container.cc] unexpected pos", and the OSError, which names
    the cause, is raised instead, with the checkpoint's path."""
    import torch   # here, not at import: refusals answer before torch's seconds of imports

    path = Path(path)
    fd, tmp = _mkstemp(path)
    try:
        try:
            with os.fdopen(fd, "wb", buffering=0) as fh:
                torch.save(obj, fh)
                os.fsync(fh.fileno())
        except RuntimeError as exc:
            cause = _os_cause(exc)
            if cause is None:
                raise
            raise OSError(cause.errno, cause.strerror, str(path)) from None
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _os_cause(exc: BaseException) -> OSError | None:
    """The OSError behind an exception (its __context__/__cause__ chain), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def load_checkpoint(path: Path) -> Any:
    import torch

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


def read_metrics(path: Path, problems: list[str] | None = None) -> list[dict]:
    """Every valid record of a metrics.jsonl. A torn last line (what a kill mid-write
    leaves) is skipped silently; any other line that is not a JSON object is skipped
    and, when `problems` is given, reported there by file and line number."""
    records = []
    path = Path(path)
    if not path.exists():
        return records
    with open(path, errors="replace") as fh:
        for number, line in enumerate(fh, 1):
            if not line.endswith("\n"):
                break   # torn last line
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
                step = record.get("step")
                if not isinstance(step, int) or isinstance(step, bool) or step < 0:
                    raise ValueError(f"'step' is {step!r}, not a step number")
                records.append(record)
            except ValueError as exc:
                if problems is not None:
                    problems.append(f"{path}:{number}: corrupt record skipped ({str(exc)[:80]})")
    return records


def truncate_metrics(path: Path, last_step: int) -> list[str]:
    """Keep the valid records with step <= last_step (resuming from a checkpoint at that
    step regenerates the later ones); returns the corrupt lines that were dropped."""
    problems: list[str] = []
    kept = [r for r in read_metrics(path, problems) if r.get("step", 0) <= last_step]
    atomic_write_bytes(Path(path), "".join(dumps(r) + "\n" for r in kept).encode())
    return problems


class RunLock:
    """An OS lock (flock) on a run directory, held by the process that runs it for the
    run's whole life: another run, resume or sweep on the same directory sees it and
    waits or refuses, never writes into it. The kernel drops the lock when the owner
    dies, however it dies, so a dead owner's run is taken over."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: int | None = None

    def acquire(self, wait: bool = False) -> bool:
        import fcntl

        self.created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return True

    def owner(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self, discard: bool = False) -> None:
        """Drop the lock; `discard`: also remove the lock file when this process created it
        (a refused resume leaves the directory as it found it)."""
        if self.fd is not None:
            if discard and getattr(self, "created", False):
                self.path.unlink(missing_ok=True)
            os.close(self.fd)   # closing the descriptor releases the flock
            self.fd = None

    def held_elsewhere(self) -> bool:
        """True when another process holds the lock now; takes nothing, writes nothing."""
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)   # closing drops the probe's lock, if it got one


SUPERSEDED = ".superseded"


def supersede(run_dir: Path) -> Path:
    """Move an unfinished run directory that cannot be resumed (no checkpoint) out of the
    way, into <runs-dir>/.superseded/<name>.<UTC time>.<pid>, instead of deleting it: the
    same request remakes the same records from step 0, and what the first attempt wrote
    (its log, error.txt, timings) is kept. Reports read <runs-dir>/*/config.json only."""
    import time

    run_dir = Path(run_dir)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = run_dir.parent / SUPERSEDED / f"{run_dir.name}.{stamp}.{os.getpid()}"
    ensure_dir(target.parent)
    os.replace(run_dir, target)
    return target


def remove_stale_temps(directory: Path) -> list[Path]:
    """Remove the temp files of atomic writes a killed process left in `directory` (call it
    only while holding the directory's lock: nobody else is writing there)."""
    stale = [p for p in Path(directory).glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def run_lock(run_dir: Path) -> RunLock:
    return RunLock(Path(run_dir) / ".lock")


def ensure_dir(path: Path, flag: str = "--runs-dir") -> Path:
    """mkdir -p, or one line (UsageError) naming the flag when the place cannot hold it."""
    from harness.errors import os_failure

    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_failure(f"{flag} {path}: cannot create it", exc) from None
    return Path(path)


def longest_run_dir(runs_dir: Path, run_id: str | None, prefix: str) -> Path:
    """The longest path new_run_dir may give (for limits checked before it is made)."""
    return Path(runs_dir).absolute() / (run_id or f"{prefix}_{'0' * 8}-{'0' * 6}-999")


def new_run_dir(runs_dir: Path, run_id: str | None, prefix: str) -> Path:
    """A new, empty run directory: runs_dir/run_id, or runs_dir/<prefix>_<time>[-i]."""
    from datetime import datetime

    from harness.errors import UsageError, os_failure

    try:
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
    except OSError as exc:   # a file where the directory should be, read-only, full
        raise os_failure(f"--runs-dir {runs_dir}: cannot create a run directory there", exc) from None
    raise UsageError(f"--runs-dir {runs_dir}: 1000 run directories named {base}* exist; use --run-id")


def iter_runs(runs_dir: Path) -> Iterable[Path]:
    """Run directories (those with a config.json) below runs_dir, sorted."""
    runs_dir = Path(runs_dir)
    if not runs_dir.exists():
        return []
    return sorted(p.parent for p in runs_dir.glob("*/config.json"))


# The cost totals of a run's summary, on every axis on which runs are compared.
COST_KEYS = ("evals", "forwards", "tokens", "flops", "optimizer_time_s", "wall_clock_s")


def read_result(run_dir: Path, validation_key: str | None) -> dict:
    """status, validation (NaN unless ok and finite), metric (the problem's, final) and the
    cost totals of one stored run."""
    summary_path = Path(run_dir) / "summary.json"
    s = read_json(summary_path) if summary_path.exists() else {}
    out = {"status": s.get("status", "missing"), "metric": _finite(s.get("final_metric"))}
    for key in COST_KEYS:
        out[key] = _finite(s.get(key))
    if validation_key is None:
        out["validation"] = out["metric"]
    else:
        metrics = Path(run_dir) / "metrics.jsonl"
        records = read_metrics(metrics) if metrics.exists() else []
        values = [r[validation_key] for r in records if validation_key in r]
        out["validation"] = _finite(values[-1]) if values else math.nan
    if out["status"] != "ok":
        out["validation"] = math.nan
    return out


def _finite(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan
