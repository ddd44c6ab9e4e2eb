"""The problem contract, checked on the registry (the twin of test_conformance.py for
problems): a new problem is covered the day it registers.

- every registered problem: check() builds no model and allocates no large tensor
  (it runs before anything is written, on sizes far beyond this machine);
- the smallest size of each family, built with its class's SMOKE_SETTINGS:
  batches are pure functions of the step (a second instance of the same seed draws
  the same ones), evaluate() returns the declared metric (and the validation key
  it declares), as finite numbers.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from harness import registry
from harness.problem import Pruned, PruningProblem, SearchSpaceProblem, WeightsProblem

registry.load_all()

LARGE = 2**24   # elements: a tensor this big in check() means something was built


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _smallest_of_each_family() -> list[str]:
    """Per family, the registered size with the fewest parameters (counted without
    allocating), else the first in natural order."""
    families: dict[str, list[str]] = {}
    for name, entry in registry.PROBLEMS.items():
        families.setdefault(entry.family or name, []).append(name)

    def size(name):
        count = registry.problem(name).create().param_count()
        return (count if count is not None else 0, _natural(name))

    return sorted(min(names, key=size) for names in families.values())


class _Allocations(TorchDispatchMode):
    """The largest tensor any torch op returned while active."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


pytestmark = pytest.mark.usefixtures("module_cache")


@pytest.mark.parametrize("name", sorted(registry.PROBLEMS, key=_natural))
def test_check_builds_nothing(name, monkeypatch):
    problem = registry.problem(name).create()
    modules = []
    real_init = torch.nn.Module.__init__

    def counting_init(self, *args, **kwargs):
        modules.append(type(self).__name__)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__init__", counting_init)
    with _Allocations() as allocations:
        problem.check()
    assert not modules, f"check() built {modules[:3]}"
    assert allocations.largest < LARGE, allocations.largest
    assert getattr(problem, "model", None) is None


def _built(name: str, seed: int = 0):
    entry = registry.problem(name)
    problem = entry.create({k: str(v) for k, v in entry.factory.SMOKE_SETTINGS.items()}, seed)
    problem.build(torch.device("cpu"))
    return problem


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _solution(problem):
    """Something evaluate() scores: the centre of a search space, the magnitude mask of a
    pruning problem; weights problems hold their solution (None)."""
    if isinstance(problem, SearchSpaceProblem):
        low, high = problem.space.bounds()
        return problem.space.decode(list((np.asarray(low) + np.asarray(high)) / 2))
    if isinstance(problem, PruningProblem):
        weights = [w.detach() for _, w in problem.prunable()]
        flat = torch.cat([w.abs().flatten() for w in weights])
        cut = flat.kthvalue(flat.numel() - problem.keep_count() + 1).values
        return Pruned([w.abs() >= cut for w in weights])
    return None


@pytest.mark.parametrize("name", _smallest_of_each_family())
def test_batches_are_pure_and_evaluate_gives_the_metric(name, one_thread):
    problem = _built(name)
    offers_batches = isinstance(problem, WeightsProblem) or getattr(problem, "DIFFERENTIABLE", False)
    if offers_batches:
        again = _built(name)
        first = [problem.batch(k) for k in (0, 3)]
        assert _same(first[0], problem.batch(0)) and _same(first[1], again.batch(3))
        assert _same(again.batch(0), first[0])
    result = problem.evaluate(_solution(problem))
    cls = type(problem)
    assert "metric" in result and math.isfinite(result["metric"]), result
    if cls.VALIDATION_KEY is not None:
        assert cls.VALIDATION_KEY in result and math.isfinite(result[cls.VALIDATION_KEY]), result
