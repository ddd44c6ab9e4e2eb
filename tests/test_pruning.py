"""Pruning problems and optimizers: exact budgets, SynFlow, energy compensation, caching."""

import numpy as np
import pytest
import torch

from conftest import load_jsonl, without_time
from harness import registry, store
from harness.problem import Pruned
from harness.runner import Budget, RunSpec, run
from optimizers.pruning import (energy_scales, iterative_synflow, layer_counts, magnitude_masks,
                                synflow_scores)

SMALL = {"hidden": "48", "train_steps": "150"}   # a small dense net, trained in well under a second


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))


def _problem(sparsity: int, seed: int = 0, **hp):
    problem = registry.problem(f"digits-prune-{sparsity}").create({**SMALL, **hp}, seed)
    problem.check()
    problem.build(torch.device("cpu"))
    return problem


def _kept(masks) -> int:
    return sum(int(m.sum()) for m in masks)


@pytest.mark.parametrize("sparsity", [50, 90, 98])
def test_magnitude_hits_the_exact_sparsity_and_keeps_the_largest(sparsity):
    problem = _problem(sparsity)
    weights = [w for _, w in problem.prunable()]
    total = sum(w.numel() for w in weights)
    keep = problem.keep_count()
    assert keep == round((1 - sparsity / 100) * total)
    masks = magnitude_masks(weights, keep)
    assert _kept(masks) == keep
    kept_abs = torch.cat([w.abs()[m] for w, m in zip(weights, masks)])
    gone_abs = torch.cat([w.abs()[~m] for w, m in zip(weights, masks)])
    assert kept_abs.min() >= gone_abs.max()          # global, not per layer
    ev = problem.evaluate(Pruned(masks))
    assert ev["sparsity"] == pytest.approx(1 - keep / total, abs=0) and 0 <= ev["metric"] <= 1


def test_synflow_scores_are_synaptic_flow_and_masks_differ_from_magnitude():
    problem = _problem(90)
    weights = [w for _, w in problem.prunable()]
    ones = [torch.ones_like(w, dtype=torch.float64) for w in weights]
    scores, r = synflow_scores(weights, ones)
    # R = 1^T |W_L| ... |W_1| 1, and (conservation, Tanaka et al. Thm 1) each layer's scores sum to R
    prod = torch.ones(1, 64, dtype=torch.float64)
    for w in weights:
        prod = prod @ w.abs().double().t()
    assert r == pytest.approx(float(prod.sum()), rel=1e-9)
    for s in scores:
        assert float(s.sum()) == pytest.approx(r, rel=1e-6)
    keep = problem.keep_count()
    syn = iterative_synflow(weights, keep, iterations=20)
    mag = magnitude_masks(weights, keep)
    assert _kept(syn) == keep
    same = sum(int((a & b).sum()) for a, b in zip(syn, mag))
    assert same < 0.9 * keep, "synflow must not be magnitude pruning in disguise"
    # SynFlow avoids layer collapse: every layer keeps something
    assert all(int(m.sum()) > 0 for m in syn)


def test_layer_counts_split_the_budget_exactly():
    rng = np.random.default_rng(0)
    sizes = [4096, 65536, 2560]
    for keep in (1, 1690, 8448, 42240, sum(sizes)):
        for _ in range(20):
            counts = layer_counts(rng.uniform(-4, 4, 3), sizes, keep)
            assert sum(counts) == keep and all(0 <= c <= n for c, n in zip(counts, sizes))
    uniform = layer_counts(np.zeros(3), sizes, round(0.1 * sum(sizes)))        # x = 0: the global density everywhere
    assert [c / n for c, n in zip(uniform, sizes)] == pytest.approx([0.1] * 3, abs=1e-3)


def test_energy_compensation_preserves_each_layer_l2_norm():
    problem = _problem(95)
    weights = [w for _, w in problem.prunable()]
    masks = iterative_synflow(weights, layer_counts(np.array([1.0, -0.5, 2.0]),
                                                    [w.numel() for w in weights], problem.keep_count()), 10)
    scales = energy_scales(weights, masks)
    assert all(c > 1 for c in scales)
    for w, m, c in zip(weights, masks, scales):
        assert float((w * m * c).norm()) == pytest.approx(float(w.norm()), rel=1e-5)
    # and the problem scores the compensated weights it is given
    problem._load(Pruned(masks, scales))
    for lin, w in zip(problem.linears, weights):
        assert float(lin.weight.norm()) == pytest.approx(float(w.norm()), rel=1e-5)
    problem._restore()


def test_synflow_cma_run_exact_budget_and_bit_identical_rerun(tmp_path):
    def go(sub, **extra):
        return run(RunSpec(optimizer="synflow-cma", problem="digits-prune-98", seed=1, budget=Budget(evals=12),
                           overrides={**SMALL, "iterations": "5", "popsize": "6", **extra},
                           runs_dir=str(tmp_path / sub), checkpoint_every=0), progress=False)

    dir_a, sa = go("a")
    dir_b, sb = go("b")
    assert sa["status"] == "ok" and sa["evals"] == 12 and sa["steps"] == 2
    ra, rb = load_jsonl(dir_a / "metrics.jsonl"), load_jsonl(dir_b / "metrics.jsonl")
    assert without_time(ra) == without_time(rb)           # overhead/objective times aside
    assert ra[-1]["sparsity"] == pytest.approx(0.98, abs=1e-4)
    assert sa["objective_s"] > 0 and sa["overhead_s"] > 0
    assert sa["objective_s"] + sa["overhead_s"] == pytest.approx(sa["optimizer_time_s"], rel=1e-6)
    cfg = store.read_json(dir_a / "config.json")
    assert cfg["optimizer_params"]["fitness"] == "val-f1" and cfg["optimizer_params"]["energy_compensation"]
    _, sc = go("c", fitness="synflow")                   # the data-free fitness variant
    assert sc["status"] == "ok" and sc["final_metric"] is not None


def test_one_shot_methods_stop_after_one_step_and_dense_net_is_cached(tmp_path, monkeypatch):
    run_dir, summary = run(RunSpec(optimizer="magnitude", problem="digits-prune-70", budget=Budget(steps=5),
                                   overrides=SMALL, runs_dir=str(tmp_path)), progress=False)
    assert summary["status"] == "ok" and summary["steps"] == 1 and summary["evals"] == 1
    assert list((tmp_path / "cache" / "digits-prune").glob("*.pt"))
    import problems.digits_prune as dp

    def no_training(*a, **k):
        raise AssertionError("the cached dense net must be reused")

    train_dense = dp.train_dense
    monkeypatch.setattr(dp, "train_dense", no_training)
    _, again = run(RunSpec(optimizer="synflow", problem="digits-prune-70", budget=Budget(steps=1),
                           overrides={**SMALL, "iterations": "5"}, runs_dir=str(tmp_path)), progress=False)
    assert again["status"] == "ok"
    p0 = _problem(70, seed=0)
    monkeypatch.setattr(dp, "train_dense", train_dense)
    p1 = _problem(70, seed=1)            # a different seed is a different dense network
    assert not torch.equal(p0.dense[0], p1.dense[0])


def test_finetune_is_reported_separately():
    problem = _problem(90, finetune_steps="20")
    weights = [w for _, w in problem.prunable()]
    ev = problem.evaluate(Pruned(magnitude_masks(weights, problem.keep_count())))
    assert "finetuned_f1" in ev and ev["metric"] != ev["finetuned_f1"]


def test_pruning_optimizer_on_a_search_space_is_refused(cli, tmp_path):
    proc = cli("run", "--optimizer", "synflow-cma", "--problem", "digits-hpo", "--runs-dir", str(tmp_path))
    assert proc.returncode == 2 and "pruning" in proc.stderr and "search-space" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_bias_correction_restores_each_layers_mean_preactivation_without_touching_weights():
    problem = _problem(98, bias_correction="true")
    weights = [w for _, w in problem.prunable()]
    pruned = Pruned(magnitude_masks(weights, problem.keep_count()))
    masked = problem._masked(pruned)
    biases = problem._biases(masked)
    x, it = problem.data.x_train, iter(zip(masked, biases, problem.dense_means))
    for m in problem.model:
        if isinstance(m, torch.nn.Linear):
            w, b, target = next(it)
            x = torch.nn.functional.linear(x, w, b)
            assert torch.allclose(x.mean(0), target, atol=1e-4)
        else:
            x = m(x)
    assert all(torch.equal(a, b) for a, b in zip(masked, problem._masked(pruned)))
    plain = _problem(98)
    assert plain._biases(masked) is plain.dense_biases     # off by default: biases as trained


def test_neuron_compensation_restores_every_rows_norm():
    from optimizers.pruning import neuron_energy_scales

    problem = _problem(90)
    weights = [w for _, w in problem.prunable()]
    masks = magnitude_masks(weights, problem.keep_count())
    for w, m, c in zip(weights, masks, neuron_energy_scales(weights, masks)):
        kept = (w * m).norm(dim=1) > 0
        assert torch.allclose((w * m * c).norm(dim=1)[kept], w.norm(dim=1)[kept], rtol=1e-5)
        assert torch.all(c.squeeze(1)[~kept] == 1)
