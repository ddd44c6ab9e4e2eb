"""COCO's BBOB functions (problems/bbob.py): every name builds, delta-f is 0 at the
optimum cocoex exposes, cma solves f1, the COCO log holds exactly the optimizer's
evaluations (also after a kill and resume), and cocopp reads a tiny runs-dir."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from harness import registry, runner
from harness.errors import UsageError
from harness.faults import FaultHooks
from harness.runner import Budget, RunSpec, run
from problems.bbob import BOX, DIMENSIONS, FUNCTIONS, close_coco_log

registry.load_all()
CPU = torch.device("cpu")


def _coco_evals(run_dir) -> int:
    """Evaluations the COCO .info file records for the run's single trial."""
    close_coco_log()    # what the run process's exit does
    (info,) = (run_dir / "coco").glob("*.info")
    return int(re.search(r", \d+:(\d+)\|", info.read_text()).group(1))


def test_every_bbob_problem_builds_with_its_box_and_delta_f_zero_at_the_optimum():
    import cocoex

    names = [n for n in registry.PROBLEMS if n.startswith("bbob-")]
    assert len(names) == 24 * 6
    for f in FUNCTIONS:
        for d in DIMENSIONS:
            p = registry.problem(f"bbob-f{f}-d{d}").create({"instance": 3})
            p.build(CPU)
            assert len(p.space) == d and p.OPTIMUM == 0.0
            bare = cocoex.BareProblem("bbob", f, d, 3)
            assert (p.space.bounds()[0] == BOX[0]).all() and (p.space.bounds()[1] == BOX[1]).all()
            x_opt = p.optimum()
            config = p.space.decode(x_opt)
            assert p.objective(config) == 0.0 and p.evaluate(config)["metric"] == 0.0, (f, d)
            x = np.full(d, 1.0)
            assert p.objective(p.space.decode(x)) == pytest.approx(bare(x) - bare.best_value())
    # the box the problem declares is cocoex's
    suite = cocoex.Suite("bbob", "instances:1", "dimensions:2,40")
    for problem in suite:
        assert (problem.lower_bounds == BOX[0]).all() and (problem.upper_bounds == BOX[1]).all()


def test_instance_changes_the_function_and_is_validated():
    a = registry.problem("bbob-f3-d5").create({"instance": 1})
    b = registry.problem("bbob-f3-d5").create({"instance": 2})
    a.build(CPU)
    b.build(CPU)
    assert not np.allclose(a.optimum(), b.optimum())
    with pytest.raises(UsageError, match="instance"):
        registry.problem("bbob-f3-d5").create({"instance": 0})


def test_select_problems_takes_shell_patterns():
    assert registry.select_problems("bbob-f*-d5") == [f"bbob-f{f}-d5" for f in range(1, 25)]
    assert registry.select_problems("bbob-f1-d[23],sphere-50") == ["bbob-f1-d2", "bbob-f1-d3", "sphere-50"]
    with pytest.raises(UsageError, match="no registered problem matches"):
        registry.select_problems("bbob-f99-*")
    with pytest.raises(UsageError, match="did you mean"):
        registry.select_problems("bbob-f1-d4")


def test_cma_reaches_1e_8_on_f1_d5_within_2000_evals_and_logs_exactly_its_evaluations(tmp_path):
    run_dir, s = run(RunSpec(optimizer="cma", problem="bbob-f1-d5", seed=0, budget=Budget(evals=2000),
                             runs_dir=str(tmp_path), checkpoint_every=0), progress=False)
    assert s["status"] == "ok" and s["metric_name"] == "delta_f"
    assert s["best_loss"] <= 1e-8 and s["best_metric"] <= 1e-8
    # the eval metric's re-evaluations (one per step) are not in COCO's log
    assert _coco_evals(run_dir) == s["evals"]
    dat = (run_dir / "coco" / "data_f1" / "bbobexp_f1_DIM5.dat").read_text()
    first_hit = next(int(line.split()[0]) for line in dat.splitlines()
                     if not line.startswith("%") and float(line.split()[2]) <= 1e-8)
    assert first_hit <= 2000


class _Killed(BaseException):
    pass


def test_killed_and_resumed_run_logs_each_evaluation_once(tmp_path, monkeypatch):
    spec = RunSpec(optimizer="random", problem="bbob-f3-d2", seed=0, budget=Budget(steps=9),
                   runs_dir=str(tmp_path), checkpoint_every=4, overrides={"optimizer.batch": "3"})

    def kill(self, step, close):
        if step == 6:      # after the checkpoint at 4: steps 5-6 are redone on resume
            raise _Killed()

    monkeypatch.setattr(FaultHooks, "after_step", kill)
    with pytest.raises(_Killed):
        run(spec, progress=False)
    monkeypatch.undo()
    close_coco_log()   # what the process's exit does
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    _, s = runner.resume(run_dir, progress=False)
    assert s["status"] == "ok" and s["evals"] == 27
    assert _coco_evals(run_dir) == 27
    assert [p.name for p in run_dir.iterdir() if p.name.startswith("coco")] == ["coco"]


@pytest.mark.slow
def test_report_runs_cocopp_offline_on_the_bbob_runs_and_links_it(tmp_path):
    """Two optimizers on one function, two instances each (pooled: one label per optimizer)."""
    from reports.index import build

    runs = tmp_path / "runs"
    for opt in ("cma", "random"):
        for instance in (1, 2):
            run(RunSpec(optimizer=opt, problem="bbob-f1-d2", seed=0, budget=Budget(evals=40),
                        runs_dir=str(runs), checkpoint_every=0, overrides={"problem.instance": str(instance)}),
                progress=False)
    close_coco_log()
    result = build(runs, tmp_path / "report")
    coco = tmp_path / "report" / "coco"
    assert result["coco"]["index"] == "coco/index.html", (coco / "cocopp.log").read_text()[-2000:]
    assert sorted(p.name for p in (coco / "data").iterdir()) == ["cma", "random"]
    assert len(list((coco / "data" / "cma").glob("*/*.info"))) == 2
    assert list(coco.glob("*/pprldmany_02D_noiselessall.png"))
    index = (tmp_path / "report" / "index.md").read_text()
    assert "](coco/index.html)" in index and "cocopp" in index
    assert "[instance=" not in index          # instances pooled like seeds


def test_when_cocopp_fails_the_report_says_so_in_one_line(tmp_path, monkeypatch):
    import pandas as pd

    from reports import coco

    (tmp_path / "runs" / "r1" / "coco").mkdir(parents=True)
    (tmp_path / "runs" / "r1" / "coco" / "bbobexp_f1.info").write_text("not COCO data\n")
    runs = pd.DataFrame([{"run_id": "r1", "family": "bbob", "label": "cma"}])
    monkeypatch.setattr(coco, "_OFFLINE_MAIN", "raise SystemExit('cocopp exploded')")
    result = coco.build(runs, tmp_path / "runs", tmp_path / "report")
    assert result["index"] is None and "\n" not in result["note"]
    assert "could not post-process the 1 bbob runs" in result["note"] and "cocopp exploded" in result["note"]
    assert coco.build(runs.assign(family="digits"), tmp_path / "runs", tmp_path / "report") is None
