"""pytest-benchmark cases of the per-candidate hot paths of docs/overheads.md (not in the test
suite: testpaths = tests); compared in CI with the stored baseline, printed, never judged:

    OMP_NUM_THREADS=1 python -m pytest benchmarks/test_bench_overheads.py

The ratios those paths are judged by (harness against raw pycma, ES against N forwards) come
from the interleaved scripts benchmarks/cma_overhead.py and benchmarks/es_overhead.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's packages

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from harness import registry  # noqa: E402


def _built(problem: str, **sets):
    torch.set_num_threads(1)
    prob = registry.problem(problem).create({k: str(v) for k, v in sets.items()})
    prob.build(torch.device("cpu"))
    return prob


def test_cma_step_bbob_f1_d40(benchmark):
    """One cma generation on bbob-f1-d40 (ask, 15 objective calls, tell, best-so-far)."""
    prob = _built("bbob-f1-d40")
    opt = registry.optimizer("cma").build(prob, 0)
    opt.setup()
    counter = iter(range(10**6))
    result = benchmark(lambda: opt.step(next(counter)))
    assert result.evals == opt.es.popsize


def test_space_decode_40_dims(benchmark):
    """Decoding one 40-dimensional encoded point into a configuration."""
    space = _built("bbob-f1-d40").space
    x = np.linspace(-6.0, 6.0, 40)   # some outside the box: clipped
    config = benchmark(space.decode, x)
    assert config["x0"] == -5.0 and config["x39"] == 5.0


@pytest.fixture(scope="module")
def tiny():
    prob = _built("qwen3-tiny")
    return prob, prob.batch(0)


@pytest.mark.parametrize("optimizer", ["es", "eggroll"])
def test_member_qwen3_tiny(benchmark, tiny, optimizer):
    """One member scored: perturb, forward, restore (eggroll: its default mode on a CPU)."""
    prob, batch = tiny
    opt = registry.optimizer(optimizer).build(prob, 0)
    opt.setup()
    scores = benchmark.pedantic(lambda: opt.evaluate_members(0, batch, [0]), rounds=10, iterations=1)
    assert len(scores) == 1 and np.isfinite(scores[0])
