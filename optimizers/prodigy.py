"""Prodigy (learning-rate-free Adam): pytorch_optimizer.Prodigy on the backprop family's base."""

from __future__ import annotations

from harness.params import Param
from harness.registry import register_optimizer
from optimizers.backprop import Backprop


@register_optimizer("prodigy", kinds=["weights"],
                    description="Prodigy, Adam that estimates its step size (pytorch_optimizer)")
class Prodigy(Backprop):
    REFERENCE = ("Mishchenko & Defazio, Prodigy: An Expeditiously Adaptive Parameter-Free Learner "
                 "(ICML 2024), arXiv:2306.06101; library: pytorch-optimizer (pytorch_optimizer.Prodigy)")
    RUNTIME_IMPORTS = Backprop.RUNTIME_IMPORTS + ("pytorch_optimizer",)
    # tried on 2 CPU ranks (torch 2.13): its step-size sums mix DTensor shards with plain
    # tensors and the run fails
    NOT_SHARDABLE = "pytorch_optimizer's Prodigy does not step FSDP's DTensor shards (its step-size sums)"
    STATES_PER_PARAM = 4   # two moments, the initial point p0 and the sum s
    # foreach on CUDA: p0 - p and the square roots of the second moments, each for every
    # tensor at once (2); read from pytorch_optimizer/optimizer/prodigy.py, not measured
    STEP_TEMPORARIES_PER_PARAM = 2
    PARAMS = {
        "lr": Param(1.0, float, "multiplier of the estimated step size (the authors: leave at 1)", low=0.0),
        "weight_decay": Param(0.0, float, "decoupled weight decay", low=0.0),
        "beta1": Param(0.9, float, low=0.0, high=1.0),
        "beta2": Param(0.999, float, low=0.0, high=1.0),
        "d0": Param(1e-6, float, "initial step-size estimate", low=0.0),
        "d_coef": Param(1.0, float, "scale of the step-size estimate", low=0.0),
    }

    def torch_optimizer(self, param_groups):
        from pytorch_optimizer import Prodigy as Library

        return Library(param_groups, lr=self.hp["lr"], betas=(self.hp["beta1"], self.hp["beta2"]),
                       d0=self.hp["d0"], d_coef=self.hp["d_coef"], weight_decay=self.hp["weight_decay"],
                       weight_decouple=True)
