"""The problem contract: base classes of the problem kinds (DESIGN.md, "Problem kinds").

A problem is constructed cheaply from its hyperparameters (`check` validates
inputs without allocating), then `build` allocates models and data on the
device. Everything an optimizer or the engine needs from a problem is declared
here (class attributes with defaults, methods), so an optimizer of a kind works
on every problem of that kind and nothing is probed with getattr.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from harness.costs import StepCost
from harness.params import Param
from harness.seeding import derive_seed


class Problem:
    KINDS: tuple[str, ...] = ()
    # Methods whose time the runner counts as objective time (the rest of a step is
    # the optimizer's own overhead: ask/tell, sampling, model fitting).
    OBJECTIVE_METHODS: tuple[str, ...] = ()
    PARAMS: dict[str, Param] = {}
    METRIC = "metric"              # name of the eval metric
    METRIC_HIGHER_IS_BETTER = True
    # The key of evaluate()'s dict that hyperparameter tuning (`tune`) selects on: the
    # metric on a validation split disjoint from the metric's own (test) split, oriented
    # like the metric. None: no validation split; tuning then selects on the metric.
    VALIDATION_KEY: str | None = None
    EVAL_EVERY = 10                # default eval interval, in steps
    # Modules it imports lazily when built (counted in the planner's framework RSS).
    RUNTIME_IMPORTS: tuple[str, ...] = ()
    # The paper, data set or library this problem follows (shown by `describe`); "" = none.
    REFERENCE: str = ""
    # --set values that keep a conformance test (tests/) of this problem, and of every
    # optimizer on it, to seconds: smaller training budgets, a tiny offline world. {}: its
    # defaults are small enough.
    SMOKE_SETTINGS: dict[str, Any] = {}
    # Hyperparameters that pick one trial of the same problem (bbob: the COCO instance):
    # reports pool runs that differ only in these, as they pool seeds.
    TRIAL_PARAMS: tuple[str, ...] = ()

    def __init__(self, name: str, hparams: dict[str, Any], seed: int):
        self.name = name
        self.hp = hparams
        self.seed = seed
        self.device = torch.device("cpu")

    # -- lifecycle -----------------------------------------------------------
    def attach_run_dir(self, run_dir) -> None:
        """Called by the runner before build() with the run's directory (which holds
        config.json), for problems that leave their own files there (bbob: COCO data).
        Default: nothing. Problems built outside a run never get it."""

    @classmethod
    def check_run_dir(cls, run_dir) -> None:
        """Refuse (UsageError) a run directory in which this problem could not write its own
        files, before the run starts (bbob: COCO's path limit). Default: any directory."""

    def check(self) -> None:
        """Validate inputs without allocating (raise UsageError); default: nothing."""

    def build(self, device: torch.device) -> None:
        self.device = device

    def evaluate(self, solution: Any = None) -> dict[str, float]:
        """Eval metrics of the optimizer's current solution; must include 'metric'."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def param_count(self) -> int | None:
        """Parameters of the model, if the problem has one (without allocating)."""
        return None

    def step_cost(self, step: int) -> StepCost:
        """What one forward of step `step` costs (harness.costs): tokens of the step's
        batch and FLOPs of one forward over it. Default: unknown (no tokens, no flops)."""
        return StepCost()


class WeightsProblem(Problem):
    """A torch module, a deterministic batch stream, a loss, an eval metric."""

    KINDS = ("weights",)
    model: torch.nn.Module | None = None     # set by build()
    # True when sample_losses is implemented (batched member scoring: eggroll).
    SAMPLE_LOSSES: bool = False

    def trainable(self) -> list[tuple[str, torch.nn.Parameter]]:
        """The tensors weight-space optimizers change (in a fixed order)."""
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def batch(self, step: int) -> Any:
        """The training batch of one step; a pure function of (problem seed, step)."""
        raise NotImplementedError

    def loss(self, batch: Any) -> torch.Tensor:
        """Mean loss of self.model on batch (scalar tensor, differentiable)."""
        raise NotImplementedError

    def micro_batches(self, batch: Any) -> list[tuple[Any, float]]:
        """The batch as [(piece, weight)] with weights summing to 1, for gradient
        accumulation when a whole batch does not fit one forward+backward. Default: one piece."""
        return [(batch, 1.0)]

    def sample_losses(self, batch: Any) -> torch.Tensor:
        """Per-sample losses [n] of self.model on batch in ONE forward over all its rows
        (their mean is loss(batch) up to float rounding). Batched population methods
        (eggroll) score K members in one forward of stack_batch(batch, K) through it.
        Default: not offered (SAMPLE_LOSSES False)."""
        raise NotImplementedError(f"{self.name} offers no per-sample loss")

    def stack_batch(self, batch: Any, k: int) -> Any:
        """batch repeated k times along dim 0, member-major: rows [m n, (m + 1) n) are copy m."""
        if isinstance(batch, torch.Tensor):
            return batch.repeat(k, *([1] * (batch.dim() - 1)))
        if isinstance(batch, (tuple, list)):
            return type(batch)(self.stack_batch(b, k) for b in batch)
        if isinstance(batch, dict):
            return {key: self.stack_batch(v, k) for key, v in batch.items()}
        return batch

    def micro_batches_per_step(self) -> int:
        """How many micro-batches (example_batch) one step's batch holds, without building
        anything: the planner scales one micro-batch's activations by it. Default 1."""
        return 1

    def meta_model(self) -> torch.nn.Module | None:
        """The model as build() would make it (shapes, dtypes, trainable flags) on the
        meta device, allocating nothing; used by the memory planner. None: not plannable."""
        return None

    def example_batch(self, device: torch.device) -> Any:
        """One micro-batch shaped as loss() sees it, on `device` (meta for planning);
        its content does not matter, only shapes and dtypes."""
        raise NotImplementedError

    def batch_tokens(self, batch: Any) -> int | None:
        """Tokens in a batch (token problems); None: not a token problem (default)."""
        return None

    def forward_flops(self, batch: Any) -> float | None:
        """Analytic FLOPs of one forward of the model over `batch` (see
        harness.costs.transformer_forward_flops); None: not declared (default)."""
        return None

    def step_cost(self, step: int) -> StepCost:
        tokens_declared = type(self).batch_tokens is not WeightsProblem.batch_tokens
        flops_declared = type(self).forward_flops is not WeightsProblem.forward_flops
        if not (tokens_declared or flops_declared):
            return StepCost()   # nothing declared: no need to draw the batch
        batch = self.batch(step)
        return StepCost(self.batch_tokens(batch), self.forward_flops(batch))

    def batch_generator(self, step: int) -> torch.Generator:
        g = torch.Generator(device="cpu")
        g.manual_seed(derive_seed(self.seed, "batch", step))
        return g

    def shard_units(self) -> list[torch.nn.Module]:
        """The submodules FSDP shards as one group each (a transformer's decoder layers);
        the root takes the rest. Default: none (the whole model is one group)."""
        return []

    def state_dict(self) -> dict:
        from harness import fsdp

        if fsdp.is_sharded(self.model):   # a collective: whole tensors, as an unsharded run stores them
            return {"model": fsdp.full_model_state(self.model)}
        # No clone: the checkpoint is written before the next step changes the weights,
        # and a clone of CPU weights would double the run's peak memory at every checkpoint.
        return {"model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        from harness import fsdp

        if fsdp.is_sharded(self.model):
            fsdp.load_full_model_state(self.model, state["model"])
            return
        self.model.load_state_dict(state["model"])

    def param_count(self) -> int | None:
        if self.model is None:
            return None
        return sum(p.numel() for p in self.model.parameters())


class ExpertsProblem(WeightsProblem):
    """Weights plus a population of expert adapters (the GENOME setting): the trainable
    tensors are one adapter; experts, the adapter in place and its accuracy are exposed
    so that population methods never copy the base model."""

    KINDS = ("weights", "experts")

    def expert_adapters(self) -> list[list[torch.Tensor]]:
        """Every expert's adapter tensors, in trainable() order."""
        raise NotImplementedError

    def set_adapter(self, tensors: list[torch.Tensor]) -> None:
        """Copy `tensors` (trainable() order) into the model's adapter."""
        raise NotImplementedError

    def accuracy(self, split: str = "val") -> float:
        """Accuracy of the model with its current adapter on a split ("val" is fitness)."""
        raise NotImplementedError

    def sample_scores(self, split: str = "val") -> torch.Tensor:
        """Per-sample score (1 solved, 0 not) of the current adapter on a split, every
        task's samples in one fixed order: the resources of fitness sharing (m2n2)."""
        raise NotImplementedError


class SearchSpaceProblem(Problem):
    """A typed space and objective(config) -> float to minimise."""

    KINDS = ("search-space",)
    OBJECTIVE_METHODS = ("objective", "objective_encoded")
    OPTIMUM: float | None = None    # known optimal objective value, if any
    EVAL_EVERY = 1

    space: "Space"  # noqa: F821  (harness.space.Space)

    def objective(self, config: dict[str, Any]) -> float:
        raise NotImplementedError

    def objective_encoded(self, x) -> float:
        """The objective at a point of the encoded box (what cma and random hold). A problem
        whose objective is a function of that vector overrides this and skips the dict."""
        return self.objective(self.space.decode(x))

    def step_cost(self, step: int) -> StepCost:
        """One forward = one objective evaluation: the flops axis counts evaluations."""
        return StepCost(flops_per_forward=1.0)

    def evaluate(self, solution: Any = None) -> dict[str, float]:
        """Default: the metric is the objective of the best configuration."""
        if solution is None:
            return {}
        return {"metric": float(self.objective(solution))}


@dataclass
class Pruned:
    """A pruning optimizer's solution: one boolean keep-mask per prunable tensor (in the
    order of PruningProblem.prunable()) and, optionally, one multiplier per tensor applied
    to its surviving weights (energy compensation): a float, or a tensor broadcastable to
    the tensor (per output neuron); None means 1 everywhere."""

    masks: list[torch.Tensor]
    scales: list[float | torch.Tensor] | None = None


class PruningProblem(Problem):
    """A trained model, a sparsity target and a score of the masked model.

    `prunable()` gives the trained weight tensors that may be pruned (read only);
    `sparsity` is the global fraction of their entries a solution must remove;
    `loss(pruned)` is what optimizers minimise (e.g. 1 - validation F1) and
    `evaluate(pruned)` reports the held-out metric of the masked model."""

    KINDS = ("pruning",)
    OBJECTIVE_METHODS = ("loss",)
    # True when batch() and masked_loss() are implemented (gradient-based mask learning:
    # softmask); optimizers that need them refuse other problems in check_problem.
    DIFFERENTIABLE: bool = False
    sparsity: float

    def prunable(self) -> list[tuple[str, torch.Tensor]]:
        raise NotImplementedError

    def keep_count(self) -> int:
        """Entries a solution keeps: round((1 - sparsity) * total), the exact budget."""
        total = sum(w.numel() for _, w in self.prunable())
        return int(round((1.0 - self.sparsity) * total))

    def loss(self, pruned: Pruned) -> float:
        raise NotImplementedError

    def batch(self, step: int) -> Any:
        """A training minibatch, a pure function of (problem seed, step). Default: not
        offered (DIFFERENTIABLE False)."""
        raise NotImplementedError(f"{self.name} offers no training batches")

    def masked_loss(self, weights: list[torch.Tensor], batch: Any) -> torch.Tensor:
        """Mean training loss (scalar, differentiable in `weights`) of the trained model with
        its prunable tensors replaced by `weights` (prunable() order and shapes); the
        trained tensors themselves are not changed. Default: not offered."""
        raise NotImplementedError(f"{self.name} offers no differentiable masked loss")
