"""A small JSON file of key -> value in the harness cache, shared by concurrent processes:
read fresh before every write (another process may have added entries), replaced
atomically, bounded in size."""

from __future__ import annotations

import functools

import json
from typing import Any

_MISSING = object()


class JsonMemo:
    def __init__(self, name: str, max_entries: int = 500):
        self.name = name
        self.max_entries = max_entries

    @property
    def path(self):
        """Resolved at each use: HARNESS_CACHE_DIR set after import (a test's own cache,
        a sweep's) is honoured, never the directory of whoever imported this first."""
        from harness.cache import cache_dir

        return cache_dir("planner") / self.name

    def read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """The stored value, or `default` (KeyError when none is given)."""
        data = self.read()
        if key in data:
            return data[key]
        if default is _MISSING:
            raise KeyError(key)
        return default

    def __contains__(self, key: str) -> bool:
        return key in self.read()

    def put(self, key: str, value: Any) -> None:
        from harness.store import atomic_write_bytes

        data = self.read()
        if len(data) >= self.max_entries:   # a cache, not a record: start over when full
            data = {}
        data[key] = value
        try:
            atomic_write_bytes(self.path, json.dumps(data, indent=1).encode())
        except OSError:   # a cache, not a record: a full or read-only disk only costs a recomputation
            pass


def stack_key() -> str:
    """The software stack a cached figure was measured on: a new interpreter, torch,
    transformers, numpy or thread setting, or other harness code (what every run imports,
    so part of its framework RSS) measures again."""
    import os
    import sys

    import torch

    from harness.envinfo import _version

    return "|".join(str(v) for v in ("vmhwm", sys.executable, sys.version.split()[0], torch.__version__,
                                     _version("transformers"), _version("numpy"),
                                     os.environ.get("OMP_NUM_THREADS", ""), code_fingerprint()))


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A short hash of the harness's own sources (harness, optimizers, problems): a
    figure cached by other code (an older checkout, a branch) is not reused."""
    import hashlib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for pkg in ("harness", "optimizers", "problems"):
        for f in sorted((root / pkg).rglob("*.py")):
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:12]
