"""Lion (evolved sign momentum): pytorch_optimizer.Lion on the backprop family's base."""

from __future__ import annotations

from harness.params import Param
from harness.registry import register_optimizer
from optimizers.backprop import Backprop


@register_optimizer("lion", kinds=["weights"], description="Lion, sign momentum (pytorch_optimizer.Lion)")
class Lion(Backprop):
    REFERENCE = ("Chen et al., Symbolic Discovery of Optimization Algorithms (NeurIPS 2023), "
                 "arXiv:2302.06675; library: pytorch-optimizer (pytorch_optimizer.Lion)")
    RUNTIME_IMPORTS = Backprop.RUNTIME_IMPORTS + ("pytorch_optimizer",)
    STATES_PER_PARAM = 1   # the momentum
    # foreach on CUDA: torch._foreach_lerp(exp_avgs, grads) makes the update for every
    # tensor at once (1); read from pytorch_optimizer/optimizer/lion.py, not measured
    STEP_TEMPORARIES_PER_PARAM = 1
    # the paper: lr 3-10x smaller than AdamW's, weight decay 3-10x larger
    PARAMS = {
        "lr": Param(3e-4, float, "learning rate", low=0.0),
        "weight_decay": Param(0.0, float, "decoupled weight decay", low=0.0),
        "beta1": Param(0.9, float, "interpolation of momentum and gradient for the sign", low=0.0, high=1.0),
        "beta2": Param(0.99, float, "momentum decay", low=0.0, high=1.0),
    }

    def torch_optimizer(self, param_groups):
        from pytorch_optimizer import Lion as LibraryLion

        return LibraryLion(param_groups, lr=self.hp["lr"], betas=(self.hp["beta1"], self.hp["beta2"]),
                           weight_decay=self.hp["weight_decay"])
