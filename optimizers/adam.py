"""AdamW with backpropagation: the gradient baseline (torch.optim.AdamW).

One step = one minibatch from the problem's stream, one forward and one
backward; it counts as 1 evaluation. A problem that splits its batch into
micro-batches (`problem.micro_batches(batch)` -> [(piece, weight)]) gets one
forward/backward per piece with the gradients accumulated (weights sum to 1),
so the step sees the same data as the other optimizers.

Low-precision weights (bf16/fp16, the qwen3 default on CUDA): with
`fp32_master` (default) AdamW steps an fp32 master copy of the trainable
weights with fp32 moments, from fp32 copies of the gradients, and the model
weights are rounded from the master after each step (standard mixed
precision; a pure-bf16 AdamW would lose updates smaller than half an ulp).
On CUDA the forward runs under bf16 autocast.
"""

from __future__ import annotations

import torch

from harness.optimizer import Optimizer, StepResult
from harness.params import Param
from harness.registry import register_optimizer


@register_optimizer("adam", kinds=["weights"], description="AdamW with backprop (torch.optim.AdamW), gradient baseline")
class Adam(Optimizer):
    PARAMS = {
        "lr": Param(1e-3, float, "learning rate", low=0.0),
        "weight_decay": Param(0.0, float, "decoupled weight decay", low=0.0),
        "beta1": Param(0.9, float, low=0.0, high=1.0),
        "beta2": Param(0.999, float, low=0.0, high=1.0),
        "eps": Param(1e-8, float, low=0.0),
        "grad_clip": Param(0.0, float, "clip the gradient norm to this (0 = off)", low=0.0),
        "fp32_master": Param(True, bool, "fp32 master weights and moments when the weights are "
                             "bf16/fp16 (no effect on fp32 weights)"),
    }

    @classmethod
    def memory_model(cls, hp: dict, facts) -> dict[str, int]:
        """Bytes beyond the weights: gradients (param dtype), two AdamW moments, and the
        activations kept for the backward of one micro-batch. Under bf16/fp16 with
        fp32_master: fp32 moments, an fp32 master copy and its fp32 gradient."""
        n = facts.trainable_count
        master = facts.dtype_bytes < 4 and hp.get("fp32_master", True)
        out = {"gradients": int(facts.trainable_bytes),
               "optimizer_states": int(2 * 4 * n if master else 2 * facts.trainable_bytes),
               "activations": int(facts.backward_activation_bytes)}
        if master:
            out["master_weights"] = int(4 * n)
            out["master_gradients"] = int(4 * n)
        return out

    def setup(self) -> None:
        params = [p for _, p in self.problem.trainable()]
        dev = self.problem.device
        low_precision = any(p.dtype in (torch.bfloat16, torch.float16) for p in params)
        self.autocast = dev.type == "cuda" and low_precision
        self.params = params
        self.master = None
        if low_precision and self.hp["fp32_master"]:
            self.master = [p.detach().float().clone().requires_grad_(True) for p in params]
        self.opt = torch.optim.AdamW(
            self.master if self.master is not None else params, lr=self.hp["lr"],
            betas=(self.hp["beta1"], self.hp["beta2"]), eps=self.hp["eps"],
            weight_decay=self.hp["weight_decay"],
        )

    def step(self, step: int) -> StepResult:
        batch = self.problem.batch(step)
        self.opt.zero_grad(set_to_none=True)
        for p in self.params:
            p.grad = None
        split = getattr(self.problem, "micro_batches", None)
        pieces = split(batch) if split is not None else [(batch, 1.0)]
        loss = 0.0
        for piece, weight in pieces:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
                part = self.problem.loss(piece) * weight
            part.backward()
            loss += float(part.detach())
        if self.master is not None:
            for m, p in zip(self.master, self.params):
                m.grad = None if p.grad is None else p.grad.float()
                p.grad = None
        stepped = self.master if self.master is not None else self.params
        if self.hp["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(stepped, self.hp["grad_clip"])
        self.opt.step()
        if self.master is not None:
            with torch.no_grad():
                for m, p in zip(self.master, self.params):
                    p.copy_(m)
        return StepResult(loss=float(loss), evals=1, extra={"lr": self.hp["lr"]})

    def state_dict(self) -> dict:
        out = {"adam": self.opt.state_dict()}
        if self.master is not None:  # the model holds only the rounded weights
            out["master"] = [m.detach().cpu().clone() for m in self.master]
        return out

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state["adam"])
        if self.master is not None and "master" in state:
            with torch.no_grad():
                for m, saved in zip(self.master, state["master"]):
                    m.copy_(saved)
