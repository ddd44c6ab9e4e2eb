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


# Bytes of one member's noise (fp32, every trainable tensor) that Perturber.scored holds
# while the member is scored, so that the restore reuses it instead of drawing it again
# (a third of the noise an ES member costs; on qwen3-tiny noise is what ES adds to its
# forwards, docs/overheads.md). Above this, one tensor's noise at a time, drawn twice.
KEEP_NOISE_BYTES = 16 * 2**20

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


def kept_noise_bytes(facts) -> int:
    """Bytes Perturber.scored holds during a forward: one member's fp32 noise, when it fits."""
    noise = 4 * int(facts.trainable_count)
    return noise if noise <= KEEP_NOISE_BYTES else 0


def perturbation_bytes(facts) -> int:
    """Peak bytes of Perturber.add beyond the weights: the largest tensor's fp32 noise, plus
    an fp32 copy of that tensor when the weights are not fp32 (p.float())."""
    numel = facts.largest_tensor_bytes // max(facts.dtype_bytes, 1)
    return int(4 * numel * (1 if facts.dtype_bytes == 4 else 2))


def in_place_phases(facts, kept: int = 0) -> dict[str, dict[str, int]]:
    """The memory phases of an in-place perturbation method (es, mezo): one tensor's noise
    while it is added or taken back, one no-grad forward's activations while a member is
    scored, never both (on an H200 their sum over-counted the peak by 11-40%, docs/gpu.md);
    `kept`: noise held through the forward (kept_noise_bytes)."""
    forward = {"activations": int(facts.forward_activation_bytes)}
    if kept:
        forward["member_noise"] = int(kept)
    return {"perturbing": {"noise": max(perturbation_bytes(facts), int(kept))}, "forward": forward}


class Perturber:
    """In-place perturbations of a fixed, ordered list of tensors."""

    def __init__(self, named_params):
        self.params = [p for _, p in named_params]
        self.keeps_noise = 4 * sum(p.numel() for p in self.params) <= KEEP_NOISE_BYTES

    @torch.no_grad()
    def scored(self, seed: int, scale: float, score):
        """add(seed, scale), score(), add(seed, -scale), bit for bit as those calls: the
        member's noise is drawn once and held through score() when it fits in
        KEEP_NOISE_BYTES (the restore then reuses it), else drawn again for the restore."""
        if not self.keeps_noise:
            self.add(seed, scale)
            try:
                return score()
            finally:
                self.add(seed, -scale)
        noise = [tensor_noise(seed, i, p) for i, p in enumerate(self.params)]
        for p, eps in zip(self.params, noise):
            _add_scaled(p, eps, scale)
        try:
            return score()
        finally:
            for p, eps in zip(self.params, noise):
                _add_scaled(p, eps, -scale)

    @torch.no_grad()
    def add(self, seed: int, scale: float) -> None:
        """w_i += scale * eps(seed, i) for every tensor i."""
        for i, p in enumerate(self.params):
            _add_scaled(p, tensor_noise(seed, i, p), scale, keep=False)

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


def _add_scaled(p: torch.Tensor, eps: torch.Tensor, scale: float, keep: bool = True) -> None:
    """p += scale * eps: in place in fp32; in a lower precision computed in fp32 and rounded
    once to p's dtype (in eps's own memory unless `keep`: eps is reused)."""
    if p.dtype == torch.float32:
        p.add_(eps, alpha=scale)
    else:
        p.copy_((eps * scale if keep else eps.mul_(scale)).add_(p.float()))
