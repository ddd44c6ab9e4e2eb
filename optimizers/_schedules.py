"""Decay schedules of ES's noise scale sigma and step size alpha (es, eggroll).

Why they exist and are off by default: EA4LLM's runner offers sigma and alpha
decay, disabled unless asked for. Where the forms come from: EA4LLM (arXiv:2510.10603) links no code
and we found no public repository of it (searched by title, authors and method;
a third-party survey of ES-for-LLM code lists it as "code not found"), so these
are not its forms but the standard ones, with optax's semantics
(optax.exponential_decay with transition_steps=1 and end_value as a floor,
optax.linear_schedule, optax.cosine_decay_schedule), the per-iteration
multiplicative decay with a floor being the form of OpenAI-ES style runners
(estool's sigma_decay / sigma_limit):

  constant     v_k = v0                                  (default: schedules off)
  exponential  v_k = max(v_min, v0 * decay**k)
  linear       v_k = v0 + (v_min - v0) * min(k / T, 1)
  cosine       v_k = v_min + (v0 - v_min) * (1 + cos(pi * min(k / T, 1))) / 2

k is the iteration (the runner's step index), v0 the --set sigma / alpha, T the
`*_decay_steps` (required by linear and cosine; not the run's budget, so a run
resumed with a longer budget keeps its schedule). The value is a pure function
of k and the recorded hyperparameters: nothing to checkpoint, every process of a
torchrun job computes the same value, and a resumed run continues the schedule.
`constant` returns v0 itself, so a run without schedules is bit-identical to one
from before they existed.
"""

from __future__ import annotations

import math

from harness.errors import UsageError
from harness.params import Param

FORMS = ("constant", "exponential", "linear", "cosine")


def schedule_params(name: str) -> dict[str, Param]:
    """The four hyperparameters of the schedule of `name` (sigma or alpha)."""
    return {
        f"{name}_schedule": Param("constant", str, f"decay of {name} over iterations: constant (off), "
                                  f"exponential, linear or cosine (optimizers/_schedules.py)", choices=FORMS),
        f"{name}_decay": Param(0.999, float, f"exponential: {name} multiplied by this every iteration",
                               low=0.0, high=1.0),
        f"{name}_min": Param(0.0, float, f"floor (exponential) or final value (linear, cosine) of {name}",
                             low=0.0),
        f"{name}_decay_steps": Param(None, int, f"linear, cosine: iterations from {name} to {name}_min",
                                     low=1, optional=True),
    }


SCHEDULE_PARAMS = {**schedule_params("sigma"), **schedule_params("alpha")}


def check_schedules(hp: dict) -> None:
    """A schedule's own settings, before anything is built: one line naming the key."""
    for name in ("sigma", "alpha"):
        form = hp.get(f"{name}_schedule", "constant")   # an optimizer may schedule only sigma
        if form == "constant":
            continue
        if form in ("linear", "cosine") and hp[f"{name}_decay_steps"] is None:
            raise UsageError(f"--set {name}_schedule={form}: needs --set {name}_decay_steps=T "
                             f"(iterations from {name} to {name}_min)")
        if hp[f"{name}_min"] > hp[name]:
            raise UsageError(f"--set {name}_min={hp[f'{name}_min']}: above {name}={hp[name]}; a decay "
                             f"ends at or below where it starts")


def value_at(hp: dict, name: str, step: int) -> float:
    """sigma or alpha at iteration `step` under its schedule."""
    v0, form = hp[name], hp[f"{name}_schedule"]
    if form == "constant":
        return v0
    low = hp[f"{name}_min"]
    if form == "exponential":
        return max(low, v0 * hp[f"{name}_decay"] ** step)
    frac = min(step / hp[f"{name}_decay_steps"], 1.0)
    if form == "linear":
        return v0 + (low - v0) * frac
    return low + (v0 - low) * 0.5 * (1.0 + math.cos(math.pi * frac))
