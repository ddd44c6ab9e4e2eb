"""EGGROLL: evolution strategies with low-rank perturbations (Sarkar et al. 2025,
"Evolution Strategies at the Hyperscale"; reference code ESHyperscale/HyperscaleES).

Member i perturbs every 2-D weight W (m x n) of the trainable tensors by
sigma * E_i with E_i = A_i B_i^T / sqrt(r), A_i (m x r), B_i (n x r) standard
normal (so every entry of E_i has unit variance, as es's full-rank noise). The
factors of tensor t are drawn by a torch.Generator seeded with
derive_seed(member seed, t), regenerated whenever needed, never stored.

Scoring: W + sigma E_i is never formed. K members share one forward over the
shared batch stacked K times (problem.stack_batch, member-major rows); forward
hooks on the nn.Linear / nn.Embedding modules that own a perturbed weight add
each member's low-rank term to the layer's output:
  Linear:    y_i = x_i W^T + sigma (x_i B_i) A_i^T / sqrt(r)
  Embedding: y_i = W[ids_i] + sigma A_i[ids_i] B_i^T / sqrt(r)
(a tied weight, e.g. Qwen3's embedding and lm_head, gets the same E_i in both).
The model's code is unchanged (transformers' Qwen3, the digits MLP): the hooks
only need every layer to see the batch dimension first. Vectors (norms,
biases) are left unperturbed (vectors=unperturbed, the default) or perturbed full-rank
per member (vectors=full: noise as es draws it; biases added in the Linear hook,
other modules recomputed per member with torch.func.vmap over functional_call).
members_per_forward=K chunks the population (memory grows with K).
members_per_forward=1 instead forms W + sigma E_i in place (one rank-r addmm per
weight) and takes it back after the forward, as es does with full-rank noise:
no hooks, no stacked batch; the restore is exact only up to rounding, so under
torchrun ranks replay every member (as es) to stay bit-identical.

The iteration (members as seeds, fitness gathered across ranks, shaping, scaling,
schedules) is the population-ES base's, shared with es (optimizers/population.py).
The update, in fp32, one matmul per weight:  W += A diag(c) B^T / sqrt(r)  with
A = [A_1 .. A_N] (m x N r) and c the base's coefficients (shaped fitness times
sign times alpha / N, standard, or alpha / (N sigma), nes; antithetic pairs share
a seed). Distributed: each rank scores its shard, only the N fitness values are
exchanged; with K > 1 the weights never change while scoring, so no replay is
needed.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from harness.errors import UsageError
from harness.params import Param
from harness.registry import register_optimizer
from harness.seeding import derive_seed
from optimizers._perturb import tensor_noise
from optimizers.population import PopulationES


def low_rank_factors(seed: int, index: int, like: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 (A [m, r], B [n, r]) of 2-D tensor `index` for member `seed`, on like's device."""
    m, n = like.shape
    g = torch.Generator(device=like.device)
    g.manual_seed(derive_seed(seed, index))
    z = torch.randn((m + n) * rank, generator=g, device=like.device, dtype=torch.float32)
    return z[: m * rank].view(m, rank), z[m * rank:].view(n, rank)


class LowRankHooks:
    """Forward hooks that add K members' perturbations inside the layers of a model.

    The hooks are registered by set_members and removed by clear, so outside
    scoring (e.g. the held-out evaluation of the centre) the model is untouched."""

    def __init__(self, model: nn.Module, named_params, vectors: str):
        params = [p for _, p in named_params]
        index = {id(p): i for i, p in enumerate(params)}
        self.matrices: dict[int, torch.Tensor] = {}   # tensor index -> 2-D weight
        self.vectors: dict[int, torch.Tensor] = {}    # tensor index -> 1-D tensor perturbed full-rank
        self.handles = []
        self._hooks: list[tuple[nn.Module, object]] = []   # (module, hook), attached while members are active
        self.active: dict | None = None
        self._inside = False
        owned = set()
        for module in model.modules():
            own = {name: p for name, p in module.named_parameters(recurse=False) if id(p) in index}
            if isinstance(module, (nn.Linear, nn.Embedding)) and "weight" in own and own["weight"].dim() == 2:
                self.matrices[index[id(own["weight"])]] = own["weight"]
                owned.add(id(own["weight"]))
                hook = self._linear if isinstance(module, nn.Linear) else self._embedding
                self._hooks.append((module, hook))
                if isinstance(module, nn.Linear) and "bias" in own:
                    owned.add(id(own["bias"]))
                    if vectors == "full":
                        self.vectors[index[id(own["bias"])]] = own["bias"]
                continue
            vec = {name: p for name, p in own.items() if p.dim() == 1}
            if vec and vectors == "full":
                for p in vec.values():
                    owned.add(id(p))
                    self.vectors[index[id(p)]] = p
                self._hooks.append((module, self._vector_module))
            if vectors == "unperturbed":
                owned.update(id(p) for p in vec.values())
        stray = [name for name, p in named_params if id(p) not in owned]
        if stray:
            raise UsageError(f"eggroll: trainable tensors {stray[:3]} are neither the weight of an "
                             f"nn.Linear/nn.Embedding nor a vector; eggroll cannot perturb them")
        self.index = index

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    # -- members -------------------------------------------------------------------
    def set_members(self, members: list[tuple[int, float]], sigma: float, rank: int) -> None:
        """Activate K members [(seed, sign)]: their factors (A scaled by sign sigma / sqrt(r))
        and vector noises, stacked over members, for one forward."""
        k = len(members)
        scale = torch.tensor([sign * sigma / math.sqrt(rank) for _, sign in members])
        act: dict = {"k": k, "A": {}, "B": {}, "v": {}}
        for t, w in self.matrices.items():
            fac = [low_rank_factors(seed, t, w, rank) for seed, _ in members]
            a = torch.stack([f[0] for f in fac]) * scale.to(w.device).view(k, 1, 1)
            act["A"][t] = a.to(w.dtype)
            act["B"][t] = torch.stack([f[1] for f in fac]).to(w.dtype)
        for t, v in self.vectors.items():
            eps = torch.stack([tensor_noise(seed, t, v) for seed, _ in members])
            act["v"][id(v)] = (v.float() + eps * (scale * math.sqrt(rank)).to(v.device).view(k, 1)).to(v.dtype)
        self.active = act
        if not self.handles:  # attached only while scoring: other forwards pay no hook dispatch
            self.handles = [module.register_forward_hook(hook) for module, hook in self._hooks]

    def clear(self) -> None:
        self.active = None
        self.remove()

    # -- hooks -----------------------------------------------------------------------
    def _split(self, x: torch.Tensor) -> torch.Tensor:
        k = self.active["k"]
        if x.shape[0] % k:
            raise RuntimeError(f"eggroll: a layer saw {x.shape[0]} rows for {k} members; the model "
                               "must keep the batch dimension first")
        return x.reshape(k, -1, x.shape[-1])

    def _linear(self, module, inputs, out):
        if self.active is None or self._inside:
            return None
        t = self.index[id(module.weight)]
        a, b = self.active["A"][t], self.active["B"][t]
        x = self._split(inputs[0])
        y = out.view(x.shape[0], -1, out.shape[-1])   # the layer's fresh output: changed in place
        bias = self.active["v"].get(id(module.bias)) if module.bias is not None else None
        if bias is not None:  # full-rank bias noise: replace b by b_i
            y.add_((bias - module.bias).unsqueeze(1))
        y.baddbmm_(torch.bmm(x, b), a.transpose(1, 2))  # += (x B) A^T: [K, rows, r] x [K, r, m]
        return out

    def _embedding(self, module, inputs, out):
        if self.active is None or self._inside:
            return None
        t = self.index[id(module.weight)]
        a, b = self.active["A"][t], self.active["B"][t]
        k = self.active["k"]
        ids = inputs[0].reshape(k, -1)
        rows = torch.gather(a, 1, ids.unsqueeze(-1).expand(-1, -1, a.shape[-1]))   # [K, L, r]
        out.view(k, -1, out.shape[-1]).baddbmm_(rows, b.transpose(1, 2))
        return out

    def _vector_module(self, module, inputs, out):
        """Recompute the module once per member with its vectors replaced (vmap)."""
        if self.active is None or self._inside:
            return None
        k = self.active["k"]
        names = {name: p for name, p in module.named_parameters(recurse=False) if id(p) in self.active["v"]}
        x = inputs[0]
        xs = x.reshape(k, x.shape[0] // k, *x.shape[1:])

        def one(vecs, xi):
            return torch.func.functional_call(module, vecs, (xi,))

        self._inside = True
        try:
            y = torch.func.vmap(one)({n: self.active["v"][id(p)] for n, p in names.items()}, xs)
        finally:
            self._inside = False
        return y.reshape(out.shape)


@register_optimizer("eggroll", kinds=["weights"],
                    description="EGGROLL: low-rank ES, K members per batched forward, full-rank "
                                "fp32 update (Sarkar et al. 2025)")
class Eggroll(PopulationES):
    REFERENCE = ("EGGROLL: Sarkar et al. 2025, Evolution Strategies at the Hyperscale "
                 "(code: ESHyperscale/HyperscaleES)")
    SEED_LABEL = "eggroll"
    PROBLEM_DEFAULTS = {"qwen3": {"alpha": 8e-2}}   # a 4-point screen on seed 7 (docs/qwen3_and_es.md, eggroll)
    PARAMS = {
        "rank": Param(1, int, "rank r of each member's perturbation A B^T / sqrt(r)", low=1),
        "members_per_forward": Param(None, int, "members stacked in one forward; 1 = perturb the weights "
                                     "in place, one member at a time, as es; default (auto): 1 on a CPU, "
                                     "on CUDA the largest of N, N/2, ... whose plan fits in 85% of the "
                                     "device (recorded in config.json)", low=1, optional=True),
        "vectors": Param("unperturbed", str, "1-D tensors (norms, biases): unperturbed, or "
                         "full = full-rank noise per member", choices=("unperturbed", "full")),
    }

    @classmethod
    def memory_model(cls, hp: dict, facts) -> dict[str, int]:
        """Beyond the weights: one chunk's factors (K r (m + n) fp32 numbers over the 2-D
        tensors) and, at the update, all N members' factors of the largest tensor (bounded
        by N r (m + n) summed) plus an fp32 delta of it; the activations of one forward
        over K stacked copies of the step's batch (K x micro-batches x one micro-batch)."""
        k = min(hp["members_per_forward"] or hp["population"], hp["population"])
        factors = 4 * hp["rank"] * facts.low_rank_count * (k + hp["population"])
        delta = 4 * facts.largest_tensor_bytes // max(facts.dtype_bytes, 1)
        acts = k * max(facts.micro_batches_per_step, 1) * facts.forward_activation_bytes
        return {"noise": int(factors + delta), "activations": int(acts)}

    @classmethod
    def for_device(cls, hp: dict, device_type: str, problem) -> dict:
        """members_per_forward=auto settled per device. Stacking members pays where a forward
        is kernel-bound and wide (a GPU), not on a CPU: on qwen3-small one thread scored
        0.41-0.57x es's members per second stacked, 1.06-1.60x in place (docs/overheads.md)."""
        if hp["members_per_forward"] is not None:
            return hp
        k = largest_fitting_chunk(cls, hp, problem) if device_type == "cuda" else 1
        return {**hp, "members_per_forward": k}

    @classmethod
    def check_problem(cls, problem) -> None:
        if not problem.SAMPLE_LOSSES:
            raise UsageError(f"eggroll needs per-sample losses, which {problem.name} does not "
                             "offer (problem.sample_losses); use es on it")

    # -- the perturbation (the population-ES base's hooks) --------------------------
    def setup(self) -> None:
        # built without a run (benchmarks, tests): auto settled here, on the built problem's device
        self.hp = self.for_device(self.hp, self.problem.device.type, self.problem)
        self.params = self.problem.trainable()
        self.hooks = LowRankHooks(self.problem.model, self.params, self.hp["vectors"])

    def scores_in_place(self) -> bool:
        return self.hp["members_per_forward"] == 1   # K > 1: hooks, the weights never change

    @torch.no_grad()
    def evaluate_members(self, step: int, batch, indices, replay: bool = False) -> list[float]:
        """Fitness (= -mean sample loss) of the listed members, K per stacked forward
        (members_per_forward=1: in place, see _evaluate_in_place)."""
        indices = list(indices)
        if self.hp["members_per_forward"] == 1:
            return self._evaluate_in_place(step, batch, indices, replay)
        k = self.hp["members_per_forward"] or max(len(indices), 1)
        scores: list[float] = []
        for start in range(0, len(indices), k):
            chunk = indices[start:start + k]
            self.hooks.set_members([self.member(step, j) for j in chunk], self.sigma_at(step), self.hp["rank"])
            try:
                losses = self.problem.sample_losses(self.problem.stack_batch(batch, len(chunk)))
            finally:
                self.hooks.clear()
            scores += (-losses.float().view(len(chunk), -1).mean(1)).tolist()
        return scores

    def _evaluate_in_place(self, step: int, batch, indices: list[int], replay: bool) -> list[float]:
        """One member at a time, W += sigma A B^T / sqrt(r) formed in place by one rank-r
        addmm per weight and taken back after the forward, as es does with its full-rank
        noise. Where the step's batch has more rows than a layer is wide (qwen3-small on a
        CPU) this is cheaper than the hooks' two passes over each layer's input and output.
        The restore is exact only up to float rounding, so under torchrun every rank
        perturbs and restores every member in member order (replay) and scores its own:
        ranks stay bit-identical to one process scoring all N."""
        sigma, wanted, scores = self.sigma_at(step), set(indices), {}
        for j in (range(self.hp["population"]) if replay else indices):
            seed, sign = self.member(step, j)
            noise = self._member_noise(seed)
            self._shift(noise, sign * sigma)
            try:
                if j in wanted:
                    losses = self.problem.sample_losses(self.problem.stack_batch(batch, 1))
                    scores[j] = -float(losses.float().mean())
            finally:
                self._shift(noise, -sign * sigma)
        return [scores[j] for j in indices]

    def _member_noise(self, seed: int) -> dict:
        """One member's factors of every 2-D tensor and noise of every perturbed vector."""
        r = self.hp["rank"]
        return {"A": {t: low_rank_factors(seed, t, w, r) for t, w in self.hooks.matrices.items()},
                "v": {t: tensor_noise(seed, t, v) for t, v in self.hooks.vectors.items()}}

    def _shift(self, noise: dict, scale: float) -> None:
        """w += scale A B^T / sqrt(r) (fp32, rounded once to w's dtype); v += scale eps."""
        c = scale / math.sqrt(self.hp["rank"])
        for t, w in self.hooks.matrices.items():
            a, b = noise["A"][t]
            if w.dtype == torch.float32:
                w.addmm_(a, b.T, alpha=c)
            else:
                w.copy_(torch.addmm(w.float(), a, b.T, alpha=c))
        for t, v in self.hooks.vectors.items():
            _apply(v, noise["v"][t] * scale)

    @torch.no_grad()
    def apply_update(self, step: int, coefs: dict[int, float]) -> None:
        r = self.hp["rank"]
        seeds = list(coefs)
        for t, w in self.hooks.matrices.items():
            fac = [low_rank_factors(s, t, w, r) for s in seeds]
            a = torch.cat([f[0] for f in fac], 1)                     # [m, U r]
            b = torch.cat([f[1] for f in fac], 1)                     # [n, U r]
            c = torch.tensor([coefs[s] for s in seeds], device=w.device).repeat_interleave(r) / math.sqrt(r)
            _apply(w, (a * c) @ b.T)
        for t, v in self.hooks.vectors.items():
            acc = torch.zeros(v.shape, dtype=torch.float32, device=v.device)
            for s in seeds:
                acc.add_(tensor_noise(s, t, v), alpha=coefs[s])
            _apply(v, acc)


def largest_fitting_chunk(cls, hp: dict, problem, fraction: float = 0.85) -> int:
    """The largest K in N, N/2, ..., 1 whose planned peak (harness.planner) fits in `fraction`
    of the CUDA device's memory; N where no CUDA device is present to size (a prediction)."""
    from harness.planner import plan_run

    n = hp["population"]
    if not torch.cuda.is_available():
        return n
    have = fraction * torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    k = n
    while k > 1 and plan_run("eggroll", cls, {**hp, "members_per_forward": k}, problem, "cuda").peak_bytes > have:
        k = max(k // 2, 1)
    return k


def _apply(w: torch.Tensor, delta: torch.Tensor) -> None:
    """w += delta (fp32), rounded once to w's dtype."""
    if w.dtype == torch.float32:
        w.add_(delta)
    else:
        w.copy_(w.float() + delta)
