"""AdamW with backpropagation, the gradient baseline: torch.optim.AdamW on the backprop
family's base (optimizers/backprop.py: micro-batches, DDP/FSDP2, fp32 masters, autocast,
warmup, clipping, and the memory model of weights + gradients + two moments)."""

from __future__ import annotations

import torch

from harness.params import Param
from harness.registry import register_optimizer
from optimizers.backprop import Backprop


@register_optimizer("adam", kinds=["weights"], description="AdamW with backprop (torch.optim.AdamW), gradient baseline")
class Adam(Backprop):
    REFERENCE = ("AdamW: Loshchilov & Hutter, Decoupled Weight Decay Regularization (ICLR 2019), "
                 "arXiv:1711.05101; library: torch.optim.AdamW")
    STATES_PER_PARAM = 2   # first and second moments
    CHECKPOINT_KEY = "adam"   # the name adam's checkpoints had before the base: they still resume
    # digits: lr 1e-3 gives test F1 0.951-0.954 after 300 steps (seeds 0-2), 3e-3 gives 0.969-0.971;
    # qwen3: from short sweeps on qwen3-tiny (docs/qwen3_and_es.md)
    PROBLEM_DEFAULTS = {"digits": {"lr": 3e-3}, "qwen3": {"lr": 3e-3}}
    PARAMS = {
        "weight_decay": Param(0.0, float, "decoupled weight decay", low=0.0),
        "beta1": Param(0.9, float, low=0.0, high=1.0),
        "beta2": Param(0.999, float, low=0.0, high=1.0),
        "eps": Param(1e-8, float, low=0.0),
    }

    def torch_optimizer(self, param_groups):
        return torch.optim.AdamW(param_groups, lr=self.hp["lr"], betas=(self.hp["beta1"], self.hp["beta2"]),
                                 eps=self.hp["eps"], weight_decay=self.hp["weight_decay"])
