"""Bad input: one clear line, exit 2, nothing written."""


import pytest

from harness.errors import UsageError
from harness.params import Param, parse_set_args, resolve


def _one_error_line(proc) -> str:
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_unknown_optimizer_names_it_and_suggests(cli, tmp_path):
    proc = cli("run", "--optimizer", "nosuch", "--problem", "digits-mlp", "--runs-dir", str(tmp_path))
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "'nosuch'" in line and "did you mean" in line and "adam" in line
    assert not any(tmp_path.iterdir()), "bad input must not leave a run directory"


def test_unknown_problem_suggests_close_names(cli, tmp_path):
    proc = cli("run", "--optimizer", "cma", "--problem", "sphere-60", "--runs-dir", str(tmp_path))
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "'sphere-60'" in line and "sphere-50" in line


def test_incompatible_pair_names_both_kinds(cli, tmp_path):
    proc = cli("run", "--optimizer", "random", "--problem", "digits-mlp", "--runs-dir", str(tmp_path))
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "search-space" in line and "weights" in line and "'random'" in line and "'digits-mlp'" in line
    assert not any(tmp_path.iterdir())


def test_bad_set_key_lists_valid_keys(cli, tmp_path):
    proc = cli("run", "--optimizer", "adam", "--problem", "digits-mlp", "--set", "lrate=0.1",
               "--runs-dir", str(tmp_path))
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "'lrate'" in line and "lr" in line and "batch_size" in line
    assert not any(tmp_path.iterdir())


def test_bad_set_value_type_names_key_and_type(cli, tmp_path):
    proc = cli("run", "--optimizer", "adam", "--problem", "digits-mlp", "--set", "hidden=wide",
               "--runs-dir", str(tmp_path))
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "hidden" in line and "'wide'" in line and "int" in line


def test_non_positive_budget_is_rejected(cli, tmp_path):
    proc = cli("run", "--optimizer", "cma", "--problem", "bbob-f1-d2", "--steps", "0", "--runs-dir", str(tmp_path))
    assert proc.returncode == 2 and "budget must be positive" in proc.stderr


def test_resume_of_a_non_run_directory(cli, tmp_path):
    proc = cli("run", "--resume", str(tmp_path))
    assert proc.returncode == 2 and "no config.json" in proc.stderr


def test_param_parsing_and_bounds():
    schema = {"n": Param(3, int, low=1), "flag": Param(False, bool), "mode": Param("a", str, choices=("a", "b"))}
    assert resolve(schema, {"n": "7", "flag": "yes"}, "x") == {"n": 7, "flag": True, "mode": "a"}
    with pytest.raises(UsageError, match="must be >= 1"):
        resolve(schema, {"n": "0"}, "x")
    with pytest.raises(UsageError, match="one of a, b"):
        resolve(schema, {"mode": "c"}, "x")
    with pytest.raises(UsageError, match="expected key=value"):
        parse_set_args(["novalue"])


def test_list_shows_kinds_and_param_counts(cli):
    proc = cli("list", "problems")
    assert proc.returncode == 0, proc.stderr
    row = next(r for r in proc.stdout.splitlines() if r.startswith("digits-mlp "))
    assert "weights" in row and "(4,810)" in row
    # bbob's 144 problems are one row with their range, not 144 rows before the rest
    bbob = [r for r in proc.stdout.splitlines() if r.startswith("bbob-")]
    assert len(bbob) == 1 and bbob[0].startswith("bbob-f{1..24}-d{2,3,5,10,20,40} ") and "144 problems" in bbob[0]
    proc = cli("list", "optimizers")
    assert any(r.startswith("cma ") and "search-space,weights" in r for r in proc.stdout.splitlines())


def test_list_all_expands_the_folded_family():
    from cli.commands.list import fold_names, problem_rows
    from harness import registry

    registry.load_all()
    entries = list(registry.PROBLEMS.values())
    folded, expanded = problem_rows(entries, expand=False), problem_rows(entries, expand=True)
    assert len(expanded) == len(entries) and len(folded) == len(entries) - 143
    assert sum(r[0].startswith("bbob-f") for r in expanded) == 144
    # names that differ in more than their numbers are not folded into a pattern
    assert fold_names(["sphere-50", "rastrigin-50"]) is None
    assert fold_names(["x-f1-d2", "x-f2-d2", "x-f3-d10"]) == "x-f{1..3}-d{2,10}"
