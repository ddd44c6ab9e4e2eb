"""reproduce scaling-gap: the budget rule, the transfer rules, the runs it plans, bad input
before anything runs, and (slow) a tiny configuration end to end, report and figure."""

import pytest

from harness import experiments, runner
from cli import build_parser
from cli import main as cli_main
from conftest import check_refused
from studies.reproductions import scaling_gap as sg


def _args(*extra):
    return build_parser().parse_args(["reproduce", "scaling-gap", *extra])


def test_budget_rule_grows_as_the_fourth_root_of_n_in_whole_steps():
    counts = {"qwen3-tiny": 115_072, "qwen3-small": 820_608, "qwen3-3m": 3_213_824, "qwen3-10m": 10_425_600}
    got = {size: sg.budget_forwards(n) for size, n in counts.items()}
    assert got == {"qwen3-tiny": 600, "qwen3-small": 1020, "qwen3-3m": 1380, "qwen3-10m": 1860}
    for f in got.values():   # a whole number of steps for every optimizer
        assert all(f % per_step == 0 for per_step in sg.FORWARDS_PER_STEP.values())
    assert {sg.budget_forwards(n, exponent=0.0) for n in counts.values()} == {600}
    assert sg.budget_forwards(10_425_600, base=60) == 240   # 60 x 3.085 = 185 -> 240


def test_transfer_rules_scale_adam_with_width_and_hold_the_rest():
    # adam: lr x 64/hidden, warmup a quarter of the run at any length
    assert sg.transfer("adam", 64, 200) == {"lr": 5.06e-3, "weight_decay": 0.01582, "warmup_steps": 50}
    big = sg.transfer("adam", 384, 620)
    assert big["lr"] == pytest.approx(5.06e-3 / 6, rel=1e-3) and big["warmup_steps"] == 155
    # mezo: lr x 64/hidden as adam's, eps held
    assert sg.transfer("mezo", 128, 510) == {"lr": 9.465e-4, "eps": 5.892e-4}
    # es, eggroll, muon: the tiny settings unchanged at any width
    for opt in ("es", "eggroll", "muon"):
        assert sg.transfer(opt, 384, 620) == {**sg.TUNED[opt], **({"warmup_steps": 0} if opt == "muon" else {})}
    assert sg.TUNED["es"]["sigma"] == 0.01 and sg.TUNED["mezo"]["lr"] == 1.893e-3


def test_plan_lists_every_size_optimizer_and_seed_at_equal_forwards():
    entries = experiments.experiment("scaling-gap").plan(_args("--device", "cpu"))
    assert len(entries) == 4 * 5 * 3
    assert [e["size"] for e in entries][::15] == list(sg.SIZES)
    by_size = {}
    for e in entries:
        by_size.setdefault(e["size"], set()).add(dict(e["item"].budget)["forwards"])
        assert dict(e["item"].sets)["seq_len"] == "64"
    assert by_size == {"qwen3-tiny": {600}, "qwen3-small": {1020}, "qwen3-3m": {1380}, "qwen3-10m": {1860}}
    adam10 = next(e["item"] for e in entries if e["size"] == "qwen3-10m" and e["optimizer"] == "adam")
    assert dict(adam10.sets)["lr"] == str(float(f"{5.06e-3 / 6:.4g}")) and adam10.eval_schedule == "log"


def test_dry_run_lists_the_runs_of_four_sizes(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert cli_main(["reproduce", "scaling-gap", "--dry-run", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    for size in sg.SIZES:
        assert f"es on {size} seed=2" in out and f"muon on {size} seed=0" in out
    assert not runs.exists()


@pytest.mark.parametrize("argv, needle", [
    (["--sizes", "qwen3-tiny,qwen3-huge"], "'qwen3-huge' is not one"),
    (["--optimizers", "es,mezo"], "needs a gradient reference; add adam or muon"),
    (["--exponent", "-1"], "--exponent -1.0"),
])
def test_bad_input_is_one_line_before_any_run(tmp_path, capsys, argv, needle):
    runs = tmp_path / "runs"
    check_refused(["reproduce", "scaling-gap", *argv, "--runs-dir", str(runs)], runs, capsys, needle)


@pytest.mark.slow
def test_tiny_study_end_to_end_draws_the_multiplier_figure(tmp_path, one_thread):
    runs, out = tmp_path / "runs", tmp_path / "out"
    args = _args("--sizes", "qwen3-tiny,qwen3-small", "--optimizers", "es,adam", "--seeds", "0,1",
                 "--base-forwards", "60", "--device", "cpu", "--runs-dir", str(runs), "--out", str(out))
    exp = experiments.experiment("scaling-gap")
    items = exp.items(args)
    assert len(items) == 2 * 2 * 2
    for it in items:   # the runs the executor's children would make, in this process
        spec = runner.RunSpec(it.optimizer, it.problem, seed=it.seed, budget=runner.Budget(**it.budget),
                              overrides=dict(it.sets), runs_dir=str(runs), run_id=it.name, checkpoint_every=0,
                              eval_schedule=it.eval_schedule)
        assert runner.run(spec, progress=False)[1]["status"] == "ok"
    text = exp.render(args, [])
    assert "## Compute-equivalent multiplier" in text and "extrapolation" in text
    mult = (out / "multipliers.csv").read_text().splitlines()
    assert mult[0].startswith("problem,optimizer,reference,axis,multiplier,lo,hi,status")
    assert any(line.startswith("qwen3-small,es,adam,forwards,") for line in mult), mult
    memory = (out / "memory.csv").read_text()
    assert "qwen3-32b" in memory and "qwen3-tiny" in memory
    for name in ("multiplier_vs_size.png", "quality_vs_size.png", "memory_vs_size.png"):
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, name


def test_trend_fit_recovers_a_power_law_and_labels_what_it_cannot_fit():
    import pandas as pd

    from reports.scaling import fit_trends

    n = [1e5, 1e6, 1e7]
    rows = [{"optimizer": "es", "params": x, "multiplier": 30 * (x / 1e5) ** 0.5, "status": "value"} for x in n]
    rows += [{"optimizer": "es", "params": 3e7, "multiplier": 500.0, "status": "lower_bound"},   # a bound: not fitted
             {"optimizer": "mezo", "params": 1e5, "multiplier": 40.0, "status": "value"}]
    trends = fit_trends(pd.DataFrame(rows), {"qwen3-32b": 32_762_123_264})
    es = trends[trends["optimizer"] == "es"].iloc[0]
    assert es["n_sizes"] == 3 and es["slope"] == pytest.approx(0.5) and es["r2"] == pytest.approx(1.0)
    assert es["multiplier"] == pytest.approx(30 * (32_762_123_264 / 1e5) ** 0.5, rel=1e-6)
    assert es["lo"] == pytest.approx(es["multiplier"]) == pytest.approx(es["hi"])   # a perfect fit: no spread
    noisy = pd.DataFrame([{**r, "multiplier": r["multiplier"] * f} for r, f in zip(rows[:3], (1.3, 0.8, 1.2))])
    band = fit_trends(noisy, {"qwen3-32b": 32_762_123_264}).iloc[0]
    assert band["lo"] < band["multiplier"] < band["hi"] and band["slope_se"] > 0
    mezo = trends[trends["optimizer"] == "mezo"].iloc[0]
    assert mezo["status"] == "no fit: 1 size(s) with a value"


def test_eggroll_memory_is_planned_at_the_floor_its_auto_mode_reaches():
    # auto stacks members only where they fit: planning the whole population stacked drew eggroll
    # above one 141 GiB GPU from 0.5B, a configuration its default would never choose
    from studies.reproductions.scaling_gap import planned_memory

    rows = [r for r in planned_memory(["eggroll", "es"], ["qwen3-8b"]) if r["device"] == "cuda"]
    by = {r["optimizer"]: r["planned_bytes"] for r in rows}
    assert by["es"] < by["eggroll"] < 141 * 2 ** 30


def test_byte_frequency_yardstick_lies_between_uniform_and_certainty():
    import math

    from studies.unigram_baseline import main, unigram_heldout_logprob

    value = unigram_heldout_logprob("pydoc", 64, 32)
    assert -math.log(256) + 1.0 < value < -2.0     # far better than uniform bytes, far from perfect
    assert main(["--eval-samples", "32"]) == 0
