"""The optimizer contract: everything the engine reads of an adapter is declared here.

An adapter is constructed with the built problem, its resolved hyperparameters,
the run seed, the kind of problem it runs on (one of its KINDS that the problem
offers) and the run's budget; the runner calls `setup` once, then `step(k)`
for k = 0, 1, ... until the budget is spent or `is_finished()`. Everything
needed to continue bit for bit must be in `state_dict` (RNG states included):
the runner checkpoints it. Nothing here is probed with getattr: a new adapter
inherits every default below and overrides what it needs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.params import Param

if TYPE_CHECKING:
    from harness.spec import Budget


@dataclass
class StepResult:
    loss: float                 # train loss of this step (see the adapter's docstring)
    evals: int                  # objective/loss evaluations this step used
    # forward-pass equivalents of the step on its batch, a backward counting 2 (ES with
    # population N: N, MeZO: 2, Adam: 3); one objective evaluation of a search space or
    # a pruning score is one forward. The cost axis on which optimizers are compared
    # (harness.costs); every adapter fills it.
    forwards: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # sigma, lr, best-so-far, ...


class Optimizer:
    # The problem kinds it runs on; set by harness.registry.register_optimizer.
    KINDS: tuple[str, ...] = ()
    # Typed hyperparameters (--set KEY=VALUE), merged along the class hierarchy.
    PARAMS: dict[str, Param] = {}
    # True when it may run under torchrun with world size > 1 (it shards its own work).
    DISTRIBUTED: bool = False
    # The --set values that shard its state over torchrun's ranks (e.g. {"shard": "fsdp"}):
    # the planner plans those settings per rank and says how many ranks a run needs. {}: none.
    SHARD_SETTINGS: dict[str, Any] = {}
    # Modules it imports lazily once running (counted in the planner's framework RSS).
    RUNTIME_IMPORTS: tuple[str, ...] = ()
    # The paper or library this adapter implements (shown by `describe`); "" = none.
    REFERENCE: str = ""
    # Defaults it recommends per problem family, over its own, e.g. {"qwen3": {"lr": 3e-3}}:
    # applied before --set (a variant's own presets win), recorded in config.json like every
    # other default. Data keyed by problem, kept here so that a problem names no optimizer.
    PROBLEM_DEFAULTS: dict[str, dict[str, Any]] = {}
    # The hyperparameter that sets its population size, in its own library's spelling
    # (population, popsize); None: it has none. Tables that compare at one population
    # (the memory table) set it through this name.
    POPULATION_PARAM: str | None = None
    # True when it trains by backpropagation (it holds gradients): the reference against
    # which the memory table states the other optimizers' savings; on CUDA autograd's
    # backward thread holds a cuBLAS workspace of its own, which the planner counts.
    BACKPROP: bool = False
    # --set values that keep one step of the registry-wide conformance test (tests/) to a
    # fraction of a second on the smallest problem of each kind: population sizes and
    # budgets, nothing that changes what the adapter is. {}: its defaults are small enough.
    SMOKE_SETTINGS: dict[str, Any] = {}

    def __init__(self, problem, hparams: dict[str, Any], seed: int, *, kind: str,
                 budget: "Budget | None" = None):
        self.problem = problem
        self.hp = hparams
        self.seed = seed
        self.kind = kind            # the problem kind this run uses
        self.budget = budget        # steps / evals / time_s of the run; None outside a run

    # -- declared before anything is built ------------------------------------------
    @classmethod
    def check_hparams(cls, hp: dict[str, Any]) -> None:
        """Validate resolved hyperparameters beyond their Param types (raise UsageError);
        called before anything is built or written. Default: nothing."""

    @classmethod
    def check_launch(cls, hp: dict[str, Any]) -> None:
        """Refuse (UsageError) settings this process cannot run as launched, e.g. sharding
        without torchrun; called by a run before anything is written, not by `plan`
        (which plans any world size). Default: nothing."""

    @classmethod
    def for_device(cls, hp: dict[str, Any], device_type: str, problem) -> dict[str, Any]:
        """The hyperparameters with any device-dependent default settled for `device_type`
        ("cpu", "cuda") on the constructed problem: what config.json records (so a resume
        reruns the same choice). Default: unchanged."""
        return hp

    @classmethod
    def check_problem(cls, problem) -> None:
        """Refuse (UsageError) a problem of a compatible kind that still lacks something
        this optimizer needs; called on the constructed, unbuilt problem before anything
        is written. Default: nothing."""

    @classmethod
    def memory_model(cls, hp: dict[str, Any], facts) -> dict[str, int] | None:
        """Bytes per component this optimizer holds beyond the weights themselves at its
        peak, e.g. {"gradients": ..., "optimizer_states": ..., "noise": ...,
        "activations": ...}, from its hyperparameters and the problem's
        harness.planner.ModelFacts. None: not declared (the planner then counts the
        weights only and says so). Per rank: facts.world_size is the number of ranks; an
        optimizer that shards the weights returns a "weights" entry, which replaces the
        whole model's weights in the plan. What is held only part of the time goes in
        memory_phases."""
        return None

    @classmethod
    def memory_phases(cls, hp: dict[str, Any], facts) -> dict[str, dict[str, int]] | None:
        """Bytes held only during one phase of a step, {phase: {component: bytes}}, e.g.
        {"perturbing": {"noise": ...}, "forward": {"activations": ...}}: phases do not
        overlap, so the plan adds the largest phase to memory_model's components (on an
        H200 the sum over-counted ES's peak by 33-40%). None: no phases."""
        return None

    # -- the run ------------------------------------------------------------------
    def setup(self) -> None:
        """Called once after problem.build, before load_state_dict on resume."""

    def step(self, step: int) -> StepResult:
        raise NotImplementedError

    def is_finished(self) -> bool:
        """True when further steps cannot change the solution (one-shot methods such as
        magnitude pruning, a library's own termination criteria); the runner then stops
        before the budget is spent, status ok."""
        return False

    def finish_reason(self) -> str | None:
        """Why is_finished() is True, recorded as the run's reason (e.g. "converged: tolfun")."""
        return None

    def solution(self) -> Any:
        """What problem.evaluate() scores: None for weights problems (the model is the
        solution, held in place), a config dict for search spaces, masks for pruning."""
        return None

    @contextlib.contextmanager
    def evaluation(self):
        """The solution as it is to be scored, for the duration of problem.evaluate (the
        runner enters it around every evaluation, untimed): e.g. Schedule-Free's averaged
        point swapped into the model, and the training point restored on exit. Default:
        the solution as it is."""
        yield

    def collective_checkpoint(self) -> bool:
        """True when state_dict/load_state_dict (this one's and the problem's) are collectives
        every torchrun rank must call, as with FSDP-sharded weights; rank 0 still writes the
        file. Default False: rank 0 alone builds and writes the checkpoint."""
        return False

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
