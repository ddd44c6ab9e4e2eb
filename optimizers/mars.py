"""MARS (variance-reduced AdamW): pytorch_optimizer.MARS on the backprop family's base."""

from __future__ import annotations

from harness.params import Param
from harness.registry import register_optimizer
from optimizers.backprop import Backprop


@register_optimizer("mars", kinds=["weights"], description="MARS-AdamW, variance-reduced AdamW (pytorch_optimizer)")
class MARS(Backprop):
    REFERENCE = ("Yuan et al., MARS: Unleashing the Power of Variance Reduction for Training Large Models "
                 "(ICML 2025), arXiv:2411.10438; library: pytorch-optimizer (pytorch_optimizer.MARS)")
    RUNTIME_IMPORTS = Backprop.RUNTIME_IMPORTS + ("pytorch_optimizer",)
    # tried on 2 CPU ranks (torch 2.13): its foreach step calls aten._foreach_copy_, which has no
    # DTensor sharding strategy (NotImplementedError)
    NOT_SHARDABLE = "pytorch_optimizer's MARS does not step FSDP's DTensor shards (torch 2.13: _foreach_copy_)"
    STATES_PER_PARAM = 3   # two moments and the previous gradient
    # foreach on CUDA: the gradient corrections and the updates (a clone of the first moments),
    # each for every tensor at once (2); read from pytorch_optimizer/optimizer/mars.py, not measured
    STEP_TEMPORARIES_PER_PARAM = 2
    PARAMS = {
        "lr": Param(3e-3, float, "learning rate of the matrices", low=0.0),
        "weight_decay": Param(0.0, float, "decoupled weight decay of the matrices", low=0.0),
        "beta1": Param(0.95, float, low=0.0, high=1.0),
        "beta2": Param(0.99, float, low=0.0, high=1.0),
        "gamma": Param(0.025, float, "scale of the variance-reduction correction", low=0.0),
        "optimize_1d": Param(False, bool, "MARS also on 1-d tensors (false: AdamW with lr_1d there)"),
        "lr_1d": Param(3e-3, float, "learning rate of 1-d tensors when optimize_1d is false", low=0.0),
        "weight_decay_1d": Param(0.1, float, "weight decay of 1-d tensors when optimize_1d is false", low=0.0),
    }

    def torch_optimizer(self, param_groups):
        from pytorch_optimizer import MARS as Library

        return Library(param_groups, lr=self.hp["lr"], betas=(self.hp["beta1"], self.hp["beta2"]),
                       gamma=self.hp["gamma"], mars_type="adamw", optimize_1d=self.hp["optimize_1d"],
                       lr_1d=self.hp["lr_1d"], weight_decay=self.hp["weight_decay"],
                       weight_decay_1d=self.hp["weight_decay_1d"])
