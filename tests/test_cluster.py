"""Sweeps through submitit (harness/cluster.py): flags, the SLURM mapping, and the
submitit-local path end to end (same results as local; a preempted job requeued and resumed)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conftest import load_jsonl, without_time
from harness import cluster, runner, store
from cli import main as cli_main
from harness.spec import Budget, RunSpec

pytest.importorskip("submitit")

SWEEP = ["sweep", "--optimizers", "random,cma", "--problems", "bbob-f1-d2", "--steps", "8",
         "--checkpoint-every", "100"]


def _cli(argv, capsys):
    code = cli_main(argv)
    out = capsys.readouterr()
    return code, out.out, [line for line in out.err.splitlines() if line.strip()]


@pytest.mark.parametrize("flags, words", [
    (["--executor", "submitit-local", "--executor-set", "partiton=gpu"], ["partiton", "partition", "timeout_min"]),
    (["--executor", "submitit-local", "--executor-set", "timeout_min=soon"], ["timeout_min=soon", "int"]),
    (["--executor", "pbs"], ["pbs", "submitit-local"]),
    (["--executor-set", "partition=gpu"], ["partition", "slurm"]),
])
def test_bad_executor_flags_are_one_line_exit_2_nothing_written(tmp_path, capsys, flags, words):
    runs = tmp_path / "runs"
    code, _, err = _cli([*SWEEP, "--runs-dir", str(runs), *flags], capsys)
    assert code == 2 and len(err) == 1, err
    assert all(w in err[0] for w in words), err[0]
    assert not runs.exists()


def test_slurm_without_srun_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))   # no srun on it
    code, _, err = _cli([*SWEEP, "--runs-dir", str(tmp_path / "runs"), "--executor", "slurm"], capsys)
    assert code == 2 and len(err) == 1 and "srun" in err[0]


def test_executor_sets_map_onto_the_sbatch_file(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")   # submitit looks for srun
    sets = cluster.parse_executor_sets(["partition=gpu", "gpus_per_node=2", "timeout_min=30", "mem_gb=64",
                                        "cpus_per_task=8", "signal_delay_s=120", "max_num_timeout=5"])
    ex = cluster.SubmititExecutor("slurm", sets, tmp_path / "runs")
    sbatch = ex._executor._executor._make_submission_file_text("CMD", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=2", "--time=30", "--mem=64GB", "--cpus-per-task=8",
                 "--signal=USR2@120"):
        assert f"#SBATCH {line}\n" in sbatch, sbatch
    assert ex._executor._executor.max_num_timeout == 5
    assert str(tmp_path / "runs" / ".submitit") in sbatch   # job files live beside the runs


def _trajectories(runs: Path) -> dict:
    return {store.read_json(d / "config.json")["optimizer"]: without_time(load_jsonl(d / "metrics.jsonl"))
            for d in store.iter_runs(runs)}


@pytest.mark.slow
def test_submitit_local_sweep_matches_local_and_a_preempted_job_resumes(tmp_path, capsys, monkeypatch):
    local, subm = tmp_path / "local", tmp_path / "submitit"
    for opt in ("random", "cma"):   # what the local executor's children compute, in this process
        runner.run(RunSpec(opt, "bbob-f1-d2", budget=Budget(steps=8), runs_dir=str(local)), progress=False)
    # both jobs submitted as one array (executor.batch()); every job is warned at step 3
    # (SIGUSR2, as SLURM sends before a time limit): the run checkpoints
    # on the job's SIGTERM, the job is requeued and the run resumes from its checkpoint
    monkeypatch.setenv("HARNESS_TEST_PREEMPT_JOB_AT_STEP", "3")
    code, out, err = _cli([*SWEEP, "--runs-dir", str(subm), "--jobs", "2", "--executor", "submitit-local",
                           "--executor-set", "timeout_min=10", "--executor-set", "array=true"], capsys)
    assert code == 0, out + "\n".join(err)
    assert "submitit-local job" in out and "sweep done: 2 ok" in out
    for d in store.iter_runs(subm):
        log = (d / "sweep.log").read_text()
        assert "interrupted:" in log and "--resume" in log and log.rstrip().splitlines()[-1].startswith("ok:")
        s = store.read_json(d / "summary.json")
        assert s["status"] == "ok" and s["steps"] == 8
    assert _trajectories(subm) == _trajectories(local)   # bit-identical trajectories, requeue or not
    assert len(_trajectories(subm)) == 2
    # a second time: both are done, nothing is submitted
    code, out, _ = _cli([*SWEEP, "--runs-dir", str(subm), "--executor", "submitit-local"], capsys)
    assert code == 0 and out.count("already-done") == 2
    assert len(list((subm / ".submitit").glob("[0-9]*"))) == 2


def test_a_sweep_re_attaches_to_the_live_slurm_job_of_an_earlier_sweep(tmp_path, monkeypatch):
    """Where flock does not reach the job's node (some NFS setups), the job record in
    .locks/NAME.job keeps a second sweep from submitting (or deleting) a run twice."""
    import submitit

    from harness import executor, experiments

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\n")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    runs = tmp_path / "runs"
    item = experiments.RunItem("random", "bbob-f1-d2", 0, {"steps": 3})
    (runs / ".locks").mkdir(parents=True)
    store.write_json(runs / ".locks" / f"{item.name}.job", {"job_id": "4242", "folder": str(runs / ".submitit/%j")})
    (runs / item.name).mkdir()   # what the live job has written so far: no config yet ("stale" from here)

    class LiveJob:   # SLURM says: still running, then done, with the run's result
        polls = 0

        def __init__(self, folder, job_id):
            assert job_id == "4242"
            self.job_id = job_id

        def done(self, force_check=False):
            LiveJob.polls += 1
            if LiveJob.polls > 3:   # the job finishes the run
                shutil.rmtree(runs / item.name)
                runner.run(RunSpec("random", "bbob-f1-d2", budget=Budget(steps=3), runs_dir=str(runs),
                                   run_id=item.name), progress=False)
                return True
            return False

        def result(self):
            return 0, 1234

    monkeypatch.setattr(submitit, "SlurmJob", LiveJob)
    ex = cluster.SubmititExecutor("slurm", {}, runs, poll_s=0.01)
    monkeypatch.setattr(ex._executor, "submit", lambda *a: pytest.fail("submitted a second job"))
    outcome = executor.run_one(item, runs, executor=ex, echo=lambda line: None)
    assert outcome.action == "re-attached" and outcome.status == "ok", outcome
    assert LiveJob.polls > 3             # waited for the job; the directory was not deleted as stale
    assert "re-attached to slurm job 4242" in (runs / item.name / "sweep.log").read_text()
    assert not (runs / ".locks" / f"{item.name}.job").exists()


def test_array_true_submits_runs_that_start_together_as_one_batch(tmp_path, monkeypatch):
    import contextlib
    import threading

    monkeypatch.setattr(cluster, "ARRAY_WINDOW_S", 0.3)
    ex = cluster.SubmititExecutor("local", cluster.parse_executor_sets(["array=true"]), tmp_path / "runs")
    batches, current = [], []

    @contextlib.contextmanager
    def batch():
        current.clear()
        yield
        batches.append(list(current))

    def submit(run_job):
        current.append(run_job)
        return f"job-{run_job}"

    monkeypatch.setattr(ex._executor, "batch", batch)
    monkeypatch.setattr(ex._executor, "submit", submit)
    got = {}
    threads = [threading.Thread(target=lambda k=k: got.update({k: ex._submit(k)})) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert [sorted(b) for b in batches] == [[0, 1, 2]] and got == {k: f"job-{k}" for k in range(3)}
    with pytest.raises(Exception, match="array=maybe"):
        cluster.parse_executor_sets(["array=maybe"])


def test_a_job_the_scheduler_refuses_is_a_failed_run_with_its_reason(tmp_path, monkeypatch):
    from harness import executor, experiments

    ex = cluster.SubmititExecutor("local", {}, tmp_path / "runs")

    def refuse(run_job):
        raise RuntimeError("sbatch: error: invalid partition specified: gpux")

    monkeypatch.setattr(ex._executor, "submit", refuse)
    item = experiments.RunItem("random", "bbob-f1-d2", 0, {"steps": 3})
    outcome = executor.run_one(item, tmp_path / "runs", executor=ex, echo=lambda line: None)
    assert outcome.status == "failed" and "invalid partition specified: gpux" in outcome.reason


@pytest.mark.slow
def test_sigterm_to_the_sweep_cancels_its_jobs_and_their_runs_checkpoint(tmp_path):
    """What `sweep` does on SIGTERM (executor.signal_all): the job is cancelled, its run
    checkpoints and records `interrupted`, and nothing else is written over it."""
    import signal
    import threading
    import time

    from harness import executor, experiments

    runs = tmp_path / "runs"
    ex = cluster.SubmititExecutor("local", {}, runs, poll_s=0.2)
    item = experiments.RunItem("es", "qwen3-tiny", 0, {"steps": 5000}, checkpoint_every=1000)
    box = {}
    worker = threading.Thread(target=lambda: box.update(o=executor.run_one(item, runs, executor=ex,
                                                                             echo=lambda line: None)))
    worker.start()
    metrics = runs / item.name / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while (not metrics.exists() or len(metrics.read_text().splitlines()) < 3) and time.monotonic() < deadline:
        time.sleep(0.2)
    ex.signal_all(signal.SIGTERM)
    worker.join(120)
    o = box["o"]
    assert o.status == "interrupted" and "SIGTERM at step" in o.reason, o
    assert (runs / item.name / "checkpoint.pt").exists()
    assert store.read_json(runs / item.name / "summary.json")["status"] == "interrupted"
