"""SynFlow (Tanaka et al. 2020, arXiv:2006.05467) on a chain of weight matrices.

Shared by the pruning optimizers (optimizers/pruning.py: which weights to keep)
and the digits-hpo problems (`objective=synflow`: a data-free score of an
untrained configuration). Every weight is replaced by its absolute value,
biases and ReLUs are dropped (the ReLU of a non-negative input is the
identity) and an all-ones input is propagated in float64:
R = 1^T |W_L * M_L| ... |W_1 * M_1| 1. The score of a weight is |w| * dR/d|w|;
by Tanaka et al.'s conservation law each layer's scores sum to R.
Linear(a, b).weight is (b, a): the all-ones row vector flows x @ W^T.
"""

from __future__ import annotations

import torch


def synflow_scores(weights: list[torch.Tensor], masks: list[torch.Tensor]) -> tuple[list[torch.Tensor], float]:
    """(per-weight scores |w| * dR/d|w| of the masked chain, R), in float64."""
    ws = [(w.abs().double() * m).requires_grad_(True) for w, m in zip(weights, masks)]
    x = torch.ones(1, ws[0].shape[1], dtype=torch.float64)
    for w in ws:
        x = x @ w.t()
    r = x.sum()
    grads = torch.autograd.grad(r, ws)
    return [(g * w).detach() for g, w in zip(grads, (w.detach() for w in ws))], float(r.detach())


def synflow_R(weights: list[torch.Tensor], masks: list[torch.Tensor], scales=None) -> float:
    """R of the masked chain, each layer's survivors multiplied by |scale| (no autograd)."""
    scales = scales or [1.0] * len(weights)
    with torch.no_grad():
        x = torch.ones(1, weights[0].shape[1], dtype=torch.float64)
        for w, m, c in zip(weights, masks, scales):
            x = x @ (w.abs().double() * m * abs(c)).t()
        return float(x.sum())
