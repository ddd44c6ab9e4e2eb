"""The CI quality check: bounds from seed spread, a readable diff, exit 1 on regression."""

import json

import pytest

from studies import regression
from cli import main as cli_main


def _entry(**kw):
    e = {"optimizer": "cma", "problem": "bbob-f1-d2", "seeds": [0, 1], "budget": {"evals": 60}, "sets": {},
         "expected": None}
    e.update(kw)
    return e


def test_tolerance_comes_from_seed_spread_and_direction():
    e = _entry(problem="digits-mlp")
    exp = regression.expectation(e, [0.90, 0.92], "final_metric")      # macro-F1: higher is better
    assert exp["higher_is_better"] and exp["tolerance"] == pytest.approx(3 * 0.0141421356, rel=1e-6)
    assert exp["bound"] == pytest.approx(0.91 - exp["tolerance"])
    low = regression.expectation(e, [2.0, 2.0], "best_loss")           # no spread: relative floor
    assert not low["higher_is_better"] and low["bound"] == pytest.approx(2.0 * 1.02)


def test_compare_flags_regression_failure_and_improvement():
    e = _entry(problem="digits-mlp")
    e["expected"] = {"final_metric": regression.expectation(e, [0.90, 0.92], "final_metric")}
    verdict = lambda vals: regression.compare(e, [{"status": "ok", "seed": i, "final_metric": v}  # noqa: E731
                                                  for i, v in enumerate(vals)])[0].verdict
    assert verdict([0.89, 0.91]) == "ok"
    assert verdict([0.80, 0.82]) == "REGRESSION"
    assert verdict([0.99, 0.99]) == "better"
    failed = regression.compare(e, [{"status": "failed", "seed": 1, "reason": "boom"}])
    assert failed[0].verdict == "FAILED" and "boom" in failed[0].now


def test_committed_reference_covers_the_suite():
    ref = regression.load()
    keys = {regression.entry_key(e) for e in ref["entries"]}
    for opt in ("es", "mezo", "adam", "cma"):
        assert any(k.startswith(f"{opt}:") for k in keys), opt
    assert {"tpe:bbob-f1-d10", "random:bbob-f1-d10", "es:qwen3-tiny", "adam:digits-mlp"} <= keys
    for e in ref["entries"]:
        assert len(e["seeds"]) >= 2
        if regression.runnable(e) is None:       # registered here: expectations must be stored
            assert set(e["expected"]) == set(regression.QUANTITIES), regression.entry_key(e)


@pytest.mark.slow
def test_check_update_then_pass_then_fail_with_a_diff(cli, tmp_path):
    ref = tmp_path / "reference.json"
    ref.write_text(json.dumps({"entries": [_entry(), _entry(optimizer="nosuch-opt")]}))
    runs = str(tmp_path / "runs")
    up = cli("check", "--reference", str(ref), "--update", "--only", "cma:bbob-f1-d2", "--runs-dir", runs)
    assert up.returncode == 0, up.stdout + up.stderr
    stored = json.loads(ref.read_text())["entries"][0]["expected"]
    assert set(stored) == {"final_metric", "best_loss"} and len(stored["best_loss"]["per_seed"]) == 2

    ok = cli("check", "--reference", str(ref), "--runs-dir", runs)   # the runs are reused
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "skipped nosuch-opt:bbob-f1-d2: optimizer 'nosuch-opt' is not registered" in ok.stdout
    assert "check passed" in ok.stdout

    data = json.loads(ref.read_text())
    exp = data["entries"][0]["expected"]["best_loss"]
    exp["mean"], exp["bound"] = exp["mean"] / 100, exp["mean"] / 50   # pretend the past was far better
    ref.write_text(json.dumps(data))
    bad = cli("check", "--reference", str(ref), "--runs-dir", runs)
    assert bad.returncode == 1
    line = next(line for line in bad.stdout.splitlines() if line.startswith("cma:bbob-f1-d2") and "best_loss" in line)
    assert "REGRESSION" in line and "<=" in line
    assert "check FAILED: 1 regressions" in bad.stdout


def test_check_only_unknown_entry_is_usage_error(capsys):
    assert cli_main(["check", "--only", "es:nowhere"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'es:nowhere'" in err[0] and "es:qwen3-tiny" in err[0]
