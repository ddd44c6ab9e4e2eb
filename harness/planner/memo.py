"""A small JSON file of key -> value in the harness cache, shared by concurrent processes:
read fresh before every write (another process may have added entries), replaced
atomically, bounded in size."""

from __future__ import annotations

import json
from typing import Any

_MISSING = object()


class JsonMemo:
    def __init__(self, name: str, max_entries: int = 500):
        from harness.cache import cache_dir

        self.path = cache_dir("planner") / name
        self.max_entries = max_entries

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
        atomic_write_bytes(self.path, json.dumps(data, indent=1).encode())


def stack_key() -> str:
    """The software stack a cached figure was measured on: a new interpreter, torch,
    transformers, numpy or thread setting measures again."""
    import os
    import sys

    import torch

    from harness.envinfo import _version

    return "|".join(str(v) for v in ("vmhwm", sys.executable, sys.version.split()[0], torch.__version__,
                                     _version("transformers"), _version("numpy"),
                                     os.environ.get("OMP_NUM_THREADS", "")))
