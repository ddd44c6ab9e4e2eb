"""AdEMAMix (a fast and a slow gradient EMA): pytorch_optimizer.AdEMAMix on the backprop
family's base."""

from __future__ import annotations

from harness.params import Param
from harness.registry import register_optimizer
from optimizers.backprop import Backprop


@register_optimizer("ademamix", kinds=["weights"], description="AdEMAMix, Adam with a slow EMA (pytorch_optimizer)")
class AdEMAMix(Backprop):
    REFERENCE = ("Pagliardini et al., The AdEMAMix Optimizer: Better, Faster, Older (ICLR 2025), "
                 "arXiv:2409.03137; library: pytorch-optimizer (pytorch_optimizer.AdEMAMix)")
    RUNTIME_IMPORTS = Backprop.RUNTIME_IMPORTS + ("pytorch_optimizer",)
    STATES_PER_PARAM = 3   # fast EMA, slow EMA, second moment
    # foreach on CUDA: sqrt of the second moments and the bias-corrected fast EMA, each for
    # every tensor at once (2); read from pytorch_optimizer/optimizer/ademamix.py, not measured
    STEP_TEMPORARIES_PER_PARAM = 2
    PARAMS = {
        "weight_decay": Param(0.0, float, "decoupled weight decay", low=0.0),
        "beta1": Param(0.9, float, low=0.0, high=1.0),
        "beta2": Param(0.999, float, low=0.0, high=1.0),
        "beta3": Param(0.9999, float, "slow EMA's decay", low=0.0, high=1.0),
        "alpha": Param(5.0, float, "weight of the slow EMA", low=0.0),
        "t_alpha_beta3": Param(None, int, "steps of the alpha and beta3 warmup (none = off)", low=1,
                               optional=True),
        "eps": Param(1e-8, float, low=0.0),
    }

    def torch_optimizer(self, param_groups):
        from pytorch_optimizer import AdEMAMix as LibraryAdEMAMix

        return LibraryAdEMAMix(param_groups, lr=self.hp["lr"],
                               betas=(self.hp["beta1"], self.hp["beta2"], self.hp["beta3"]),
                               alpha=self.hp["alpha"], t_alpha_beta3=self.hp["t_alpha_beta3"],
                               weight_decay=self.hp["weight_decay"], weight_decouple=True, eps=self.hp["eps"])
