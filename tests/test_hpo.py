"""Search-space HPO: tpe == plain Optuna, nevergrad seeding and names, overhead timing,
digits-hpo problems, and the seed003 reproduction on a tiny budget."""

import csv
import math

import pytest

from conftest import load_jsonl, without_time
from harness import registry
from harness.problem import SearchSpaceProblem
from harness.runner import Budget, RunSpec, run
from harness.space import Choice, Float, Int, Space
from optimizers.tpe import sampler_seed


class _Mixed(SearchSpaceProblem):
    """A cheap mixed space (log float, float, int, log int, choice) with a known objective."""

    METRIC = "objective"
    METRIC_HIGHER_IS_BETTER = False

    def __init__(self, name, hparams, seed):
        super().__init__(name, hparams, seed)
        self.space = Space([Float("lr", 1e-4, 1e-1, log=True), Float("p", 0.0, 0.5), Int("depth", 1, 4),
                            Int("width", 8, 256, log=True), Choice("batch", (16, 32, 64))])

    def objective(self, c) -> float:
        return ((math.log10(c["lr"]) + 2.5) ** 2 + (c["p"] - 0.1) ** 2 + (c["depth"] - 2) ** 2
                + (math.log2(c["width"]) - 6) ** 2 + (0.0 if c["batch"] == 32 else 1.0))


@pytest.fixture
def mixed(monkeypatch):
    registry.load_all()
    monkeypatch.setitem(registry.PROBLEMS, "mixed", registry.ProblemEntry("mixed", _Mixed, ("search-space",), "t"))
    return "mixed"


def test_tpe_adapter_gives_the_plain_optuna_trial_sequence(mixed, tmp_path):
    optuna = pytest.importorskip("optuna")   # optional here: absent on the GPU image
    run_dir, summary = run(RunSpec(optimizer="tpe", problem=mixed, seed=4, budget=Budget(evals=25),
                                   overrides={"n_startup_trials": "5"}, runs_dir=str(tmp_path)), progress=False)
    assert summary["status"] == "ok" and summary["evals"] == 25
    losses = [r["loss"] for r in load_jsonl(run_dir / "metrics.jsonl")[1:]]

    # what a user of Optuna would write, with the seed the adapter derives from run seed 4
    problem = _Mixed("mixed", {}, 4)

    def objective(trial):
        return problem.objective({
            "lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True), "p": trial.suggest_float("p", 0.0, 0.5),
            "depth": trial.suggest_int("depth", 1, 4), "width": trial.suggest_int("width", 8, 256, log=True),
            "batch": trial.suggest_categorical("batch", (16, 32, 64))})

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=sampler_seed(4), n_startup_trials=5))
    study.optimize(objective, n_trials=25)
    assert losses == [t.value for t in study.trials]
    assert summary["best_loss"] == study.best_value


def test_nevergrad_is_seeded_and_reproducible(mixed, tmp_path):
    def go(sub, seed, name="NGOpt"):
        return run(RunSpec(optimizer="nevergrad", problem=mixed, seed=seed, budget=Budget(evals=15),
                           overrides={"name": name, "budget": "15"}, runs_dir=str(tmp_path / sub)),
                   progress=False)

    (da, sa), (db, sb), (dc, _) = go("a", 0), go("b", 0), go("c", 1)
    ra, rb, rc = (without_time(load_jsonl(d / "metrics.jsonl")) for d in (da, db, dc))
    assert sa["status"] == "ok" and sa["evals"] == 15
    assert ra == rb and ra != rc and sb["best_loss"] == sa["best_loss"]
    _, sd = go("d", 0, "TwoPointsDE")
    assert sd["status"] == "ok" and sd["best_loss"] < 5


def test_ngopt_metamodel_budget_runs_and_improves_on_sphere(tmp_path):
    """At 300 evaluations in 5 dimensions NGOpt picks a MetaModel optimizer, whose
    float(model.predict(...)) raises under numpy >= 2.4 (hence numpy<2.4 in pyproject)."""
    _, s = run(RunSpec(optimizer="nevergrad", problem="bbob-f1-d5", seed=0, budget=Budget(evals=300),
                       checkpoint_every=0, runs_dir=str(tmp_path)), progress=False)
    assert s["status"] == "ok", s.get("reason")
    assert s["evals"] == 300 and s["best_loss"] < 1.0


def test_bad_nevergrad_name_is_one_line_naming_valid_choices(cli, tmp_path):
    proc = cli("run", "--optimizer", "nevergrad", "--problem", "bbob-f1-d5", "--set", "name=NGopt",
               "--runs-dir", str(tmp_path))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "'NGopt'" in lines[0] and "NGOpt" in lines[0] and "CMA" in lines[0]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("optimizer", ["random", "cma", "tpe", "nevergrad"])
def test_overhead_and_objective_time_split_the_optimizer_time(optimizer, tmp_path):
    run_dir, s = run(RunSpec(optimizer=optimizer, problem="bbob-f8-d10", budget=Budget(evals=40),
                             runs_dir=str(tmp_path), checkpoint_every=0), progress=False)
    assert s["status"] == "ok" and s["objective_s"] > 0 and s["overhead_s"] > 0
    assert s["objective_s"] + s["overhead_s"] == pytest.approx(s["optimizer_time_s"], rel=1e-6)
    last = load_jsonl(run_dir / "metrics.jsonl")[-1]
    assert last["overhead_s"] == pytest.approx(s["overhead_s"], abs=1e-5)


def test_weights_problems_have_no_objective_split(tmp_path):
    _, s = run(RunSpec(optimizer="adam", problem="digits-mlp", budget=Budget(steps=2), runs_dir=str(tmp_path)),
               progress=False)
    assert s["status"] == "ok" and s["objective_s"] is None and s["overhead_s"] is None


def test_digits_hpo_spaces_and_deterministic_objective():
    dims = {}
    for name in ("digits-hpo", "digits-hpo-15", "digits-hpo-31"):
        dims[name] = len(registry.problem(name).create().space)
    assert dims == {"digits-hpo": 6, "digits-hpo-15": 15, "digits-hpo-31": 31}
    p = registry.problem("digits-hpo").create({"train_steps": "30"})
    good = {"lr": 3e-3, "width": 64, "depth": 1, "weight_decay": 1e-4, "batch_size": 64, "dropout": 0.0}
    bad = dict(good, lr=1e-4)
    assert p.objective(good) == p.objective(good) < p.objective(bad)
    ev = p.evaluate(good)
    assert ev["metric"] == pytest.approx(1 - p.objective(good)) and 0 < ev["test_f1"] <= 1


def test_cma_trains_inside_its_objective(tmp_path):
    _, s = run(RunSpec(optimizer="cma", problem="digits-hpo-15", budget=Budget(steps=1),
                       overrides={"train_steps": "5", "popsize": "4"}, runs_dir=str(tmp_path)), progress=False)
    assert s["status"] == "ok" and s["evals"] == 4 and 0 <= s["final_metric"] <= 1


@pytest.mark.slow
def test_reproduce_seed003_on_a_tiny_budget_writes_the_table(cli, tmp_path):
    proc = cli("reproduce", "seed003", "--jobs", "2", "--seeds", "0", "--out", str(tmp_path / "out"), "--runs-dir",
               str(tmp_path / "runs"), "--set", "adam_steps=5", "--set", "sparsities=90,98",
               "--set", "prune_evals=6", "--set", "prune_train_steps=100", "--set", "hpo_problems=digits-hpo",
               "--set", "hpo_optimizers=tpe,cma", "--set", "hpo_evals=3", "--set", "hpo_train_steps=5",
               "--set", "softmask_steps=5", "--set", "objective_evals=3", "--set", "final_steps=5",
               env={"HARNESS_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    # it ends by naming the report to run on its runs-dir
    assert proc.stdout.splitlines()[-1] == \
        f"report: python -m harness report {tmp_path / 'runs'} --out {tmp_path / 'runs-report'}"
    text = (tmp_path / "out" / "seed003.md").read_text()
    assert "| 98% |" in text and "| 90% |" in text and "0.81" in text
    assert "| digits-hpo | 6 | tpe | 3 |" in text and "| digits-hpo | 6 | cma | 3 |" in text
    assert "Differences from the paper" in text and "98%: synflow-cma" in text
    assert "| synflow-cma | softmask | paper |" in text and "| synflow | 3 |" in text
    assert "| trained | 3 |" in text and "faster per evaluation" in text
    assert (tmp_path / "out" / "runs.csv").exists()
    runs = [p for p in (tmp_path / "runs").iterdir() if (p / "summary.json").exists()]
    assert len(runs) == 1 + 2 * 4 + 2 + 2 and not (tmp_path / "runs" / ".sweep-logs").exists()
    peaks = {round(float(r["peak_memory_mb"])) for r in csv.DictReader(open(tmp_path / "out" / "runs.csv"))}
    assert len(peaks) > 3   # each run's own peak (one process each), not one running maximum


@pytest.mark.parametrize("args, needle", [
    (["reproduce", "seed999"], "seed003"),
    (["reproduce", "seed003", "--seeds", "0,x"], "comma-separated"),
    (["reproduce", "seed003", "--set", "hpo_optimizers=tpe,magnitude"], "'magnitude'"),
    (["reproduce", "seed003", "--set", "sparsities=99"], "digits-prune-99"),
    (["reproduce", "seed003", "--set", "objectives=trained,bogus"], "'bogus'"),
    (["reproduce", "seed003", "--set", "prune_sets=optimizer.popsize"], "prune_sets"),
])
def test_reproduce_bad_input_is_one_line_and_writes_nothing(cli, tmp_path, args, needle):
    proc = cli(*args, "--out", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], lines
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_nevergrad_resume_after_hard_kill_is_exact(cli, tmp_path):
    # on a 5-D problem with 6 evals NGOpt picks a recast optimizer that refuses pickling: replayed
    args = ["run", "--optimizer", "nevergrad", "--problem", "bbob-f1-d5", "--steps", "6", "--checkpoint-every",
            "2", "--no-progress"]
    env = {"HARNESS_CACHE_DIR": str(tmp_path / "cache")}
    assert cli(*args, "--runs-dir", str(tmp_path / "a"), env=env).returncode == 0
    killed = cli(*args, "--runs-dir", str(tmp_path / "b"), env={**env, "HARNESS_TEST_KILL_AT_STEP": "5"})
    assert killed.returncode == 137
    run_b = next((tmp_path / "b").iterdir())
    resumed = cli("run", "--resume", str(run_b), "--no-progress", env=env)
    assert resumed.returncode == 0, resumed.stderr
    run_a = next((tmp_path / "a").iterdir())
    assert without_time(load_jsonl(run_b / "metrics.jsonl")) == without_time(load_jsonl(run_a / "metrics.jsonl"))
