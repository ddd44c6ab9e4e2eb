"""Runs on a CUDA device (skipped without one; benchmarks/gpu_suite.py runs `-m cuda`)."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_cli

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _losses(runs_dir) -> list:
    rows = [json.loads(line) for line in next(runs_dir.glob("*/metrics.jsonl")).read_text().splitlines()]
    return [(r.get("loss"), r.get("heldout_loss")) for r in rows]


@pytest.mark.parametrize("optimizer", ["es", "eggroll"])
def test_two_cuda_runs_of_one_seed_match_bit_for_bit(tmp_path, optimizer):
    """Seeded noise and fixed batches make a run a function of its seed on CUDA too (bf16
    weights; cuBLAS picks the same kernels for the same shapes on one device)."""
    out = []
    for i in (1, 2):
        d = tmp_path / str(i)
        proc = run_cli("run", "--optimizer", optimizer, "--problem", "qwen3-tiny", "--device", "cuda",
                       "--steps", "4", "--eval-every", "2", "--runs-dir", str(d), "--no-progress",
                       "--checkpoint-every", "0")
        assert proc.returncode == 0, proc.stderr
        out.append(_losses(d))
    assert out[0] == out[1] and len(out[0]) >= 4
