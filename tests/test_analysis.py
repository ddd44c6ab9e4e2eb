"""Fixed-target analysis and uncertainty on hand-written run stores: COCO and IOH
targets, runtimes and aRT, the memory limit, Mann-Whitney + Holm, the winner mark,
the median's bootstrap interval, the score against random search, ECDF/AUC, AlgoPerf."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from harness import store
from cli import main as cli_main
from harness.errors import UsageError
from reports import algoperf, ecdf, stats, targets
from reports.index import build
from reports.load import load_runs


def write_run(root, name, *, optimizer, problem, seed, metrics, evals_per_step=10, higher=False,
              peak=100 * 2**20, status="ok"):
    """A run whose step k (1..) records metric metrics[k-1] after k * evals_per_step evaluations."""
    d = root / name
    d.mkdir(parents=True)
    store.write_json(d / "config.json", {
        "optimizer": optimizer, "problem": problem, "seed": seed, "budget": {"steps": len(metrics)},
        "optimizer_params": {}, "problem_params": {}, "metric_name": "m", "metric_higher_is_better": higher})
    records = [{"step": 0, "evals": 0, "time_s": 0.0, "loss": None}]
    for k, m in enumerate(metrics, 1):
        e = k * evals_per_step
        records.append({"step": k, "evals": e, "time_s": 0.1 * k, "loss": m, "forwards": float(e),
                        "flops": float(e), "metric": m})
    with open(d / "metrics.jsonl", "w") as fh:
        fh.writelines(store.dumps(r) + "\n" for r in records)
    store.write_json(d / "summary.json", {
        "status": status, "optimizer": optimizer, "problem": problem, "seed": seed, "steps": len(metrics),
        "evals": len(metrics) * evals_per_step, "final_metric": metrics[-1], "final_loss": metrics[-1],
        "best_loss": min(metrics), "metric_name": "m", "peak_memory_bytes": peak,
        "peak_memory_method": "peak_rss", "device": "cpu"})


def test_ert_is_runtimes_plus_failed_budgets_over_successes():
    rt = np.array([10.0, np.nan, 30.0])
    budget = np.array([50.0, 100.0, 60.0])
    assert targets.ert(rt, budget, np.array([True, False, True])) == (10 + 30 + 100) / 2
    assert targets.ert(rt, budget, np.array([False, False, False])) == math.inf


def test_coco_targets_runtimes_and_memory_limit(tmp_path):
    root = tmp_path / "runs"
    # bbob-f1-d2 declares OPTIMUM 0: 51 targets 1e2 .. 1e-8; metric 50 -> 0.5 -> 0.005 at 10/20/30 evals
    write_run(root, "a", optimizer="cma", problem="bbob-f1-d2", seed=0, metrics=[50, 0.5, 0.005])
    write_run(root, "b", optimizer="cma", problem="bbob-f1-d2", seed=1, metrics=[50, 5, 2], peak=2 * 2**30)
    runs, curves = load_runs(root)
    assert curves["a"]["forwards"].tolist() == [0, 10, 20, 30]   # step 0 costs nothing (curves start at 0)
    rt = targets.runtimes(runs, curves)
    a = rt[rt["run_id"] == "a"].set_index("target_index")
    assert len(a) == 51 and a["target"].iloc[0] == pytest.approx(100) and a["target"].iloc[-1] == pytest.approx(1e-8)
    assert a.loc[0, "runtime_evals"] == 10          # 100: reached at step 1
    assert a.loc[10, "runtime_evals"] == 20         # 1: reached at step 2 (0.5)
    assert a.loc[20, "runtime_evals"] == 30         # 0.01: reached at step 3 (0.005)
    assert not a.loc[25, "success"] and a.loc[25, "budget_evals"] == 30
    table = targets.table(rt).set_index("target_index")
    # target 1: a at 20 evals, b never (budget 30): aRT = (20 + 30) / 1
    assert (table.loc[10, "successes"], table.loc[10, "ert_evals"]) == (1, 50)
    assert table.loc[0, "ert_evals"] == 10 and table.loc[30, "ert_evals"] == math.inf
    limited = targets.table(targets.runtimes(runs, curves, memory_limit=targets.parse_bytes("1GiB")))
    assert limited.set_index("target_index").loc[0, "successes"] == 1   # b's 2 GiB run no longer counts


def test_ioh_targets_from_the_data_and_given_targets(tmp_path):
    root = tmp_path / "runs"
    # higher is better: worst initial -5 (a's first record), best final -1 (b)
    write_run(root, "a", optimizer="es", problem="qwen3-tiny", seed=0, metrics=[-5, -4, -3], higher=True)
    write_run(root, "b", optimizer="adam", problem="qwen3-tiny", seed=0, metrics=[-4.5, -2, -1], higher=True)
    runs, curves = load_runs(root)
    rt = targets.runtimes(runs, curves)
    values = sorted(rt["target"].unique())
    assert len(values) == 10 and values[-1] == pytest.approx(-1.0) and values[0] == pytest.approx(-4.6)
    given = targets.runtimes(runs, curves, targets.parse_targets(["qwen3-tiny=-3,-2"]))
    hit = given[(given["run_id"] == "a")].set_index("target")["runtime_evals"]
    assert hit[-3.0] == 30 and math.isnan(hit[-2.0])
    with pytest.raises(UsageError, match="--targets qwen3-tiny"):
        targets.parse_targets(["qwen3-tiny"])
    assert cli_main(["report", str(root), "--out", str(tmp_path / "o"), "--memory-limit", "lots"]) == 2
    assert cli_main(["report", str(root), "--out", str(tmp_path / "o"), "--targets", "sphere-9=1,2"]) == 2
    assert not (tmp_path / "o").exists()


def test_significance_holm_and_the_winner_mark(tmp_path):
    root = tmp_path / "runs"
    for s in range(5):   # lower is better: tpe < cma (separated), random overlaps cma
        write_run(root, f"t{s}", optimizer="tpe", problem="bbob-f1-d2", seed=s, metrics=[5, 0.01 * (s + 1)])
        write_run(root, f"c{s}", optimizer="cma", problem="bbob-f1-d2", seed=s, metrics=[5, 1 + 0.1 * s])
        write_run(root, f"r{s}", optimizer="random", problem="bbob-f1-d2", seed=s, metrics=[5, 1.05 + 0.1 * s])
    runs, curves = load_runs(root)
    sig = stats.significance(runs, targets.runtimes(runs, curves))
    final = sig[sig["quantity"] == "final_metric"].set_index(["optimizer_a", "optimizer_b"])
    from scipy.stats import mannwhitneyu
    from statsmodels.stats.multitest import multipletests

    p = [mannwhitneyu([1 + .1 * s for s in range(5)], [1.05 + .1 * s for s in range(5)]).pvalue,
         mannwhitneyu([1 + .1 * s for s in range(5)], [.01 * (s + 1) for s in range(5)]).pvalue,
         mannwhitneyu([1.05 + .1 * s for s in range(5)], [.01 * (s + 1) for s in range(5)]).pvalue]
    assert final.loc[("cma", "tpe"), "p_value"] == pytest.approx(2 / 252)   # exact, fully separated
    assert list(final["p_holm"]) == pytest.approx(list(multipletests(p, method="holm")[1]))
    assert final.loc[("cma", "tpe"), "better"] == "tpe" and final.loc[("cma", "random"), "better"] == ""
    assert stats.winners(sig) == {"bbob-f1-d2": "tpe"}
    build(root, tmp_path / "out")
    page = (tmp_path / "out" / "analysis.html").read_text()   # its own page, linked from the index
    refs = re.findall(r'(?:href|src)="([^"]+)"', page)
    assert "targets.csv" in refs and "ecdf_evals.png" in refs and "significance.csv" in refs
    assert all((tmp_path / "out" / r).exists() for r in refs)
    assert 'href="analysis.html"' in (tmp_path / "out" / "index.html").read_text()
    md = (tmp_path / "out" / "final_bbob-f1-d2.md").read_text()
    assert "tpe ★" in md and "cma ★" not in md
    cols = pd.read_csv(tmp_path / "out" / "significance.csv").columns.tolist()
    assert cols == stats.SIGNIFICANCE_COLUMNS and cols[:10] == [
        "problem", "quantity", "optimizer_a", "optimizer_b", "n_a", "n_b", "statistic", "p_value", "p_holm", "better"]
    assert final.loc[("cma", "tpe"), "a12"] == 0.0 and final.loc[("cma", "tpe"), "verdict"] == "tpe better"
    scores = stats.normalized_scores(runs).set_index("optimizer")
    assert scores.loc["random", "score_median"] == pytest.approx(0.0)   # its own median
    assert scores.loc["tpe", "score_median"] == pytest.approx(100 * (1.25 - 0.03) / 1.25)  # optimum 0
    # ECDF: tpe reaches more (problem, target) pairs at every cost; AlgoPerf: tpe fastest
    family = dict(zip(runs["problem"], runs["family"]))
    auc, _ = ecdf.curves(targets.runtimes(runs, curves), "evals", family)
    assert auc.set_index("optimizer").loc["tpe", "rank"] == 1
    scores_ap, _ = algoperf.profile(algoperf.times(targets.runtimes(runs, curves)), family)
    assert scores_ap.set_index("optimizer").loc["tpe", "score"] == 1.0


def test_median_ci_is_seeded_and_brackets_the_median():
    values = [3.0, 1.0, 4.0, 1.5, 9.0, 2.6]
    med, lo, hi = stats.median_ci(values)
    assert med == np.median(values) and min(values) <= lo <= med <= hi <= max(values)
    assert stats.median_ci(values) == (med, lo, hi)
    assert stats.median_ci([2.0, 2.0]) == (2.0, 2.0, 2.0)


def test_curves_median_band_log_axis_and_short_labels():
    from reports import plots

    offsets = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 10.0]   # one outlier seed
    seeds = [pd.DataFrame({"evals": [1, 10, 100, 1000], "loss": [4.0 + s, 3.0 + s, 2.0 + s, 1.0 + s]})
             for s in offsets]
    grid, med, lo, hi, n, log = plots._band(seeds, "evals", "loss")
    assert log and grid[0] == 1 and grid[-1] == 1000 and n == 9      # three decades: log grid
    assert med[-1] == pytest.approx(1.4)                               # the median, not the mean
    assert (lo <= med + 1e-12).all() and (med <= hi + 1e-12).all() and hi[-1] < 2.0   # not min-max
    *_, log = plots._band([s.assign(evals=[1, 2, 3, 4]) for s in seeds], "evals", "loss")
    assert not log
    assert plots.short_label("cma [popsize=8, sigma0=0.3, bound=5]") == "cma [popsize=8, sigma…"
    assert len(plots.short_label("x" * 100)) == plots.LABEL_CHARS


def test_ioh_export_through_the_analyzer_logger(tmp_path):
    pytest.importorskip("ioh")
    import json

    from reports import ioh_export

    root = tmp_path / "runs"
    for s in range(2):   # metric at 10, 20, 30 forwards; best 0.5 first reached at 20 (seed 0)
        write_run(root, f"c{s}", optimizer="cma", problem="bbob-f1-d2", seed=s, metrics=[5, 0.5 + s, 0.5 + s])
    runs, curves = load_runs(root)
    assert ioh_export.export(runs, curves, tmp_path / "out") == "ioh"
    info = json.loads(next((tmp_path / "out" / "ioh" / "cma").glob("IOHprofiler_*bbob-f1-d2.json")).read_text())
    assert info["algorithm"]["name"] == "cma" and info["maximization"] is False
    first, second = info["scenarios"][0]["runs"]
    assert (first["evals"], first["best"]["evals"], first["best"]["y"]) == (30, 20, 0.5)
    assert (second["best"]["evals"], second["best"]["y"]) == (20, 1.5)


def test_three_seeds_are_too_few_for_the_rank_test_and_say_so():
    """3 vs 3 with every adam seed ~2 nats above every es seed: Mann-Whitney's smallest p is
    0.1, so the verdict is "too few seeds"; A12 = 1 and Welch's t still sees the difference."""
    higher = {"es": [-4.40, -4.37, -4.60], "adam": [-2.41, -2.38, -2.45]}
    runs = pd.DataFrame([{"problem": "qwen3-tiny", "label": o, "status": "ok", "final_metric": v,
                          "metric_higher_is_better": True} for o, vs in higher.items() for v in vs])
    sig = stats.significance(runs, pd.DataFrame()).set_index(["optimizer_a", "optimizer_b"])
    row = sig.loc[("adam", "es")]
    assert row["p_value"] == pytest.approx(0.1) and row["better"] == ""
    assert row["verdict"] == "too few seeds (3 per side; 4 needed)" and row["min_seeds"] == 4
    assert row["a12"] == 1.0                                     # adam's runs beat es's every time
    assert row["p_welch"] < 0.01 and row["p_permutation"] == pytest.approx(0.1)
    assert stats.seeds_needed(1) == 4 and stats.seeds_needed(3) == 5 and stats.seeds_needed(10) == 6
