"""SGD with (Nesterov) momentum: torch.optim.SGD on the backprop family's base
(optimizers/backprop.py)."""

from __future__ import annotations

import torch

from harness.errors import UsageError
from harness.params import Param
from harness.registry import register_optimizer
from optimizers.backprop import Backprop


@register_optimizer("sgd", kinds=["weights"], description="SGD with (Nesterov) momentum (torch.optim.SGD)")
class SGD(Backprop):
    REFERENCE = ("Sutskever et al., On the importance of initialization and momentum in deep learning "
                 "(ICML 2013); library: torch.optim.SGD")
    # foreach SGD on CUDA: momentum_buffer.mul_().add_(grad) in place, then with Nesterov one
    # grad + momentum * buf per tensor (foreach_add, all tensors at once): 1 with Nesterov,
    # 0 without (read from torch/optim/sgd.py, not measured)
    STEP_TEMPORARIES_PER_PARAM = 1
    PARAMS = {
        "lr": Param(0.05, float, "learning rate", low=0.0),
        "weight_decay": Param(0.0, float, "L2 weight decay (added to the gradient)", low=0.0),
        "momentum": Param(0.9, float, "momentum (0 = plain SGD, no state)", low=0.0, high=1.0),
        "nesterov": Param(True, bool, "Nesterov momentum (needs momentum > 0)"),
    }

    @classmethod
    def check_hparams(cls, hp):
        super().check_hparams(hp)
        if hp["nesterov"] and hp["momentum"] == 0:
            raise UsageError("--set nesterov=true needs momentum > 0 (or --set nesterov=false)")

    @classmethod
    def states_per_param(cls, hp):
        return 1 if hp["momentum"] > 0 else 0   # the momentum buffer

    def torch_optimizer(self, param_groups):
        return torch.optim.SGD(param_groups, lr=self.hp["lr"], momentum=self.hp["momentum"],
                               nesterov=self.hp["nesterov"], weight_decay=self.hp["weight_decay"])
