"""Pruning optimizers: magnitude (baseline), synflow, synflow-cma.

All three return a harness.problem.Pruned whose masks keep exactly
problem.keep_count() entries of the prunable tensors (the global budget).

- magnitude: keep the globally largest |w| (one shot, no data).
- synflow: iterative SynFlow (Tanaka et al. 2020). Per iteration, on the
  current masked network with every weight replaced by its absolute value,
  biases and nonlinearities dropped and an all-ones input, R = 1^T prod_l
  |W_l * M_l| 1; the score of a weight is |w| * dR/d|w|; the globally
  lowest-scored weights are removed until the density of iteration k is
  d^(k/n) (exponential schedule, d = 1 - sparsity, n = `iterations`).
- synflow-cma: CMA-ES (pycma) over one real per layer; the budget is split
  between layers exactly (see `layer_counts`), each layer keeps its
  SynFlow-best weights (iterative SynFlow with per-layer targets), then
  energy compensation rescales each layer's surviving weights so that its L2
  norm equals the dense layer's (`compensation=neuron`: each output neuron's
  incoming weights get back the dense row's L2 norm instead). Fitness: `val-f1` (1 - validation
  macro-F1 of the compensated masked net, the default) or `synflow`
  (-log R of the compensated masked net, data free).

SynFlow itself (R and the scores) lives in problems/synflow.py, shared with the
digits-hpo problems' data-free objective.

The ReLU MLPs of this harness are chains of Linear layers, so R is computed
on the prunable weight matrices in order (prunable() order = forward order).
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import torch

from harness.optimizer import Optimizer, StepResult
from harness.params import Param
from harness.problem import Pruned
from harness.registry import register_optimizer
from harness.seeding import derive_seed
from problems.synflow import synflow_R, synflow_scores


def top_k_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k highest scores (ties broken by position, deterministic)."""
    flat = scores.flatten()
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        mask[torch.topk(flat, k, sorted=False).indices] = True
    return mask.view_as(scores)


def split_global(mask_flat: torch.Tensor, shapes) -> list[torch.Tensor]:
    out, pos = [], 0
    for shape in shapes:
        n = math.prod(shape)
        out.append(mask_flat[pos:pos + n].view(shape))
        pos += n
    return out


def magnitude_masks(weights: list[torch.Tensor], keep: int) -> list[torch.Tensor]:
    flat = torch.cat([w.abs().flatten() for w in weights])
    return split_global(top_k_mask(flat, keep), [w.shape for w in weights])


def iterative_synflow(weights: list[torch.Tensor], keep: int | list[int], iterations: int) -> list[torch.Tensor]:
    """Iterative SynFlow with the exponential schedule. `keep`: a global count (global
    ranking) or one count per layer (ranking inside each layer)."""
    total = [w.numel() for w in weights]
    masks = [torch.ones_like(w, dtype=torch.float64) for w in weights]
    per_layer = isinstance(keep, (list, tuple))
    for k in range(1, iterations + 1):
        frac = k / iterations
        scores, _ = synflow_scores(weights, masks)
        # removed weights score -1 so they are never brought back
        scores = [torch.where(m > 0, s, torch.full_like(s, -1.0)) for s, m in zip(scores, masks)]
        if per_layer:
            counts = [kl if k == iterations else int(round(n * (kl / n) ** frac)) if kl > 0 else 0
                      for kl, n in zip(keep, total)]
            masks = [top_k_mask(s, c).double() for s, c in zip(scores, counts)]
        else:
            n = sum(total)
            count = keep if k == iterations else int(round(n * (keep / n) ** frac))
            flat = torch.cat([s.flatten() for s in scores])
            masks = [m.double() for m in split_global(top_k_mask(flat, count), [w.shape for w in weights])]
    return [m.bool() for m in masks]


def energy_scales(weights: list[torch.Tensor], masks: list[torch.Tensor]) -> list[float]:
    """Per layer ||W|| / ||W * M||: rescaling the survivors by it restores the layer's
    L2 norm (1.0 for a layer with nothing left)."""
    out = []
    for w, m in zip(weights, masks):
        kept = float((w * m).norm())
        out.append(float(w.norm()) / kept if kept > 0 else 1.0)
    return out


def neuron_energy_scales(weights: list[torch.Tensor], masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per output neuron (row of W) ||W_i|| / ||W_i * M_i|| as a (rows, 1) tensor: each
    neuron's incoming weights get back the dense row's L2 norm (1 for an emptied row)."""
    out = []
    for w, m in zip(weights, masks):
        kept = (w * m).norm(dim=1, keepdim=True)
        out.append(torch.where(kept > 0, w.norm(dim=1, keepdim=True) / kept.clamp_min(1e-30), torch.ones_like(kept)))
    return out


def layer_counts(x: np.ndarray, sizes: list[int], keep: int) -> list[int]:
    """Split a global budget `keep` over layers of `sizes`: layer l gets a share
    proportional to exp(x_l) * size_l (x = 0: every layer at the global density),
    capped at its size, the excess water-filled to the others; integer counts by
    largest remainder, so sum == keep exactly."""
    want = np.exp(np.clip(np.asarray(x, dtype=float), -30, 30)) * np.asarray(sizes, dtype=float)
    sizes_a = np.asarray(sizes, dtype=float)
    alloc = np.zeros(len(sizes))
    free = np.ones(len(sizes), dtype=bool)
    left = float(keep)
    while free.any() and left > 1e-9:
        share = left * want[free] / want[free].sum()
        room = sizes_a[free] - alloc[free]
        capped = share >= room
        idx = np.flatnonzero(free)
        if not capped.any():
            alloc[idx] += share
            break
        alloc[idx[capped]] = sizes_a[idx[capped]]
        left -= room[capped].sum()
        free[idx[capped]] = False
    counts = np.floor(alloc + 1e-9).astype(int)
    rest = keep - int(counts.sum())
    order = np.argsort(-(alloc - counts), kind="stable")
    for i in order:
        if rest <= 0:
            break
        if counts[i] < sizes[i]:
            counts[i] += 1
            rest -= 1
    return [int(c) for c in counts]


class _OneShot(Optimizer):
    """Shared by magnitude and synflow: the mask is computed in the first step."""

    PARAMS = {"energy_compensation": Param(False, bool, "rescale each layer's survivors to the "
                                           "dense layer's L2 norm")}

    def setup(self) -> None:
        self.pruned = None

    def masks(self, weights, keep) -> list[torch.Tensor]:
        raise NotImplementedError

    def step(self, step: int) -> StepResult:
        weights = [w for _, w in self.problem.prunable()]
        masks = self.masks(weights, self.problem.keep_count())
        scales = energy_scales(weights, masks) if self.hp["energy_compensation"] else None
        self.pruned = Pruned(masks=masks, scales=scales)
        return StepResult(loss=float(self.problem.loss(self.pruned)), evals=1, forwards=1)

    def is_finished(self) -> bool:
        return self.pruned is not None

    def solution(self):
        return self.pruned

    def state_dict(self) -> dict:
        return {"pruned": self.pruned}

    def load_state_dict(self, state: dict) -> None:
        self.pruned = state["pruned"]


@register_optimizer("magnitude", kinds=["pruning"], description="global magnitude pruning (baseline)")
class Magnitude(_OneShot):
    REFERENCE = ("global magnitude pruning: Han et al., Learning both Weights and Connections (NeurIPS 2015); the "
                 "baseline of Tanaka et al. 2020")
    def masks(self, weights, keep):
        return magnitude_masks(weights, keep)


@register_optimizer("synflow", kinds=["pruning"],
                    description="iterative SynFlow (Tanaka et al. 2020), exponential schedule")
class SynFlow(_OneShot):
    REFERENCE = ("SynFlow: Tanaka et al., Pruning neural networks without any data by iteratively conserving "
                 "synaptic flow (NeurIPS 2020), arXiv:2006.05467")
    SMOKE_SETTINGS = {"iterations": 3}
    PARAMS = {"iterations": Param(100, int, "pruning iterations of the exponential schedule", low=1)}

    def masks(self, weights, keep):
        return iterative_synflow(weights, keep, self.hp["iterations"])


def _pycma_seed(seed: int) -> int:
    return derive_seed(seed, "synflow-cma") % (2**31 - 2) + 1   # pycma: 0 means "from the clock"


@register_optimizer("synflow-cma", kinds=["pruning"],
                    description="CMA-ES over layer-wise sparsity, SynFlow masks, energy compensation")
class SynFlowCMA(Optimizer):
    REFERENCE = ("seed paper 003 (CMA-ES over layer-wise sparsity with SynFlow masks and energy compensation); "
                 "SynFlow: arXiv:2006.05467; library: pycma")
    RUNTIME_IMPORTS = ("cma",)
    SMOKE_SETTINGS = {"popsize": 4, "iterations": 3}
    POPULATION_PARAM = "popsize"
    PARAMS = {
        "fitness": Param("val-f1", str, "what CMA-ES minimises: 1 - validation F1 or -log SynFlow R",
                         choices=("val-f1", "synflow")),
        "iterations": Param(20, int, "SynFlow iterations per candidate (exponential schedule)", low=1),
        "energy_compensation": Param(True, bool, "rescale each layer's survivors to the dense "
                                     "layer's L2 norm"),
        "compensation": Param("layer", str, "form of energy compensation: layer (one L2 scale per "
                              "layer) or neuron (one per output neuron)", choices=("layer", "neuron")),
        "sigma0": Param(1.0, float, "initial CMA step on the per-layer log-share", low=0.0),
        "bound": Param(4.0, float, "box [-bound, bound] of each per-layer log-share", low=0.0),
        "popsize": Param(None, int, "CMA population (default pycma's 4+3ln L)", low=2, optional=True),
    }

    def setup(self) -> None:
        import cma

        self.weights = [w for _, w in self.problem.prunable()]
        self.sizes = [w.numel() for w in self.weights]
        self.keep = self.problem.keep_count()
        b = self.hp["bound"]
        rs = np.random.RandomState(_pycma_seed(self.seed))   # private stream, pickled with the strategy
        opts = {"seed": _pycma_seed(self.seed), "verbose": -9, "randn": rs.randn,
                "bounds": [[-b] * len(self.sizes), [b] * len(self.sizes)]}
        if self.hp["popsize"]:
            opts["popsize"] = self.hp["popsize"]
        # x0 = 0: every layer at the global density, the uniform-sparsity starting point
        self.es = cma.CMAEvolutionStrategy(np.zeros(len(self.sizes)), self.hp["sigma0"], opts)
        self.best = None      # (fitness, Pruned, counts)

    def pruned_for(self, x) -> tuple[Pruned, list[int]]:
        counts = layer_counts(x, self.sizes, self.keep)
        masks = iterative_synflow(self.weights, counts, self.hp["iterations"])
        scales = None
        if self.hp["energy_compensation"]:
            form = neuron_energy_scales if self.hp["compensation"] == "neuron" else energy_scales
            scales = form(self.weights, masks)
        return Pruned(masks=masks, scales=scales), counts

    def fitness(self, pruned: Pruned) -> float:
        if self.hp["fitness"] == "val-f1":
            return float(self.problem.loss(pruned))
        r = synflow_R(self.weights, [m.double() for m in pruned.masks], pruned.scales)
        return -math.log(r) if r > 0 else 1e300

    def step(self, step: int) -> StepResult:
        xs = self.es.ask()
        values = []
        for x in xs:
            pruned, counts = self.pruned_for(x)
            f = self.fitness(pruned)
            values.append(f)
            if self.best is None or f < self.best[0]:
                self.best = (f, pruned, counts)
        self.es.tell(xs, values)
        extra = {"sigma": float(self.es.sigma), "best_so_far": self.best[0]}
        extra.update({f"keep_{i}": c / n for i, (c, n) in enumerate(zip(self.best[2], self.sizes))})
        return StepResult(loss=float(min(values)), evals=len(xs), forwards=len(xs), extra=extra)

    def solution(self):
        return None if self.best is None else self.best[1]

    def state_dict(self) -> dict:
        return {"es": pickle.dumps(self.es), "best": self.best}

    def load_state_dict(self, state: dict) -> None:
        self.es = pickle.loads(state["es"])
        self.best = state["best"]
