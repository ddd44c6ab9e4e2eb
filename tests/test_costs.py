"""Cost axes (harness.costs): forwards per step of each optimizer, tokens and FLOPs of
qwen3-tiny against the written formula, the --forwards budget, search spaces, MFU."""

from __future__ import annotations

import pytest
import torch

from conftest import run_inprocess
from harness import costs, runner
from harness.errors import UsageError
from harness.optimizer import StepResult

# qwen3-tiny: 2 layers, hidden 64, 4 heads x head_dim 16, tied; defaults samples=8, seq_len=64
TINY_LAYERS, TINY_ATTN_WIDTH, SAMPLES, SEQ = 2, 4 * 16, 8, 64


def _tiny_flops_per_forward() -> float:
    """The formula written out: (2 N + 4 L (H Q) T) per token, N = all parameters (tied)."""
    from conftest import make_problem

    n = make_problem("qwen3-tiny").param_count()
    tokens = SAMPLES * SEQ
    return (2 * n + 4 * TINY_LAYERS * TINY_ATTN_WIDTH * SEQ) * tokens


@pytest.mark.parametrize("optimizer,sets,per_step", [
    ("es", {"optimizer.population": 30}, 30),   # one forward per member
    ("mezo", {}, 2),                            # l+ and l-
    ("adam", {}, 3),                            # forward + backward (2)
])
def test_forwards_tokens_flops_per_step(tmp_path, optimizer, sets, per_step):
    records = run_inprocess(tmp_path, optimizer, 2, **sets)
    steps = [r for r in records if r["step"] > 0]
    assert [r["forwards"] for r in steps] == [per_step, 2 * per_step]
    assert [r["tokens"] for r in steps] == [SAMPLES * SEQ, 2 * SAMPLES * SEQ]   # data consumed once a step
    flops = _tiny_flops_per_forward()
    assert [r["flops"] for r in steps] == pytest.approx([per_step * flops, 2 * per_step * flops], rel=1e-12)
    assert "mfu" not in steps[-1]                                               # CPU: no peak rate
    assert "forwards" not in records[0]                                         # the untimed initial eval


def test_forwards_budget_stops_at_the_first_step_reaching_it(tmp_path):
    spec = runner.RunSpec("es", "qwen3-tiny", budget=runner.Budget(forwards=25),
                          overrides={"optimizer.population": "10"}, runs_dir=str(tmp_path), checkpoint_every=0)
    torch.set_num_threads(1)
    _, summary = runner.run(spec, progress=False)
    assert (summary["steps"], summary["forwards"], summary["tokens"]) == (3, 30, 3 * SAMPLES * SEQ)
    assert summary["flops"] == pytest.approx(30 * _tiny_flops_per_forward(), rel=1e-12)


def test_bad_forwards_budget_names_the_flag():
    with pytest.raises(UsageError, match="--forwards 0"):
        runner.Budget(forwards=0)


def test_search_space_flops_count_evaluations(tmp_path):
    records = run_inprocess(tmp_path, "random", 3, problem="bbob-f1-d2", **{"optimizer.batch": 2})
    last = records[-1]
    assert last["forwards"] == last["flops"] == last["evals"] == 6
    assert "tokens" not in last


def test_mfu_uses_the_peak_table(monkeypatch):
    assert costs.peak_bf16_flops(torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert costs.peak_bf16_flops(torch.device("cuda")) == 756e12   # not the SXM row
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert costs.peak_bf16_flops(torch.device("cuda")) == 989e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Future GPU")
    assert costs.peak_bf16_flops(torch.device("cuda")) is None
    state = runner.RunState()
    record = state.advance(StepResult(loss=1.0, evals=1, forwards=3), 2.0, None,
                           costs.StepCost(tokens=10, flops_per_forward=1e12), peak_flops=1e12)
    assert record["flops"] == 3e12 and record["mfu"] == pytest.approx(3e12 / 2.0 / 1e12)
