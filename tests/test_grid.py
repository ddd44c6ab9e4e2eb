"""sweep --grid: the cartesian product of hyperparameter axes, routed and checked as --set,
named by its values; skip/retry per grid point; report labels by optimizer + grid values."""

import pytest

from harness import experiments, runner, store
from cli import main as cli_main
from conftest import check_refused
from harness.errors import UsageError


def test_grid_is_the_product_and_names_carry_the_values():
    axes = experiments.parse_grid(["sigma=0.01,0.02", "population=4,6,8"])
    g = experiments.grid(["es", "adam"], ["digits-mlp"], [0, 1], {"steps": 2}, axes=axes, validate_on="cpu")
    es = [i for i in g.items if i.optimizer == "es"]
    adam = [i for i in g.items if i.optimizer == "adam"]
    assert len(es) == 2 * 3 * 2 and len(adam) == 2      # adam takes neither key: run once per seed
    assert len({i.name for i in g.items}) == len(g.items)
    first = es[0]
    assert first.name == "es-sigma=0.01-population=4_digits-mlp_s0_steps2"
    assert first.label == "es [sigma=0.01-population=4] on digits-mlp seed=0"
    assert dict(first.sets) == {"sigma": "0.01", "population": "4"}
    assert {(dict(i.sets)["sigma"], dict(i.sets)["population"]) for i in es} == {
        (s, p) for s in ("0.01", "0.02") for p in ("4", "6", "8")}
    # no grid key: the name a sweep without --grid gives (old run directories still resume)
    assert adam[0].name == experiments.RunItem("adam", "digits-mlp", 0, {"steps": 2}).name
    assert first.run_args()[-4:] == ["--set", "population=4", "--set", "sigma=0.01"]


def test_grid_names_with_other_sets_or_unsafe_values_get_a_digest():
    g = experiments.grid(["es"], ["digits-mlp"], [0], {"steps": 2}, {"alpha": "0.1"},
                         axes={"problem.batch_size": ["16"]}, validate_on=None)
    name = g.items[0].name
    assert name.startswith("es-problem.batch_size=16_digits-mlp_s0_steps2_") and len(name.split("_")[-1]) == 8
    odd = experiments.item("es", "qwen3-tiny", 0, {"steps": 1}, {"data": "/tmp/a b.txt"}, axes=("data",))
    assert "/" not in odd.name and " " not in odd.name and odd.name.startswith("es-data=_tmp_a_b.txt_")
    other = experiments.item("es", "qwen3-tiny", 0, {"steps": 1}, {"data": "/tmp/a_b.txt"}, axes=("data",))
    assert other.name != odd.name   # the digest tells apart what the sanitized names do not


@pytest.mark.parametrize("grid_args, needle", [
    (["sigma=abc"], "--grid sigma='abc': expected float"),
    (["population=1,4"], "--grid population='1': must be >= 2"),
    (["sigma"], "--grid 'sigma': expected KEY=V1,V2"),
    (["sigma=0.1,,0.2"], "--grid 'sigma=0.1,,0.2'"),
    (["sigma=0.1,0.1"], "repeated"),
    (["sigma=0.1", "sigma=0.2"], "--grid sigma: given twice"),
    (["nosuch=1,2"], "--grid nosuch: no optimizer or problem of the pairs this sweep runs declares it"),
    (["problem.sigma=1"], "--grid problem.sigma"),
    (["samples=1,100000"], "samples=100000"),   # checked as `run` checks it (Prepared), before any run
])
def test_bad_grid_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, grid_args, needle):
    runs = tmp_path / "runs"
    argv = ["sweep", "--optimizers", "es", "--problems", "qwen3-tiny", "--steps", "1", "--runs-dir", str(runs)]
    for g in grid_args:
        argv += ["--grid", g]
    check_refused(argv, runs, capsys, needle)


def test_grid_key_also_in_set_is_refused():
    with pytest.raises(UsageError, match="--grid sigma: also given with --set"):
        experiments.grid(["es"], ["digits-mlp"], [0], {"steps": 1}, {"sigma": "0.1"},
                         axes={"sigma": ["0.2"]}, validate_on=None)


def test_grid_points_skip_retry_and_report_by_grid_value(tmp_path, capsys, one_thread):
    from reports.load import load_runs
    from reports.tables import final_results

    runs = tmp_path / "runs"
    argv = ["sweep", "--optimizers", "es", "--problems", "digits-mlp", "--seeds", "0,1", "--steps", "1",
            "--grid", "population=4,6", "--set", "problem.hidden=8", "--checkpoint-every", "0",
            "--runs-dir", str(runs)]
    g = experiments.grid(["es"], ["digits-mlp"], [0, 1], {"steps": 1}, {"problem.hidden": "8"},
                         axes={"population": ["4", "6"]}, checkpoint_every=0)
    assert len(g.items) == 4
    for it in g.items:   # the runs the sweep's children would make, in this process
        spec = runner.RunSpec(it.optimizer, it.problem, seed=it.seed, budget=runner.Budget(**it.budget),
                              overrides=dict(it.sets), runs_dir=str(runs), run_id=it.name, checkpoint_every=0)
        assert runner.run(spec, progress=False)[1]["status"] == "ok"
    failed = runs / g.items[3].name / "summary.json"
    store.write_json(failed, {**store.read_json(failed), "status": "failed", "reason": "test"})

    assert cli_main(argv) == 1   # nothing runs again: each grid point is skipped on its own
    out = capsys.readouterr().out
    assert out.count("already-done") == 3 and out.count("already-failed") == 1 and " ran " not in out
    assert store.read_json(runs / "sweep.json")["grid"] == {"population": ["4", "6"]}

    runs_df, _ = load_runs(runs)
    table = final_results(runs_df[runs_df["status"] == "ok"])
    assert sorted(table["optimizer"]) == ["es [population=4]", "es [population=6]"]
    assert dict(zip(table["optimizer"], table["seeds"])) == {"es [population=4]": 2, "es [population=6]": 1}


@pytest.mark.parametrize("sets, axes, needle", [
    ({"optimizer.sigma": "0.1"}, {"sigma": ["0.2"]}, "'sigma' is also given with --set"),
    ({}, {"sigma": ["0.1"], "optimizer.sigma": ["0.2"]}, "two of these name the same hyperparameter"),
])
def test_one_hyperparameter_has_one_source(sets, axes, needle):
    with pytest.raises(UsageError, match=needle):
        experiments.grid(["es"], ["digits-mlp"], [0], {"steps": 1}, sets, axes=axes, validate_on=None)
