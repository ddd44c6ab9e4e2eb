"""Reports from a hand-written run store: statistics, labels, profile arithmetic, size figure."""

import csv
import math

import numpy as np
import pandas as pd
import pytest

from harness import store
from cli import main as cli_main
from reports import profile
from reports.index import build
from reports.load import load_runs
from reports.tables import final_results


def fake_run(root, name, *, optimizer, problem, seed, losses, evals_per_step=10, status="ok",
             peak=300 * 2**20, param_count=1000, opt_params=None, metric_every=2):
    d = root / name
    d.mkdir(parents=True)
    store.write_json(d / "config.json", {
        "optimizer": optimizer, "problem": problem, "seed": seed, "budget": {"steps": 6},
        "optimizer_params": opt_params or {"lr": 0.1}, "problem_params": {}, "metric_name": "heldout_logprob",
        "metric_higher_is_better": True})
    store.write_json(d / "env.json", {"harness": "0.1.0", "python": "3.11", "torch": "2.13.0",
                                      "device": "cpu", "cpu": "test cpu", "git_commit": "abc"})
    records = [{"step": 0, "evals": 0, "time_s": 0.0, "loss": None, "metric": -6.0}]
    for i, loss in enumerate(losses, 1):
        r = {"step": i, "evals": i * evals_per_step, "time_s": 0.5 * i, "loss": loss}
        if i % metric_every == 0:
            r["metric"] = -loss
        records.append(r)
    with open(d / "metrics.jsonl", "w") as fh:
        fh.writelines(store.dumps(r) + "\n" for r in records)
    finite = [x for x in losses if math.isfinite(x)]
    store.write_json(d / "summary.json", {
        "status": status, "reason": None if status == "ok" else "boom", "optimizer": optimizer,
        "problem": problem, "seed": seed, "steps": len(losses), "evals": len(losses) * evals_per_step,
        "wall_clock_s": 1.0 + seed, "optimizer_time_s": 0.5 * len(losses), "final_loss": losses[-1],
        "best_loss": min(finite) if finite else None, "final_metric": -losses[-1], "best_metric": -min(finite),
        "metric_name": "heldout_logprob", "peak_memory_bytes": peak, "peak_memory_method": "peak_rss",
        "device": "cpu", "param_count": param_count})
    return d


@pytest.fixture
def store_dir(tmp_path):
    root = tmp_path / "runs"
    # es reaches the qwen3-tiny target (loss <= 1 + 0.1 * (10 - 1) = 1.9) at step 3 = 30 evals,
    # mezo at step 6 = 60 evals: ratio 2 on evaluations
    for seed in (0, 1):
        fake_run(root, f"es-t-{seed}", optimizer="es", problem="qwen3-tiny", seed=seed,
                 losses=[10, 5, 1.5, 1.2, 1.1, 1.0], peak=(400 + seed) * 2**20, param_count=10**5)
        fake_run(root, f"mezo-t-{seed}", optimizer="mezo", problem="qwen3-tiny", seed=seed,
                 losses=[10, 8, 6, 4, 3, 1.8], peak=300 * 2**20, param_count=10**5)
        fake_run(root, f"es-s-{seed}", optimizer="es", problem="qwen3-small", seed=seed,
                 losses=[10, 9, 8, 7, 6, 5], peak=900 * 2**20, param_count=10**7)
        fake_run(root, f"mezo-s-{seed}", optimizer="mezo", problem="qwen3-small", seed=seed,
                 losses=[10, 9, 8, 7, 6, 4], peak=700 * 2**20, param_count=10**7)
    fake_run(root, "mezo-t-2", optimizer="mezo", problem="qwen3-tiny", seed=2, losses=[10, float("nan")],
             status="diverged", param_count=10**5)
    fake_run(root, "es-t-9", optimizer="es", problem="qwen3-tiny", seed=9, losses=[10, 9], status="failed",
             param_count=10**5)
    return root


def test_final_table_statistics_over_ok_seeds(store_dir):
    runs, _ = load_runs(store_dir)
    t = final_results(runs).set_index(["problem", "optimizer"])
    es = t.loc[("qwen3-tiny", "es")]
    assert (es["seeds"], es["failed"], es["diverged"], es["seed_list"]) == (2, 1, 0, "0,1")
    assert es["final_loss_mean"] == 1.0 and es["final_loss_std"] == 0.0
    assert es["peak_memory_mib_mean"] == 400.5
    assert es["peak_memory_mib_std"] == pytest.approx(np.std([400, 401], ddof=1))
    mezo = t.loc[("qwen3-tiny", "mezo")]
    assert (mezo["seeds"], mezo["diverged"]) == (2, 1) and mezo["final_loss_mean"] == 1.8


def test_profile_costs_and_ratios(store_dir):
    runs, curves = load_runs(store_dir)
    cost = profile.costs(runs, curves).set_index(["problem", "optimizer"])
    assert cost.loc[("qwen3-tiny", "es"), "target_loss"] == pytest.approx(1.9)
    # es seeds reach at 30 evals, its failed seed never does: median of (30, 30, inf) = 30
    assert cost.loc[("qwen3-tiny", "es"), "cost_evals"] == 30
    assert cost.loc[("qwen3-tiny", "mezo"), "cost_evals"] == 60
    # qwen3-small: target 4 + 0.1 * 6 = 4.6; es never gets below 5
    assert cost.loc[("qwen3-small", "es"), "cost_evals"] == math.inf
    r = profile.ratios(cost.reset_index(), "cost_evals")
    assert r.loc["qwen3-tiny", "es"] == 1.0 and r.loc["qwen3-tiny", "mezo"] == 2.0
    assert r.loc["qwen3-small", "mezo"] == 1.0 and r.loc["qwen3-small", "es"] == math.inf


def test_report_files_and_memory_by_size(store_dir, tmp_path):
    out = tmp_path / "out"
    result = build(store_dir, out)
    assert result["figures"]["memory_by_size"] == {"qwen3": "memory_by_size_qwen3.png"}
    for name in ("memory_by_size_qwen3.png", "memory.png", "memory_quality.png", "curves_qwen3-tiny.png",
                 "curves_qwen3-small.png", "index.html", "index.md", "runs.csv"):
        assert (out / name).stat().st_size > 200, name
    # two problems: no profile (a few flat steps), and the index says why; no file is written empty
    assert not (out / "profile.png").exists() and not (out / "algoperf_profile.png").exists()
    assert "with 2 problems (fewer than 3)" in (out / "index.md").read_text()
    assert all(f.stat().st_size > 0 for f in out.iterdir() if f.is_file())
    assert not (out / "scores.csv").exists()                 # no random search among the runs
    assert set(result["figure_files"]) == {f.name for f in out.glob("*.png")}   # the console's count
    with open(out / "final_qwen3-tiny.csv") as fh:
        rows = {r["optimizer"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"es", "mezo"} and rows["es"]["seeds"] == "2"
    index = (out / "index.md").read_text()
    assert "es-t-9" in index and "boom" in index          # the failed run is listed with its reason
    assert "| 0.1.0" in index and "test cpu" in index     # environment of the runs


def test_one_optimizer_with_two_configs_is_never_pooled(tmp_path):
    root = tmp_path / "runs"
    for lr in (0.1, 0.01):
        fake_run(root, f"adam-{lr}", optimizer="adam", problem="digits-mlp", seed=0, losses=[2, 1],
                 opt_params={"lr": lr, "beta1": 0.9})
    runs, _ = load_runs(root)
    assert sorted(runs["label"]) == ["adam [lr=0.01]", "adam [lr=0.1]"]


def test_report_bad_runs_dir_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli_main(["report", "--runs-dir", str(tmp_path / "nope"), "--out", str(out)]) == 2
    (tmp_path / "empty").mkdir()
    assert cli_main(["report", "--runs-dir", str(tmp_path / "empty"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no such directory" in err[0] and "no run directories" in err[1]
    assert not out.exists()


def test_final_table_columns_have_a_direction_a_bold_best_and_one_format():
    from reports.tables import markdown, number_format

    assert number_format([527.9, 930.0]) == ".1f" and number_format([600.0, 200.0]) == ".0f"
    assert number_format([2e9, 3.5]) == ".3e"
    t = pd.DataFrame({"optimizer": ["adam", "es"], "budget": ["forwards=600"] * 2, "seeds": [3, 3], "failed": [0, 0],
                      "diverged": [0, 0], "metric_name": "heldout_logprob", "metric_higher_is_better": True,
                      **{f"{k}_{s}": [1.5, 2.25] for k in ("final_loss", "best_loss", "wall_clock_s", "peak_memory_mib")
                         for s in ("mean", "std")},
                      "final_metric_mean": [-2.43, -4.38], "final_metric_std": [0.2, 0.1],
                      "best_metric_mean": [-2.4, -4.3], "best_metric_std": [0.2, 0.1],
                      "final_metric_median": [-2.43, -4.38], "final_metric_ci_low": [-2.7, -4.6],
                      "final_metric_ci_high": [-2.4, -4.3], "evals_mean": [200.0, 600.0], "evals_std": [0.0, 0.0],
                      "forwards_mean": [600.0, 600.0], "forwards_std": [0.0, 0.0]})
    text = markdown(t)
    assert "final heldout_logprob ↑" in text and "final loss ↓" in text and "forwards=600" in text
    adam, es = [line for line in text.splitlines() if line.startswith("| adam") or line.startswith("| es")]
    assert "**-2.430** ± 0.200" in adam and "**1.500** ± 1.500" in adam   # higher log-prob, lower loss: adam
    assert "-4.380 ± 0.100" in es and "**" not in es.split("|")[9]          # one format (3 decimals) per column
    assert "200 ± 0" in adam                                                # counts as integers
