"""Recorded trajectories: adam, es, eggroll and mezo give, bit for bit, the per-step losses
and final weights they gave when recorded (tests/trajectories.json), on qwen3-tiny and
digits-mlp, one torch thread. A refactor of an optimizer (its family base) must not move
them; a change that means to move them re-records with
`RECORD_TRAJECTORIES=1 python -m pytest -p no:xdist tests/test_trajectories.py` (one
process: it writes one file) and says why.

The bits depend on the machine as well as the code (the CPU's matmul kernels: the same
code gives other last bits on another CPU), so a recording is kept per machine (torch
version, CPU kernel level, CPU model). On a machine with no recording the comparison is
skipped and says so: record there first, with the code before the change.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

import pytest
import torch
from conftest import build_optimizer, make_problem

FIXTURE = Path(__file__).with_name("trajectories.json")
STEPS = 3

# name: (optimizer, problem, problem overrides, optimizer hyperparameters)
CASES = {
    "adam-qwen3": ("adam", "qwen3-tiny", {"samples": 4}, {}),
    "adam-qwen3-micro-clip-warmup": ("adam", "qwen3-tiny", {"samples": 4, "micro_batch": 2},
                                     {"grad_clip": 0.5, "warmup_steps": 2, "weight_decay": 0.1}),
    "adam-qwen3-bf16-master": ("adam", "qwen3-tiny", {"samples": 4, "dtype": "bfloat16"}, {}),
    "adam-qwen3-bf16-no-master": ("adam", "qwen3-tiny", {"samples": 4, "dtype": "bfloat16"},
                                  {"fp32_master": "false"}),
    "adam-digits": ("adam", "digits-mlp", {}, {}),
    "es-qwen3": ("es", "qwen3-tiny", {"samples": 4}, {"population": 4}),
    "es-qwen3-antithetic-rank-nes": ("es", "qwen3-tiny", {"samples": 4},
                                     {"population": 4, "antithetic": "true", "shaping": "rank",
                                      "scaling": "nes", "sigma_schedule": "exponential"}),
    "es-digits-batched": ("es", "digits-mlp", {}, {"population": 4, "members_per_forward": 2}),
    "es-qwen3-bf16": ("es", "qwen3-tiny", {"samples": 4, "dtype": "bfloat16"}, {"population": 4}),
    "es-digits": ("es", "digits-mlp", {}, {"population": 6}),
    # stacked (recorded when stacking all members was the default; auto is in place on a CPU)
    "eggroll-qwen3": ("eggroll", "qwen3-tiny", {"samples": 4}, {"population": 4, "members_per_forward": 4}),
    "eggroll-qwen3-in-place-full": ("eggroll", "qwen3-tiny", {"samples": 4},
                                    {"population": 4, "members_per_forward": 1, "vectors": "full",
                                     "antithetic": "true"}),
    "mezo-qwen3": ("mezo", "qwen3-tiny", {"samples": 4}, {}),
}


def _fingerprint(problem) -> str:
    h = hashlib.sha256()
    for name, t in problem.trainable():
        h.update(name.encode())
        h.update(t.detach().float().numpy().tobytes())
    return h.hexdigest()[:16]


def _trajectory(case: str) -> dict:
    optimizer, problem_name, overrides, hp = CASES[case]
    torch.set_num_threads(1)
    problem = make_problem(problem_name, seed=5, **overrides)
    problem.build(torch.device("cpu"))
    opt = build_optimizer(optimizer, problem, seed=5, **hp)
    losses = [float(opt.step(k).loss).hex() for k in range(STEPS)]
    return {"losses": losses, "weights": _fingerprint(problem)}


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, {model}"


def _recorded() -> dict:
    """{machine: {case: trajectory}}."""
    return json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {}


def _here() -> dict:
    machines = _recorded()
    if _machine() not in machines:
        pytest.skip(f"no trajectories recorded on this machine ({_machine()}; recorded on: "
                    f"{'; '.join(machines)}): record them with the code before a change, "
                    "RECORD_TRAJECTORIES=1 python -m pytest -p no:xdist tests/test_trajectories.py")
    return machines[_machine()]


@pytest.mark.parametrize("case", sorted(CASES))
def test_trajectory_is_bit_identical_to_the_recorded_one(case, one_thread):
    got = _trajectory(case)
    if os.environ.get("RECORD_TRAJECTORIES"):
        machines = _recorded()
        machines.setdefault(_machine(), {})[case] = got
        FIXTURE.write_text(json.dumps({m: dict(sorted(c.items())) for m, c in sorted(machines.items())},
                                      indent=1) + "\n")
        return
    assert got == _here()[case]


def test_every_recorded_case_is_tested():
    for machine, cases in _recorded().items():
        assert set(cases) == set(CASES), machine
