"""GENOME / GENOME+ operators, the lora-* problems on a tiny offline world, baselines, es."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from harness import registry, runner, store
from optimizers.genome import crossover, mutate, select, succession
from problems.lora import majority_vote
from problems.lora_tasks import TASKS, splits, train_stream
from conftest import build_optimizer, only_run_dir, torchrun, without_time

# A world small enough to build in seconds: 3 experts, a few Adam steps each.
TINY = {"world_experts": 3, "world_expert_steps": 3, "world_pretrain_steps": 3, "world_hidden": 32,
        "world_layers": 1, "n_val": 30, "n_test": 30, "samples": 8}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    old = os.environ.get("HARNESS_CACHE_DIR")
    path = tmp_path_factory.mktemp("cache")
    os.environ["HARNESS_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("HARNESS_CACHE_DIR", None)
    else:
        os.environ["HARNESS_CACHE_DIR"] = old


def make_problem(name="lora-count", **overrides):
    problem = registry.problem(name).create({k: str(v) for k, v in {**TINY, **overrides}.items()})
    problem.check()
    return problem


def run(tmp_path, optimizer, steps=2, problem="lora-count", seed=0, **overrides):
    torch.set_num_threads(1)
    sets = {f"problem.{k}": str(v) for k, v in TINY.items()}
    sets.update({k: str(v) for k, v in overrides.items()})
    spec = runner.RunSpec(optimizer, problem, seed=seed, budget=runner.Budget(steps=steps), overrides=sets,
                          runs_dir=str(tmp_path), checkpoint_every=0)
    run_dir, summary = runner.run(spec, progress=False)
    assert summary["status"] == "ok", summary
    return run_dir, summary, store.read_metrics(run_dir / "metrics.jsonl")


# -- operators -------------------------------------------------------------------

def test_crossover_of_identical_parents_returns_the_parent():
    x = [torch.randn(4, 3), torch.randn(3)]
    for f1, f2 in ((0.5, 0.5), (0.2, 0.9), (0.0, 0.0)):
        child, t = crossover(x, x, f1, f2)
        assert all(torch.allclose(c, a, rtol=0, atol=1e-6) for c, a in zip(child, x))
    child, t = crossover(x, [torch.zeros(4, 3), torch.zeros(3)], 0.3, 0.1)
    assert t == pytest.approx(0.75) and torch.allclose(child[0], 0.75 * x[0])


def test_selection_keeps_the_elites():
    fitness = [0.1, 0.9, 0.3, 0.8, 0.0, 0.2, 0.05, 0.4, 0.6, 0.7, 0.5, 0.15]
    for s in range(20):
        keep = select(fitness, 6, elite_ratio=0.34, rng=np.random.default_rng(s))
        assert len(keep) == len(set(keep)) == 6
        assert {1, 3, 9} <= set(keep)  # ceil(0.34 * 6) = 3 elites: the top three


def test_succession_moves_toward_the_global_best():
    hp = {"inertia": 0.0, "phi_global": 1.0, "phi_personal": 0.0, "phi_worst": 0.0, "succession_lambda": 0.5}
    x, best = [torch.zeros(5)], [torch.ones(5)]
    v = [torch.zeros(5)]
    new_x, new_v = succession(x, v, best, x, x, hp, np.random.default_rng(0))
    assert (new_x[0] - best[0]).norm() < (x[0] - best[0]).norm()
    assert torch.all(new_x[0] > 0) and torch.all(new_x[0] <= 1)


def test_mutation_touches_about_the_gene_rate_and_is_seeded():
    x = [torch.zeros(100, 100)]
    m1, m2 = mutate(x, 7, 0.1, 0.01), mutate(x, 7, 0.1, 0.01)
    changed = (m1[0] != 0).float().mean().item()
    assert 0.08 < changed < 0.12 and torch.equal(m1[0], m2[0])


def test_ensemble_majority_vote_on_a_constructed_case():
    models = [["12", "ab", "x", "7"],   # best model first
              ["12", "cd", "y", "8"],
              ["99", "cd", "z", "8"]]
    # sample 1: two say 12; sample 2: two say cd; sample 3: three-way tie -> best model; 4: two say 8
    assert majority_vote(models) == ["12", "cd", "x", "8"]


# -- tasks -------------------------------------------------------------------------

def test_task_splits_are_fixed_disjoint_and_never_trained_on():
    for name in TASKS:
        val, test = splits(name, 0)
        assert len(val) == 200 and len(test) == 200
        assert not set(val.prompts) & set(test.prompts)
        assert all(val.answers) and len({len(a) for a in val.answers}) == 1  # fixed, non-empty
        assert splits(name, 0) == splits.__wrapped__(name, 0)  # a pure function of the seed
        train = train_stream(name, 0, 300, 1)
        assert not {p for p, _ in train} & (set(val.prompts) | set(test.prompts))
    val, _ = splits("add", 0)
    a, b = val.prompts[0][4:-1].split("+")
    assert int(val.answers[0]) == int(a) + int(b)


# -- problems and optimizers on a tiny world ------------------------------------------

def test_exact_match_equals_greedy_decoding(cache):
    prob = make_problem("lora-pattern")
    prob.build(torch.device("cpu"))
    prob.set_adapter(prob.expert_adapters()[0])
    pairs = prob.data["val"]["pattern"][0]
    greedy = prob.greedy_answers("val")["pattern"]
    greedy_acc = sum(g == a for g, (_, a) in zip(greedy, pairs)) / len(pairs)
    assert prob.accuracy("val") == pytest.approx(greedy_acc)
    # base frozen, LoRA trainable only
    names = [n for n, _ in prob.trainable()]
    assert names and all("lora_" in n for n in names)


def test_genome_plus_same_seed_same_result_and_memory_recorded(cache, tmp_path):
    _, s1, m1 = run(tmp_path / "a", "genome+", steps=2)
    _, s2, m2 = run(tmp_path / "b", "genome+", steps=2)
    assert without_time(m1) == without_time(m2)
    assert m1[-1]["evals"] > 3  # the initial population plus offspring
    assert s1["peak_memory_bytes"] > 0


def test_genome_never_worse_than_best_expert_on_val(cache, tmp_path):
    # init=mixed holds every expert and selection keeps the elite: the best val
    # accuracy can only grow from the best expert's.
    _, be, _ = run(tmp_path / "be", "best-expert", steps=1)
    _, g, m = run(tmp_path / "g", "genome", steps=3, population=4)
    assert 1 - g["final_loss"] >= 1 - be["final_loss"]
    best = [r["best_val_accuracy"] for r in m[1:]]
    assert best == sorted(best)


def test_real_setting_loads_saved_base_and_adapters(cache, tmp_path):
    from problems.lora_world import world_dir

    prob = make_problem()
    world = world_dir(prob.world_spec())
    prob.build(torch.device("cpu"))  # builds the tiny world if missing
    offline = run(tmp_path / "off", "best-expert", steps=1)[1]
    real = run(tmp_path / "real", "best-expert", steps=1, base=world / "base",
               experts=world / "experts", tokenizer="bytes")[1]
    assert real["final_metric"] == offline["final_metric"]
    assert real["final_loss"] == offline["final_loss"]


def test_es_and_uniform_merge_on_a_lora_problem(cache, tmp_path):
    run_dir, summary, m = run(tmp_path / "es", "es", steps=2, population=4)
    assert m[-1]["evals"] == 8 and summary["param_count"] > 0
    prob = make_problem()
    prob.build(torch.device("cpu"))
    frozen = {n: p.detach().clone() for n, p in prob.model.named_parameters() if not p.requires_grad}
    lora = [p.detach().clone() for _, p in prob.trainable()]
    es = build_optimizer("es", prob, population=4)
    es.step(0)
    assert all(torch.equal(p, frozen[n]) for n, p in prob.model.named_parameters() if n in frozen)
    assert any(not torch.equal(p, q) for (_, p), q in zip(prob.trainable(), lora))
    _, um, _ = run(tmp_path / "um", "uniform-merge", steps=1)
    assert um["evals"] == 1


def test_bad_input_one_line_exit_2_nothing_written(cli, tmp_path):
    out = cli("run", "--optimizer", "genome", "--problem", "digits-mlp", "--steps", "1",
              "--runs-dir", str(tmp_path / "r"))
    assert out.returncode == 2 and "[experts]" in out.stderr and "lora-" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    out = cli("run", "--optimizer", "genome", "--problem", "lora-add", "--set", "tasks=add,divide",
              "--steps", "1", "--runs-dir", str(tmp_path / "r"))
    assert out.returncode == 2 and "divide" in out.stderr and "reverse" in out.stderr
    out = cli("run", "--optimizer", "genome", "--problem", "lora-add", "--set", f"base={tmp_path}",
              "--steps", "1", "--runs-dir", str(tmp_path / "r"))
    assert out.returncode == 2 and "experts=" in out.stderr
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_plan_declares_the_population(cache, monkeypatch):
    from harness import planner

    monkeypatch.setenv("HARNESS_FRAMEWORK_BYTES", "1")  # the framework RSS probe is not under test

    p = planner.plan("genome+", "lora-add", {f"problem.{k}": str(v) for k, v in TINY.items()})
    assert p.declared and p.breakdown["population"] > 0
    one = p.facts.trainable_bytes
    assert p.breakdown["population"] == (3 * 10 + 2 * 3 * 10 + 1) * one
    assert p.facts.trainable_count < p.facts.param_count  # adapters only, base not counted


def test_genome_plus_resume_matches_an_uninterrupted_run_multitask(cache, tmp_path):
    sets = {f"problem.{k}": str(v) for k, v in TINY.items()}
    sets["optimizer.population"] = "4"

    def spec(runs, steps, every):
        return runner.RunSpec("genome+", "lora-heldout", seed=3, budget=runner.Budget(steps=steps),
                              overrides=sets, runs_dir=str(tmp_path / runs), checkpoint_every=every)

    torch.set_num_threads(1)
    straight, _ = runner.run(spec("a", 3, 0), progress=False)
    part, _ = runner.run(spec("b", 2, 1), progress=False)
    _, summary = runner.resume(part, runner.Budget(steps=3), progress=False)
    assert summary["status"] == "ok"
    a = store.read_metrics(straight / "metrics.jsonl")
    b = store.read_metrics(part / "metrics.jsonl")
    assert without_time(a) == without_time(b)
    assert {"test_accuracy_count", "test_accuracy_max", "test_accuracy_pattern"} <= set(a[-1])


def test_reproduce_dispatch_names_the_available_ones(cli):
    out = cli("reproduce", "nope")
    assert out.returncode == 2 and "genome" in out.stderr


@pytest.mark.slow
def test_reproduce_genome_writes_the_table(cache, tmp_path, capsys):
    from cli import main as cli_main
    from studies.reproductions import genome as repro

    sets = sum((["--set", f"{k}={v}"] for k, v in TINY.items()), [])
    args = ["reproduce", "genome", "--tasks", "count", "--seeds", "0", "--world-seeds", "0,1", "--iterations", "1",
            "--jobs", "2", "--out", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs"), *sets]
    assert cli_main(args) == 0   # each run its own process (the world is built once, in the cache)
    assert cli_main(args) == 0   # again: every run already done, the table rendered from the store
    assert capsys.readouterr().out.count("already-done") == 2 * len(repro.METHODS)
    table = (tmp_path / "out" / "genome_table.md").read_text()
    for label, _, _ in repro.METHODS:
        assert f"| {label} |" in table
    assert "+24.06%" in table and "2 (world, seed) pairs (worlds 0,1)" in table
    assert "--seeds 0 --world-seeds 0,1 --iterations 1`" in table   # the command that remakes it
    rows = (tmp_path / "out" / "genome_runs.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * len(repro.METHODS)


def test_gain_table_is_the_mean_over_world_seed_pairs_with_an_interval():
    from studies.reproductions.genome import gain_table, gains

    rows = [{"world": w, "seed": s, "task": "count", "method": m, "test_accuracy": acc}
            for (w, s), (best, merged) in {(0, 0): (0.5, 0.6), (0, 1): (0.5, 0.55), (1, 0): (0.4, 0.3)}.items()
            for m, acc in (("best-expert", best), ("m2n2", merged))]
    g = gains(rows, ["best-expert", "m2n2"], ["count"])
    assert g["best-expert"] == [0.0, 0.0, 0.0]
    assert g["m2n2"] == pytest.approx([20.0, 10.0, -25.0])     # pairs in (world, seed) order
    line = next(x for x in gain_table(rows, ["best-expert", "m2n2"], ["count"]) if x.startswith("| m2n2"))
    assert line.startswith("| m2n2 | +1.7% [") and line.endswith("| 3 |")


@pytest.mark.slow
def test_genome_plus_under_torchrun_is_bit_identical_to_one_process(cache, tmp_path):
    """Two gloo ranks each score half of every generation; one all-reduce of the scores."""

    one_dir, _, one = run(tmp_path / "one", "genome+", steps=2, population=5)  # also builds the world
    sets = [a for k, v in TINY.items() for a in ("--set", f"problem.{k}={v}")]
    proc = torchrun("--optimizer", "genome+", "--problem", "lora-count", "--seed", "0", "--steps", "2",
                    "--set", "population=5", *sets, "--checkpoint-every", "0",
                    "--runs-dir", str(tmp_path / "two"), env={"HARNESS_CACHE_DIR": str(cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    two_dir = only_run_dir(tmp_path / "two")
    assert store.read_json(two_dir / "summary.json")["world_size"] == 2
    assert without_time(store.read_metrics(two_dir / "metrics.jsonl")) == without_time(one)
