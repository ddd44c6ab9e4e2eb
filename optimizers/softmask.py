"""softmask: gradient-based soft-mask pruning of a trained network (pruning kind).

The seed paper 003's gradient baseline "SoftMask", in the form of Continuous
Sparsification (Savarese, Silva & Maire, "Winning the Lottery with Continuous
Sparsification", NeurIPS 2020, arXiv:1912.04427): every prunable weight w gets
a learnable logit s, the network runs with w * sigmoid(beta * s), and the
logits are trained by gradient descent on the training loss plus a sparsity
penalty while the temperature 1/beta is annealed towards 0, so that the soft
mask hardens into a 0/1 mask. The trained weights stay frozen (the problem's
metric is "no retraining", as for magnitude and synflow). Soft Threshold
Weight Reparameterization (STR, Kusupati et al., ICML 2020, arXiv:2002.03231)
is the other well-known learnable-sparsity method; it learns per-layer
thresholds on |w| and trains the weights too, so it is not this one.

Choices (each a --set parameter):
- mask: m = sigmoid(beta * s) elementwise, the network runs with w * m.
- sparsity penalty (`penalty_form`): `target` (default) adds
  `penalty` * |mean(m) - d|, d = 1 - sparsity, which pulls the soft density
  to the budget's density; `l1` adds `penalty` * mean(m), CS's L1 penalty
  on the mask (divided by the number of prunable weights so one value suits
  every network size). With `l1` the density the soft mask settles at is
  set by `penalty` alone, not by the budget (measured: about 12% with
  penalty 1 and 2-3% with penalty 50, at 50% and at 98% sparsity alike):
  with a weak penalty the soft net keeps about 12% of the weights on, and
  the top 2% of its logits were never trained to work alone (98%, seed 0:
  F1 0.295 with l1/penalty 1 against 0.866 with target/penalty 50;
  docs/seed003.md has the commands);
  `target` brings the soft density to the budget's.
- temperature annealing: beta goes from `beta0` to `beta_final`
  exponentially over `steps` AdamW steps (CS raises beta exponentially
  during training), so the soft mask hardens.
- init (`init`): `magnitude` (default): s = (log|w| - log t) / std(log|w|),
  t the k-th largest |w|, so at the start the mask is above 1/2 exactly on
  magnitude pruning's top-k and learning moves weights across it;
  `constant`: s = `s0` everywhere (CS's s_init), the ranking then comes from
  the gradients alone.
- optimizer: torch.optim.AdamW on the logits (lr `lr`, no weight decay), one
  training minibatch (problem.batch(step)) per step. Unlike magnitude and
  synflow (data free) and synflow-cma (validation F1 as fitness), softmask
  uses gradients of the training loss.
- the exact budget: the solution is always the global top-k of the logits
  (k = problem.keep_count(), ties by position), so the sparsity is exact
  whatever density the soft mask reached; optional energy compensation as
  for magnitude and synflow.

One runner step is one AdamW step (one evaluation of the masked training
loss, 3 forward equivalents); the run finishes after `steps` steps.
"""

from __future__ import annotations

import torch

from harness.errors import UsageError
from harness.optimizer import Optimizer, StepResult
from harness.params import Param
from harness.problem import Pruned
from harness.registry import register_optimizer
from optimizers.pruning import energy_scales, split_global, top_k_mask


@register_optimizer("softmask", kinds=["pruning"],
                    description="learned soft masks (continuous sparsification: sigmoid(beta s), AdamW, "
                                "sparsity penalty, beta annealed), exact budget by top-k")
class SoftMask(Optimizer):
    REFERENCE = ("seed paper 003's SoftMask baseline, as Continuous Sparsification: Savarese, Silva & Maire, "
                 "NeurIPS 2020, arXiv:1912.04427 (weights frozen, global top-k for the exact budget)")
    RUNTIME_IMPORTS = ("torch._dynamo",)   # torch.optim's first step imports it (~70 MiB RSS)
    BACKPROP = True   # AdamW on the mask logits: on CUDA autograd's thread holds a cuBLAS workspace
    SMOKE_SETTINGS = {"steps": 3}
    PARAMS = {
        "steps": Param(400, int, "AdamW steps on the mask logits (the horizon of the beta schedule)", low=1),
        "lr": Param(0.05, float, "AdamW learning rate of the logits", low=0.0),
        "penalty": Param(50.0, float, "weight of the sparsity penalty (see penalty_form)", low=0.0),
        "beta0": Param(1.0, float, "initial inverse temperature", low=1e-6),
        "beta_final": Param(100.0, float, "final inverse temperature (exponential schedule)", low=1e-6),
        "init": Param("magnitude", str, "initial logits: magnitude (top-k of |w| starts above 1/2) or "
                      "constant (s0 everywhere)", choices=("magnitude", "constant")),
        "penalty_form": Param("target", str, "l1: penalty * mean(m) (CS); target: penalty * |mean(m) - d|, "
                              "d the budget's density", choices=("l1", "target")),
        "s0": Param(1.0, float, "the constant initial logit (init=constant)"),
        "energy_compensation": Param(False, bool, "rescale each layer's survivors to the dense layer's "
                                     "L2 norm"),
    }

    @classmethod
    def check_problem(cls, problem) -> None:
        if not problem.DIFFERENTIABLE:
            raise UsageError(f"softmask needs a differentiable masked loss, which {problem.name} does not offer")

    def setup(self) -> None:
        self.weights = [w.detach() for _, w in self.problem.prunable()]
        self.keep = self.problem.keep_count()
        flat = torch.cat([w.abs().flatten() for w in self.weights]).double()
        if self.hp["init"] == "magnitude":
            # log-magnitude centred on the k-th largest |w|, unit spread: the top-k start above 1/2
            logw = flat.clamp_min(1e-12).log()
            t = torch.topk(logw, max(self.keep, 1)).values[-1] if self.keep > 0 else logw.max() + 1
            s = (logw - t) / logw.std().clamp_min(1e-12)
        else:
            s = torch.full_like(flat, self.hp["s0"])
        self.logits = s.float().to(self.weights[0].device).requires_grad_(True)
        self.opt = torch.optim.AdamW([self.logits], lr=self.hp["lr"], weight_decay=0.0)
        self.done = 0

    def beta(self, step: int) -> float:
        n = self.hp["steps"]
        frac = step / (n - 1) if n > 1 else 1.0
        return self.hp["beta0"] * (self.hp["beta_final"] / self.hp["beta0"]) ** frac

    def step(self, step: int) -> StepResult:
        beta = self.beta(self.done)
        m = torch.sigmoid(beta * self.logits)
        masked = [w * mi for w, mi in zip(self.weights, split_global(m, [w.shape for w in self.weights]))]
        task = self.problem.masked_loss(masked, self.problem.batch(step))
        density = m.mean()
        self.opt.zero_grad(set_to_none=True)
        reg = (density - self.keep / m.numel()).abs() if self.hp["penalty_form"] == "target" else density
        (task + self.hp["penalty"] * reg).backward()
        self.opt.step()
        self.done += 1
        return StepResult(loss=float(task.detach()), evals=1, forwards=3,
                          extra={"beta": beta, "soft_density": float(density.detach())})

    def is_finished(self) -> bool:
        return self.done >= self.hp["steps"]

    def solution(self) -> Pruned | None:
        if self.done == 0:
            return None
        shapes = [w.shape for w in self.weights]
        masks = split_global(top_k_mask(self.logits.detach(), self.keep), shapes)
        scales = energy_scales(self.weights, masks) if self.hp["energy_compensation"] else None
        return Pruned(masks=masks, scales=scales)

    def state_dict(self) -> dict:
        return {"logits": self.logits.detach().clone(), "opt": self.opt.state_dict(), "done": self.done}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.logits.copy_(state["logits"])
        self.opt.load_state_dict(state["opt"])
        self.done = state["done"]
