"""adam --set shard=fsdp (FSDP2 per decoder layer, harness/fsdp.py): 2 torchrun ranks
on CPU (gloo) follow one process's loss trajectory, and resume from their checkpoint."""

from __future__ import annotations

import pytest
import torch

from conftest import load_jsonl, only_run_dir, run_inprocess, torchrun
from harness import store
from cli import main as cli_main


def _cli(argv, capsys):
    code = cli_main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, err


@pytest.mark.parametrize("sets, words", [
    (["shard=fsdp"], ["shard=fsdp", "torchrun"]),          # one process: nothing to shard
    (["offload=cpu"], ["offload=cpu", "shard=fsdp"]),
    (["shard=zero3"], ["shard", "ddp", "fsdp"]),
])
def test_bad_shard_settings_are_one_line_exit_2_nothing_written(tmp_path, capsys, sets, words):
    argv = ["run", "--optimizer", "adam", "--problem", "qwen3-tiny", "--steps", "1", "--runs-dir", str(tmp_path)]
    code, err = _cli(argv + [a for s in sets for a in ("--set", s)], capsys)
    assert code == 2 and len(err) == 1 and all(w in err[0] for w in words), err
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_fsdp_two_ranks_follow_one_process_and_resume(tmp_path, one_thread):
    """FSDP reduce-scatters two half-batch gradients where one process does one backward:
    the same maths in another summation order (figures: run with -s; docs/cluster.md).
    Both warm the learning rate up over 3 steps: the sharded path follows the same schedule."""
    one = run_inprocess(tmp_path / "one", "adam", 6, warmup_steps=3)
    proc = torchrun("--optimizer", "adam", "--problem", "qwen3-tiny", "--steps", "4", "--set", "shard=fsdp",
                    "--set", "warmup_steps=3", "--checkpoint-every", "2", "--runs-dir", str(tmp_path / "two"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = only_run_dir(tmp_path / "two")
    config = store.read_json(run_dir / "config.json")
    assert config["optimizer_params"]["shard"] == "fsdp" and config["world_size"] == 2
    # the checkpoint holds whole tensors, as an unsharded run's: any world size can read it
    ckpt = store.load_checkpoint(run_dir / "checkpoint.pt")
    embed = ckpt["problem"]["model"]["model.embed_tokens.weight"]
    assert type(embed) is torch.Tensor and embed.shape[0] == config["problem_params"]["vocab_size"]
    proc = torchrun("--resume", str(run_dir), "--steps", "6")
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = load_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in two] == [r["step"] for r in one] == list(range(7))
    worst = max(abs(b["loss"] - a["loss"]) / abs(a["loss"]) for a, b in zip(one[1:], two[1:]))
    print(f"2 ranks vs 1 process: largest relative loss difference {worst:.1e} over 6 steps; "
          f"step 6: {one[-1]['loss']!r} vs {two[-1]['loss']!r}")
    for a, b in zip(one[1:], two[1:]):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=0)
        assert b["lr"] == a["lr"]
    assert one[1]["lr"] < one[3]["lr"] == one[6]["lr"]   # warmed up over steps 1-3
    assert two[-1]["metric"] == pytest.approx(one[-1]["metric"], rel=1e-4)
    assert one[-1]["loss"] < one[1]["loss"] - 0.5   # it trains
    assert store.read_json(run_dir / "summary.json")["status"] == "ok"


# -- the plan of sharded adam, per rank ---------------------------------------------

def _plans(problem="qwen3-8b", sets=None, worlds=(1, 2, 4, 8)):
    from harness.planner import plan_run
    from harness.spec import Prepared, RunSpec

    p = Prepared(RunSpec(optimizer="adam", problem=problem, overrides={"shard": "fsdp", **(sets or {})},
                         device="cpu"))
    return {w: plan_run("adam", p.optimizer_class, p.opt_hp, p.problem, "cuda", world_size=w) for w in worlds}


def test_sharded_adam_plan_shrinks_as_one_over_world_size():
    plans = _plans()
    one = plans[1].breakdown
    f = plans[1].facts
    whole = f.root_unit_bytes + 2 * f.largest_unit_bytes      # gathered by FSDP, held whole
    assert 0 < whole < f.trainable_bytes / 4
    for w, plan in plans.items():
        b = plan.breakdown
        # the sharded states are 1/W of the unsharded ones, up to the padding of one element per shard
        assert abs(b["optimizer_states"] * w - one["optimizer_states"]) <= 2 * 4 * w
        assert abs((b["weights"] - (f.weight_bytes - f.trainable_bytes)) * w
                   - (one["weights"] - (f.weight_bytes - f.trainable_bytes))) <= 4 * w
        assert b["gathered_weights"] == one["gathered_weights"] and b["activations"] == one["activations"]
        # per rank: at most 1/W of the sharded part plus what every rank holds whole
        replicated = b["gathered_weights"] + b["activations"] + 2 * whole + (f.weight_bytes - f.trainable_bytes)
        assert plan.peak_bytes <= plans[1].peak_bytes / w + replicated
    peaks = [plans[w].peak_bytes for w in sorted(plans)]
    assert peaks == sorted(peaks, reverse=True) and peaks[-1] < peaks[0] / 2.5


def test_ranks_needed_is_the_fewest_that_fit():
    from harness.planner import GiB, ranks_for

    needs = ranks_for("adam", "qwen3-8b", {}, "cuda", [80, 141, 1])
    plans = _plans(worlds=range(1, 9))
    for gib in (80, 141):
        n = needs[gib]
        assert n is not None and plans[n].peak_bytes <= gib * GiB < plans[n - 1].peak_bytes
    assert needs[1] is None          # activations alone exceed 1 GiB: no world size fits
    assert needs[80] > needs[141] > 1


def test_plan_world_size_flag_prints_the_per_rank_plan_and_the_ranks_needed(capsys):
    code = cli_main(["plan", "--optimizer", "adam", "--problem", "qwen3-8b", "--device", "cuda",
                     "--set", "shard=fsdp", "--world-size", "4", "--gpu-gib", "80,141"])
    out = capsys.readouterr().out
    assert code == 0 and "per rank of 4" in out and "gathered_weights" in out
    assert "--set shard=fsdp, torchrun --nproc_per_node N): needs " in out and "x 80 GiB" in out
    assert f"{_plans(worlds=(4,))[4].peak_bytes / 2**30:.2f} GiB" in out


def test_preflight_says_how_many_devices_like_this_one_a_run_needs(monkeypatch):
    from harness import planner
    from harness.errors import PreflightError
    from harness.spec import Prepared, RunSpec

    monkeypatch.setenv("HARNESS_TEST_AVAILABLE_BYTES", str(12 * 2**30))   # one 12 GiB device
    p = Prepared(RunSpec(optimizer="adam", problem="qwen3-0.6b", device="cpu"))
    n = planner.ranks_for("adam", "qwen3-0.6b", {}, "cuda", [12])[12]
    assert n is not None and n > 1
    with pytest.raises(PreflightError) as err:
        planner.preflight("adam", p.optimizer_class, p.opt_hp, p.problem, torch.device("cuda"), p.kind)
    assert f"--set shard=fsdp under torchrun --nproc_per_node {n} ({n} devices like this one)" in str(err.value)
