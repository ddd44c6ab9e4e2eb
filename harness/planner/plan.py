"""The plan: predicted peak memory of an optimizer on a problem, nothing allocated.

  weights      exact bytes of every parameter and buffer of the problem's model,
               built on the meta device (shapes and dtypes only),
  optimizer    the components the optimizer's `memory_model(hp, facts)` declares
               (gradients, optimizer states, noise, activations, population...),
  framework    on CPU the measured peak RSS of a fresh interpreter that imports
               the harness and what the run imports (harness.planner.framework);
               on CUDA 0, since the harness's CUDA figure
               (`torch.cuda.max_memory_allocated`) counts tensors only,
  phases       the largest of the optimizer's `memory_phases` (held one at a time),
  cublas       on CUDA, cuBLAS's workspace: one per thread that multiplies
               matrices (the run's, and autograd's backward thread for optimizers
               that backpropagate); torch allocates it through the caching
               allocator, so max_memory_allocated counts it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import torch

from harness.errors import UsageError
from harness.planner.framework import cpu_framework_bytes, runtime_modules
from harness.planner.tracing import ModelFacts, cached_model_facts

GiB = 2**30
# torch's default cuBLAS workspace on Hopper (sm_90): 32 MiB per handle, measured on an H200
# (docs/gpu.md: every CUDA run's peak was its tensors + 32 MiB, + 64 MiB with a backward).
# Older GPUs get about 8 MiB, so this is an upper bound there; CUBLAS_WORKSPACE_CONFIG
# changes it.
CUBLAS_WORKSPACE_BYTES = 32 * 2**20


@dataclass
class Plan:
    optimizer: str
    problem: str
    device: str
    peak_bytes: int
    breakdown: dict[str, int]
    facts: ModelFacts | None
    declared: bool                    # the optimizer declares a memory model
    measured_as: str                  # what a run's peak_memory_bytes will be compared with
    notes: list[str] = field(default_factory=list)
    world_size: int = 1               # the plan is per rank of this many

    def to_json(self) -> dict:
        out = asdict(self)
        out["peak_gib"] = round(self.peak_bytes / GiB, 3)
        return out

    @property
    def tensor_bytes(self) -> int:
        """The plan without the framework figure."""
        return self.peak_bytes - self.breakdown.get("framework", 0)


def plan_run(optimizer: str, optimizer_class, hp: dict, problem, device_type: str, *,
             facts: ModelFacts | None = None, measure_framework: bool = True,
             isolated: bool = True, world_size: int = 1) -> Plan:
    """Plan of `optimizer_class` with resolved hyperparameters `hp` on a constructed (not
    built) `problem`, per rank of `world_size`. measure_framework=False uses the cached CPU
    framework figure and counts 0 when none is cached yet (the preflight's quick first look)."""
    if facts is None:
        facts = cached_model_facts(problem, device_type, isolated)
    if facts is not None and world_size != facts.world_size:
        facts = replace(facts, world_size=world_size)
    notes = []
    breakdown: dict[str, int] = {"weights": facts.weight_bytes if facts else 0}
    parts = optimizer_class.memory_model(hp, facts) if facts is not None else None
    for k, v in (parts or {}).items():   # a "weights" entry (sharded weights) replaces the whole model's
        breakdown[k] = int(v) if k == "weights" else breakdown.get(k, 0) + int(v)
    phases = optimizer_class.memory_phases(hp, facts) if facts is not None and parts is not None else None
    if phases:
        peak_phase = max(phases, key=lambda name: sum(phases[name].values()))
        for k, v in phases[peak_phase].items():
            breakdown[k] = breakdown.get(k, 0) + int(v)
        others = [f"{name} {sum(p.values()) / GiB:.2f} GiB" for name, p in phases.items() if name != peak_phase]
        notes.append(f"peak while {peak_phase}" + (f" (held at other times: {', '.join(others)})"
                                                   if others else ""))
    if facts is None:
        notes.append(f"problem {problem.name!r} gives no model to plan (no meta_model)")
    elif parts is None:
        notes.append(f"optimizer {optimizer!r} declares no memory model: "
                     "the plan counts weights and framework only (a lower bound)")
    if device_type == "cpu":
        fw = cpu_framework_bytes(runtime_modules(optimizer_class, problem, facts), measure_framework)
        breakdown["framework"] = fw or 0
        if fw is None:
            notes.append("framework RSS not measured yet (counted as 0)")
    else:
        breakdown["framework"] = 0
        if facts is not None and facts.weight_bytes:   # a torch model multiplies matrices on the device
            breakdown["cublas_workspace"] = CUBLAS_WORKSPACE_BYTES * (2 if optimizer_class.BACKPROP else 1)
    return Plan(
        optimizer=optimizer, problem=problem.name, device=device_type,
        peak_bytes=int(sum(breakdown.values())), breakdown=breakdown, facts=facts,
        declared=parts is not None,
        measured_as="peak RSS of the run's process" if device_type == "cpu"
        else "torch.cuda.max_memory_allocated (tensors only; the CUDA context is not counted)",
        notes=notes, world_size=world_size,
    )


def shard_flags(optimizer_class) -> str:
    """The optimizer's sharded settings as the --set flags a user gives ("" when none)."""
    return " ".join(f"--set {k}={v}" for k, v in optimizer_class.SHARD_SETTINGS.items())


def ranks_needed(optimizer: str, optimizer_class, hp: dict, problem, device_type: str, capacity: int, *,
                 facts: ModelFacts | None = None, max_world: int = 4096) -> int | None:
    """The fewest ranks over which the optimizer's sharded settings (SHARD_SETTINGS) plan at
    most `capacity` bytes per rank; None when it shards nothing or even `max_world` ranks
    do not fit (what every rank holds whole, e.g. activations, is too large)."""
    if not optimizer_class.SHARD_SETTINGS:
        return None
    sharded = {**hp, **optimizer_class.SHARD_SETTINGS}

    def fits(w: int) -> bool:
        return plan_run(optimizer, optimizer_class, sharded, problem, device_type, facts=facts,
                        measure_framework=False, world_size=w).peak_bytes <= capacity

    if not fits(max_world):
        return None
    low, high = 1, max_world          # the per-rank plan only shrinks as ranks are added
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if fits(mid) else (mid + 1, high)
    return low


def plan(optimizer: str, problem: str, overrides: dict | None = None, device: str = "cpu",
         seed: int = 0, world_size: int = 1) -> Plan:
    """Plan by names, per rank of `world_size`; device may be 'cuda' on a machine without
    CUDA (a prediction)."""
    from harness.spec import Prepared, RunSpec

    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UsageError(f"--device {device!r}: expected cpu or cuda")
    p = Prepared(RunSpec(optimizer=optimizer, problem=problem, seed=seed,
                         overrides=dict(overrides or {}), device="cpu"))
    device_type = torch.device(device).type
    hp = p.optimizer_class.for_device(p.opt_hp_requested, device_type, p.problem)
    return plan_run(p.spec.optimizer, p.optimizer_class, hp, p.problem, device_type, world_size=world_size)


def ranks_for(optimizer: str, problem: str, overrides: dict | None, device: str,
              capacities_gib: list[float], seed: int = 0) -> dict[float, int | None]:
    """{GiB per device: fewest ranks of that size the sharded settings need} (empty when
    the optimizer shards nothing): `plan`'s answer to "how many GPUs does this run need"."""
    from harness.spec import Prepared, RunSpec

    p = Prepared(RunSpec(optimizer=optimizer, problem=problem, seed=seed,
                         overrides=dict(overrides or {}), device="cpu"))
    if not p.optimizer_class.SHARD_SETTINGS:
        return {}
    device_type = torch.device(device).type
    facts = cached_model_facts(p.problem, device_type)
    return {gib: ranks_needed(p.spec.optimizer, p.optimizer_class, p.opt_hp, p.problem, device_type,
                              int(gib * GiB), facts=facts) for gib in capacities_gib}
