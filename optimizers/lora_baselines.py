"""Baselines of the GENOME comparison on lora-* problems: the best single expert and
the uniform merge of all experts (the paper's "best single" and expert-fusion rows).

Both do their whole job in the first step (scoring each expert, or the merge, on the
validation samples) and nothing afterwards (evals 0), so any --steps >= 1 gives the
same result. Logged loss = 1 - validation accuracy of the chosen adapter.
"""

from __future__ import annotations

import torch

from harness.optimizer import Optimizer, StepResult
from harness.registry import register_optimizer


class _ExpertBaseline(Optimizer):
    PARAMS: dict = {}

    def setup(self) -> None:
        self.chosen, self.val, self.info = None, None, {}

    def choose(self) -> tuple[list[torch.Tensor], float, int, dict]:
        raise NotImplementedError

    def step(self, step: int) -> StepResult:
        evals = 0
        if self.chosen is None:
            self.chosen, self.val, evals, self.info = self.choose()
        self.problem.set_adapter(self.chosen)
        return StepResult(loss=1.0 - self.val, evals=evals, forwards=evals,
                          extra={"val_accuracy": self.val, **self.info})

    def state_dict(self) -> dict:
        return {"chosen": self.chosen, "val": self.val, "info": self.info}

    def load_state_dict(self, state: dict) -> None:
        self.chosen, self.val, self.info = state["chosen"], state["val"], state["info"]
        if self.chosen is not None:
            self.problem.set_adapter(self.chosen)


@register_optimizer("best-expert", kinds=["experts"],
                    description="baseline: the single expert adapter with the best validation accuracy "
                                "(lora-* problems)")
class BestExpert(_ExpertBaseline):
    REFERENCE = "the 'best single expert' baseline of GENOME, arXiv 2503.01155"
    def choose(self):
        experts = self.problem.expert_adapters()
        scores = []
        for x in experts:
            self.problem.set_adapter(x)
            scores.append(float(self.problem.accuracy("val")))
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))  # ties: the first
        return experts[best], scores[best], len(experts), {"expert": best}


@register_optimizer("uniform-merge", kinds=["experts"],
                    description="baseline: the element-wise mean of all expert adapters (lora-* problems)")
class UniformMerge(_ExpertBaseline):
    REFERENCE = "the uniform expert-merge baseline of GENOME, arXiv 2503.01155"
    def choose(self):
        experts = self.problem.expert_adapters()
        merged = [sum(ts) / len(ts) for ts in zip(*experts)]
        self.problem.set_adapter(merged)
        return merged, float(self.problem.accuracy("val")), 1, {"experts": len(experts)}
