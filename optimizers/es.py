"""ES as in EA4LLM (Salimans et al. 2017 style), memory-lean, on any weights problem.

The iteration (one shared batch, members as seeds, fitness gathered across ranks,
zscore/rank shaping, standard/nes scaling, schedules) is the population-ES base's
(optimizers/population.py). What es adds is the perturbation, full-rank and in
place: member j with seed s_j and sign is scored as

    w += sigma * sign * eps(s_j);  fitness = -problem.loss(batch);  w -= sigma * sign * eps(s_j)

so no copy of the weights exists (optimizers/_perturb.py: noise per tensor from
the seed, at most one tensor's noise at a time), and the update regenerates each
member's noise tensor by tensor: w += sum_j c_j eps_j.

`evaluate_members(k, batch, indices, replay=True)` scores any slice of the
population while replaying the others' perturb/restore (noise only), so a
process scoring its share ends with the same weights as one scoring all N.
members_per_forward=K > 1 scores K members per vmapped forward over K perturbed
copies instead (memory K x weights, no restore). The logged loss is the mean
member loss (train, perturbed); the held-out metric is the unperturbed centre.
"""

from __future__ import annotations


import torch

from harness.params import Param
from harness.registry import register_optimizer
from optimizers._perturb import Perturber, in_place_phases, perturbation_bytes, tensor_noise
from optimizers.population import PopulationES


@register_optimizer("es", kinds=["weights"],
                    description="EA4LLM evolution strategy: seeded in-place perturbations, "
                                "zscore/rank shaping, memory of one forward pass")
class ES(PopulationES):
    REFERENCE = ("EA4LLM (the seed paper's ES for LLM pretraining); Salimans et al., Evolution Strategies as a "
                 "Scalable Alternative to Reinforcement Learning, arXiv:1703.03864")
    SEED_LABEL = "es"
    PARAMS = {
        "members_per_forward": Param(1, int, "members scored per batched forward (torch.func vmap "
                                     "over K perturbed weight sets: memory K x weights); 1 = in place",
                                     low=1),
    }

    # -- memory model (read by the planner) ------------------------------------
    # Host bytes per member of the population-sized arrays of one iteration: fitness as a
    # Python list (pointer + float object) and as float64 arrays (fitness, losses, shaped,
    # ranks, the all-reduce vector), the per-member score and update-coefficient dicts.
    PER_MEMBER_BYTES = 320

    @classmethod
    def memory_model(cls, hp: dict, facts) -> dict[str, int]:
        """Bytes beyond the weights: the population-sized arrays (so an absurd population is
        refused before it starts); in place (K = 1) the noise and the forward are phases
        (memory_phases). Batched: K perturbed copies of the weights, built from K noises,
        then a vmapped forward (counted together: not measured on a GPU yet)."""
        k = min(hp["members_per_forward"], hp["population"])
        population = int(cls.PER_MEMBER_BYTES * hp["population"])
        if k == 1:
            return {"population": population}
        noise = perturbation_bytes(facts)
        # batched: K perturbed copies of the trainable weights, K of one tensor's fp32 noise
        # while they are built, and a vmapped forward holding K micro-batches' activations
        return {"batched_weights": int(k * facts.trainable_bytes), "noise": int(k * noise),
                "activations": int(k * facts.forward_activation_bytes), "population": population}

    @classmethod
    def memory_phases(cls, hp: dict, facts) -> dict[str, dict[str, int]] | None:
        """In place (K = 1) as every in-place method; batched: none (memory_model counts all)."""
        if min(hp["members_per_forward"], hp["population"]) > 1:
            return None
        return in_place_phases(facts)

    # -- the perturbation (the population-ES base's hooks) --------------------------
    def setup(self) -> None:
        self.pert = Perturber(self.problem.trainable())

    def scores_in_place(self) -> bool:
        return self.hp["members_per_forward"] == 1   # batched: the weights are never changed

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

    def apply_update(self, step: int, coefs: dict[int, float]) -> None:
        self.pert.combine(list(coefs), list(coefs.values()))


class _LossModule(torch.nn.Module):
    """problem.loss as a module over problem.model, so torch.func.functional_call can swap
    the model's tensors ("model.<name>") for one member's perturbed copies."""

    def __init__(self, problem):
        super().__init__()
        self.model = problem.model
        self._problem = [problem]   # a list: not registered as a submodule

    def forward(self, batch):
        return self._problem[0].loss(batch)
