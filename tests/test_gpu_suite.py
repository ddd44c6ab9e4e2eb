"""benchmarks/gpu_suite.py --smoke: the GPU measurement script runs end to end on CPU at
tiny sizes and writes its JSON and Markdown (no figure of it is a GPU figure)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_suite_smoke_writes_json_and_markdown(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_suite", ROOT / "benchmarks" / "gpu_suite.py")
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    suite.main(["--smoke", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert result["smoke"] and result["device"] == "cpu" and not result["skipped"]
    rows = {(r["optimizer"], r["problem"]): r for r in result["memory"]}
    assert set(rows) == {("es", "qwen3-tiny"), ("mezo", "qwen3-tiny"), ("adam", "qwen3-tiny")}
    assert all(r["status"] == "ok" and r["planned_bytes"] > 0 and r["measured_bytes"] > 0 for r in rows.values())
    speed = result["speed"]["methods"]
    assert set(speed) == {"forward", "es", "eggroll", "mezo", "adam"}
    assert speed["adam"]["flops"] == 3 * speed["forward"]["flops"] == 3 * speed["mezo"]["flops"] / 2
    assert all(r["mfu"] is None for r in speed.values())      # no peak known for a CPU
    md = (tmp_path / "gpu_suite.md").read_text()
    assert "| es | qwen3-tiny |" in md and "| eggroll |" in md and "members/s" in md
