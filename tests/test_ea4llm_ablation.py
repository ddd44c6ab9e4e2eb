"""reproduce ea4llm-ablation: the runs it plans (levels, scaling, the shared centre run),
bad input before anything runs, and the report built from stored runs."""

import pytest

from harness import experiments, runner
from cli import build_parser
from conftest import check_refused


def _args(*extra):
    return build_parser().parse_args(["reproduce", "ea4llm-ablation", *extra])


def test_plan_scales_the_samples_at_cpu_size_and_shares_the_centre_run():
    exp = experiments.experiment("ea4llm-ablation")
    plan = exp.plan(_args("--problem", "qwen3-small", "--seeds", "0,1"))
    assert plan["size"] == "cpu" and plan["samples"] == [2, 6, 10, 14] and plan["populations"] == [20, 30, 40]
    assert plan["fixed_population"] == 30 and plan["fixed_samples"] == 6 and plan["steps"] == 20
    assert len(plan["labelled"]) == 2 * 7 and len(plan["items"]) == 2 * 6   # (30, 6) is in both ablations
    names = {it.name for it in plan["items"]}
    assert "es-population=30-samples=6_qwen3-small_s0_steps20" in names
    assert "es-population=40-samples=6_qwen3-small_s1_steps20" in names
    assert {dict(it.sets)["samples"] for it in plan["items"]} == {"2", "6", "10", "14"}


@pytest.mark.parametrize("argv, needle", [
    (["--problem", "digits-mlp"], "qwen3-* problem"),
    (["--problem", "qwen3-tiny", "--populations", "20,x"], "--populations '20,x'"),
    (["--problem", "qwen3-tiny", "--set", "population=4"], "--set population: this experiment varies it"),
    (["--problem", "qwen3-tiny", "--samples", "10,100000"], "samples=100000"),
    # the paper's levels need a corpus larger than the default one
    (["--problem", "qwen3-1.7b", "--steps", "1"], "samples=1000: the train split has only"),
])
def test_bad_input_is_one_line_before_any_run(tmp_path, capsys, argv, needle):
    runs = tmp_path / "runs"
    check_refused(["reproduce", "ea4llm-ablation", *argv, "--runs-dir", str(runs)], runs, capsys, needle)


def test_report_from_stored_runs(tmp_path, one_thread):
    runs, out = tmp_path / "runs", tmp_path / "out"
    args = _args("--problem", "qwen3-tiny", "--samples", "1,2", "--populations", "2,4", "--fixed-population", "2",
                 "--steps", "2", "--set", "eval_samples=4", "--runs-dir", str(runs), "--out", str(out))
    exp = experiments.experiment("ea4llm-ablation")
    for it in exp.items(args):   # the runs the executor's children would make, in this process
        spec = runner.RunSpec(it.optimizer, it.problem, seed=it.seed, budget=runner.Budget(**it.budget),
                              overrides=dict(it.sets), runs_dir=str(runs), run_id=it.name, checkpoint_every=0)
        assert runner.run(spec, progress=False)[1]["status"] == "ok"
    text = exp.render(args, [])
    assert "| samples | held-out loss, start |" in text and "| population | held-out loss, start |" in text
    assert "Ablation: population (samples 2)" in text
    assert "Ablation: evaluation samples per iteration (population 2)" in text
    table = (out / "ea4llm_ablation.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [r.split(" | ")[0] for r in rows] == ["| 1", "| 2", "| 2", "| 4"]
    png = (out / "ea4llm_ablation.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert len((out / "ea4llm_ablation_runs.csv").read_text().splitlines()) == 1 + 4
