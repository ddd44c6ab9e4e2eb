"""Where the harness caches what it builds once and reuses (trained models,
tokenized corpora, expert adapters): $HARNESS_CACHE_DIR, else
~/.cache/optbench-harness. Entries are written atomically by their owners."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    root = Path(os.environ.get("HARNESS_CACHE_DIR") or Path.home() / ".cache" / "optbench-harness")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
