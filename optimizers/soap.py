"""SOAP (Adam in Shampoo's eigenbasis): pytorch_optimizer.SOAP on the backprop family's base."""

from __future__ import annotations

import math

from harness.params import Param
from harness.registry import register_optimizer
from optimizers.backprop import Backprop


@register_optimizer("soap", kinds=["weights"], description="SOAP, Adam in Shampoo's eigenbasis (pytorch_optimizer)")
class SOAP(Backprop):
    REFERENCE = ("Vyas et al., SOAP: Improving and Stabilizing Shampoo using Adam (ICLR 2025), "
                 "arXiv:2409.11321; library: pytorch-optimizer (pytorch_optimizer.SOAP)")
    RUNTIME_IMPORTS = Backprop.RUNTIME_IMPORTS + ("pytorch_optimizer",)
    NOT_SHARDABLE = ("soap preconditions each whole matrix (eigenbases of G G^T and G^T G), "
                     "which FSDP splits over ranks")
    # two moments, plus per matrix m x n the statistics and eigenbases of both sides,
    # 2 (m^2 + n^2) numbers (state_count, from the shapes). This per-parameter figure is
    # only the fallback where the shapes are unknown: exact for square matrices.
    STATES_PER_PARAM = 6
    # it steps tensor by tensor (no foreach path): a few copies of one tensor at a time,
    # none of the whole model (read from pytorch_optimizer/optimizer/soap.py, not measured)
    STEP_TEMPORARIES_PER_PARAM = 0
    PARAMS = {
        "lr": Param(3e-3, float, "learning rate", low=0.0),
        "weight_decay": Param(0.01, float, "decoupled weight decay", low=0.0),
        "beta1": Param(0.95, float, low=0.0, high=1.0),
        "beta2": Param(0.95, float, low=0.0, high=1.0),
        "shampoo_beta": Param(None, float, "decay of the preconditioner statistics (none = beta2)",
                              low=0.0, high=1.0, optional=True),
        "precondition_frequency": Param(10, int, "steps between eigenbasis updates", low=1),
        "max_precondition_dim": Param(10000, int, "larger sides are not preconditioned", low=1),
        "eps": Param(1e-8, float, low=0.0),
    }

    @classmethod
    def state_count(cls, hp, facts):
        """pytorch_optimizer.SOAP's state, tensor by tensor (its init_pre_conditioner, with
        merge_dims and precondition_1d off as here): exp_avg and exp_avg_sq, and for each side
        of at most max_precondition_dim of a 2-D or larger tensor its statistics GG and
        eigenbasis Q (two side x side matrices); 1-D tensors get none."""
        if not facts.trainable_shapes:
            return super().state_count(hp, facts)
        total = 0
        for _, shape in facts.trainable_shapes:
            total += 2 * math.prod(shape)
            if len(shape) > 1:
                total += sum(2 * side * side for side in shape if side <= hp["max_precondition_dim"])
        return total

    def torch_optimizer(self, param_groups):
        from pytorch_optimizer import SOAP as Library

        return Library(param_groups, lr=self.hp["lr"], betas=(self.hp["beta1"], self.hp["beta2"]),
                       shampoo_beta=self.hp["shampoo_beta"], weight_decay=self.hp["weight_decay"],
                       precondition_frequency=self.hp["precondition_frequency"],
                       max_precondition_dim=self.hp["max_precondition_dim"], eps=self.hp["eps"])
