"""Reliability: shared runs-dirs, preemption, convergence, strict inputs, nothing lost.

One test per fault found by trying the harness as an adversarial user would; each
failed on the code before it was fixed.
"""

from __future__ import annotations

import io
import os
import json
import subprocess
import sys
import time

import pytest

from conftest import ROOT, load_jsonl, only_run_dir, run_cli, without_time
from harness import executor, experiments, runner, store
from cli import main as cli_main
from harness.progress import Progress
from harness.spec import Prepared, RunSpec


def _cli(argv, capsys):
    code = cli_main(argv)
    out = capsys.readouterr()
    return code, out.out, [line for line in out.err.splitlines() if line.strip()]


# -- 1. two sweeps on one runs-dir ------------------------------------------------------

@pytest.mark.slow
def test_two_identical_sweeps_on_one_runs_dir_both_succeed(tmp_path):
    runs = tmp_path / "shared-runs"
    args = [sys.executable, "-m", "harness", "sweep", "--optimizers", "cma,random", "--problems",
            "bbob-f8-d5", "--seeds", "0,1", "--steps", "100", "--checkpoint-every", "1",
            "--runs-dir", str(runs)]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    second = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = [p.communicate(timeout=600) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outs
    assert all("Traceback" not in out + err for out, err in outs)
    summaries = [store.read_json(d / "summary.json") for d in store.iter_runs(runs)]
    assert len(summaries) == 4 and all(s["status"] == "ok" for s in summaries)
    for d, s in zip(store.iter_runs(runs), summaries):   # one trajectory each, never two mixed
        assert [r["step"] for r in load_jsonl(d / "metrics.jsonl")] == list(range(s["steps"] + 1))
    assert sum("already-done" in out for out, _ in outs) >= 1   # the second took the first's results


def test_a_run_owned_by_a_live_process_is_not_resumed_or_deleted(tmp_path, capsys):
    run_dir, _ = runner.run(RunSpec("random", "bbob-f1-d2", budget=runner.Budget(steps=3),
                                    runs_dir=str(tmp_path)), progress=False)
    lock = store.run_lock(run_dir)
    assert lock.acquire()      # stands for another process running it
    try:
        code, _, err = _cli(["run", "--resume", str(run_dir), "--steps", "6"], capsys)
        assert code == 2 and len(err) == 1 and "running it now" in err[0]
    finally:
        lock.release()
    assert store.read_json(run_dir / "summary.json")["steps"] == 3


# -- 2. SIGTERM is an interruption ---------------------------------------------------------

def test_sigterm_checkpoints_then_the_sweep_resumes_identically(tmp_path, capsys):
    item = experiments.item("random", "bbob-f1-d5", 0, {"steps": 12}, checkpoint_every=0)
    runs = tmp_path / "runs"
    proc = run_cli("run", *item.run_args(), "--runs-dir", str(runs), "--run-id", item.name,
                   "--no-progress", env={"HARNESS_TEST_TERM_AT_STEP": "5"})
    assert proc.returncode == 143, proc.stderr
    summary = store.read_json(runs / item.name / "summary.json")
    assert summary["status"] == "interrupted" and "SIGTERM at step 5" in summary["reason"]
    assert (runs / item.name / "checkpoint.pt").exists()      # although --checkpoint-every 0
    assert executor.state_of(runs / item.name) == "resumable"
    outcomes = executor.execute([item], runs, echo=lambda *_: None)
    assert outcomes[0].action == "resumed" and outcomes[0].status == "ok"
    full_dir, _ = runner.run(RunSpec("random", "bbob-f1-d5", budget=runner.Budget(steps=12), checkpoint_every=0,
                                     runs_dir=str(tmp_path / "full")), progress=False)
    assert without_time(load_jsonl(runs / item.name / "metrics.jsonl")) == \
        without_time(load_jsonl(full_dir / "metrics.jsonl"))


def test_retry_failed_resumes_from_the_checkpoint(tmp_path):
    item = experiments.item("random", "bbob-f1-d5", 0, {"steps": 10}, checkpoint_every=2)
    runs = tmp_path / "runs"
    proc = run_cli("run", *item.run_args(), "--runs-dir", str(runs), "--run-id", item.name,
                   "--no-progress", env={"HARNESS_TEST_FAIL_AT_STEP": "6"})
    assert proc.returncode == 1
    assert executor.execute([item], runs, echo=lambda *_: None)[0].action == "already-failed"
    again = executor.execute([item], runs, retry_failed=True, echo=lambda *_: None)[0]
    assert again.action == "resumed" and again.status == "ok"
    steps = [r["step"] for r in load_jsonl(runs / item.name / "metrics.jsonl")]
    assert steps == list(range(11))   # kept up to the checkpoint (step 4), then continued


# -- 3. convergence is not failure -----------------------------------------------------------

def test_cma_ends_ok_when_pycma_says_it_converged(tmp_path):
    _, s = runner.run(RunSpec("cma", "bbob-f1-d5", budget=runner.Budget(steps=5000), overrides={"popsize": "4"},
                              checkpoint_every=0, runs_dir=str(tmp_path)), progress=False)
    assert s["status"] == "ok" and s["reason"].startswith("converged: ") and s["steps"] < 5000
    assert s["best_loss"] < 1e-10


def test_cma_restarts_double_the_population(tmp_path):
    run_dir, s = runner.run(RunSpec("cma", "bbob-f3-d5", budget=runner.Budget(evals=20000),
                                    overrides={"restarts": "2"}, checkpoint_every=0, eval_every=1000,
                                    runs_dir=str(tmp_path)), progress=False)
    assert s["status"] == "ok" and "after 2 restarts" in s["reason"]
    records = load_jsonl(run_dir / "metrics.jsonl")[1:]
    pops = sorted({r["popsize"] for r in records})
    assert [r["restart"] for r in records][-1] == 2 and pops == [pops[0], 2 * pops[0], 4 * pops[0]]


def test_nevergrad_stops_when_its_planned_budget_is_spent(tmp_path):
    _, s = runner.run(RunSpec("nevergrad", "bbob-f1-d5", budget=runner.Budget(evals=300),
                              overrides={"budget": "40", "name": "OnePlusOne"}, checkpoint_every=0,
                              runs_dir=str(tmp_path)), progress=False)
    assert s["status"] == "ok" and s["evals"] == 40 and "40 evaluations" in s["reason"]


# -- 4. strict inputs, refused before anything is written -------------------------------------

@pytest.mark.parametrize("argv, needle", [
    (["--optimizer", "es", "--problem", "qwen3-tiny", "--steps", "1", "--set", "population=2.5e0"], "population"),
    (["--optimizer", "random", "--problem", "bbob-f1-d2", "--time", "nan"], "--time"),
    (["--optimizer", "random", "--problem", "bbob-f1-d2", "--time", "inf"], "--time"),
    (["--optimizer", "es", "--problem", "digits-mlp", "--steps", "1", "--set", "sigma=inf"], "sigma"),
    (["--optimizer", "random", "--problem", "bbob-f1-d2", "--steps", "1", "--seed", "123456789012345678901"],
     "--seed"),
    (["--optimizer", "random", "--problem", "bbob-f1-d2", "--steps", "1", "--run-id", "../x"], "--run-id"),
    (["--optimizer", "es", "--problem", "qwen3-tiny", "--steps", "1", "--set", "data=/bin/ls"], "UTF-8"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(argv, needle, tmp_path, capsys):
    code, _, err = _cli(["run", *argv, "--runs-dir", str(tmp_path / "runs")], capsys)
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "x").exists()


def test_names_are_case_insensitive_and_recorded_canonically(tmp_path):
    run_dir, s = runner.run(RunSpec("CMA", "BBOB-F1-D2", budget=runner.Budget(steps=2), runs_dir=str(tmp_path)),
                            progress=False)
    assert s["optimizer"] == "cma" and s["problem"] == "bbob-f1-d2" and run_dir.name.startswith("cma_bbob-f1-d2_")


def test_an_absurd_population_is_refused_by_the_preflight(tmp_path, capsys):
    code, _, err = _cli(["run", "--optimizer", "es", "--problem", "qwen3-tiny", "--steps", "1", "--set",
                         "population=1000000000", "--runs-dir", str(tmp_path / "runs")], capsys)
    assert code == 3 and len(err) == 1 and "GiB" in err[0]
    assert not (tmp_path / "runs").exists()


# -- 5. errors a user can cause are one line -------------------------------------------------

def test_a_runs_dir_that_is_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for verb in (["run", "--optimizer", "random", "--problem", "bbob-f1-d2", "--steps", "1"],
                 ["sweep", "--optimizers", "random", "--problems", "bbob-f1-d2", "--steps", "1"]):
        code, _, err = _cli([*verb, "--runs-dir", str(tmp_path / "file" / "runs")], capsys)
        assert code == 2 and len(err) == 1 and "runs-dir" in err[0], err
    code, _, err = _cli(["report", "--runs-dir", str(tmp_path), "--out", str(tmp_path / "file" / "out")], capsys)
    assert code == 2 and len(err) == 1 and "--out" in err[0], err


def _interrupted_run(tmp_path) -> "Path":  # noqa: F821
    proc = run_cli("run", "--optimizer", "random", "--problem", "bbob-f1-d2", "--steps", "8", "--checkpoint-every",
                   "2", "--runs-dir", str(tmp_path), "--no-progress", env={"HARNESS_TEST_KILL_AT_STEP": "5"})
    assert proc.returncode == 137
    return only_run_dir(tmp_path)


def test_damaged_config_or_checkpoint_on_resume_is_one_line(tmp_path, capsys):
    run_dir = _interrupted_run(tmp_path)
    (run_dir / "checkpoint.pt").write_bytes(b"")
    before = (run_dir / "summary.json").read_bytes()
    code, _, err = _cli(["run", "--resume", str(run_dir)], capsys)
    assert code == 2 and len(err) == 1 and "checkpoint.pt" in err[0], err
    assert (run_dir / "summary.json").read_bytes() == before       # still `running`, not `failed`
    (run_dir / "config.json").write_text("{not json")
    code, _, err = _cli(["run", "--resume", str(run_dir)], capsys)
    assert code == 2 and len(err) == 1 and "config.json" in err[0], err


# -- 6. nothing lost ---------------------------------------------------------------------------

def test_a_corrupt_metrics_line_loses_only_itself(tmp_path, capsys):
    run_dir = _interrupted_run(tmp_path)            # checkpoint at step 4, records 0..5
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = '{"step": 2, "ev\n'                  # line 3 damaged
    path.write_text("".join(lines))
    code, _, err = _cli(["run", "--resume", str(run_dir), "--no-progress"], capsys)
    assert code == 0 and any("metrics.jsonl:3" in line for line in err), err
    steps = [r["step"] for r in store.read_metrics(path)]
    assert steps == [0, 1, 3, 4, 5, 6, 7, 8]        # every valid record kept
    lines = path.read_text().splitlines(keepends=True)
    lines[5] = "garbage\n"                             # the report says so, and keeps the rest
    path.write_text("".join(lines))
    assert cli_main(["report", "--runs-dir", str(tmp_path), "--out", str(tmp_path / "rep")]) == 0
    assert "metrics.jsonl:6" in capsys.readouterr().err


@pytest.mark.parametrize("every", ["0", "2"])
def test_resume_of_a_finished_run_changes_nothing(tmp_path, capsys, every):
    run_dir, s = runner.run(RunSpec("random", "bbob-f1-d2", budget=runner.Budget(steps=4),
                                    checkpoint_every=int(every), runs_dir=str(tmp_path)), progress=False)
    files = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    code, out, _ = _cli(["run", "--resume", str(run_dir)], capsys)
    assert code == 0 and "already finished" in out
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == files


# -- 7. progress and threads -------------------------------------------------------------------

def test_progress_lines_when_not_a_terminal():
    stream = io.StringIO()
    prog = Progress("es on qwen3-tiny", 10, interval_s=0, stream=stream)
    state = runner.RunState()
    prog.on_start(state)
    for k in range(1, 4):
        state.step, state.evals = k, 30 * k
        prog.on_step(state, {"loss": 5.0 - k})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and "step 3/10 evals 90 loss 2" in lines[-1] and "eta" in lines[-1]


def test_small_models_run_on_one_thread_unless_told(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert Prepared(RunSpec("es", "qwen3-tiny")).threads == 1
    assert Prepared(RunSpec("es", "qwen3-0.6b")).threads is None       # torch's default
    assert Prepared(RunSpec("es", "qwen3-tiny", threads=2)).threads == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert Prepared(RunSpec("es", "qwen3-tiny")).threads is None       # the environment decides
    cfg = Prepared(RunSpec("es", "qwen3-tiny", threads=2)).config("x")
    assert cfg["threads"] == 2 and json.dumps(cfg)


def test_a_full_disk_is_one_line_and_leaves_no_run_directory(tmp_path, capsys, monkeypatch):
    import errno

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(store, "atomic_write_bytes", full)
    # an empty planner cache: its write fails first, and a cache must not stop the run
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    code, _, err = _cli(["run", "--optimizer", "random", "--problem", "bbob-f1-d2", "--steps", "1",
                         "--runs-dir", str(tmp_path / "runs")], capsys)
    # an operating-system error: exit 1, as documented (issue 27: it was 2)
    assert code == 1 and len(err) == 1 and "No space left" in err[0] and "free space" in err[0], err
    assert "disk full" in err[0] and not any((tmp_path / "runs").iterdir())


# -- round two (issue 27) -------------------------------------------------------------------
# 1. a finished run's record is never deleted or rewritten

def _finished_item_run(tmp_path, steps=4):
    item = experiments.item("random", "bbob-f1-d2", 0, {"steps": steps}, checkpoint_every=0)
    runs = tmp_path / "runs"
    run_dir, _ = runner.run(RunSpec("random", "bbob-f1-d2", budget=runner.Budget(steps=steps), checkpoint_every=0,
                                    runs_dir=str(runs), run_id=item.name), progress=False)
    return item, runs, run_dir


def test_a_finished_run_with_a_damaged_summary_is_repaired_never_rerun(tmp_path, capsys):
    item, runs, run_dir = _finished_item_run(tmp_path)
    kept = {n: (run_dir / n).read_bytes() for n in ("metrics.jsonl", "env.json", "config.json")}
    good = store.read_json(run_dir / "summary.json")
    with open(run_dir / "summary.json", "r+") as fh:
        fh.truncate(10)
    lines = []
    outcome, = executor.execute([item], runs, echo=lines.append)
    assert outcome.action == "repaired" and outcome.status == "ok"
    assert any("rebuilt from metrics.jsonl and config.json" in line for line in lines), lines
    assert {n: (run_dir / n).read_bytes() for n in kept} == kept            # nothing rerun or rewritten
    rebuilt = store.read_json(run_dir / "summary.json")
    for key in ("status", "steps", "evals", "final_loss", "best_loss", "final_metric"):
        assert rebuilt[key] == good[key], key
    assert "rebuilt" in rebuilt["reason"] and len((run_dir / "summary.json.damaged").read_bytes()) == 10
    (run_dir / "summary.json").unlink()                                   # --resume repairs too
    code, out, err = _cli(["run", "--resume", str(run_dir)], capsys)
    assert code == 0 and "already finished" in out and any("repaired" in line for line in err)
    assert store.read_json(run_dir / "summary.json")["status"] == "ok"


def test_a_budget_given_with_resume_only_extends(tmp_path, capsys):
    proc = run_cli("run", "--optimizer", "random", "--problem", "bbob-f1-d2", "--steps", "10", "--checkpoint-every",
                   "2", "--runs-dir", str(tmp_path), "--no-progress", env={"HARNESS_TEST_KILL_AT_STEP": "7"})
    assert proc.returncode == 137
    run_dir = only_run_dir(tmp_path)
    config, summary = (run_dir / "config.json").read_bytes(), (run_dir / "summary.json").read_bytes()
    for flags in (["--steps", "5"], ["--evals", "100"]):
        code, _, err = _cli(["run", "--resume", str(run_dir), *flags], capsys)
        assert code == 2 and len(err) == 1 and "only extend" in err[0] and "--steps 10" in err[0], err
    assert (run_dir / "config.json").read_bytes() == config and (run_dir / "summary.json").read_bytes() == summary


# 2. every fault one true line: the path, the cause, the documented exit code

def test_a_full_disk_or_a_size_limit_at_a_checkpoint_names_the_path_and_the_cause(tmp_path):
    def save_under_limit(limit):
        code = ("import resource, signal, sys, torch\nfrom harness import store\n"
                "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
                f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
                f"store.save_checkpoint({str(tmp_path / 'checkpoint.pt')!r}, {{'w': torch.zeros(100000)}})\n")
        return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)

    proc = save_under_limit(100_000)
    assert proc.returncode != 0 and "File too large" in proc.stderr and "checkpoint.pt" in proc.stderr, proc.stderr
    assert "inline_container" not in proc.stderr and list(tmp_path.iterdir()) == []   # no temp file left


def test_a_failed_checkpoint_write_is_recorded_as_disk_full_with_its_path(tmp_path, monkeypatch, capsys):
    import errno

    import torch

    def full(obj, fh, *a, **k):
        fh.write(b"x" * 10)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 308800 vs 308688") \
            from OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    code, _, err = _cli(["run", "--optimizer", "random", "--problem", "bbob-f1-d2", "--steps", "3",
                         "--checkpoint-every", "2", "--runs-dir", str(tmp_path), "--no-progress"], capsys)
    monkeypatch.undo()
    run_dir = only_run_dir(tmp_path)
    reason = store.read_json(run_dir / "summary.json")["reason"]
    assert code == 1 and "disk full" in reason and str(run_dir / "checkpoint.pt") in reason, reason
    assert "inline_container" not in reason and any("disk full" in line for line in err), err
    assert not list(run_dir.glob(".*.tmp"))


def test_a_read_only_runs_dir_is_an_operating_system_error_exit_1(tmp_path, capsys, monkeypatch):
    import errno
    import pathlib

    real = pathlib.Path.mkdir

    def read_only(self, *a, **k):   # a read-only mount (chmod does not stop root, who runs CI)
        if str(self).startswith(str(tmp_path / "ro")):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    for verb in (["run", "--optimizer", "random", "--problem", "bbob-f1-d2", "--steps", "1"],
                 ["sweep", "--optimizers", "random", "--problems", "bbob-f1-d2", "--steps", "1"]):
        code, _, err = _cli([*verb, "--runs-dir", str(tmp_path / "ro" / "runs")], capsys)
        assert code == 1 and len(err) == 1 and "Read-only file system" in err[0], err
        assert str(tmp_path / "ro" / "runs") in err[0] and "writable" in err[0]


def test_coco_data_for_a_path_with_a_space_and_the_length_limit_checked_first(tmp_path, capsys):
    from problems import bbob

    runs = tmp_path / "with space"
    run_id = "r" * (bbob.COCO_PATH_LIMIT - len(str(runs.absolute())) - 1)     # exactly at the limit
    run_dir, s = runner.run(RunSpec("random", "bbob-f8-d5", budget=runner.Budget(steps=2), runs_dir=str(runs),
                                    run_id=run_id), progress=False)
    bbob.close_coco_log()
    assert s["status"] == "ok" and len(str(run_dir)) == bbob.COCO_PATH_LIMIT
    assert list((run_dir / "coco").glob("*.info")) and list((run_dir / "coco").glob("data_f8/*.dat"))
    too_long = str(runs / ("y" * (bbob.COCO_PATH_LIMIT - len(str(runs)))))   # its run directories, more so
    for argv in (["run", "--optimizer", "random", "--problem", "bbob-f8-d5", "--steps", "2", "--runs-dir", str(runs),
                  "--run-id", run_id + "x"],
                 ["sweep", "--optimizers", "random", "--problems", "bbob-f8-d5", "--steps", "2",
                  "--runs-dir", too_long]):
        code, out, err = _cli(argv, capsys)
        assert code == 2 and len(err) == 1 and f"aborts beyond {bbob.COCO_PATH_LIMIT}" in err[0], err
        assert "runs in" not in out
    assert [p.name for p in runs.iterdir()] == [run_id]      # nothing written by the refusals


# 3. stores others can read

def test_store_files_honour_the_umask(tmp_path, monkeypatch):
    import os
    import stat

    from problems import bbob

    monkeypatch.setattr(store, "FILE_MODE_MASK", 0o007)      # what the module reads at import
    monkeypatch.setattr(store, "FILE_MODE", 0o660)
    old = os.umask(0o007)                                  # a group-shared project directory
    try:
        run_dir, _ = runner.run(RunSpec("random", "bbob-f8-d5", budget=runner.Budget(steps=2), checkpoint_every=1,
                                        runs_dir=str(tmp_path)), progress=False)
        bbob.close_coco_log()
    finally:
        os.umask(old)
    modes = {p.relative_to(run_dir).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [run_dir, *run_dir.rglob("*")]}
    assert {"config.json", "summary.json", "metrics.jsonl", "checkpoint.pt", "env.json", "coco"} <= set(modes)
    wrong = {k: oct(m) for k, m in modes.items() if m != (0o770 if (run_dir / k).is_dir() else 0o660)}
    assert not wrong, wrong


def test_an_unwritable_cache_dir_falls_back_with_one_line(tmp_path, monkeypatch, capsys):
    import errno
    import pathlib

    from harness import cache

    real = pathlib.Path.mkdir

    def read_only(self, *a, **k):
        if str(self).startswith(str(tmp_path / "ro-cache")):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "ro-cache"))
    monkeypatch.setattr(cache, "_fallback", lambda: tmp_path / "fallback")
    monkeypatch.setattr(cache, "_warned", set())
    code, _, err = _cli(["run", "--optimizer", "random", "--problem", "bbob-f1-d2", "--steps", "1",
                         "--runs-dir", str(tmp_path / "runs"), "--no-progress"], capsys)
    assert code == 0, err
    assert len([line for line in err if "cache" in line]) == 1 and "Read-only file system" in err[0], err
    assert cache.cache_dir("x") == tmp_path / "fallback" / "x"
    assert len(capsys.readouterr().err.splitlines()) == 0              # said once per process


def test_no_temp_file_survives_a_kill_and_a_refused_resume_leaves_no_lock(tmp_path, capsys):
    run_dir = _interrupted_run(tmp_path)                          # killed at step 5, checkpoint at 4
    (run_dir / ".checkpoint.pt.k3j2.tmp").write_bytes(b"\0" * 4096)   # a kill between write and rename
    code, _, _ = _cli(["run", "--resume", str(run_dir), "--no-progress"], capsys)
    assert code == 0 and not list(run_dir.glob(".*.tmp"))
    (run_dir / ".lock").unlink()
    code, out, _ = _cli(["run", "--resume", str(run_dir)], capsys)
    assert code == 0 and "already finished" in out and not (run_dir / ".lock").exists()


# 4. every command stops on SIGTERM / Ctrl-C with one line and 143 / 130

@pytest.mark.parametrize("signum, code", [(15, 143), (2, 130)])
def test_check_stops_on_a_signal_with_one_line_and_the_shells_code(tmp_path, signum, code):
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "check", "--only", "cma:digits-mlp", "--runs-dir",
                             str(tmp_path / "runs")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().startswith("check:")          # the batch has started
    os.killpg(proc.pid, signum)                                 # as a terminal's Ctrl-C / a timeout reaches all
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == code, (out, err)
    assert "Traceback" not in out + err and len(err.strip().splitlines()) == 1, err
    assert "failed" not in out, out                             # stopped runs are not failures


# 7. strict inputs, second round

@pytest.mark.parametrize("argv, needle", [
    (["run", "--optimizer", "adam", "--problem", "digits-mlp", "--steps", "1", "--set", "lr=1e300"], "float32"),
    (["plan", "--optimizer", "es", "--problem", "qwen3-tiny", "--gpu-gib", "inf"], "--gpu-gib"),
    (["plan", "--table", "--population", "0"], "--population"),
])
def test_more_bad_input_is_one_line_exit_2(argv, needle, tmp_path, capsys):
    code, _, err = _cli([*argv, *(["--runs-dir", str(tmp_path / "runs")] if argv[0] == "run" else [])], capsys)
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "runs").exists()


def test_names_given_twice_in_other_cases_run_once(tmp_path):
    grid = experiments.grid(["cma", "CMA"], ["bbob-f1-d2", "BBOB-F1-D2"], [0], {"steps": 2}, validate_on=None)
    assert [it.name for it in grid.items] == ["cma_bbob-f1-d2_s0_steps2"]


def test_a_report_on_a_record_with_a_bad_step_says_so_and_goes_on(tmp_path, capsys):
    run_dir, _ = runner.run(RunSpec("random", "bbob-f1-d2", budget=runner.Budget(steps=3), runs_dir=str(tmp_path)),
                            progress=False)
    path = run_dir / "metrics.jsonl"
    path.write_text(path.read_text().replace('"step": 2,', '"step": "x",'))
    code, _, err = _cli(["report", "--runs-dir", str(tmp_path), "--out", str(tmp_path / "rep")], capsys)
    assert code == 0 and any("metrics.jsonl:3" in line and "'x'" in line for line in err), err
    assert [r["step"] for r in store.read_metrics(path)] == [0, 1, 3]


def test_slurm_executor_refused_when_sbatch_is_missing(tmp_path, monkeypatch, capsys):
    import os
    import stat

    bin_dir = tmp_path / "bin"              # srun present, sbatch absent: a compute node's PATH
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.path.dirname(sys.executable)}")
    code, _, err = _cli(["sweep", "--optimizers", "random", "--problems", "bbob-f1-d2", "--steps", "1",
                         "--executor", "slurm", "--runs-dir", str(tmp_path / "runs")], capsys)
    assert code == 2 and len(err) == 1 and "sbatch" in err[0], err
    assert not (tmp_path / "runs").exists()


# 5. sweeps that speak

def test_a_batch_prints_a_heartbeat_with_step_loss_and_eta_of_its_running_items(tmp_path):
    import re

    item = experiments.item("random", "bbob-f1-d2", 0, {"steps": 3000}, checkpoint_every=0)
    lines: list[str] = []
    outcome, = executor.execute([item], tmp_path / "runs", echo=lines.append, heartbeat_s=0.2)
    assert outcome.status == "ok"
    beats = [line for line in lines if line.startswith("running 1: random on bbob-f1-d2 seed=0")]
    assert beats, lines
    stepping = [b for b in beats if re.search(r"step \d+/3000 loss [-+.e\d]+ eta \d+:\d\d", b)]
    assert stepping, beats      # progress read from the run's metrics, not only "starting"


# 6. optional services fail fast and quietly

def test_an_unusable_mlflow_store_is_one_warning_and_a_refused_resume_creates_nothing(tmp_path, capsys, monkeypatch):
    import socket

    pytest.importorskip("mlflow")
    with socket.socket() as s:          # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    code, out, err = _cli(["run", "--optimizer", "random", "--problem", "bbob-f1-d2", "--steps", "2",
                           "--runs-dir", str(tmp_path / "runs"), "--no-progress", "--log", "mlflow"], capsys)
    assert code == 0 and out.startswith("ok:")
    assert len(err) == 1 and "--log mlflow stopped" in err[0] and "does not answer" in err[0], err
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "mlflow.db").write_text("not a database\n")       # a damaged local store
    code, out, err = _cli(["run", "--optimizer", "random", "--problem", "bbob-f1-d2", "--steps", "2",
                           "--runs-dir", str(tmp_path / "garbage"), "--no-progress", "--log", "mlflow"], capsys)
    assert code == 0 and len(err) == 1 and "not a database" in err[0], err
    (tmp_path / "not-a-run").mkdir()
    code, _, err = _cli(["run", "--resume", str(tmp_path / "not-a-run"), "--log", "mlflow"], capsys)
    assert code == 2 and len(err) == 1 and list(tmp_path.glob("mlflow.db")) == [], err


def test_an_hf_dataset_without_network_is_refused_with_one_line_without_retries(tmp_path, capsys, monkeypatch):
    import socket

    pytest.importorskip("datasets")
    with socket.socket() as s:          # a Hub endpoint nothing answers on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))      # an empty cache
    code, _, err = _cli(["run", "--optimizer", "es", "--problem", "qwen3-tiny", "--steps", "1", "--set",
                         "data=hf:someone/some-corpus", "--runs-dir", str(tmp_path / "runs")], capsys)
    assert code == 2 and len(err) == 1 and "cannot be reached" in err[0] and "hf:someone/some-corpus" in err[0], err
    assert not (tmp_path / "runs").exists()


def test_refusals_that_need_only_the_arguments_answer_before_torch_is_imported():
    code = ("import sys\nfrom cli import main\n"
            "codes = [main(['run', '--optimizer', 'random']), main(['run', '--resume', '/nonexistent/run']),\n"
            "         main(['sweep', '--optimizers', 'random', '--problems', 'x', '--steps', '1', '--jobs', '0'])]\n"
            "print(codes, 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.stdout.split() == ["[2,", "2,", "2]", "False"], (proc.stdout, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 3


def test_a_refused_preflight_imports_no_model_library_once_the_cache_knows_the_sizes(tmp_path):
    """The "would fit" suggestions plan every optimizer of the kind and every smaller size of
    the family: with a warm cache they build no model (parameter counts remembered) and
    import no optional library (evox's default name is not checked by importing evox)."""
    code = ("import sys; from cli import main; code = main(['run', '--optimizer', 'adam', '--problem', "
            "'qwen3-8b', '--steps', '1', '--runs-dir', sys.argv[1]]); "
            "print(code, 'evox' in sys.modules, 'transformers.models.qwen3.modeling_qwen3' in sys.modules)")
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    outs = [subprocess.run([sys.executable, "-c", code, str(tmp_path / "runs")], capture_output=True, text=True,
                           env=env, cwd=ROOT, timeout=600) for _ in range(2)]
    assert all("would fit" in o.stderr for o in outs), outs[0].stderr
    assert outs[1].stdout.split() == ["3", "False", "False"], (outs[1].stdout, outs[1].stderr)
    assert not (tmp_path / "runs").exists()


def test_an_unfinished_run_without_a_checkpoint_is_moved_aside_never_deleted(tmp_path):
    """A sweep remakes a run that died before any checkpoint from step 0; the first attempt's
    directory (its records, its log) is kept under <runs-dir>/.superseded, not removed."""
    item, runs, run_dir = _finished_item_run(tmp_path)
    (run_dir / "summary.json").write_text(json.dumps({"status": "running"}))
    with open(run_dir / "metrics.jsonl", "r+") as fh:   # cut before the end: not finished, not repairable
        first = fh.readline()
        fh.seek(len(first))
        fh.truncate()
    (run_dir / "note.txt").write_text("written by the first attempt")
    lines = []
    outcome, = executor.execute([item], runs, echo=lines.append)
    assert outcome.status == "ok" and outcome.action == "ran"
    kept, = (runs / store.SUPERSEDED).iterdir()
    assert kept.name.startswith(item.name + ".") and (kept / "note.txt").read_text() == "written by the first attempt"
    assert (kept / "metrics.jsonl").read_text() == first
    assert any(str(kept) in line for line in lines), lines
    assert [p.name for p in store.iter_runs(runs)] == [item.name]
