"""ES sigma/alpha schedules: off by default and bit-identical to before; the forms as
documented; recorded and used per step; a resumed run continues its schedule."""

import hashlib
import math

import pytest
import torch
from conftest import build_optimizer, make_problem, run_inprocess, without_time

from harness import runner, store
from harness.errors import UsageError
from optimizers._schedules import SCHEDULE_PARAMS, value_at

HP = {**{k: p.default for k, p in SCHEDULE_PARAMS.items()}, "sigma": 0.1, "alpha": 0.5}


def _digits_es(seed=3, optimizer="es", **hp):
    problem = make_problem("digits-mlp", seed=seed)
    problem.build(torch.device("cpu"))
    return problem, build_optimizer(optimizer, problem, seed=seed, **hp)


def _fingerprint(problem) -> str:
    h = hashlib.sha256()
    for _, t in problem.trainable():
        h.update(t.detach().numpy().tobytes())
    return h.hexdigest()[:16]


# Recorded with the code before schedules existed (commit 7fbae2e), 4 steps on digits-mlp seed 3,
# on two machines whose CPU kernels round the last bits differently: the first where they were
# recorded, the second an AMD EPYC with AVX512 (the commit's own code run there on 2026-12-04).
# A run must match one of them bit for bit.
@pytest.mark.parametrize("hp, recorded", [
    ({"population": 6}, [
        ("8752b4db0e760c21",
         ["0x1.261acb0000000p+1", "0x1.23c7e50000000p+1", "0x1.249cfc0000000p+1", "0x1.2005a00000000p+1"]),
        ("b8ebe150273ea641",
         ["0x1.261acb5555555p+1", "0x1.23c7e6aaaaaabp+1", "0x1.249cfd5555555p+1", "0x1.2005a15555555p+1"])]),
    ({"population": 6, "antithetic": "true", "shaping": "rank", "scaling": "nes"}, [
        ("0960e72e20a09585",
         ["0x1.2611b20000000p+1", "0x1.2389965555555p+6", "0x1.ff8625aaaaaabp+6", "0x1.3908b25555555p+7"]),
        ("0960e72e20a09585",
         ["0x1.2611b25555555p+1", "0x1.2389960000000p+6", "0x1.ff86260000000p+6", "0x1.3908b20000000p+7"])]),
    # eggroll stacked: recorded when stacking all members was its default (auto: in place on a CPU)
    ({"population": 6, "optimizer": "eggroll", "members_per_forward": 6}, [
        ("69e4b00b6e93ec1f",
         ["0x1.262cba5555555p+1", "0x1.1d9aa20000000p+1", "0x1.235b380000000p+1", "0x1.16ca905555555p+1"]),
        ("9a2c7a6cb70c5607",
         ["0x1.262cba5555555p+1", "0x1.1d9aa2aaaaaabp+1", "0x1.235b375555555p+1", "0x1.16ca8eaaaaaabp+1"])]),
])
def test_schedules_off_by_default_are_bit_identical_to_before(one_thread, hp, recorded):
    problem, opt = _digits_es(**hp)
    got = [float(opt.step(k).loss).hex() for k in range(4)]
    assert (_fingerprint(problem), got) in [(w, losses) for w, losses in recorded], (_fingerprint(problem), got)


def test_the_forms_as_documented():
    assert value_at(HP, "sigma", 7) is HP["sigma"]                       # constant: v0 itself
    exp = {**HP, "sigma_schedule": "exponential", "sigma_decay": 0.5, "sigma_min": 0.02}
    assert [value_at(exp, "sigma", k) for k in range(5)] == [0.1, 0.05, 0.025, 0.02, 0.02]
    lin = {**HP, "alpha_schedule": "linear", "alpha_min": 0.1, "alpha_decay_steps": 4}
    assert [value_at(lin, "alpha", k) for k in (0, 2, 4, 9)] == pytest.approx([0.5, 0.3, 0.1, 0.1])
    cos = {**HP, "alpha_schedule": "cosine", "alpha_min": 0.1, "alpha_decay_steps": 4}
    got = [value_at(cos, "alpha", k) for k in range(6)]
    assert got == pytest.approx([0.5, 0.1 + 0.4 * (1 + math.cos(math.pi / 4)) / 2, 0.3,
                                 0.1 + 0.4 * (1 + math.cos(3 * math.pi / 4)) / 2, 0.1, 0.1])
    assert all(a > b for a, b in zip(got[:4], got[1:5]))


@pytest.mark.parametrize("sets, needle", [
    ({"sigma_schedule": "linear"}, "needs --set sigma_decay_steps"),
    ({"alpha_schedule": "cosine"}, "needs --set alpha_decay_steps"),
    ({"sigma_schedule": "exponential", "sigma_min": "1"}, "sigma_min=1.0: above sigma"),
    ({"alpha_schedule": "step"}, "must be one of constant, exponential, linear, cosine"),
])
def test_bad_schedule_is_one_line_before_anything_is_built(sets, needle):
    from harness.spec import Prepared, RunSpec

    with pytest.raises(UsageError, match=needle):
        Prepared(RunSpec("es", "digits-mlp", overrides=sets))


def test_schedule_values_are_used_by_the_update(one_thread):
    # sigma -> 0 after step 0: every member scores alike, zscore shaping gives no update
    problem, opt = _digits_es(population=4, sigma_schedule="exponential", sigma_decay=0.0)
    opt.step(0)
    before = _fingerprint(problem)
    opt.step(1)
    assert _fingerprint(problem) == before
    # alpha -> 0 after step 0 (linear over 1 step): the weights move at step 0 only (at step 1
    # by the rounding of in-place perturb/restore alone)
    problem, opt = _digits_es(population=4, alpha_schedule="linear", alpha_decay_steps=1)
    snap = lambda: torch.cat([t.detach().flatten().clone() for _, t in problem.trainable()])  # noqa: E731
    w0 = snap()
    opt.step(0)
    w1 = snap()
    opt.step(1)
    assert (w1 - w0).abs().max() > 1e-4 and (snap() - w1).abs().max() < 1e-6


@pytest.mark.parametrize("optimizer", ["es", "eggroll"])
def test_schedule_values_are_recorded_per_step(tmp_path, one_thread, optimizer):
    records = run_inprocess(tmp_path, optimizer, 3, problem="digits-mlp", population=4,
                            sigma_schedule="exponential", sigma_decay=0.5,
                            alpha_schedule="cosine", alpha_min=0.01, alpha_decay_steps=2)
    steps = [r for r in records if r["step"] >= 1]   # record k is after optimizer step k-1
    assert [r["sigma"] for r in steps] == [0.01, 0.005, 0.0025]
    assert [r["alpha"] for r in steps] == pytest.approx([0.05, 0.03, 0.01])


def test_resume_continues_the_schedule(tmp_path, one_thread):
    sets = {"population": "4", "sigma_schedule": "exponential", "sigma_decay": "0.5",
            "alpha_schedule": "linear", "alpha_decay_steps": "3", "alpha_min": "0.01"}

    def spec(steps, where):
        return runner.RunSpec("es", "digits-mlp", seed=1, budget=runner.Budget(steps=steps), overrides=sets,
                              runs_dir=str(tmp_path / where), checkpoint_every=2, eval_every=1)

    whole, _ = runner.run(spec(4, "whole"), progress=False)
    half, _ = runner.run(spec(2, "half"), progress=False)
    runner.resume(half, runner.Budget(steps=4), progress=False)
    a = without_time(store.read_metrics(whole / "metrics.jsonl"))
    b = without_time(store.read_metrics(half / "metrics.jsonl"))
    assert [r["step"] for r in b] == [0, 1, 2, 3, 4] and a == b
    assert [r["sigma"] for r in b[1:]] == [0.01, 0.005, 0.0025, 0.00125]
