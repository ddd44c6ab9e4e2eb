"""The run loop end to end: quality, run-store format, resume, divergence."""

import json
import math

import pytest

import torch

from conftest import load_jsonl, only_run_dir, without_time
from harness import registry, store
from harness.problem import WeightsProblem
from harness.runner import SUMMARY_KEYS, Budget, RunSpec, run
from optimizers.cmaes import initial_point, pycma_seed


def test_adam_digits_reaches_f1_095_and_writes_the_run_store(cli, tmp_path):
    proc = cli("run", "--optimizer", "adam", "--problem", "digits-mlp", "--steps", "300",
               "--runs-dir", str(tmp_path), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    run_dir = only_run_dir(tmp_path)
    summary = store.read_json(run_dir / "summary.json")
    assert set(SUMMARY_KEYS) <= set(summary)
    assert summary["status"] == "ok" and summary["reason"] is None
    assert summary["final_metric"] >= 0.95
    assert summary["steps"] == 300 and summary["evals"] == 300
    assert summary["peak_memory_bytes"] > 50 * 2**20  # RSS of a process with torch loaded
    cfg = store.read_json(run_dir / "config.json")
    assert cfg["optimizer_params"]["lr"] == 3e-3      # the problem's recommended default, recorded
    assert cfg["problem_params"]["hidden"] == 64 and cfg["budget"]["steps"] == 300
    env = store.read_json(run_dir / "env.json")
    assert env["torch"] == torch.__version__ and env["python"]
    records = load_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(301))
    assert records[0]["loss"] is None and "metric" in records[0]       # initial evaluation
    assert all({"step", "evals", "time_s", "loss"} <= set(r) for r in records)
    assert sum("metric" in r for r in records) == 1 + 300 // 25
    times = [r["time_s"] for r in records]
    assert times == sorted(times)


def test_cma_on_sphere_matches_plain_pycma_and_converges(tmp_path):
    """The adapter is pycma: same seed and settings give the same generations."""
    cma = pytest.importorskip("cma")   # optional here: absent on the GPU image
    run_dir, summary = run(RunSpec(optimizer="cma", problem="bbob-f1-d10", seed=3,
                                   budget=Budget(evals=5000), runs_dir=str(tmp_path),
                                   checkpoint_every=0), progress=False)
    assert summary["status"] == "ok" and summary["best_loss"] < 1e-8 and summary["evals"] <= 5000
    records = load_jsonl(run_dir / "metrics.jsonl")[1:]

    problem = registry.problem("bbob-f1-d10").create(seed=3)
    problem.build(torch.device("cpu"))
    lo, hi = problem.space.bounds()
    es = cma.CMAEvolutionStrategy(initial_point(problem.space, 3), 0.3, {
        "seed": pycma_seed(3), "verbose": -9, "bounds": [list(lo), list(hi)], "CMA_stds": list(hi - lo)})
    for rec in records:
        xs = es.ask()
        values = [problem.objective(problem.space.decode(x)) for x in xs]
        es.tell(xs, values)
        assert rec["loss"] == min(values) and rec["sigma"] == es.sigma
    assert summary["best_loss"] == es.result.fbest


@pytest.mark.slow
def test_resume_after_hard_kill_gives_identical_metrics(cli, tmp_path):
    args = ["run", "--optimizer", "cma", "--problem", "digits-mlp", "--steps", "12", "--checkpoint-every", "4",
            "--eval-every", "3", "--set", "popsize=8", "--no-progress"]
    full = cli(*args, "--runs-dir", str(tmp_path / "a"))
    assert full.returncode == 0, full.stderr
    killed = cli(*args, "--runs-dir", str(tmp_path / "b"), env={"HARNESS_TEST_KILL_AT_STEP": "10"})
    assert killed.returncode == 137
    run_b = only_run_dir(tmp_path / "b")
    assert store.read_json(run_b / "summary.json")["status"] == "running"
    assert len(load_jsonl(run_b / "metrics.jsonl")) == 11     # steps 0..10 written before the kill
    resumed = cli("run", "--resume", str(run_b), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    run_a = only_run_dir(tmp_path / "a")
    assert without_time(load_jsonl(run_b / "metrics.jsonl")) == without_time(load_jsonl(run_a / "metrics.jsonl"))
    sa, sb = (store.read_json(d / "summary.json") for d in (run_a, run_b))
    assert sb["status"] == "ok" and sb["final_loss"] == sa["final_loss"] and sb["final_metric"] == sa["final_metric"]


class _ExplodingProblem(WeightsProblem):
    """A weights problem whose loss turns NaN after a few steps of Adam."""

    METRIC = "w"

    def build(self, device):
        super().build(device)
        self.model = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.constant_(self.model.weight, 1.0)

    def batch(self, step):
        return step

    def loss(self, batch):
        w = self.model.weight.sum()
        return w * 0 + (float("nan") if batch >= 3 else 1.0) + w

    def evaluate(self, solution=None):
        return {"metric": float(self.model.weight.detach().sum())}


def test_nan_loss_ends_run_as_diverged(tmp_path, monkeypatch):
    registry.load_all()
    monkeypatch.setitem(registry.PROBLEMS, "exploding",
                        registry.ProblemEntry("exploding", _ExplodingProblem, ("weights",), "test"))
    run_dir, summary = run(RunSpec(optimizer="adam", problem="exploding", budget=Budget(steps=50),
                                   runs_dir=str(tmp_path)), progress=False)
    assert summary["status"] == "diverged" and "step 4" in summary["reason"]
    assert summary["steps"] == 4
    text = (run_dir / "metrics.jsonl").read_text()
    last = json.loads(text.splitlines()[-1])          # still valid JSON: NaN stored as a string
    assert last["step"] == 4 and last["loss"] == "nan"
    assert json.loads((run_dir / "summary.json").read_text())["final_loss"] == "nan"


def test_failed_run_records_the_reason(cli, tmp_path):
    proc = cli("run", "--optimizer", "cma", "--problem", "bbob-f1-d5", "--steps", "20", "--runs-dir",
               str(tmp_path), "--no-progress", env={"HARNESS_TEST_FAIL_AT_STEP": "5"})
    assert proc.returncode == 1 and "HARNESS_TEST_FAIL_AT_STEP" in proc.stderr
    summary = store.read_json(only_run_dir(tmp_path) / "summary.json")
    assert summary["status"] == "failed" and "HARNESS_TEST_FAIL_AT_STEP=5" in summary["reason"]
    assert summary["steps"] == 4


def test_torn_last_metrics_line_is_ignored(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo')
    assert store.read_metrics(path) == [{"step": 1, "loss": 1.0}]
    store.truncate_metrics(path, 5)
    assert path.read_text() == '{"step": 1, "loss": 1.0}\n'


def test_random_search_is_seeded_and_beaten_by_cma(tmp_path):
    a = run(RunSpec(optimizer="random", problem="bbob-f1-d5", seed=1, budget=Budget(evals=500),
                    runs_dir=str(tmp_path)), progress=False)[1]
    b = run(RunSpec(optimizer="random", problem="bbob-f1-d5", seed=1, budget=Budget(evals=500),
                    runs_dir=str(tmp_path)), progress=False)[1]
    c = run(RunSpec(optimizer="cma", problem="bbob-f1-d5", seed=1, budget=Budget(evals=500),
                    runs_dir=str(tmp_path)), progress=False)[1]
    assert a["best_loss"] == b["best_loss"] and math.isfinite(a["best_loss"])
    assert c["best_loss"] < a["best_loss"] / 100


def test_log_spaced_evaluations_are_recorded_and_survive_a_resume(tmp_path):
    """--eval-schedule log evaluates at round(10^(j/10)) and at the last step; config.json records
    it, and a run stopped at step 12 and resumed to 30 evaluates where an unbroken one does."""
    from harness.errors import UsageError
    from harness.runner import resume
    from harness.spec import on_log_grid

    assert [k for k in range(1, 101) if on_log_grid(k)] == [1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, 40,
                                                           50, 63, 79, 100]
    spec = dict(optimizer="random", problem="bbob-f1-d5", seed=1, eval_schedule="log", checkpoint_every=4)
    full, _ = run(RunSpec(**spec, budget=Budget(steps=30), runs_dir=str(tmp_path / "a")))
    evaluated = [r["step"] for r in load_jsonl(full / "metrics.jsonl") if r.get("metric") is not None]
    assert evaluated == [1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 30]
    assert store.read_json(full / "config.json")["eval_schedule"] == "log"
    assert "framework_bytes" in store.read_json(full / "summary.json")   # the planner's CPU baseline, if measured
    short, _ = run(RunSpec(**spec, budget=Budget(steps=12), runs_dir=str(tmp_path / "b")))
    resume(short, Budget(steps=30), progress=False)
    again = [r["step"] for r in load_jsonl(short / "metrics.jsonl") if r.get("metric") is not None]
    assert again == [1, 2, 3, 4, 5, 6, 8, 10, 12, 13, 16, 20, 25, 30]   # 12: the first budget's last step
    with pytest.raises(UsageError, match="--eval-schedule 'cubic'"):
        RunSpec(optimizer="random", problem="bbob-f1-d5", eval_schedule="cubic")


def test_the_one_line_result_shows_where_the_metric_started(tmp_path, capsys):
    """The run's line shows the held-out metric's first evaluation beside its final value and
    direction: 'heldout_logprob=-3.78 (start -5.49, higher is better)'."""
    from cli import main as cli_main

    assert cli_main(["run", "--optimizer", "random", "--problem", "bbob-f1-d5", "--steps", "4",
                     "--runs-dir", str(tmp_path), "--no-progress"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    run_dir = only_run_dir(tmp_path)
    first = next(r["metric"] for r in load_jsonl(run_dir / "metrics.jsonl") if r.get("metric") is not None)
    final = store.read_json(run_dir / "summary.json")["final_metric"]
    assert f"={final:.6g} (start {first:.6g}, lower is better)" in line
