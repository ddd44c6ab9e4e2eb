"""The run's state: what the loop carries from step to step, checkpointed whole."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from harness.costs import StepCost
from harness.optimizer import StepResult


@dataclass
class RunState:
    """Everything the loop carries from step to step; checkpointed whole."""

    step: int = 0
    evals: int = 0
    time_s: float = 0.0          # optimizer wall-clock: inside step() only
    wall_s: float = 0.0          # the whole run: evaluations and checkpoints included
    objective_s: float = 0.0     # of time_s: inside the problem's OBJECTIVE_METHODS
    overhead_s: float = 0.0      # of time_s: the rest (ask/tell, sampling, model fitting)
    best_loss: float | None = None
    last_loss: float | None = None
    last_metric: float | None = None
    metrics: list = field(default_factory=list)     # every eval metric so far
    # cost axes (harness.costs), optimizer work only: cumulative over the steps
    forwards: float = 0.0        # forward-pass equivalents, a backward counting 2
    tokens: int | None = None    # tokens of the steps' batches (token problems)
    flops: float | None = None   # forwards x FLOPs of one forward (search spaces: evaluations)

    def advance(self, res: StepResult, seconds: float, objective: float | None,
                cost: StepCost | None = None, peak_flops: float | None = None) -> dict:
        """Count one optimizer step; its metrics record."""
        self.step += 1
        self.evals += int(res.evals)
        self.time_s += seconds
        self.forwards += res.forwards
        if cost is not None and cost.tokens is not None:
            self.tokens = (self.tokens or 0) + int(cost.tokens)
        if cost is not None and cost.flops_per_forward is not None:
            self.flops = (self.flops or 0.0) + res.forwards * cost.flops_per_forward
        self.last_loss = loss = float(res.loss)
        if math.isfinite(loss) and (self.best_loss is None or loss < self.best_loss):
            self.best_loss = loss
        record = {"step": self.step, "evals": self.evals, "time_s": round(self.time_s, 6), "loss": loss}
        record.update(self.costs(peak_flops))
        if objective is not None:   # problems that declare OBJECTIVE_METHODS
            self.objective_s += objective
            self.overhead_s += seconds - objective
            record.update(objective_s=round(self.objective_s, 6), overhead_s=round(self.overhead_s, 6))
        record.update(res.extra)
        return record

    def costs(self, peak_flops: float | None = None) -> dict:
        """The cumulative cost axes that are known: forwards, tokens, flops, mfu (CUDA)."""
        out = {"forwards": self.forwards}
        if self.tokens is not None:
            out["tokens"] = self.tokens
        if self.flops is not None:
            out["flops"] = self.flops
            if peak_flops and self.time_s > 0:
                out["mfu"] = self.flops / self.time_s / peak_flops
        return out

    def evaluated(self, ev: dict) -> dict:
        self.last_metric = ev.get("metric")
        self.metrics.append(self.last_metric)
        return ev
