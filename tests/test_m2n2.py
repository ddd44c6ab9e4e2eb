"""M2N2: the operators against the formulas of the authors' code (natural_niches_fn.py,
helper_fn.py), the archive's survival rule, and a run on the smoke LoRA world."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optimizers.m2n2 import pick_parents, shared_fitness, slerp_split, survivor_slot


def test_shared_fitness_divides_each_sample_among_its_solvers():
    s = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])
    f, m = shared_fitness(s, alpha=1.0)
    # sample 0 solved by two models: each gets 1/2; samples 1 and 3 by one each: 1
    assert f.tolist() == [1.5, 0.5, 1.0] and m[0, 0] == 0.5
    assert shared_fitness(s, alpha=0.0)[0].tolist() == s.sum(1).tolist()   # alpha 0: plain accuracy


def test_attraction_picks_the_mate_that_solves_what_a_misses():
    s = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1.0]])
    filled = np.ones(3, bool)
    mates = {pick_parents(s, filled, 1.0, np.random.default_rng(k)) for k in range(50)}
    assert all(b == 2 for a, b in mates if a in (0, 1))   # 0 and 1 can only gain from 2
    assert {b for a, b in mates if a == 2} == {0, 1}       # 2 gains from either


def test_slerp_split_moves_the_boundary():
    x, y = torch.tensor([1.0, 0, 1, 0]), torch.tensor([0.0, 1, 0, 1])   # orthogonal
    out = slerp_split(x, y, 0.0, 2)   # ratio 0 before the split (x's), 1 from it on (y's)
    assert torch.allclose(out, torch.tensor([1.0, 0, 0, 1]), atol=1e-6)
    mid = slerp_split(x, y, 0.5, 4)   # the whole vector at 1/2: the arc's midpoint
    assert torch.allclose(mid, (x + y) * 2 ** -0.5, atol=1e-6)
    par = slerp_split(x, 2 * x, 0.25, 4)   # parallel: linear interpolation
    assert torch.allclose(par, 1.25 * x)


def test_survivor_replaces_the_lowest_shared_fitness_unless_it_is_the_child():
    s = np.array([[1, 1, 0, 0], [1, 0, 0, 0.0]])   # model 1 only duplicates model 0
    assert survivor_slot(s, np.array([0, 0, 1, 1.0]), 1.0) == 1   # a specialist displaces it
    # a tie with the duplicate: the first lowest is the archive's slot (as jnp.argmin)
    assert survivor_slot(s, np.array([1, 0, 0, 0.0]), 1.0) == 1
    assert survivor_slot(s, np.array([0, 0, 0, 0.0]), 1.0) is None  # useless child: dropped


@pytest.mark.usefixtures("module_cache")
def test_m2n2_never_loses_the_best_expert(tmp_path):
    """The experts enter, then merges; the reported val accuracy (the archive's best) is at
    least the best expert's on the smoke world."""
    from conftest import conformance_sets, run_inprocess

    sets = {k.split(".", 1)[1]: v for k, v in conformance_sets("m2n2", "experts").items()}
    best = run_inprocess(tmp_path / "b", "best-expert", 1, problem="lora-count", **{
        k: v for k, v in sets.items() if k not in ("population", "children", "iterations")})
    m = run_inprocess(tmp_path / "m", "m2n2", 3, problem="lora-count", **sets)
    assert m[-1]["evals"] == 3 + 3 * 2   # 3 experts enter, then 2 merges a step
    assert 1 - m[-1]["loss"] >= best[-1]["val_accuracy"] - 1e-9
