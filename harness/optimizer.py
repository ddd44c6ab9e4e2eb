"""Base class of optimizer adapters.

An adapter gets the built problem, its resolved hyperparameters and the run
seed; the runner calls `setup` once, then `step(k)` for k = 0, 1, ... until
the budget is spent. Everything needed to continue bit for bit must be in
`state_dict` (RNG states included): the runner checkpoints it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from harness.params import Param


@dataclass
class StepResult:
    loss: float                 # train loss of this step (see the adapter's docstring)
    evals: int                  # objective/loss evaluations this step used
    extra: dict[str, Any] = field(default_factory=dict)  # sigma, lr, best-so-far, ...


class Optimizer:
    NAME = "?"
    KINDS: tuple[str, ...] = ()
    PARAMS: dict[str, Param] = {}
    # The run's budget (harness.runner.Budget: steps, evals, time_s), set by the runner
    # before setup() for optimizers that plan for it (e.g. nevergrad); None outside a run.
    run_budget = None

    def __init__(self, problem, hparams: dict[str, Any], seed: int):
        self.problem = problem
        self.hp = hparams
        self.seed = seed

    @classmethod
    def memory_model(cls, hp: dict[str, Any], facts) -> dict[str, int] | None:
        """Bytes per component this optimizer holds beyond the weights themselves at its
        peak, e.g. {"gradients": ..., "optimizer_states": ..., "noise": ...,
        "activations": ...}, from its hyperparameters and the problem's
        harness.planner.ModelFacts. None: not declared (the planner then counts the
        weights only and says so)."""
        return None

    def setup(self) -> None:
        """Called once after problem.build (not again on resume before load_state_dict)."""

    def step(self, step: int) -> StepResult:
        raise NotImplementedError

    def is_finished(self) -> bool:
        """True when further steps cannot change the solution (one-shot methods such as
        magnitude pruning); the runner then stops before the budget is spent."""
        return False

    @classmethod
    def check_hparams(cls, hp: dict[str, Any]) -> None:
        """Validate resolved hyperparameters beyond their Param types (raise UsageError);
        called before anything is built or written. Default: nothing."""

    def solution(self) -> Any:
        """What problem.evaluate() scores: None for weights problems (the model is the
        solution, held in place), a config dict for search spaces, masks for pruning."""
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
