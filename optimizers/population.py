"""The population family's bases: members as seeds over one model's memory.

`Population` is what every member of the family shares (es, eggroll, deep-ga):
  - one batch = problem.batch(k) per iteration: every member is scored on the same
    subsample;
  - a member is a seed (derive_seed(run seed, SEED_LABEL, k, j)), never a stored tensor;
  - the fitness (= -loss) of every member, in member order (`gather_fitness`): under
    torchrun each rank scores its shard and one all-reduce of N floats
    (harness.distributed.evaluate_population) gives every rank all of them.
A member supplies `evaluate_members` (score a slice of the population) and
`scores_in_place` (whether scoring changes the weights and restores them, which is
exact only up to rounding: then under torchrun every rank replays the members it
does not score, so all ranks hold the weights of one process scoring all N), and
its own `step`.

`PopulationES` is the ES iteration on it, written once for es and eggroll. Iteration k:
  1. member j has seed s_j (antithetic: pairs 2m, 2m+1 share seed m with signs +1/-1);
  2. fitness of every member (`gather_fitness`);
  3. shaping: zscore (f - mean) / std, or centred ranks in [-0.5, 0.5];
  4. update, each member's noise regenerated from its seed with coefficient
     c_j = scale * sign_j * shaped_j, scale = alpha / N (standard, EA4LLM) or
     alpha / (N sigma) (nes, the NES gradient estimate); antithetic partners share
     one seed, so their coefficients are summed and the noise drawn once.
sigma and alpha of iteration k follow their schedules (optimizers/_schedules.py;
constant, the default, is off); the values used are recorded with every step.
An ES member adds `apply_update` (add sum_j c_j eps_j to the weights).
"""

from __future__ import annotations

import numpy as np

from harness import distributed
from harness.errors import UsageError
from harness.optimizer import Optimizer, StepResult
from harness.params import Param
from harness.seeding import derive_seed
from optimizers._schedules import SCHEDULE_PARAMS, check_schedules, value_at


def shape_fitness(fitness: np.ndarray, method: str) -> np.ndarray:
    """zscore: (f - mean) / std (zeros when all equal); rank: centred ranks in [-0.5, 0.5]."""
    f = np.asarray(fitness, dtype=np.float64)
    if method == "rank":
        ranks = np.empty(len(f))
        ranks[np.argsort(f, kind="stable")] = np.arange(len(f))
        return ranks / max(len(f) - 1, 1) - 0.5
    std = f.std()
    return (f - f.mean()) / std if std > 0 else np.zeros_like(f)


def member_seed(seed: int, label: str, step: int, j: int, antithetic: bool) -> tuple[int, float]:
    """(noise seed, sign) of member j of iteration `step`: antithetic pairs 2m, 2m+1 share
    the seed of m with signs +1/-1."""
    if antithetic:
        return derive_seed(seed, label, step, j // 2), (1.0 if j % 2 == 0 else -1.0)
    return derive_seed(seed, label, step, j), 1.0


class Population(Optimizer):
    DISTRIBUTED = True   # torchrun: members sharded over ranks, fitness all-reduced
    SMOKE_SETTINGS = {"population": 4}
    POPULATION_PARAM = "population"
    # The label of the members' seeds (derive_seed(run seed, label, k, j)): two family
    # members draw unrelated noise from one run seed.
    SEED_LABEL = ""
    PARAMS = {
        "population": Param(30, int, "members per iteration (N)", low=2),
        "sigma": Param(1e-2, float, "noise standard deviation", low=0.0),
    }

    # -- what a family member supplies ---------------------------------------------------
    def evaluate_members(self, step: int, batch, indices, replay: bool = False) -> list[float]:
        """Fitness (= -loss) of the listed members of iteration `step` on `batch`, in the
        order listed. replay=True (only asked when scores_in_place()): perturb and restore
        every member of the population in member order, scoring only the listed ones."""
        raise NotImplementedError

    def scores_in_place(self) -> bool:
        """True when scoring perturbs the weights in place and restores them (exact only up
        to rounding), so that ranks scoring different slices must replay the others."""
        return True

    # -- the base's bookkeeping ---------------------------------------------------------
    @classmethod
    def check_hparams(cls, hp) -> None:
        check_schedules(hp)

    def sigma_at(self, step: int) -> float:
        return value_at(self.hp, "sigma", step) if "sigma_schedule" in self.hp else self.hp["sigma"]

    def gather_fitness(self, step: int, batch) -> np.ndarray:
        """The fitness of every member, in member order (the one place they are assembled):
        alone, one process scores all N; under torchrun each rank its shard."""
        replay = distributed.world_size() > 1 and self.scores_in_place()

        def score(indices):
            return self.evaluate_members(step, batch, indices, replay=replay)

        return np.asarray(distributed.evaluate_population(self.hp["population"], score, self.problem.device),
                          dtype=np.float64)


class PopulationES(Population):
    PARAMS = {
        "alpha": Param(5e-2, float, "step size", low=0.0),
        "shaping": Param("zscore", str, "fitness shaping", choices=("zscore", "rank")),
        "scaling": Param("standard", str, "update scaling: standard alpha/N, nes alpha/(N sigma)",
                         choices=("standard", "nes")),
        "antithetic": Param(False, bool, "mirrored pairs (+noise, -noise); population must be even"),
        **SCHEDULE_PARAMS,
    }

    def apply_update(self, step: int, coefs: dict[int, float]) -> None:
        """w += sum over seeds s of coefs[s] * eps(s), the noise regenerated from each seed."""
        raise NotImplementedError

    @classmethod
    def check_hparams(cls, hp) -> None:
        if hp["antithetic"] and hp["population"] % 2:
            n = hp["population"]
            raise UsageError(f"--set population={n}: antithetic pairs need an even population "
                             f"(e.g. population={n + 1})")
        super().check_hparams(hp)

    def alpha_at(self, step: int) -> float:
        return value_at(self.hp, "alpha", step)

    def member(self, step: int, j: int) -> tuple[int, float]:
        """(noise seed, sign) of member j of iteration `step`."""
        return member_seed(self.seed, self.SEED_LABEL, step, j, self.hp["antithetic"])

    def update(self, step: int, fitness: np.ndarray) -> None:
        n, sigma, alpha = self.hp["population"], self.sigma_at(step), self.alpha_at(step)
        shaped = shape_fitness(fitness, self.hp["shaping"])
        scale = alpha / n if self.hp["scaling"] == "standard" else alpha / (n * sigma)
        coefs: dict[int, float] = {}
        for j in range(n):  # antithetic partners share a seed: one regeneration per pair
            seed, sign = self.member(step, j)
            coefs[seed] = coefs.get(seed, 0.0) + scale * sign * float(shaped[j])
        self.apply_update(step, coefs)

    def step(self, step: int) -> StepResult:
        batch = self.problem.batch(step)
        fitness = self.gather_fitness(step, batch)
        losses = -fitness
        current = {"sigma": self.sigma_at(step), "alpha": self.alpha_at(step)}   # this iteration's
        if not np.all(np.isfinite(fitness)):
            return StepResult(loss=float("nan"), evals=len(fitness), forwards=len(fitness), extra=current)
        self.update(step, fitness)
        return StepResult(loss=float(losses.mean()), evals=len(fitness), forwards=len(fitness), extra={
            **current, "best_member_loss": float(losses.min()), "fitness_std": float(fitness.std())})
