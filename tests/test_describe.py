"""`describe NAME`: kinds, reference, every hyperparameter with the name's own defaults."""

from __future__ import annotations

import json

import pytest

import cli
from harness import registry


def describe(capsys, *args):
    code = cli.main(["describe", *args])
    out, err = capsys.readouterr()
    return code, out, err


def describe_json(capsys, name):
    code, out, err = describe(capsys, name, "--json")
    assert code == 0, err
    return json.loads(out)


def test_optimizer_lists_every_param_with_type_default_range_and_help(capsys):
    code, out, _ = describe(capsys, "ES")   # case folded like --optimizer
    assert code == 0
    assert out.startswith("optimizer es\n")
    assert "Salimans" in out and "weights" in out
    schema = registry.optimizer("es").schema()
    for key, p in schema.items():
        line = next(ln for ln in out.splitlines() if ln.startswith(key + " "))
        assert p.type.__name__ in line and repr(p.default) in line and p.help in line
    assert "one of zscore|rank" in out   # choices shown


def test_variant_shows_its_own_defaults(capsys):
    plus, base = describe_json(capsys, "genome+"), describe_json(capsys, "genome")
    assert plus["variant_of"] == "genome" and base["variant_of"] is None
    d_plus = {h["name"]: h["default"] for h in plus["hyperparameters"]}
    d_base = {h["name"]: h["default"] for h in base["hyperparameters"]}
    assert d_plus["succession"] is True and d_base["succession"] is False
    assert d_plus == {k: p.default for k, p in registry.optimizer("genome+").schema().items()}
    assert set(d_plus) == set(d_base)


def test_problem_shows_param_count_metric_and_its_size_defaults(capsys):
    info = describe_json(capsys, "qwen3-14b")
    assert info["type"] == "problem" and info["family"] == "qwen3"
    assert 14.7e9 < info["param_count"] < 14.8e9        # counted, not allocated
    assert info["metric"] == {"name": "heldout_logprob", "higher_is_better": True}
    assert {h["name"]: h["default"] for h in info["hyperparameters"]}["vocab_size"] == 151936
    assert "es" in info["optimizers"] and "tpe" not in info["optimizers"]
    code, out, _ = describe(capsys, "qwen3-14b")
    assert code == 0 and "14.77B" in out and "heldout_logprob (higher is better)" in out


def test_search_space_problem_json(capsys):
    info = describe_json(capsys, "bbob-f8-d2")
    assert info["param_count"] is None and info["search_dims"] == 2
    assert info["metric"]["higher_is_better"] is False
    assert [h["name"] for h in info["hyperparameters"]] == ["instance"]


def test_wrong_name_is_one_line_exit_2_with_close_matches(capsys):
    code, out, err = describe(capsys, "gnome")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "unknown optimizer or problem 'gnome'" in err and "genome" in err


@pytest.mark.parametrize("table", ["OPTIMIZERS", "PROBLEMS"])
def test_every_family_names_its_reference(table):
    registry.load_all()
    missing = sorted(e.name for e in getattr(registry, table).values() if not e.factory.REFERENCE)
    assert not missing


def test_unknown_set_points_to_describe(capsys, tmp_path):
    code = cli.main(["run", "--optimizer", "es", "--problem", "qwen3-tiny", "--set", "sigmaa=1",
                     "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "python -m harness describe es" in err and not any(tmp_path.iterdir())


def test_a_name_that_is_both_describes_both(capsys, monkeypatch):
    from dataclasses import replace

    registry.load_all()
    monkeypatch.setitem(registry.PROBLEMS, "es", replace(registry.PROBLEMS["bbob-f1-d2"], name="es"))
    code, out, _ = describe(capsys, "es")
    assert code == 0 and "both an optimizer and a problem" in out
    assert "\noptimizer es\n" in f"\n{out}" and "\nproblem es\n" in out
    both = describe_json(capsys, "es")
    assert both["optimizer"]["type"] == "optimizer" and both["problem"]["search_dims"] == 2
