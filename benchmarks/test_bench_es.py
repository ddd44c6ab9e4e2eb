"""pytest-benchmark micro-benchmarks of the hot paths (not in the test suite: testpaths = tests).

Run and compare with the committed baseline (docs/regression.md):

    OMP_NUM_THREADS=1 python -m pytest benchmarks --benchmark-storage=benchmarks/baseline \
        --benchmark-compare='*/0001_baseline' --benchmark-columns=min,median,mean,rounds

Record a new baseline: same storage flag with --benchmark-save=baseline.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's packages

import pytest  # noqa: E402
import torch  # noqa: E402

from harness import registry  # noqa: E402
from optimizers._perturb import tensor_noise  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    prob = registry.problem("qwen3-tiny").create()
    prob.build(torch.device("cpu"))
    es = registry.optimizer("es").build(prob, 0)
    es.setup()
    return prob, es


def test_es_step_qwen3_tiny(benchmark, tiny):
    """One ES iteration: 30 members on one 8 x 64-token batch, plus the update."""
    _, es = tiny
    counter = iter(range(10**6))
    result = benchmark.pedantic(lambda: es.step(next(counter)), rounds=3, iterations=1)
    assert result.evals == 30


def test_noise_regeneration_qwen3_tiny(benchmark, tiny):
    """Regenerating one member's noise for every tensor of qwen3-tiny."""
    prob, _ = tiny
    params = [p for _, p in prob.trainable()]

    def regen():
        return sum(tensor_noise(123, i, p).numel() for i, p in enumerate(params))

    assert benchmark(regen) == prob.param_count()


def test_recorder_write(benchmark, tmp_path):
    """One metrics.jsonl record (write, flush): what the runner pays per step."""
    from harness.store import MetricsWriter

    writer = MetricsWriter(tmp_path / "metrics.jsonl")
    record = {"step": 1, "evals": 30, "time_s": 0.123456, "loss": 5.1234, "sigma": 0.01, "best_so_far": 5.0}
    benchmark(writer.write, record)
    writer.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) >= 1 and lines[0].startswith('{"step": 1')
