"""Compute-equivalent multipliers on synthetic curves whose answer is known exactly."""

import math

import numpy as np
import pandas as pd
import pytest

from reports.equivalence import default_reference, describe, multipliers

REF_COST = [0, 10, 20, 40, 80, 160]
REF_F = [10.0, 8.0, 6.0, 4.0, 2.0, 1.0]


def _curve(costs, values, higher=False):
    values = [-v for v in values] if higher else values
    return pd.DataFrame({"step": range(len(costs)), "forwards": [float(c) for c in costs],
                         "tokens": [8.0 * c for c in costs], "flops": [1e6 * c for c in costs],
                         "time_s": [0.01 * c for c in costs], "metric": values})


def _store(specs, higher=False):
    """specs: [(label, backprop, [(costs, values) per seed])] -> (runs, curves)."""
    rows, curves = [], {}
    for label, backprop, seeds in specs:
        for s, (costs, values) in enumerate(seeds):
            rid = f"{label}_s{s}"
            curves[rid] = _curve(costs, values, higher)
            rows.append({"run_id": rid, "problem": "p", "optimizer": label, "label": label, "seed": s,
                         "status": "ok", "backprop": backprop, "metric_higher_is_better": higher,
                         "final_metric": curves[rid]["metric"].iloc[-1]})
    return pd.DataFrame(rows), curves


def _one(frame, optimizer, axis="forwards"):
    row = frame[(frame["optimizer"] == optimizer) & (frame["axis"] == axis)]
    assert len(row) == 1
    return row.iloc[0]


def _with_other(costs, values, higher=False, n=3):
    return _store([("adam", True, [(REF_COST, REF_F)] * n), ("es", False, [(costs, values)] * n)], higher)


def test_multiplier_is_the_ratio_of_costs_to_the_same_quality_on_every_axis():
    runs, curves = _with_other([0, 200, 400], [10.0, 7.0, 4.0])   # es ends at 4 after 400; adam gets there at 40
    m = multipliers(runs, curves, n_boot=200)
    for axis in ("forwards", "tokens", "flops", "seconds"):
        row = _one(m, "es", axis)
        assert row["status"] == "value" and row["reference"] == "adam"
        assert row["multiplier"] == pytest.approx(10.0)
        assert row["lo"] == pytest.approx(10.0) and row["hi"] == pytest.approx(10.0)   # identical seeds
    ref = _one(m, "adam")
    assert ref["status"] == "reference" and ref["multiplier"] == 1.0
    assert describe(_one(m, "es")) == "10 [10, 10]"


def test_higher_is_better_metrics_are_oriented():
    runs, curves = _with_other([0, 200, 400], [10.0, 7.0, 4.0], higher=True)
    assert _one(multipliers(runs, curves, n_boot=50), "es")["multiplier"] == pytest.approx(10.0)


def test_reached_at_the_first_evaluation_is_a_lower_bound():
    runs, curves = _with_other([0, 300, 600], [10.0, 9.5, 9.0])   # adam is at 8 after 10 forwards
    row = _one(multipliers(runs, curves, n_boot=50), "es")
    assert row["status"] == "lower_bound"
    assert row["multiplier"] == pytest.approx(60.0)
    assert describe(row).startswith(">= 60")


def test_never_reached_and_beyond_budget_are_upper_bounds():
    runs, curves = _with_other([0, 50, 100], [10.0, 3.0, 0.5])    # better than adam's best, in less compute
    row = _one(multipliers(runs, curves, n_boot=50), "es")
    assert row["status"] == "never_reached"
    assert row["multiplier"] == pytest.approx(100 / 160)
    assert "never reached" in describe(row)
    runs, curves = _with_other([0, 200, 400], [10.0, 3.0, 0.5])   # adam stopped at 160: too short to tell
    row = _one(multipliers(runs, curves, n_boot=50), "es")
    assert row["status"] == "beyond_budget"
    assert row["multiplier"] == pytest.approx(400 / 160)


def test_medians_over_seeds_and_a_bootstrap_interval_around_them():
    es = [([0, 400], [10.0, v]) for v in (6.0, 4.0, 2.0)]         # adam reaches 6, 4, 2 at 20, 40, 80
    runs, curves = _store([("adam", True, [(REF_COST, REF_F)] * 3), ("es", False, es)])
    m = multipliers(runs, curves, n_boot=500, seed=1)
    row = _one(m, "es")
    assert row["multiplier"] == pytest.approx(10.0)                # median quality 4 -> 400 / 40
    assert row["lo"] == pytest.approx(5.0) and row["hi"] == pytest.approx(20.0)
    again = multipliers(runs, curves, n_boot=500, seed=1)
    pd.testing.assert_frame_equal(m, again)                        # seeded: the same report twice


def test_default_reference_is_the_best_gradient_optimizer():
    worse = [x + 1.0 for x in REF_F]
    runs, curves = _store([("sgd", True, [(REF_COST, worse)] * 2), ("adam", True, [(REF_COST, REF_F)] * 2),
                           ("es", False, [([0, 400], [10.0, 0.1])] * 2)])   # es is best, but not a gradient one
    assert default_reference(runs) == "adam"
    m = multipliers(runs, curves, n_boot=20)
    assert set(m["reference"]) == {"adam"}
    assert _one(m, "sgd")["multiplier"] == pytest.approx(160 / 80)   # sgd's 2.0 is adam's 80
    named = multipliers(runs, curves, reference="sgd", n_boot=20)
    assert set(named["reference"]) == {"sgd"}


def test_no_gradient_optimizer_means_no_reference():
    runs, curves = _store([("es", False, [([0, 400], [10.0, 4.0])]), ("mezo", False, [([0, 400], [10.0, 5.0])])])
    assert default_reference(runs) is None
    assert multipliers(runs, curves).empty
    assert not math.isnan(multipliers(runs, curves, reference="es", n_boot=10)["multiplier"].iloc[0])
    assert np.isfinite(multipliers(runs, curves, reference="es", n_boot=10)["multiplier"]).all()


def test_the_index_opens_with_the_answer(tmp_path):
    """A report's index starts with one sentence per problem: winner, margin, A12, the rank
    test's "too few seeds" and the multiplier; adam is known to be a gradient optimizer from
    the registry when config.json predates the `backprop` field."""
    from harness import store
    from reports.index import build

    for opt, values in (("adam", REF_F), ("es", [10.0, 9.5, 9.0])):
        for s in range(3):
            d = tmp_path / "runs" / f"{opt}{s}"
            d.mkdir(parents=True)
            store.write_json(d / "config.json", {"optimizer": opt, "problem": "qwen3-tiny", "seed": s,
                                                 "budget": {}, "optimizer_params": {}, "problem_params": {},
                                                 "metric_name": "m", "metric_higher_is_better": False})
            costs = REF_COST if opt == "adam" else [0, 80, 160]
            with open(d / "metrics.jsonl", "w") as fh:
                fh.writelines(store.dumps({"step": k, "evals": c, "time_s": c / 100, "forwards": float(c),
                                           "metric": v + 0.01 * s, "loss": v}) + "\n"
                              for k, (c, v) in enumerate(zip(costs, values)))
            store.write_json(d / "summary.json", {"status": "ok", "final_metric": values[-1] + 0.01 * s,
                                                  "forwards": 160.0, "metric_name": "m"})
    build(tmp_path / "runs", tmp_path / "out")
    index = (tmp_path / "out" / "index.md").read_text()
    summary = index.split("## Summary")[1].split("##")[0]
    assert "**adam** has the best median final m" in summary and "A12 = 1.00" in summary
    assert "too few seeds (3 per side; 4 needed)" in summary
    assert "Compute multiplier against adam" in summary and "es >= 16 [16, 16]" in summary   # 160 / 10
    table = (tmp_path / "out" / "equivalence_qwen3-tiny.md").read_text()
    assert ">= 16" in table and "reference" in table
    assert "<h2>Summary</h2>" in (tmp_path / "out" / "index.html").read_text()


def test_ending_no_better_than_the_start_has_no_multiplier():
    # es ends at 10.5, worse than adam's (shared) start at 10: not a bound of 400 / 0
    runs, curves = _with_other([0, 200, 400], [10.0, 9.0, 10.5])
    row = _one(multipliers(runs, curves, n_boot=50), "es")
    assert row["status"] == "no_progress"
    assert math.isinf(row["multiplier"])
    assert describe(row) == "no better than the start"
