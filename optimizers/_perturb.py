"""Seeded in-place weight perturbations shared by es and mezo.

A perturbation is a seed, never a stored tensor: the noise of tensor i for
seed s is N(0, 1) drawn by a torch.Generator on the tensor's own device,
seeded with derive_seed(s, i), always in float32. So any process, and any
resumed run, regenerates exactly the same noise, and at most one tensor's
noise exists at a time.

Weights in float32 are changed with an in-place add. Weights in a lower
precision (bf16/fp16) are changed by computing `w + c * eps` in float32 and
rounding once to the weight dtype: a restore `w_p - c * eps` computed this
way rounds back to the original value unless the perturbation moved the
element into a coarser binade (see docs/qwen3_and_es.md for the measured
fraction). Updates of low-precision weights accumulate all members in a
float32 buffer of one tensor and round once.
"""

from __future__ import annotations

import functools

import torch

from harness.seeding import derive_seed


_generators: dict[torch.device, torch.Generator] = {}


@functools.lru_cache(maxsize=1 << 14)
def _tensor_seed(seed: int, index: int) -> int:
    # a member's tensor seeds are needed again at its restore/update: hashed once
    return derive_seed(seed, index)


def tensor_noise(seed: int, index: int, like: torch.Tensor) -> torch.Tensor:
    """Float32 N(0, 1) noise of tensor `index` for perturbation `seed`, on like's device.
    One generator per device, reseeded per call: manual_seed resets its whole state, so
    the draw equals a fresh generator's (without building one per tensor)."""
    g = _generators.get(like.device)
    if g is None:
        g = _generators[like.device] = torch.Generator(device=like.device)
    g.manual_seed(_tensor_seed(seed, index))
    return torch.randn(like.shape, generator=g, device=like.device, dtype=torch.float32)


def perturbation_bytes(facts) -> int:
    """Peak bytes of Perturber.add beyond the weights: the largest tensor's fp32 noise, plus
    an fp32 copy of that tensor when the weights are not fp32 (p.float())."""
    numel = facts.largest_tensor_bytes // max(facts.dtype_bytes, 1)
    return int(4 * numel * (1 if facts.dtype_bytes == 4 else 2))


def in_place_phases(facts) -> dict[str, dict[str, int]]:
    """The memory phases of an in-place perturbation method (es, mezo): one tensor's noise
    while it is added or taken back, one no-grad forward's activations while a member is
    scored, never both (on an H200 their sum over-counted the peak by 11-40%, docs/gpu.md)."""
    return {"perturbing": {"noise": perturbation_bytes(facts)},
            "forward": {"activations": int(facts.forward_activation_bytes)}}


class Perturber:
    """In-place perturbations of a fixed, ordered list of tensors."""

    def __init__(self, named_params):
        self.params = [p for _, p in named_params]

    @torch.no_grad()
    def add(self, seed: int, scale: float) -> None:
        """w_i += scale * eps(seed, i) for every tensor i."""
        for i, p in enumerate(self.params):
            eps = tensor_noise(seed, i, p)
            if p.dtype == torch.float32:
                p.add_(eps, alpha=scale)
            else:
                p.copy_(eps.mul_(scale).add_(p.float()))
            del eps

    @torch.no_grad()
    def bounce(self, seed: int, scale: float) -> None:
        """add(seed, scale) then add(seed, -scale), bit for bit, with each tensor's noise
        generated once: how a rank replays a member it does not score (distributed ES)."""
        for i, p in enumerate(self.params):
            eps = tensor_noise(seed, i, p)
            if p.dtype == torch.float32:
                p.add_(eps, alpha=scale)
                p.add_(eps, alpha=-scale)
            else:  # the same roundings as add(): fp32 w + c * eps, rounded to the weight dtype
                p.copy_((eps * scale).add_(p.float()))
                p.copy_(eps.mul_(-scale).add_(p.float()))
            del eps

    @torch.no_grad()
    def combine(self, seeds, coefs) -> None:
        """w_i += sum_k coefs[k] * eps(seeds[k], i), tensor by tensor (noise regenerated)."""
        for i, p in enumerate(self.params):
            acc = None if p.dtype == torch.float32 else p.float()
            for seed, coef in zip(seeds, coefs):
                if coef == 0.0:
                    continue
                eps = tensor_noise(seed, i, p)
                (p if acc is None else acc).add_(eps, alpha=float(coef))
                del eps
            if acc is not None:
                p.copy_(acc)
