"""--log tensorboard,mlflow: read back with the libraries' own readers, compared with
metrics.jsonl (the record); a failing backend never fails the run."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
import torch

from conftest import ROOT, load_jsonl

import cli
from harness import distributed, executor, experiments, runner, tracking

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")


def _run(tmp_path, names, run_id="r"):
    torch.set_num_threads(1)
    spec = runner.RunSpec("cma", "bbob-f1-d2", seed=0, budget=runner.Budget(steps=4), overrides={},
                          runs_dir=str(tmp_path), run_id=run_id, checkpoint_every=0)
    run_dir, summary = runner.run(spec, progress=False, callbacks=tracking.callbacks(names, tmp_path))
    assert summary["status"] == "ok"
    return run_dir, summary, load_jsonl(run_dir / "metrics.jsonl")


def _series(records) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list] = {}
    for r in records:
        for key, value in tracking.numeric(r).items():
            out.setdefault(key, []).append((r["step"], value))
    return out


@pytest.fixture
def local_mlflow(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)


def test_tensorboard_and_mlflow_hold_what_metrics_jsonl_holds(tmp_path, local_mlflow):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    run_dir, summary, records = _run(tmp_path, ["tensorboard", "mlflow"])
    expected = _series(records)
    assert {"loss", "evals", "metric", "sigma"} <= set(expected) and expected["evals"][0] == (0, 0.0)

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    for key, points in expected.items():   # every numeric field, on the step axis (float32 in TB)
        got = [(e.step, e.value) for e in acc.Scalars(key)]
        assert [s for s, _ in got] == [s for s, _ in points]
        assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-6)
    final = acc.Scalars("summary/final_loss")
    assert final[-1].value == pytest.approx(summary["final_loss"], rel=1e-6)
    start = HParamsPluginData.FromString(acc.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    assert hp["optimizer"].string_value == "cma" and hp["optimizer.variant"].string_value == "auto"

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("harness").experiment_id])
    config = json.loads((run_dir / "config.json").read_text())
    assert run.data.params == {**{f"optimizer.{k}": str(v) for k, v in config["optimizer_params"].items()},
                               **{f"problem.{k}": str(v) for k, v in config["problem_params"].items()}}
    assert {k: run.data.tags[k] for k in ("optimizer", "problem", "seed")} == {
        "optimizer": "cma", "problem": "bbob-f1-d2", "seed": "0"}
    assert run.data.tags["commit"] == json.loads((run_dir / "env.json").read_text())["git_commit"]
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    for key, points in expected.items():
        got = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert got == points   # MLflow keeps float64: exact
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == ["config.json", "summary.json"]
    assert not (tmp_path / "mlruns").exists()

    # the run store stays the record: the report's loader sees the one run, and nothing
    # the report reads imports a tracking library
    from reports.load import load_runs

    runs, _ = load_runs(tmp_path)
    assert list(runs["final_loss"]) == [summary["final_loss"]]
    for path in [*(ROOT / "reports").glob("*.py"), ROOT / "cli" / "commands" / "report.py"]:
        text = path.read_text()
        assert not re.search(r"^\s*(from|import) (mlflow|tensorboard|harness\.tracking)", text, re.M)
        assert not re.search(r"^\s*from harness import .*\btracking\b", text, re.M)


def test_a_failing_backend_warns_once_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://nowhere")
    run_dir, summary, records = _run(tmp_path, ["mlflow"])
    err = capsys.readouterr().err
    assert [ln for ln in err.splitlines() if ln.startswith("warning: --log mlflow stopped")] != []
    assert err.count("warning:") == 1 and len(records) == 5 and summary["steps"] == 4


def test_only_the_main_process_logs(tmp_path, monkeypatch, local_mlflow):
    run_dir, _, _ = _run(tmp_path, [])
    monkeypatch.setattr(distributed, "is_main", lambda: False)   # as on rank 1 under torchrun
    (logger,) = tracking.callbacks(["tensorboard"], tmp_path)
    logger.bind(run_dir)
    logger.on_step(None, {"step": 9, "loss": 1.0})
    assert not logger.on and not list(run_dir.glob("events.out.tfevents*"))


def test_without_the_extra_log_names_the_install_and_writes_nothing(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "mlflow" else real(n, *a))
    code = cli.main(["run", "--optimizer", "cma", "--problem", "bbob-f1-d2", "--steps", "2",
                     "--runs-dir", str(tmp_path / "runs"), "--log", "tensorboard,mlflow"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "pip install -e '.[tracking]'" in err and "mlflow" in err
    assert not (tmp_path / "runs").exists()
    assert cli.main(["run", "--optimizer", "cma", "--problem", "bbob-f1-d2", "--log", "wandb"]) == 2


def test_tracking_is_log_under_another_name():
    # torchrun's parser rejects --log (an abbreviation of its --log-dir) even after -m harness
    parser = cli.build_parser()
    for verb in ("run", "sweep"):
        extra = ["--optimizers", "a", "--problems", "b"] if verb == "sweep" else []
        assert parser.parse_args([verb, *extra, "--tracking", "mlflow"]).log == "mlflow"


def test_sweep_passes_log_to_every_child(tmp_path):
    seen = []

    class Recorder(executor.LocalExecutor):
        def launch(self, cmd, env, log, resume_cmd=None):
            seen.append(cmd)
            return 0, 0

    it = experiments.item("cma", "bbob-f1-d2", 0, {"steps": 2})
    executor.execute([it], tmp_path, echo=lambda *_: None, executor=Recorder(), extra_args=["--log", "mlflow"])
    assert seen[0][-2:] == ["--log", "mlflow"] and "--optimizer" in seen[0]
