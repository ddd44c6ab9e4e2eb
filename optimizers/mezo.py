"""MeZO (Malladi et al. 2023): zeroth-order SGD with SPSA, in-place perturb/restore.

Step k, with z = the seeded noise of derive_seed(run seed, "mezo", k) (regenerated
tensor by tensor, never stored):
  w += eps z; l+ = loss(batch_k); w -= 2 eps z; l- = loss(batch_k); w += eps z
  g = (l+ - l-) / (2 eps);   w -= lr * (g z + weight_decay * w)
Two forward passes per step and inference-level memory. The logged loss is
(l+ + l-) / 2. Under torchrun l+ and l- are scored on ranks 0 and 1 (every rank
replays the whole perturb/restore sequence, so the weights are bit-identical to
one process's) and exchanged as two floats.
"""

from __future__ import annotations

import torch

from harness import distributed
from harness.optimizer import Optimizer, StepResult
from harness.params import Param
from harness.registry import register_optimizer
from harness.seeding import derive_seed
from optimizers._perturb import Perturber, in_place_phases


@register_optimizer("mezo", kinds=["weights"],
                    description="MeZO: SPSA zeroth-order SGD with seeded in-place perturbations")
class MeZO(Optimizer):
    REFERENCE = ("MeZO: Malladi et al., Fine-Tuning Language Models with Just Forward Passes (NeurIPS 2023), "
                 "arXiv:2305.17333")
    # torchrun: the two forwards (l+, l-) go to ranks 0 and 1, two floats are exchanged;
    # ranks beyond 2 have nothing to score (at most 2x; see docs/distributed.md)
    DISTRIBUTED = True
    PROBLEM_DEFAULTS = {"qwen3": {"lr": 1e-3, "eps": 1e-2}}   # short sweeps on qwen3-tiny (docs/qwen3_and_es.md)
    PARAMS = {
        "lr": Param(1e-3, float, "learning rate", low=0.0),
        "eps": Param(1e-3, float, "perturbation scale", low=0.0),
        "weight_decay": Param(0.0, float, "decoupled weight decay", low=0.0),
    }

    @classmethod
    def memory_model(cls, hp: dict, facts) -> dict[str, int]:
        """Nothing is held for the whole step beyond the weights: see memory_phases."""
        return {}

    @classmethod
    def memory_phases(cls, hp: dict, facts) -> dict[str, dict[str, int]]:
        return in_place_phases(facts)

    def setup(self) -> None:
        self.pert = Perturber(self.problem.trainable())

    @torch.no_grad()
    def step(self, step: int) -> StepResult:
        eps, lr = self.hp["eps"], self.hp["lr"]
        seed = derive_seed(self.seed, "mezo", step)
        batch = self.problem.batch(step)

        def score(indices):
            # Every rank walks the same +eps, -2eps, +eps sequence (so its weights stay
            # bit-identical to one process's) and runs only the forwards it owns:
            # member 0 = l+, member 1 = l-.
            out, offset = {}, eps
            self.pert.add(seed, eps)
            try:
                if 0 in indices:
                    out[0] = float(self.problem.loss(batch))
                self.pert.add(seed, -2 * eps)
                offset = -eps
                if 1 in indices:
                    out[1] = float(self.problem.loss(batch))
            finally:
                self.pert.add(seed, -offset)  # restore, wherever an error left the weights
            return [out[i] for i in indices]

        # one process: both forwards here; torchrun: l+ on rank 0, l- on rank 1 (others idle)
        l_plus, l_minus = distributed.evaluate_population(2, score, self.problem.device)
        loss = 0.5 * (l_plus + l_minus)
        grad = (l_plus - l_minus) / (2 * eps)
        if torch.isfinite(torch.tensor(grad)):
            if self.hp["weight_decay"] > 0:
                for p in self.pert.params:
                    p.mul_(1 - lr * self.hp["weight_decay"])
            self.pert.combine([seed], [-lr * grad])
        return StepResult(loss=loss, evals=2, forwards=2, extra={"lr": lr, "projected_grad": grad})
