"""Muon on the hidden layers' weight matrices, AdamW on everything else: torch.optim.Muon
and torch.optim.AdamW, two torch optimizers stepped as one on the backprop base.

Which parameters Muon steps follows its authors (Jordan et al.; PyTorch's Muon docs):
the 2-D weights of the hidden linear layers. The input embeddings (nn.Embedding),
the output layer (the model's last nn.Linear: the LM head, a classifier's last layer),
norms' gains and biases go to AdamW. Muon orthogonalizes each whole matrix's
momentum by Newton-Schulz iterations, so it cannot step FSDP's row shards of a
matrix: shard=fsdp is refused.
"""

from __future__ import annotations

import math

import torch

from harness.errors import UsageError
from harness.params import Param
from harness.registry import register_optimizer
from optimizers.backprop import Backprop

# torch/optim/_muon.py's _adjust_lr: "original" scales lr by sqrt(max(1, rows/cols)) (Keller
# Jordan's Muon), "match_rms_adamw" by 0.2 sqrt(max(rows, cols)) (Moonshot's, Liu et al. 2025)
ADJUST_LR_FNS = ("original", "match_rms_adamw")


def hidden_matrices(model: torch.nn.Module, names: list[str]) -> list[bool]:
    """For each trainable parameter name: True when it is a hidden linear layer's weight
    (every nn.Linear's weight but the last nn.Linear's, which is the output layer)."""
    return _hidden([name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)], names)


def _hidden(linears: list[str], names: list[str]) -> list[bool]:
    hidden = {f"{name}.weight" if name else "weight" for name in linears[:-1]}
    return [name in hidden for name in names]


@register_optimizer("muon", kinds=["weights"],
                    description="Muon on hidden matrices + AdamW on the rest (torch.optim.Muon)")
class Muon(Backprop):
    REFERENCE = ("Muon: K. Jordan et al., Muon: An optimizer for hidden layers in neural networks "
                 "(2024, kellerjordan.github.io/posts/muon); match_rms_adamw: Liu et al., Muon is "
                 "Scalable for LLM Training, arXiv:2502.16982; library: torch.optim.Muon + torch.optim.AdamW")
    NOT_SHARDABLE = "muon orthogonalizes whole matrices (Newton-Schulz), which FSDP splits over ranks"
    # Muon's momentum buffer (1) on the hidden matrices, AdamW's two moments on the rest
    # (state_count, from the planner's facts); 2 is the bound used where they are unknown
    STATES_PER_PARAM = 2
    # torch's Muon steps matrix by matrix (foreach raises "not supported"): a few bf16/fp32
    # copies of one matrix at a time; the AdamW part is foreach on CUDA (sqrt(v), 1 per
    # parameter it steps). 1 per parameter bounds both (read from torch/optim, not measured)
    STEP_TEMPORARIES_PER_PARAM = 1
    PARAMS = {
        "lr": Param(0.02, float, "Muon's learning rate (hidden matrices), before adjust_lr_fn", low=0.0),
        "adam_lr": Param(3e-3, float, "AdamW's learning rate (embeddings, output layer, gains, biases)",
                         low=0.0),
        "weight_decay": Param(0.0, float, "decoupled weight decay, for both", low=0.0),
        "momentum": Param(0.95, float, "Muon's momentum", low=0.0, high=1.0),
        "nesterov": Param(True, bool, "Nesterov momentum in Muon"),
        "ns_steps": Param(5, int, "Newton-Schulz iterations", low=1, high=99),
        "adjust_lr_fn": Param("original", str, "Muon's per-matrix lr scaling (torch.optim.Muon)",
                              choices=ADJUST_LR_FNS),
        "beta1": Param(0.9, float, "AdamW's beta1", low=0.0, high=1.0),
        "beta2": Param(0.95, float, "AdamW's beta2", low=0.0, high=1.0),
    }

    @classmethod
    def check_hparams(cls, hp):
        if not hasattr(torch.optim, "Muon"):
            raise UsageError(f"muon needs torch.optim.Muon (torch >= 2.9); this torch is {torch.__version__}")
        super().check_hparams(hp)

    @classmethod
    def state_count(cls, hp, facts):
        if not facts.trainable_shapes:
            return super().state_count(hp, facts)
        names = [name for name, _ in facts.trainable_shapes]
        return sum((1 if hidden else 2) * math.prod(shape) for hidden, (_, shape)
                   in zip(_hidden(list(facts.linear_modules), names), facts.trainable_shapes))

    def torch_optimizer(self, param_groups):
        params = param_groups[0]["params"]
        hidden = hidden_matrices(self.problem.model, self.param_names)
        muon = [p for p, h in zip(params, hidden) if h]
        rest = [p for p, h in zip(params, hidden) if not h]
        opts = [torch.optim.Muon(muon, lr=self.hp["lr"], weight_decay=self.hp["weight_decay"],
                                 momentum=self.hp["momentum"], nesterov=self.hp["nesterov"],
                                 ns_steps=self.hp["ns_steps"], adjust_lr_fn=self.hp["adjust_lr_fn"])] if muon else []
        if rest:
            opts.append(torch.optim.AdamW(rest, lr=self.hp["adam_lr"], betas=(self.hp["beta1"], self.hp["beta2"]),
                                          weight_decay=self.hp["weight_decay"]))
        return opts
