"""The optimizer contract, checked for every registered optimizer on the smallest
problem of each kind it accepts (models: evosax tests/conftest.py, optax
alias_test.py). A new optimizer is covered the day it registers.

For each (optimizer, kind): 3 steps run and record; killed after step 2 and
resumed gives the uninterrupted trajectory (time fields excluded); a bad value
of each declared hyperparameter is exit 2 with nothing written; defaults
round-trip through the parser; the memory model gives non-negative integers.
"""

from __future__ import annotations

import pytest
import torch

from conftest import load_jsonl, only_run_dir, without_time
from harness import planner, registry, runner
from cli import main as cli_main
from harness.faults import FaultHooks
from harness.params import Param

registry.load_all()

# The smallest problem of each kind, with settings that keep a step to a fraction of a second.
LORA_TINY = {"world_experts": 3, "world_expert_steps": 3, "world_pretrain_steps": 3, "world_hidden": 32,
             "world_layers": 1, "n_val": 20, "n_test": 20, "samples": 8}
SMALLEST = {
    "search-space": ("bbob-f1-d2", {}),
    "weights": ("digits-mlp", {}),
    "pruning": ("digits-prune-90", {"hidden": 32, "train_steps": 30}),
    "experts": ("lora-count", LORA_TINY),
}
# Optimizer settings that keep 3 steps short (population sizes, budgets); nothing else.
FAST = {
    "es": {"population": 4}, "eggroll": {"population": 4}, "cma": {"popsize": 4}, "synflow": {"iterations": 3},
    "synflow-cma": {"popsize": 4, "iterations": 3}, "genome": {"population": 4, "iterations": 3},
    "genome+": {"population": 4, "iterations": 3}, "random": {"batch": 2}, "nevergrad": {"budget": 6},
    "softmask": {"steps": 3},
}
CASES = [(name, kind) for name, entry in sorted(registry.OPTIMIZERS.items()) for kind in entry.kinds]


def _sets(name: str, kind: str) -> dict:
    _, problem_sets = SMALLEST[kind]
    sets = {f"problem.{k}": str(v) for k, v in problem_sets.items()}
    sets.update({f"optimizer.{k}": str(v) for k, v in FAST.get(name, {}).items()})
    return sets


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """One harness cache for the module (the LoRA world and trained nets are built once)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


class _Killed(BaseException):
    """A hard kill, in process: not an Exception, so the run records nothing more."""


class _KillAfter(FaultHooks):
    def after_step(self, step, flush):
        if step == self.kill_at:
            flush()
            raise _Killed()


def _run(tmp_path, name, kind, steps=3, kill_at=0):
    torch.set_num_threads(1)
    spec = runner.RunSpec(name, SMALLEST[kind][0], seed=1, budget=runner.Budget(steps=steps),
                          overrides=_sets(name, kind), eval_every=1, checkpoint_every=1,
                          runs_dir=str(tmp_path))
    return runner.run(spec, progress=False)


def test_every_optimizer_has_a_case():
    assert len(CASES) >= len(registry.OPTIMIZERS) == 16
    assert {kind for _, kind in CASES} <= set(SMALLEST)


@pytest.mark.parametrize("name,kind", CASES)
def test_three_steps_then_kill_and_resume_is_exact(name, kind, tmp_path, monkeypatch):
    run_dir, summary = _run(tmp_path / "full", name, kind)
    assert summary["status"] == "ok", summary["reason"]
    assert summary["kind"] == kind and 1 <= summary["steps"] <= 3   # one-shot methods stop at 1
    full = load_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in full] == list(range(summary["steps"] + 1))
    assert all({"step", "evals", "time_s", "loss", "metric"} <= set(r) for r in full[1:])

    kill_at = min(2, summary["steps"])
    monkeypatch.setattr(runner.FaultHooks, "from_env", classmethod(lambda cls, env=None: _KillAfter(kill_at=kill_at)))
    with pytest.raises(_Killed):
        _run(tmp_path / "killed", name, kind)
    monkeypatch.undo()
    killed_dir = only_run_dir(tmp_path / "killed")
    assert len(load_jsonl(killed_dir / "metrics.jsonl")) == kill_at + 1
    _, resumed = runner.resume(killed_dir, progress=False)
    assert resumed["status"] == "ok", resumed["reason"]
    assert without_time(load_jsonl(killed_dir / "metrics.jsonl")) == without_time(full)
    # every adapter counts its forwards: each evaluation costs at least one (harness.costs)
    assert all(r["forwards"] >= r["evals"] for r in full[1:]) and summary["forwards"] >= summary["evals"]
    assert resumed["final_loss"] == summary["final_loss"] and resumed["final_metric"] == summary["final_metric"]


def _bad_values(param: Param) -> list[str]:
    """Values the parser or the optimizer's own check must refuse."""
    if param.choices is not None:
        return ["no-such-choice"]
    bad = {bool: ["maybe"], int: ["2.5", "x"], float: ["x"], str: [""]}[param.type]
    if param.low is not None:
        bad.append(str(param.low - 1))
    if param.high is not None:
        bad.append(str(param.high + 1))
    return bad


BAD = [(name, kind, key, value) for name, kind in CASES
       for key, param in registry.OPTIMIZERS[name].schema()[0].items()
       for value in _bad_values(param)
       # a free-form string is refused only where the optimizer checks it (nevergrad's name)
       if not (param.type is str and param.choices is None and name != "nevergrad")]


@pytest.mark.parametrize("name,kind,key,value", BAD)
def test_a_bad_value_is_exit_2_and_writes_nothing(name, kind, key, value, tmp_path, capsys):
    problem, _ = SMALLEST[kind]
    code = cli_main(["run", "--optimizer", name, "--problem", problem, "--steps", "1",
                     "--set", f"optimizer.{key}={value}", "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and key in err[0], err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", sorted(registry.OPTIMIZERS))
def test_defaults_round_trip_through_the_parser(name):
    for key, param in registry.OPTIMIZERS[name].schema()[0].items():
        if param.default is None:
            assert param.optional, key
            assert param.parse(key, "none") is None
        else:
            assert param.parse(key, str(param.default)) == param.default, key
            assert param.parse(key, param.default) == param.default, key


@pytest.mark.parametrize("name,kind", CASES)
def test_memory_model_gives_non_negative_integers(name, kind):
    entry = registry.OPTIMIZERS[name]
    problem, problem_sets = SMALLEST[kind]
    hp = {k: p.default for k, p in entry.schema()[0].items()}
    for facts in (planner.ModelFacts(param_count=1000, trainable_count=1000, weight_bytes=4000,
                                     trainable_bytes=4000, largest_tensor_bytes=2000),
                  planner.ModelFacts()):
        parts = entry.factory.memory_model(hp, facts)
        assert parts is None or all(isinstance(v, int) and v >= 0 for v in parts.values()), parts
    if kind in ("weights", "search-space"):   # the planner's own facts of the real problem
        plan = planner.plan(name, problem, _sets(name, kind))
        assert all(isinstance(v, int) and v >= 0 for v in plan.breakdown.values()), plan.breakdown
