"""`tune`: equal trials and budgets, Halton determinism, trial 0 = the default, the best
configuration rerun on fresh seeds, tuning.csv, report --targets-from, bad input, resume."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from conftest import InProcessExecutor, check_refused
from harness import store
from studies import tuning
from harness.errors import UsageError


def request(**kw):
    base = dict(optimizers=["cma", "random"], problem="sphere-50", trials=3, budget={"evals": 20},
                space=["random.batch=1,5,10"], fresh_seeds=[7, 8])
    base.update(kw)
    return tuning.Request(**base)


def test_halton_trials_are_deterministic_equal_and_start_with_the_default():
    plan = tuning.prepare(request(trials=4, studies=2, space=["random.batch=1,5,10"]), device="cpu")
    a, b = tuning.halton_trials(plan), tuning.halton_trials(plan)
    assert [t.item for t in a] == [t.item for t in b]
    for opt in ("cma", "random"):
        mine = [t for t in a if t.optimizer == opt]
        assert len(mine) == 4 * 2                                  # K trials x M studies each
        assert {t.item.budget["evals"] for t in mine} == {20}      # the same budget per trial
        zero = [t for t in mine if t.index == 0]
        assert len(zero) == 2 and all(t.hparams == {} and t.item.sets == () for t in zero)
        assert {t.item.seed for t in mine} == {0, 1}               # study m on tuning seed m
    cma = [t.hparams for t in a if t.optimizer == "cma" and t.index > 0]
    assert all(0.05 <= h["sigma0"] <= 0.5 and 4 <= h["popsize"] <= 64 for h in cma)
    assert len({(h["sigma0"], h["popsize"]) for h in cma}) == len(cma)
    other = tuning.halton_trials(tuning.prepare(request(trials=4, studies=2, sampler_seed=1), device="cpu"))
    assert [t.hparams for t in other if t.index > 0] != [t.hparams for t in a if t.index > 0]


@pytest.mark.parametrize("args, needle", [
    (["--space", "cma.sigmaa=0.1:1"], "unknown hyperparameter 'sigmaa'"),
    (["--space", "cma.sigma0=0:1:log"], "log range needs min > 0"),
    (["--space", "cma.popsize=1:10"], "must be >= 2"),
    (["--space", "nosuch=1:2"], "no tuned optimizer declares 'nosuch'"),
    (["--sampler", "grid"], "--sampler 'grid': must be one of halton, tpe"),
    (["--seeds", "0", "--fresh-seeds", "0,1"], "seed 0 is also a tuning seed"),
    (["--set", "sigma0=0.1"], "--set sigma0: cma tunes it"),
])
def test_bad_space_or_sampler_is_one_line_exit_2_nothing_written(tmp_path, capsys, args, needle):
    out = tmp_path / "tune"
    check_refused(["tune", "--optimizers", "cma", "--problem", "sphere-50", "--trials", "2", "--evals", "10",
                   "--runs-dir", str(out), *args], out, capsys, needle)


def test_tune_reruns_best_on_fresh_seeds_writes_csv_and_resumes(tmp_path):
    from reports import tuning as report

    torch.set_num_threads(1)
    runs = tmp_path / "tune"
    plan = tuning.prepare(request(), device="cpu")
    ex = InProcessExecutor()
    record = tuning.tune(plan, runs, device="cpu", executor=ex, echo=lambda *a: None)
    assert len(ex.launched) <= 6 + 8 and record["status"] == "done"
    out = report.write(runs)
    with open(out["csv"]) as fh:
        rows = list(csv.DictReader(fh))
    cols = set(rows[0])
    assert {"optimizer", "study", "trial", "hp_sigma0", "hp_popsize", "hp_batch", "validation", "metric",
            "evals", "forwards", "tokens", "flops", "optimizer_time_s"} <= cols
    for opt in ("cma", "random"):
        mine = [r for r in rows if r["optimizer"] == opt]
        assert sorted(int(r["trial"]) for r in mine) == [0, 1, 2]
        assert all(r["status"] == "ok" for r in mine)
        assert {store.read_json(runs / r["run"] / "config.json")["budget"]["evals"] for r in mine} == {20}
        best = record["best"][opt]
        vals = [float(r["validation"]) for r in mine]
        assert best["validation"] == min(vals)           # sphere: lower is better
        for name in record["final"][opt]["tuned"]:       # the best configuration on fresh seeds only
            cfg = store.read_json(runs / name / "config.json")
            assert cfg["seed"] in (7, 8)
            assert all(str(cfg["optimizer_params"][k]) == str(v) for k, v in best["hparams"].items())
    assert "tuning cost belongs to the comparison" in out["md"].read_text()

    # interrupted: one trial lost its run; the same tune runs only that one again
    lost = rows[3]["run"]
    import shutil

    shutil.rmtree(runs / lost)
    again = InProcessExecutor()
    tuning.tune(tuning.prepare(request(), device="cpu"), runs, device="cpu", executor=again, echo=lambda *a: None)
    assert [argv[argv.index("--run-id") + 1] for argv in again.launched] == [lost]

    # report --targets-from: the target is the median of the tuned baseline's fresh-seed metric
    from cli import main

    problem, target, opt = report.targets_from(f"{runs}:cma")
    finals = [store.read_json(runs / n / "summary.json")["final_metric"] for n in record["final"]["cma"]["tuned"]]
    assert (problem, opt) == ("sphere-50", "cma") and target == pytest.approx(float(np.median(finals)))
    assert main(["report", str(runs), "--out", str(tmp_path / "rep"), "--targets-from", f"{runs}:cma"]) == 0
    with open(tmp_path / "rep" / "targets.csv") as fh:
        targets = {float(r["target"]) for r in csv.DictReader(fh)}
    assert len(targets) == 1 and targets.pop() == pytest.approx(target)
    with pytest.raises(UsageError, match="'adam' was not tuned there"):
        report.targets_from(f"{runs}:adam")


def test_validation_splits_are_recorded_beside_the_test_metric(one_thread):
    from conftest import make_problem

    cpu = torch.device("cpu")
    q = make_problem("qwen3-tiny")
    q.build(cpu)
    n = q.eval_ids.shape[0]
    assert q.val_ids.shape[0] == 64 and q.VALIDATION_KEY == "val_logprob"
    held = torch.cat([q.eval_ids, q.val_ids])          # the validation chunks follow the metric's
    assert torch.equal(held[n:], q.val_ids) and not torch.equal(q.val_ids, q.eval_ids[:64])
    ev = q.evaluate()
    assert ev["val_logprob"] != ev["metric"]
    d = make_problem("digits-mlp")
    d.build(cpu)
    assert 0.0 <= d.evaluate()["val_macro_f1"] <= 1.0 and d.VALIDATION_KEY == "val_macro_f1"


def test_adam_warmup_steps_ramps_the_learning_rate_linearly(one_thread):
    from conftest import build_optimizer, make_problem

    prob = make_problem("digits-mlp")
    prob.build(torch.device("cpu"))
    opt = build_optimizer("adam", prob, lr=0.01, warmup_steps=4)
    lrs = [opt.step(k).extra["lr"] for k in range(6)]
    assert lrs == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01])


def test_tpe_asks_are_reproduced_so_a_rerun_skips_every_trial(tmp_path, one_thread):
    runs = tmp_path / "tpe"
    req = lambda: request(optimizers=["cma"], sampler="tpe", trials=3, fresh_seeds=[5], space=[])  # noqa: E731
    first = InProcessExecutor()
    record = tuning.tune(tuning.prepare(req(), device="cpu"), runs, device="cpu", executor=first,
                         echo=lambda *a: None)
    trials = record["trial_runs"]
    assert [t["trial"] for t in trials] == [0, 1, 2] and trials[0]["hparams"] == {}
    assert all(0.05 <= t["hparams"]["sigma0"] <= 0.5 for t in trials[1:])
    again = InProcessExecutor()
    tuning.tune(tuning.prepare(req(), device="cpu"), runs, device="cpu", executor=again, echo=lambda *a: None)
    assert again.launched == []


def test_every_shipped_space_validates_against_its_optimizers_params():
    from harness import registry
    from studies import tuning_space

    files = sorted(tuning_space.TUNING_DIR.glob("*.json"))
    assert {"es.json", "mezo.json", "adam.json", "cma.json", "eggroll.json"} <= {p.name for p in files}
    for path in files:
        name, _, family = path.stem.partition(".")
        space = tuning_space.load(name, family, None, registry.optimizer(name).schema())
        assert space.varying and str(path.name) in " ".join(space.sources)


def test_family_files_and_command_line_override_the_default_space(tmp_path):
    import json

    from harness import registry
    from studies import tuning_space

    schema = registry.optimizer("cma").schema()
    general = tuning_space.load("cma", "functions", None, schema).to_json()
    on_qwen3 = tuning_space.load("cma", "qwen3", None, schema).to_json()
    assert general["sigma0"]["min"] == 0.05 and on_qwen3["sigma0"] == {"min": 1e-3, "max": 0.1, "scaling": "log"}
    assert on_qwen3["popsize"] == general["popsize"]                  # keys the family file lacks stay
    spaces = tmp_path / "spaces.json"
    spaces.write_text(json.dumps({"cma": {"sigma0": {"min": 0.2, "max": 0.3}}}))
    plan = tuning.prepare(request(space=[str(spaces), "random.batch=1,5", "cma.popsize=8"]), device="cpu")
    cma = [t.hparams for t in tuning.halton_trials(plan) if t.optimizer == "cma" and t.index > 0]
    assert all(0.2 <= h["sigma0"] <= 0.3 and h["popsize"] == 8 for h in cma)
    spaces.write_text(json.dumps({"adam": {"lr": {"min": 0.1, "max": 0.2}}}))
    with pytest.raises(UsageError, match="'adam' is not one of the tuned optimizers"):
        tuning.prepare(request(space=[str(spaces)]), device="cpu")


def test_describe_shows_the_tuning_space(capsys):
    import json

    from cli import main

    assert main(["describe", "mezo", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)["tuning_space"]
    assert info["space"]["lr"] == {"min": 1e-5, "max": 1e-2, "scaling": "log"}
    assert info["family_overrides"] == ["digits"] and info["files"] == ["optimizers/tuning/mezo.json"]


def test_tune_hands_its_runs_to_the_chosen_executor(tmp_path, monkeypatch, capsys, one_thread):
    """`tune --executor submitit-local` launches every trial through that executor (here an
    in-process stand-in, so the test needs no scheduler), with its --executor-set resources."""
    from harness import cluster
    from cli import main

    made = []

    def fake_make(name, sets, runs_dir):
        made.append((name, sets))
        made.append(InProcessExecutor())
        return made[-1]

    monkeypatch.setattr(cluster, "make", fake_make)
    rc = main(["tune", "--optimizers", "random", "--problem", "sphere-50", "--trials", "2", "--evals", "10",
               "--fresh-seeds", "5", "--space", "random.batch=1,5", "--runs-dir", str(tmp_path / "t"),
               "--device", "cpu", "--executor", "submitit-local", "--executor-set", "timeout_min=5"])
    assert rc == 0
    # it ends by naming the report to run on its runs-dir
    assert capsys.readouterr().out.splitlines()[-1] == \
        f"report: python -m harness report {tmp_path / 't'} --out {tmp_path / 't-report'}"
    assert made[0] == ("submitit-local", {"timeout_min": 5})
    runs = {argv[argv.index("--run-id") + 1] for argv in made[1].launched}
    assert len(runs) >= 3   # 2 trials, then the best and default configuration (maybe one) on seed 5
    assert runs == {d.name for d in store.iter_runs(tmp_path / "t")}


def test_tune_passes_its_eval_schedule_to_every_trial(tmp_path, capsys):
    from cli import main

    rc = main(["tune", "--optimizers", "random", "--problem", "sphere-50", "--trials", "2", "--evals", "10",
               "--fresh-seeds", "5", "--space", "random.batch=1,5", "--runs-dir", str(tmp_path / "t"),
               "--device", "cpu", "--eval-schedule", "log", "--dry-run"])
    assert rc == 0 and "2 trial runs" in capsys.readouterr().out
    trials = tuning.halton_trials(tuning.prepare(request(eval_schedule="log"), device="cpu"))
    assert trials and all(t.item.name.endswith("_evlog") and "--eval-schedule" in t.item.run_args()
                          for t in trials)
