"""M2N2, Model Merging with Natural Niches (Abrantes, Lange & Tang, "Competition and
Attraction Improve Model Fusion", GECCO 2025, arXiv:2508.16204; code SakanaAI/natural_niches).

An archive of `population` models (here: LoRA adapters of a lora-* problem, flattened
in trainable() order) with, for each, its per-sample scores s_ij on the validation
samples j (1 solved, 0 not; the problem's sample_scores). Every sample is a resource
of capacity 1 that the models solving it share:

  competition   z_j = (sum_i s_ij)^alpha (1 where nobody solves j); the shared fitness
                of model i is F_i = sum_j s_ij / z_j;
  parent A      drawn with probability F_i / sum F;
  attraction    mate B drawn with probability proportional to
                sum_j max(0, s_Bj / z_j - s_Aj / z_j): B is attractive where it solves
                the scarce samples A misses;
  merge         a split point k ~ U{0..P-1} over the P adapter parameters and a mixing
                ratio w ~ U(0, 1); spherical interpolation (SLERP, with one angle between
                the two whole vectors) of A and B with ratio w for parameters before k
                and 1 - w after it, so the boundary moves every merge;
  survival      the child's scores are measured; with the child added, the model with
                the lowest shared fitness (recomputed over the archive plus the child) is
                dropped: the child replaces it, unless the child itself is the lowest.

These follow natural_niches_fn.py / helper_fn.py of the authors' code. Where the paper
is silent or the setting differs, what was chosen:
- the archive starts empty (zero scores) and the experts enter it one by one through
  the survival rule, as the reference inserts its two starting models; an archive
  smaller than the number of experts keeps the fittest by shared fitness;
- no mutation by default (`mutation_sigma=0`): the reference mutates only when
  evolving from scratch, never when merging pre-trained models, which is this setting;
- `children` merges per runner step (sequential: each is drawn from the archive as the
  previous one left it), `iterations` steps in all, so its evaluation budget
  (children x iterations, default 10 x 50 = 500 scorings of the validation split) is
  of the order of genome's (about 10 per iteration x 50);
- when no model holds any shared fitness, or A is better than every other model on
  every sample (no attraction), the draw is uniform over the archive's filled slots;
- the solution is the archive's model with the best plain validation accuracy, as the
  reference reports the best by training accuracy.
Logged loss = 1 - that model's validation accuracy.
"""

from __future__ import annotations

import numpy as np
import torch

from harness.optimizer import Optimizer, StepResult
from harness.params import Param
from harness.registry import register_optimizer
from harness.seeding import derive_seed


# -- operators (pure functions; tested against the reference's formulas) ------------

def shared_fitness(scores: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """(F_i, the matrix s_ij / z_j) with z_j = (sum_i s_ij)^alpha, 1 where that is 0."""
    z = scores.sum(axis=0) ** alpha
    z = np.where(z > 0, z, 1.0)
    matrix = scores / z[None, :]
    return matrix.sum(axis=1), matrix


def _draw(weights: np.ndarray, filled: np.ndarray, rng: np.random.Generator) -> int:
    w = np.where(filled, np.clip(weights, 0, None), 0.0)
    if w.sum() <= 0:
        w = filled.astype(float)
    return int(rng.choice(len(w), p=w / w.sum()))


def pick_parents(scores: np.ndarray, filled: np.ndarray, alpha: float,
                 rng: np.random.Generator) -> tuple[int, int]:
    """Parent A by shared fitness, mate B by attraction to A."""
    fitness, matrix = shared_fitness(scores, alpha)
    a = _draw(fitness, filled, rng)
    attraction = np.maximum(0.0, matrix - matrix[a][None, :]).sum(axis=1)
    return a, _draw(attraction, filled, rng)


def slerp_split(x: torch.Tensor, y: torch.Tensor, w: float, split: int) -> torch.Tensor:
    """SLERP of flat vectors x, y with ratio w before `split` and 1 - w from it on (one
    angle between the whole vectors; linear interpolation when they are parallel)."""
    val = torch.full_like(x, w)
    val[split:] = 1.0 - w
    dot = torch.dot(x / x.norm(), y / y.norm()).clamp(-1, 1) if x.norm() > 0 and y.norm() > 0 \
        else torch.tensor(1.0, dtype=x.dtype)
    omega = torch.arccos(dot)
    if torch.sin(omega) <= 1e-6:
        return (1 - val) * x + val * y
    return (torch.sin((1 - val) * omega) * x + torch.sin(val * omega) * y) / torch.sin(omega)


def survivor_slot(scores: np.ndarray, child: np.ndarray, alpha: float) -> int | None:
    """The slot the child takes: the archive's lowest shared fitness with the child counted
    in; None when the child itself is the lowest."""
    fitness, _ = shared_fitness(np.vstack([scores, child[None, :]]), alpha)
    worst = int(np.argmin(fitness))
    return worst if worst < len(scores) else None


@register_optimizer("m2n2", kinds=["experts"],
                    description="M2N2: model merging with natural niches (competition for samples, "
                                "attraction-chosen mates, moving split points; lora-* problems)")
class M2N2(Optimizer):
    REFERENCE = ("M2N2: Abrantes, Lange & Tang, Competition and Attraction Improve Model Fusion, GECCO 2025, "
                 "arXiv:2508.16204 (SakanaAI/natural_niches)")
    SMOKE_SETTINGS = {"population": 4, "children": 2, "iterations": 3}
    POPULATION_PARAM = "population"
    PARAMS = {
        "population": Param(20, int, "archive size (the reference's pop_size)", low=2),
        "children": Param(10, int, "merges per step", low=1),
        "iterations": Param(50, int, "steps that merge; later steps change nothing (evals 0)", low=1),
        "alpha": Param(1.0, float, "competition exponent: z_j = (models solving sample j)^alpha; "
                       "0 = no competition (a plain GA)", low=0.0),
        "attraction": Param(True, bool, "mate chosen by attraction; false: by shared fitness as parent A"),
        "mutation_sigma": Param(0.0, float, "std of Gaussian mutation of the child (the reference: 0.01 "
                                "from scratch, none from pre-trained models)", low=0.0),
    }

    @classmethod
    def memory_model(cls, hp, facts) -> dict[str, int]:
        """The archive of adapters (float32) plus a child and its two parents' flat copies;
        the per-sample scores are a few KB. Plus one no-grad forward."""
        return {"population": int((hp["population"] + 3) * facts.trainable_bytes),
                "activations": int(facts.forward_activation_bytes)}

    def setup(self) -> None:
        shapes = [p.shape for _, p in self.problem.trainable()]
        self.shapes, self.sizes = shapes, [int(np.prod(s)) for s in shapes]
        total = sum(self.sizes)
        self.archive = torch.zeros(self.hp["population"], total)
        self.scores: np.ndarray | None = None   # (population, samples), after the experts enter
        self.filled = np.zeros(self.hp["population"], dtype=bool)
        self.done = 0

    def _tensors(self, flat: torch.Tensor) -> list[torch.Tensor]:
        dev = self.problem.device
        return [t.reshape(s).to(dev) for t, s in zip(torch.split(flat, self.sizes), self.shapes)]

    @torch.no_grad()
    def _score(self, flat: torch.Tensor) -> np.ndarray:
        self.problem.set_adapter(self._tensors(flat))
        return self.problem.sample_scores("val").numpy().astype(np.float64)

    def _admit(self, flat: torch.Tensor, s: np.ndarray) -> None:
        if self.scores is None:
            self.scores = np.zeros((self.hp["population"], len(s)))
        slot = survivor_slot(self.scores, s, self.hp["alpha"])
        if slot is not None:
            self.archive[slot], self.scores[slot], self.filled[slot] = flat, s, True

    def step(self, step: int) -> StepResult:
        evals = 0
        if self.scores is None:   # the experts enter the archive
            for expert in self.problem.expert_adapters():
                flat = torch.cat([t.detach().reshape(-1).float().cpu() for t in expert])
                self._admit(flat, self._score(flat))
                evals += 1
        if self.done < self.hp["iterations"]:
            rng = np.random.default_rng(derive_seed(self.seed, "m2n2", step))
            for _ in range(self.hp["children"]):
                a, b = pick_parents(self.scores, self.filled, self.hp["alpha"], rng)
                if not self.hp["attraction"]:
                    b = _draw(shared_fitness(self.scores, self.hp["alpha"])[0], self.filled, rng)
                split, w = int(rng.integers(0, self.archive.shape[1])), float(rng.random())
                child = slerp_split(self.archive[a], self.archive[b], w, split)
                if self.hp["mutation_sigma"] > 0:
                    g = torch.Generator().manual_seed(int(rng.integers(2**62)))
                    child = child + self.hp["mutation_sigma"] * torch.randn(child.shape, generator=g)
                self._admit(child, self._score(child))
                evals += 1
            self.done += 1
        best, acc = self._best()
        self.problem.set_adapter(self._tensors(self.archive[best]))
        return StepResult(loss=1.0 - acc, evals=evals, forwards=evals, extra={
            "best_val_accuracy": acc, "archive_filled": int(self.filled.sum()), "iteration": self.done,
            "samples_solved_by_archive": float((self.scores[self.filled].max(axis=0) > 0).mean())})

    def _best(self) -> tuple[int, float]:
        acc = np.where(self.filled, self.scores.mean(axis=1), -1.0)
        best = int(np.argmax(acc))
        return best, float(acc[best])

    def state_dict(self) -> dict:
        return {"archive": self.archive.clone(), "scores": None if self.scores is None else self.scores.copy(),
                "filled": self.filled.copy(), "done": self.done}

    def load_state_dict(self, state: dict) -> None:
        self.archive, self.scores = state["archive"], state["scores"]
        self.filled, self.done = state["filled"], state["done"]
        if self.scores is not None:
            self.problem.set_adapter(self._tensors(self.archive[self._best()[0]]))
