"""ES as in EA4LLM (Salimans et al. 2017 style), memory-lean, on any weights problem.

One iteration k:
  1. one batch = problem.batch(k): every member is scored on the same subsample;
  2. member j is a seed s_j = derive_seed(run seed, "es", k, j) (antithetic: pairs
     2m, 2m+1 share seed m with signs +1/-1); it is perturbed in place
     (w += sigma * sign * eps(s_j)), scored (fitness = -problem.loss(batch)) and
     restored (w -= sigma * sign * eps(s_j)), so no copy of the weights exists;
  3. the fitness values of all members are assembled (`gather_fitness`; under
     torchrun each rank scores its shard and one all-reduce of N floats,
     harness.distributed.evaluate_population, gives every rank all of them) and shaped:
     zscore (f - mean) / std, or centred ranks in [-0.5, 0.5];
  4. update, regenerating each member's noise tensor by tensor:
     standard: w += alpha / N * sum_j A_j eps_j      (EA4LLM)
     nes:      w += alpha / (N sigma) * sum_j A_j eps_j   (NES gradient estimate)
  sigma and alpha of iteration k follow their schedules (optimizers/_schedules.py:
  exponential, linear or cosine decay to a floor; constant, the default, is off);
  the values used are recorded with every step.

`evaluate_members(k, batch, indices, replay=True)` scores any slice of the
population while replaying the others' perturb/restore (noise only), so a
process scoring its share ends with the same weights as one scoring all N. The logged loss is the mean member loss
(train, perturbed); the held-out metric is the unperturbed centre.
"""

from __future__ import annotations


import numpy as np
import torch

from harness import distributed
from harness.errors import UsageError
from harness.optimizer import Optimizer, StepResult
from harness.params import Param
from harness.registry import register_optimizer
from harness.seeding import derive_seed
from optimizers._perturb import Perturber, tensor_noise
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


# The population settings es and eggroll share (eggroll imports them with shape_fitness).
POPULATION_PARAMS = {
    "population": Param(30, int, "members per iteration (N)", low=2),
    "sigma": Param(1e-2, float, "noise standard deviation", low=0.0),
    "alpha": Param(5e-2, float, "step size", low=0.0),
    "shaping": Param("zscore", str, "fitness shaping", choices=("zscore", "rank")),
    "scaling": Param("standard", str, "update scaling: standard alpha/N, nes alpha/(N sigma)",
                     choices=("standard", "nes")),
    "antithetic": Param(False, bool, "mirrored pairs (+noise, -noise); population must be even"),
}


def check_antithetic(hp) -> None:
    if hp["antithetic"] and hp["population"] % 2:
        n = hp["population"]
        raise UsageError(f"--set population={n}: antithetic pairs need an even population "
                         f"(e.g. population={n + 1})")


def member_seed(seed: int, label: str, step: int, j: int, antithetic: bool) -> tuple[int, float]:
    """(noise seed, sign) of member j of iteration `step`: antithetic pairs 2m, 2m+1 share
    the seed of m with signs +1/-1."""
    if antithetic:
        return derive_seed(seed, label, step, j // 2), (1.0 if j % 2 == 0 else -1.0)
    return derive_seed(seed, label, step, j), 1.0


@register_optimizer("es", kinds=["weights"],
                    description="EA4LLM evolution strategy: seeded in-place perturbations, "
                                "zscore/rank shaping, memory of one forward pass")
class ES(Optimizer):
    REFERENCE = ("EA4LLM (the seed paper's ES for LLM pretraining); Salimans et al., Evolution Strategies as a "
                 "Scalable Alternative to Reinforcement Learning, arXiv:1703.03864")
    DISTRIBUTED = True   # torchrun: members sharded over ranks, fitness all-reduced
    SMOKE_SETTINGS = {"population": 4}
    PARAMS = {
        **POPULATION_PARAMS,
        "members_per_forward": Param(1, int, "members scored per batched forward (torch.func vmap "
                                     "over K perturbed weight sets: memory K x weights); 1 = in place",
                                     low=1),
        **SCHEDULE_PARAMS,
    }

    # -- memory model (read by the planner) ------------------------------------
    # Host bytes per member of the population-sized arrays of one iteration: fitness as a
    # Python list (pointer + float object) and as float64 arrays (fitness, losses, shaped,
    # ranks, the all-reduce vector), the per-member score and update-coefficient dicts.
    PER_MEMBER_BYTES = 320

    @classmethod
    def memory_model(cls, hp: dict, facts) -> dict[str, int]:
        """Bytes beyond the weights: one tensor's fp32 noise (plus an fp32 working copy of
        that tensor when weights are not fp32), one no-grad forward's activations, and the
        population-sized arrays (so an absurd population is refused before it starts).
        Conservative: the noise is freed before the forward, the sum over-counts."""
        numel = facts.largest_tensor_bytes // max(facts.dtype_bytes, 1)
        noise = 4 * numel * (1 if facts.dtype_bytes == 4 else 2)
        k = min(hp["members_per_forward"], hp["population"])
        population = int(cls.PER_MEMBER_BYTES * hp["population"])
        if k == 1:
            return {"noise": int(noise), "activations": int(facts.forward_activation_bytes),
                    "population": population}
        # batched: K perturbed copies of the trainable weights, K of one tensor's fp32 noise
        # while they are built, and a vmapped forward holding K micro-batches' activations
        return {"batched_weights": int(k * facts.trainable_bytes), "noise": int(k * noise),
                "activations": int(k * facts.forward_activation_bytes), "population": population}

    @classmethod
    def check_hparams(cls, hp) -> None:
        check_antithetic(hp)
        check_schedules(hp)

    # -- lifecycle -------------------------------------------------------------
    def setup(self) -> None:
        self.pert = Perturber(self.problem.trainable())

    def sigma_at(self, step: int) -> float:
        return value_at(self.hp, "sigma", step)

    def alpha_at(self, step: int) -> float:
        return value_at(self.hp, "alpha", step)

    def member(self, step: int, j: int) -> tuple[int, float]:
        """(noise seed, sign) of member j of iteration `step`."""
        return member_seed(self.seed, "es", step, j, self.hp["antithetic"])

    @torch.no_grad()
    def evaluate_members(self, step: int, batch, indices, replay: bool = False) -> list[float]:
        """Fitness (= -loss) of the listed members: perturb in place, score, restore.

        In-place restore is exact only up to float rounding, so the weights after a
        slice depend on which members it held. With replay=True every member of the
        population is perturbed and restored in member order and only the listed
        ones are scored: a process scoring a slice then holds bit for bit the
        weights (and the fitness values) of one process scoring all N. A member
        only replayed costs one noise generation per tensor (Perturber.bounce).
        """
        sigma, wanted = self.sigma_at(step), list(indices)
        if self.hp["members_per_forward"] > 1:
            return self._evaluate_batched(step, batch, wanted)
        order = range(self.hp["population"]) if replay else wanted
        scored, scores = set(wanted), {}
        for j in order:
            seed, sign = self.member(step, j)
            if j not in scored:  # replayed only: perturb and restore, noise generated once
                self.pert.bounce(seed, sign * sigma)
                continue
            self.pert.add(seed, sign * sigma)
            try:
                scores[j] = -float(self.problem.loss(batch))
            finally:
                self.pert.add(seed, -sign * sigma)
        return [scores[j] for j in wanted]

    @torch.no_grad()
    def _evaluate_batched(self, step: int, batch, wanted: list[int]) -> list[float]:
        """K members per forward: torch.func.functional_call vmapped over K perturbed copies
        of the trainable tensors (w + sign sigma eps, rounded as Perturber.add rounds); the
        weights themselves are never changed, so no restore and no replay is needed."""
        from torch.func import functional_call, vmap

        sigma, k = self.sigma_at(step), self.hp["members_per_forward"]
        named = self.problem.trainable()
        scorer = _LossModule(self.problem)
        scores: list[float] = []
        for start in range(0, len(wanted), k):
            members = [self.member(step, j) for j in wanted[start:start + k]]
            stacked = {}
            for i, (name, p) in enumerate(named):
                copies = [torch.add(p, tensor_noise(seed, i, p), alpha=sign * sigma)
                          if p.dtype == torch.float32
                          else tensor_noise(seed, i, p).mul_(sign * sigma).add_(p.float()).to(p.dtype)
                          for seed, sign in members]
                stacked["model." + name] = torch.stack(copies)
                del copies
            losses = vmap(lambda params: functional_call(scorer, params, (batch,)))(stacked)
            del stacked
            scores += (-losses.double()).tolist()
        return scores

    def gather_fitness(self, step: int, batch) -> np.ndarray:
        """The fitness of every member, in member order (the one place they are assembled).

        Under torchrun each rank scores its shard (replaying the others' perturb/restore
        so its weights stay bit-identical to one process's) and one all-reduce of N
        floats gives every rank the whole vector; alone, one process scores all N.
        """
        n = self.hp["population"]
        replay = distributed.world_size() > 1

        def score(indices):
            return self.evaluate_members(step, batch, indices, replay=replay)

        return np.asarray(distributed.evaluate_population(n, score, self.problem.device),
                          dtype=np.float64)

    def update(self, step: int, fitness: np.ndarray) -> None:
        n, sigma, alpha = self.hp["population"], self.sigma_at(step), self.alpha_at(step)
        shaped = shape_fitness(fitness, self.hp["shaping"])
        scale = alpha / n if self.hp["scaling"] == "standard" else alpha / (n * sigma)
        coef: dict[int, float] = {}
        for j in range(n):  # antithetic partners share a seed: one regeneration per pair
            seed, sign = self.member(step, j)
            coef[seed] = coef.get(seed, 0.0) + scale * sign * float(shaped[j])
        self.pert.combine(list(coef), list(coef.values()))

    def step(self, step: int) -> StepResult:
        batch = self.problem.batch(step)
        fitness = self.gather_fitness(step, batch)
        losses = -fitness
        current = {"sigma": self.sigma_at(step), "alpha": self.alpha_at(step)}   # this iteration's
        if not np.all(np.isfinite(fitness)):
            return StepResult(loss=float("nan"), evals=len(fitness), forwards=len(fitness), extra=current)
        self.update(step, fitness)
        return StepResult(loss=float(losses.mean()), evals=len(fitness), forwards=len(fitness), extra={
            **current,
            "best_member_loss": float(losses.min()), "fitness_std": float(fitness.std()),
        })


class _LossModule(torch.nn.Module):
    """problem.loss as a module over problem.model, so torch.func.functional_call can swap
    the model's tensors ("model.<name>") for one member's perturbed copies."""

    def __init__(self, problem):
        super().__init__()
        self.model = problem.model
        self._problem = [problem]   # a list: not registered as a submodule

    def forward(self, batch):
        return self._problem[0].loss(batch)
