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
    """A registered optimizer on a built problem, set up (Entry.build, as a run does)."""
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
