"""digits-hpo with objective=synflow: data free, no training per evaluation, deterministic per seed."""

import math

import pytest
import torch

from harness import registry, store
from cli import main as cli_main
from harness.runner import Budget, RunSpec, run
from problems import digits_hpo

WIDE = {"lr": 1e-3, "width": 200, "depth": 3, "weight_decay": 1e-4, "batch_size": 64, "dropout": 0.1}
NARROW = dict(WIDE, width=16, depth=1)


def _forbid(*_a, **_k):
    raise AssertionError("the synflow objective touched the data or trained")


def test_synflow_objective_is_data_free_deterministic_and_prefers_more_paths(monkeypatch):
    monkeypatch.setattr(digits_hpo, "train_and_score", _forbid)
    monkeypatch.setattr(digits_hpo, "load_split", _forbid)
    p = registry.problem("digits-hpo").create({"objective": "synflow"}, 0)
    wide, narrow = p.objective(WIDE), p.objective(NARROW)
    assert math.isfinite(wide) and wide == p.objective(WIDE)
    assert wide < narrow     # minimised: -log(score), the wider and deeper net has the larger flow
    # training hyperparameters do not enter a data-free score of the untrained net
    assert p.objective(dict(WIDE, lr=0.05, batch_size=256)) == wide
    # the score is of the net the trained objective starts from: same seed, same init
    with torch.random.fork_rng():
        torch.manual_seed(digits_hpo.derive_seed(0, "hpo-train"))
        net, _ = digits_hpo.build_net([{"width": 16, "lr": 0, "weight_decay": 0, "dropout": 0}], 0, 0)
    r = torch.ones(1, 64, dtype=torch.float64)
    for m in (m for m in net if isinstance(m, torch.nn.Linear)):
        r = r @ m.weight.detach().abs().double().t()
    assert narrow == pytest.approx(-math.log(2 * float(r.sum())), rel=1e-12)   # 2 layers x R


def _tpe(tmp_path, counter, seed):
    spec = RunSpec("tpe", "digits-hpo", seed=seed, budget=Budget(evals=12), eval_every=10**9,
                   checkpoint_every=0, runs_dir=str(tmp_path / f"s{seed}-{len(counter)}"),
                   overrides={"problem.objective": "synflow", "problem.train_steps": "20"})
    torch.set_num_threads(1)
    run_dir, summary = run(spec, progress=False)
    assert summary["status"] == "ok" and summary["evals"] == 12
    return store.read_json(run_dir / "summary.json"), [r for r in store.read_metrics(run_dir / "metrics.jsonl")
                                                       if "test_f1" in r]


def test_tpe_on_the_synflow_objective_trains_only_the_chosen_config(tmp_path, monkeypatch):
    calls = []
    real = digits_hpo.train_and_score
    monkeypatch.setattr(digits_hpo, "train_and_score", lambda *a: calls.append(a) or real(*a))
    s1, ev1 = _tpe(tmp_path, calls, 0)
    assert len(calls) == 1 and calls[0][4] == 20     # 12 evaluations, one training: the final eval
    s2, ev2 = _tpe(tmp_path, calls, 0)
    assert len(calls) == 2
    assert s1["best_loss"] == s2["best_loss"] and ev1[-1]["test_f1"] == ev2[-1]["test_f1"]


def test_a_bad_objective_is_exit_2_naming_it(tmp_path, capsys):
    code = cli_main(["run", "--optimizer", "tpe", "--problem", "digits-hpo", "--steps", "1",
                     "--set", "objective=nope", "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "objective" in err[0] and "synflow" in err[0], err
    assert not (tmp_path / "runs").exists()
