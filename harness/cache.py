"""Where the harness caches what it builds once and reuses (trained models,
tokenized corpora, expert adapters): $HARNESS_CACHE_DIR, else
~/.cache/optbench-harness. Entries are written atomically by their owners.

A cache that cannot be written (a read-only home on a compute node) is not a
reason to fail a run: the cache moves to the temp directory, said once."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

_warned: set[str] = set()


def _root() -> Path:
    return Path(os.environ.get("HARNESS_CACHE_DIR") or Path.home() / ".cache" / "optbench-harness")


def _fallback() -> Path:
    return Path(tempfile.gettempdir()) / f"optbench-harness-cache-{os.getuid()}"


def cache_dir(*parts: str) -> Path:
    root = _root()
    path = root.joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if os.access(path, os.W_OK):
            return path
        why = "not writable"
    except OSError as exc:
        why = exc.strerror or str(exc)
    fallback = _fallback().joinpath(*parts)
    fallback.mkdir(parents=True, exist_ok=True)
    if str(root) not in _warned:
        _warned.add(str(root))
        print(f"warning: cache {root} cannot be used ({why}); caching in {_fallback()} instead "
              "(set HARNESS_CACHE_DIR to a writable directory)", file=sys.stderr, flush=True)
    return fallback
