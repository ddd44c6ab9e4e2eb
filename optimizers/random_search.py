"""Random search: uniform samples of the encoded box; the floor to beat."""

from __future__ import annotations

import numpy as np

from harness.optimizer import Optimizer, StepResult
from harness.params import Param
from harness.registry import register_optimizer
from harness.seeding import derive_seed


@register_optimizer("random", kinds=["search-space"], description="uniform random search (the floor)")
class RandomSearch(Optimizer):
    REFERENCE = "Bergstra & Bengio, Random Search for Hyper-Parameter Optimization, JMLR 13, 2012"
    SMOKE_SETTINGS = {"batch": 2}
    PARAMS = {"batch": Param(10, int, "configurations sampled per step", low=1)}

    @classmethod
    def memory_model(cls, hp, facts) -> dict[str, int]:
        """One encoded point (float64) per sampled configuration, plus the best one."""
        return {"population": (hp["batch"] + 1) * max(int(facts.trainable_count), 1) * 8}

    def setup(self) -> None:
        self.rng = np.random.default_rng(derive_seed(self.seed, "random"))
        self.best_x = None
        self.best_f = float("inf")

    def step(self, step: int) -> StepResult:
        space = self.problem.space
        values = []
        for _ in range(self.hp["batch"]):
            x = space.sample_encoded(self.rng)
            f = float(self.problem.objective_encoded(x))
            values.append(f)
            if f < self.best_f:
                self.best_f, self.best_x = f, x
        return StepResult(loss=min(values), evals=len(values), forwards=len(values), extra={"best_so_far": self.best_f})

    def solution(self):
        return None if self.best_x is None else self.problem.space.decode(self.best_x)

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "best_x": self.best_x, "best_f": self.best_f}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.best_x, self.best_f = state["best_x"], state["best_f"]
