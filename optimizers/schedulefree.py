"""Schedule-Free AdamW: pytorch_optimizer.ScheduleFreeAdamW on the backprop family's base.

It trains at y, an interpolation of the averaged point x and the base sequence z, and
is to be evaluated at x (Defazio et al.: call optimizer.eval() before evaluating,
optimizer.train() before training). The base's TRAIN_EVAL_MODES does that around
every evaluation of the run, untimed, so every metric the run records (and its final
metric) is the averaged point's; the train loss is y's, as the authors log it. The
checkpoint holds the training point y and the state z, from which eval() gives x
again. There is no learning-rate schedule beyond the base's optional linear warmup.
"""

from __future__ import annotations

from harness.params import Param
from harness.registry import register_optimizer
from optimizers.backprop import Backprop


@register_optimizer("adamw-schedulefree", kinds=["weights"],
                    description="Schedule-Free AdamW, evaluated at its average (pytorch_optimizer)")
class ScheduleFreeAdamW(Backprop):
    REFERENCE = ("Defazio et al., The Road Less Scheduled (NeurIPS 2024), arXiv:2405.15682; library: "
                 "pytorch-optimizer (pytorch_optimizer.ScheduleFreeAdamW)")
    RUNTIME_IMPORTS = Backprop.RUNTIME_IMPORTS + ("pytorch_optimizer",)
    TRAIN_EVAL_MODES = True
    STATES_PER_PARAM = 2   # z and the second moment
    # foreach on CUDA: the bias-corrected second moments and their square roots, each for
    # every tensor at once (2); read from pytorch_optimizer/optimizer/schedulefree.py, not measured
    STEP_TEMPORARIES_PER_PARAM = 2
    PARAMS = {
        "lr": Param(2.5e-3, float, "learning rate", low=0.0),
        "weight_decay": Param(0.0, float, "weight decay, applied at y as the authors do", low=0.0),
        "beta1": Param(0.9, float, "interpolation between z and x (momentum)", low=0.0, high=1.0),
        "beta2": Param(0.999, float, low=0.0, high=1.0),
        "weight_lr_power": Param(2.0, float, "averaging weight of step t: lr_max ** weight_lr_power", low=0.0),
        "eps": Param(1e-8, float, low=0.0),
    }

    def torch_optimizer(self, param_groups):
        from pytorch_optimizer import ScheduleFreeAdamW as Library

        return Library(param_groups, lr=self.hp["lr"], betas=(self.hp["beta1"], self.hp["beta2"]),
                       weight_decay=self.hp["weight_decay"], weight_lr_power=self.hp["weight_lr_power"],
                       eps=self.hp["eps"])
