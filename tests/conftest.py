"""Shared fixtures and helpers: run the CLI in a subprocess (as a user would) or
in-process, build problems and optimizers through the registry, launch torchrun.

Helpers live here only: test modules import from conftest, never from each other.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.executor import LocalExecutor

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def run_cli(*args: str, env: dict | None = None, timeout: float = 600, cwd=None) -> subprocess.CompletedProcess:
    """`python -m harness ARGS` in a fresh process; returns the CompletedProcess."""
    full_env = dict(os.environ)
    full_env.setdefault("OMP_NUM_THREADS", "1")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], capture_output=True, text=True,
        timeout=timeout, env=full_env, cwd=cwd or ROOT,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node 2 -m harness run ARGS` on CPU (gloo), one thread per rank."""
    full_env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "harness", "run", *args, "--no-progress"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=ROOT)


def load_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


TIME_FIELDS = ("time_s", "objective_s", "overhead_s", "mfu")   # mfu = flops / time_s / peak (CUDA)


def without_time(records: list[dict]) -> list[dict]:
    """Metrics records minus the wall-clock fields (the only ones allowed to differ)."""
    return [{k: v for k, v in r.items() if k not in TIME_FIELDS} for r in records]


def only_run_dir(runs_dir: Path) -> Path:
    dirs = [p for p in Path(runs_dir).iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def make_problem(name="qwen3-tiny", seed=0, **overrides):
    """A registered problem with --set-style overrides (constructed, not built)."""
    from harness import registry

    return registry.problem(name).create({k: str(v) for k, v in overrides.items()}, seed)


def build_optimizer(name: str, problem, seed: int = 0, **hp):
    """A registered optimizer on a built problem, set up (OptimizerEntry.build: resolved as a run resolves it)."""
    from harness import registry

    opt = registry.optimizer(name).build(problem, seed, **{k: str(v) for k, v in hp.items()})
    opt.setup()
    return opt


def run_inprocess(tmp_path, optimizer, steps, problem="qwen3-tiny", **overrides):
    """One run through the runner in this process, one torch thread; its metrics records."""
    from harness import runner, store

    torch.set_num_threads(1)
    spec = runner.RunSpec(optimizer, problem, seed=0, budget=runner.Budget(steps=steps),
                          overrides={k: str(v) for k, v in overrides.items()},
                          runs_dir=str(tmp_path), checkpoint_every=0)
    run_dir, summary = runner.run(spec, progress=False)
    assert summary["status"] == "ok", summary
    return store.read_metrics(run_dir / "metrics.jsonl")


def tiny_qwen3_class():
    """A Qwen3 built from transformers' Qwen3Config, next-token cross-entropy (the
    planner's tracer against a real transformer)."""
    from harness.problem import WeightsProblem

    class TinyQwen3(WeightsProblem):
        def __init__(self, batch=2, seq=128):
            super().__init__("tiny-qwen3", {}, 0)
            from transformers import Qwen3Config

            self.cfg = Qwen3Config(num_hidden_layers=2, hidden_size=128, intermediate_size=384,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                                   vocab_size=4096, tie_word_embeddings=False)
            self.shape = (batch, seq)

        def meta_model(self):
            from transformers import Qwen3ForCausalLM

            with torch.device("meta"):
                return Qwen3ForCausalLM(self.cfg)

        def example_batch(self, device):
            return torch.zeros(self.shape, dtype=torch.long, device=device)

        def loss(self, ids):
            logits = self.model(input_ids=ids).logits
            return torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))

    return TinyQwen3


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    """One harness cache for a whole test module (`pytestmark = pytest.mark.usefixtures(
    "module_cache")`): what it builds once (the LoRA world, trained nets, traced facts) is
    shared by its tests and by no other module."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class InProcessExecutor(LocalExecutor):
    """A launcher for harness.executor.execute that runs each `harness run` in this
    process (no ~3 s of imports per run): batch verbs tested at unit-test speed.
    `launched` lists the argv of every run it started."""

    def __init__(self):
        super().__init__()
        self.launched: list[list[str]] = []

    def launch(self, cmd: list[str], env: dict, log, resume_cmd=None) -> tuple[int, int]:
        import contextlib
        import io

        from cli import main

        argv = cmd[cmd.index("harness") + 1:]
        self.launched.append(argv)
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            rc = main(argv)
        log.write(out.getvalue().encode())
        return rc, 0

    def signal_all(self, signum: int) -> None:
        pass


# -- the optimizer contract, checked on any registered optimizer (tests/test_conformance.py
# drives it over the whole registry; tests/test_new_optimizer.py over one defined there) --

# One small problem of each kind (the engine's kinds), run with its SMOKE_SETTINGS.
SMALLEST = {"search-space": "bbob-f1-d2", "weights": "digits-mlp", "pruning": "digits-prune-90",
            "experts": "lora-count"}


def conformance_sets(name: str, kind: str) -> dict:
    """--set values of a conformance run: the problem's SMOKE_SETTINGS, then the optimizer's."""
    from harness import registry

    problem_sets = registry.problem(SMALLEST[kind]).factory.SMOKE_SETTINGS
    sets = {f"problem.{k}": str(v) for k, v in problem_sets.items()}
    sets.update({f"optimizer.{k}": str(v) for k, v in registry.optimizer(name).factory.SMOKE_SETTINGS.items()})
    return sets


class _Killed(BaseException):
    """A hard kill, in process: not an Exception, so the run records nothing more."""


def _conformance_run(tmp_path, name, kind, steps=3):
    from harness import runner

    torch.set_num_threads(1)
    spec = runner.RunSpec(name, SMALLEST[kind], seed=1, budget=runner.Budget(steps=steps),
                          overrides=conformance_sets(name, kind), eval_every=1, checkpoint_every=1,
                          runs_dir=str(tmp_path))
    return runner.run(spec, progress=False)


def check_steps_kill_and_resume(name: str, kind: str, tmp_path, monkeypatch) -> None:
    """3 steps run and record; killed after step 2 and resumed gives the uninterrupted
    trajectory (time fields excluded); forwards are counted."""
    from harness import runner
    from harness.faults import FaultHooks

    run_dir, summary = _conformance_run(tmp_path / "full", name, kind)
    assert summary["status"] == "ok", summary["reason"]
    assert summary["kind"] == kind and 1 <= summary["steps"] <= 3   # one-shot methods stop at 1
    full = load_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in full] == list(range(summary["steps"] + 1))
    assert all({"step", "evals", "time_s", "loss", "metric"} <= set(r) for r in full[1:])

    kill_at = min(2, summary["steps"])

    class KillAfter(FaultHooks):
        def after_step(self, step, flush):
            if step == kill_at:
                flush()
                raise _Killed()

    monkeypatch.setattr(runner.FaultHooks, "from_env", classmethod(lambda cls, env=None: KillAfter()))
    with pytest.raises(_Killed):
        _conformance_run(tmp_path / "killed", name, kind)
    monkeypatch.undo()
    killed_dir = only_run_dir(tmp_path / "killed")
    assert len(load_jsonl(killed_dir / "metrics.jsonl")) == kill_at + 1
    _, resumed = runner.resume(killed_dir, progress=False)
    assert resumed["status"] == "ok", resumed["reason"]
    assert without_time(load_jsonl(killed_dir / "metrics.jsonl")) == without_time(full)
    # every adapter counts its forwards: each evaluation costs at least one (harness.costs)
    assert all(r["forwards"] >= r["evals"] for r in full[1:]) and summary["forwards"] >= summary["evals"]
    assert resumed["final_loss"] == summary["final_loss"] and resumed["final_metric"] == summary["final_metric"]


def bad_values(param) -> list[str]:
    """Values the parser or the optimizer's own check must refuse. A free-form string must
    refuse the empty one unless empty is its default (a name it checks, e.g. nevergrad's)."""
    if param.choices is not None:
        return ["no-such-choice"]
    bad = {bool: ["maybe"], int: ["2.5", "x"], float: ["x"], str: [] if param.default == "" else [""]}[param.type]
    if param.low is not None:
        bad.append(str(param.low - 1))
    if param.high is not None:
        bad.append(str(param.high + 1))
    return bad


def check_refused(argv: list[str], written: Path, capsys, needle: str) -> None:
    """A command refused for bad input: exit 2, one line on stderr containing `needle`, and
    nothing written at `written` (the runs directory it was given)."""
    from cli import main

    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not written.exists()


def check_bad_value_is_exit_2(name: str, kind: str, key: str, value: str, tmp_path, capsys) -> None:
    """--set optimizer.KEY=VALUE of a bad value: exit 2, one line naming KEY, nothing written."""
    check_refused(["run", "--optimizer", name, "--problem", SMALLEST[kind], "--steps", "1",
                   "--set", f"optimizer.{key}={value}", "--runs-dir", str(tmp_path / "runs")],
                  tmp_path / "runs", capsys, key)


def check_defaults_round_trip(name: str) -> None:
    from harness import registry

    for key, param in registry.optimizer(name).schema().items():
        if param.default is None:
            assert param.optional, key
            assert param.parse(key, "none") is None
        else:
            assert param.parse(key, str(param.default)) == param.default, key
            assert param.parse(key, param.default) == param.default, key


def check_memory_model(name: str, kind: str) -> None:
    """Non-negative integers, on made-up facts, on empty facts and on the real problem's."""
    from harness import planner, registry

    entry = registry.optimizer(name)
    problem = SMALLEST[kind]
    hp = {k: p.default for k, p in entry.schema().items()}
    for facts in (planner.ModelFacts(param_count=1000, trainable_count=1000, weight_bytes=4000,
                                     trainable_bytes=4000, largest_tensor_bytes=2000),
                  planner.ModelFacts()):
        parts = entry.factory.memory_model(hp, facts)
        assert parts is None or all(isinstance(v, int) and v >= 0 for v in parts.values()), parts
        phases = entry.factory.memory_phases(hp, facts) if parts is not None else None
        assert phases is None or all(isinstance(v, int) and v >= 0
                                     for phase in phases.values() for v in phase.values()), phases
    if kind in ("weights", "search-space"):   # the planner's own facts of the real problem
        plan = planner.plan(name, problem, conformance_sets(name, kind))
        assert all(isinstance(v, int) and v >= 0 for v in plan.breakdown.values()), plan.breakdown
