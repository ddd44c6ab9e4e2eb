"""EGGROLL (low-rank ES): the batched low-rank forward equals the explicit W + sigma E
forward, the update is the fp32 matmul it claims, and it learns on qwen3-tiny."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import build_optimizer, make_problem, run_inprocess
from optimizers._perturb import tensor_noise
from optimizers.eggroll import low_rank_factors
from optimizers.population import shape_fitness


def _built(name, device="cpu", **overrides):
    torch.set_num_threads(1)
    prob = make_problem(name, **overrides)
    prob.build(torch.device(device))
    return prob


# The CUDA variant (benchmarks/gpu_suite.py's `tests` stage) runs fp32 weights: bf16, CUDA's
# default, rounds the explicit W + sigma A B^T far above these tolerances. Batched and single
# matmuls take different CUDA kernels (summation orders), hence its looser relative tolerance.
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])]


@pytest.mark.parametrize("problem,overrides,hp", [
    # stacked (the hooks): 4 members in one forward
    ("qwen3-tiny", {"samples": 2}, {"rank": 2, "members_per_forward": 4}),           # Linear + tied Embedding
    ("qwen3-tiny", {"samples": 2}, {"rank": 1, "vectors": "full", "members_per_forward": 4}),  # + RMSNorm (vmap)
    ("digits-mlp", {"batch_size": 16}, {"rank": 3, "vectors": "full", "antithetic": "true",
                                        "members_per_forward": 4}),                 # + biases
    # members_per_forward=1: W + sigma A B^T / sqrt(r) formed in place by addmm, then taken back
    ("qwen3-tiny", {"samples": 2}, {"rank": 2, "vectors": "full", "members_per_forward": 1}),
    ("digits-mlp", {"batch_size": 16}, {"rank": 3, "vectors": "full", "antithetic": "true",
                                        "members_per_forward": 1}),
])
@pytest.mark.parametrize("device", DEVICES)
def test_batched_low_rank_forward_equals_explicit_perturbation(problem, overrides, hp, device):
    prob = _built(problem, device, **overrides, **({"dtype": "float32"} if problem.startswith("qwen3") else {}))
    sigma = 0.05
    opt = build_optimizer("eggroll", prob, 0, population=4, sigma=sigma, **hp)
    batch = prob.batch(3)
    before = [p.detach().clone() for _, p in prob.trainable()]
    batched = opt.evaluate_members(3, batch, range(4))            # 4 members, one forward
    for (_, p), b in zip(prob.trainable(), before):              # the centre is back (in place: to rounding)
        assert torch.allclose(p.detach(), b, rtol=0, atol=1e-6)
        assert hp.get("members_per_forward") == 1 or torch.equal(p.detach(), b)
    assert not opt.hooks.handles                                  # no hook left on the model
    centre = -float(prob.loss(batch).detach())
    r = opt.hp["rank"]
    for j in (1, 2):
        seed, sign = opt.member(3, j)
        saved = [p.detach().clone() for _, p in prob.trainable()]
        with torch.no_grad():
            for t, w in opt.hooks.matrices.items():            # W + sigma A B^T / sqrt(r), formed
                a, b = low_rank_factors(seed, t, w, r)
                w.add_(sign * sigma * (a @ b.T) / math.sqrt(r))
            for t, v in opt.hooks.vectors.items():
                v.add_(sign * sigma * tensor_noise(seed, t, v))
            explicit = -float(prob.loss(batch))
            for (_, p), s in zip(prob.trainable(), saved):
                p.copy_(s)
        assert batched[j] == pytest.approx(explicit, rel=2e-6 if device == "cpu" else 2e-5, abs=1e-6)
        assert abs(explicit - centre) > 1e-4                     # the perturbation did matter
    if hp.get("vectors") == "full":
        assert opt.hooks.vectors


def test_members_per_forward_auto_is_in_place_on_cpu_and_recorded():
    """auto (the default) settles per device before anything runs: in place on a CPU, what
    config.json records; an explicit K is kept; a CUDA plan predicts a stacked K."""
    from harness.spec import Prepared, RunSpec

    prepared = Prepared(RunSpec(optimizer="eggroll", problem="qwen3-tiny", device="cpu",
                                overrides={"optimizer.population": "6"}))
    assert prepared.opt_hp_requested["members_per_forward"] is None
    assert prepared.config("r")["optimizer_params"]["members_per_forward"] == 1
    explicit = Prepared(RunSpec(optimizer="eggroll", problem="qwen3-tiny", device="cpu",
                                overrides={"optimizer.population": "6", "optimizer.members_per_forward": "3"}))
    assert explicit.opt_hp["members_per_forward"] == 3
    if not torch.cuda.is_available():   # no device to size: all N stacked (a prediction)
        on_cuda = prepared.optimizer_class.for_device(prepared.opt_hp_requested, "cuda", prepared.problem)
        assert on_cuda["members_per_forward"] == 6


def test_update_is_the_fitness_weighted_sum_of_low_rank_factors():
    prob = _built("qwen3-tiny", samples=2)
    opt = build_optimizer("eggroll", prob, 0, population=4, rank=2, alpha=0.1)
    fitness = torch.tensor([0.3, -1.0, 2.0, 0.5]).double().numpy()
    t, w = next(iter(opt.hooks.matrices.items()))
    before = w.detach().clone()
    opt.update(5, fitness)
    shaped = shape_fitness(fitness, "zscore")
    want = torch.zeros_like(before)
    for j in range(4):
        a, b = low_rank_factors(opt.member(5, j)[0], t, w, 2)
        want += 0.1 / 4 * float(shaped[j]) * (a @ b.T) / math.sqrt(2)
    assert torch.allclose(w.detach() - before, want, atol=1e-6)


def test_members_per_forward_chunks_give_the_same_fitness():
    prob = _built("qwen3-tiny", samples=2)
    whole = build_optimizer("eggroll", prob, 0, population=6, members_per_forward=6).evaluate_members(
        0, prob.batch(0), range(6))
    chunked = build_optimizer("eggroll", prob, 0, population=6, members_per_forward=4)
    assert chunked.evaluate_members(0, prob.batch(0), range(6)) == pytest.approx(whole, rel=1e-5)


# Margin: about half of the measured drop (seed 0, 20 iterations, population 20, qwen3's
# recommended alpha 0.08): 5.491 -> 4.585 (es with its defaults: 5.491 -> 4.801).
def test_eggroll_lowers_heldout_loss_on_qwen3_tiny(tmp_path):
    m = run_inprocess(tmp_path, "eggroll", 20, population=20)
    assert m[-1]["heldout_loss"] < m[0]["heldout_loss"] - MARGIN
    assert m[-1]["evals"] == 20 * 20


MARGIN = 0.45


def test_in_place_scoring_uses_the_scheduled_sigma():
    prob = _built("qwen3-tiny", samples=2)
    batch, decay = prob.batch(3), {"sigma_schedule": "exponential", "sigma_decay": 0.5}

    def fitness(**hp):
        return build_optimizer("eggroll", prob, 0, population=4, sigma=0.05, **hp).evaluate_members(3, batch, range(4))

    in_place = fitness(members_per_forward=1, **decay)
    assert in_place == pytest.approx(fitness(members_per_forward=4, **decay), rel=1e-5)   # = the stacked forward
    assert max(abs(a - b) for a, b in zip(in_place, fitness(members_per_forward=1))) > 1e-5
