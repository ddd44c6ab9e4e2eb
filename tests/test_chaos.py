"""Chaos: a sweep killed at random moments, ten times, ends as if nothing had happened.

40 small runs (random and cma on two 2-D bbob functions, ten seeds) with --jobs 4.
Each round starts the sweep again (--retry-failed: a run killed by SIGKILL is
recorded `failed`, as an out-of-memory kill is) and, at a random moment, does one of:
SIGKILL the controller only (its runs go on, orphaned, holding their locks), SIGKILL
one running child, SIGKILL the whole process group, SIGTERM the controller. Then the
sweep runs to its end. Every run must be `ok`, every trajectory identical to an
undisturbed run's, and no temp file left anywhere.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, load_jsonl, without_time
from harness import experiments, runner, store
from harness.spec import RunSpec

OPTIMIZERS, PROBLEMS, SEEDS = ["random", "cma"], ["bbob-f1-d2", "bbob-f8-d2"], list(range(10))
STEPS, CHECKPOINT_EVERY, EVAL_EVERY = 300, 20, 50


def _sweep_args(runs: Path) -> list[str]:
    return [sys.executable, "-m", "harness", "sweep", "--optimizers", ",".join(OPTIMIZERS),
            "--problems", ",".join(PROBLEMS), "--seeds", ",".join(map(str, SEEDS)), "--steps", str(STEPS),
            "--checkpoint-every", str(CHECKPOINT_EVERY), "--eval-every", str(EVAL_EVERY), "--jobs", "4",
            "--retry-failed", "--runs-dir", str(runs)]


def _children(pid: int) -> list[int]:
    """The child processes of `pid` (every thread's), from /proc."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def _disturb(proc: subprocess.Popen, rng: random.Random) -> str:
    time.sleep(rng.uniform(1.0, 8.0))
    action = rng.choice(["kill-controller", "kill-child", "kill-group", "term-controller"])
    if proc.poll() is not None:
        return "finished before"
    try:
        if action == "kill-controller":
            proc.kill()
        elif action == "kill-child":
            kids = _children(proc.pid)
            if kids:
                os.kill(rng.choice(kids), signal.SIGKILL)
            proc.wait(timeout=600)     # the controller records it and goes on with the rest
        elif action == "kill-group":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.send_signal(signal.SIGTERM)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    proc.wait(timeout=600)
    return action


@pytest.mark.slow
def test_a_sweep_killed_ten_times_ends_as_if_undisturbed(tmp_path):
    items = [experiments.item(o, p, s, {"steps": STEPS}, checkpoint_every=CHECKPOINT_EVERY, eval_every=EVAL_EVERY)
             for o in OPTIMIZERS for p in PROBLEMS for s in SEEDS]
    assert len(items) == 40
    reference = {}
    for it in items:   # undisturbed, in this process (no interpreter start per run)
        run_dir, _ = runner.run(RunSpec(it.optimizer, it.problem, seed=it.seed, budget=runner.Budget(steps=STEPS),
                                        checkpoint_every=CHECKPOINT_EVERY, eval_every=EVAL_EVERY,
                                        runs_dir=str(tmp_path / "reference"), run_id=it.name), progress=False)
        reference[it.name] = without_time(load_jsonl(run_dir / "metrics.jsonl"))

    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HARNESS_HEARTBEAT_S": "600"}
    rng = random.Random(27)
    done = []
    for _ in range(10):
        proc = subprocess.Popen(_sweep_args(runs), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        done.append(_disturb(proc, rng))
        assert "Traceback" not in proc.stderr.read(), done
    final = subprocess.run(_sweep_args(runs), cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert final.returncode == 0, (done, final.stdout[-3000:], final.stderr[-3000:])
    for it in items:
        run_dir = runs / it.name
        summary = store.read_json(run_dir / "summary.json")
        assert summary["status"] == "ok", (it.name, summary, done)
        assert without_time(load_jsonl(run_dir / "metrics.jsonl")) == reference[it.name], (it.name, done)
    stray = [p for p in runs.rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".damaged")]
    assert not stray and not (runs / ".sweep-logs").exists(), stray
