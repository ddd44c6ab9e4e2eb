"""softmask: the exact budget, better than random pruning, refused where no gradient is offered."""

import pytest
import torch

from harness import registry
from harness.errors import UsageError
from harness.problem import Pruned
from optimizers.pruning import split_global, top_k_mask


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


def _problem(sparsity: int):
    problem = registry.problem(f"digits-prune-{sparsity}").create({"hidden": "64", "train_steps": "300"}, 0)
    problem.check()
    problem.build(torch.device("cpu"))
    return problem


def _softmask(problem, **hp):
    torch.set_num_threads(1)
    opt = registry.optimizer("softmask").build(problem, 0, **hp)
    opt.setup()
    while not opt.is_finished():
        opt.step(opt.done)
    return opt


def test_softmask_hits_the_exact_budget_and_beats_random_pruning():
    problem = _problem(90)
    weights = [w for _, w in problem.prunable()]
    dense = [w.clone() for w in weights]
    opt = _softmask(problem, steps=100)
    pruned = opt.solution()
    assert sum(int(m.sum()) for m in pruned.masks) == problem.keep_count()
    assert all(torch.equal(a, b) for a, b in zip(weights, dense))      # the trained weights stay frozen
    ev = problem.evaluate(pruned)
    assert ev["sparsity"] == pytest.approx(1 - problem.keep_count() / sum(w.numel() for w in weights), abs=0)
    g = torch.Generator().manual_seed(0)
    randoms = []
    for _ in range(3):   # random masks of the same global budget
        scores = torch.rand(sum(w.numel() for w in weights), generator=g)
        masks = split_global(top_k_mask(scores, problem.keep_count()), [w.shape for w in weights])
        randoms.append(problem.evaluate(Pruned(masks))["metric"])
    assert ev["metric"] > max(randoms) + 0.3, (ev["metric"], randoms)


def test_softmask_refuses_a_pruning_problem_without_a_differentiable_loss():
    problem = _problem(90)
    type(problem).DIFFERENTIABLE = False
    try:
        with pytest.raises(UsageError, match="softmask needs a differentiable masked loss"):
            registry.optimizer("softmask").factory.check_problem(problem)
    finally:
        type(problem).DIFFERENTIABLE = True
