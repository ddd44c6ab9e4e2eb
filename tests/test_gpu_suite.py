"""benchmarks/gpu_suite.py --smoke: the GPU measurement script runs end to end on CPU at
tiny sizes, as `gpu_device.sh check` runs it (no index, the optional libraries made
unimportable, as on the GPU image), and writes its JSON and Markdown (no figure of it is a
GPU figure). The run path needs none of the optional libraries; an adapter that does says
what to install."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT

WITHOUT_OPTIONAL = {"PYTHONPATH": str(ROOT / "benchmarks" / "without_optional"), "PIP_NO_INDEX": "1",
                    "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _python(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, **WITHOUT_OPTIONAL, **(env or {})})


def test_gpu_suite_smoke_without_the_optional_libraries(tmp_path):
    proc = _python("benchmarks/gpu_suite.py", "--smoke", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert result["smoke"] and result["device"] == "cpu"
    assert not result["skipped"] and not result["errors"], (result["skipped"], result["errors"])
    rows = {(r["optimizer"], r["problem"]): r for r in result["memory"]}
    assert set(rows) == {("es", "qwen3-tiny"), ("mezo", "qwen3-tiny"), ("adam", "qwen3-tiny")}
    assert all(r["status"] == "ok" and r["planned_bytes"] > 0 and r["measured_bytes"] > 0 for r in rows.values())
    speed = result["speed"]["methods"]
    assert set(speed) == {"forward", "es", "eggroll", "mezo", "adam"}
    assert speed["adam"]["flops"] == 3 * speed["forward"]["flops"] == 3 * speed["mezo"]["flops"] / 2
    assert speed["forward"]["flops"] == result["speed"]["forward_flops"] > 0
    assert all(r["mfu"] is None for r in speed.values())      # no peak known for a CPU
    cli = result["cli"]                                       # the user's command, in its own process
    assert cli["rc"] == 0 and cli["summary"]["status"] == "ok" and cli["summary"]["steps"] == 3
    assert cli["planned_bytes"] > 0 and cli["summary"]["peak_memory_bytes"] > 0
    md = (tmp_path / "gpu_suite.md").read_text()
    assert "| es | qwen3-tiny |" in md and "| eggroll |" in md and "members/s" in md
    assert "-m harness run --optimizer es --problem qwen3-tiny" in md


def test_gpu_suite_budget_leaves_partial_results(tmp_path):
    proc = _python("benchmarks/gpu_suite.py", "--smoke", "--out", str(tmp_path), "--budget-s", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_suite.json").read_text())
    assert result["skipped"] == ["plans", "speed", "memory", "cli"] and result["memory"] == []
    assert (tmp_path / "gpu_suite.md").exists() and not list(tmp_path.glob("*.tmp"))


def test_run_and_plan_need_no_optional_library(tmp_path):
    code = ("import importlib.util, sys, sitecustomize\n"      # benchmarks/without_optional's
            "from cli import main\n"
            "assert 'cma' in sitecustomize.OPTIONAL\n"
            "assert all(importlib.util.find_spec(m) is None for m in sitecustomize.OPTIONAL)\n"
            "assert main(['plan', '--optimizer', 'es', '--problem', 'qwen3-0.5b', '--device', 'cuda']) == 0\n"
            f"sys.exit(main(['run', '--optimizer', 'es', '--problem', 'qwen3-tiny', '--steps', '2', "
            f"'--runs-dir', {str(tmp_path / 'runs')!r}, '--no-progress']))\n")
    proc = _python("-c", code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "qwen3-0.5b" in proc.stdout and len(list((tmp_path / "runs").glob("*/summary.json"))) == 1


def test_an_adapter_whose_library_is_missing_says_what_to_install(tmp_path):
    proc = _python("-m", "harness", "run", "--optimizer", "cma", "--problem", "sphere-50", "--steps", "1",
                   "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: optimizer 'cma' needs cma, which is not installed here; "
                                   "pip install cma")
    assert not (tmp_path / "runs").exists()                  # nothing written
