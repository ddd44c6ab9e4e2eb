"""The preflight: refuse a run whose planned peak does not fit on its device (exit 3),
before anything is allocated or written, and say what would fit instead."""

from __future__ import annotations

import os

import torch

from harness.errors import PreflightError
from harness.planner.plan import GiB, Plan, plan_run, ranks_needed, shard_flags
from harness.planner.tracing import FACTS, cached_model_facts, facts_key, meta_problem


def available_bytes(device: torch.device) -> tuple[int, str]:
    """(bytes the run can still use, what that figure is)."""
    from harness.faults import available_bytes_override

    pretend = available_bytes_override()
    if pretend is not None:   # test hook: pretend a smaller machine
        return pretend, "available (HARNESS_TEST_AVAILABLE_BYTES)"
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free), f"free on {torch.cuda.get_device_name(device)}"
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available system RAM"
    except OSError:
        pass
    pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(pages), "free system RAM"


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB / 10 else f"{n / 2**20:.0f} MiB"


def alternatives(optimizer: str, hp: dict, problem, kind: str, plan_: Plan, budget: int,
                 framework: int = 0) -> list[str]:
    """What would fit in `budget` bytes: other optimizers of this kind on this problem
    (their defaults), the largest smaller size of the same family (this optimizer's
    settings). Traces in this process (the run is refused). On CPU every alternative
    is counted with this run's framework figure."""
    from harness import registry
    from harness.pair import resolve_pair

    def peak(p: Plan) -> int:
        return p.tensor_bytes + framework

    fits = []
    for name, entry in sorted(registry.OPTIMIZERS.items()):
        if name == optimizer or kind not in entry.kinds:
            continue
        try:
            other_hp = resolve_pair(entry, registry.ProblemEntry.of(problem)).resolve({}).optimizer
            p = plan_run(name, entry.factory, other_hp, problem, plan_.device, facts=plan_.facts,
                         measure_framework=False)
        except Exception:  # an optimizer that cannot plan is simply not suggested
            continue
        if p.declared and peak(p) <= budget:
            fits.append(f"--optimizer {name} ({_gib(peak(p))})")
    family = registry.problem(problem.name).family if problem.name in registry.PROBLEMS else ""
    if not family:
        return fits
    own = plan_.facts.param_count if plan_.facts else 0
    sizes = []
    for name, entry in registry.PROBLEMS.items():
        if entry.family != family or name == problem.name:
            continue
        try:
            other = entry.create()
            count = other.param_count()
        except Exception:
            continue
        if count is not None and count < own:
            sizes.append((count, name, other))
    per_weight = plan_.facts.weight_bytes / max(own, 1)
    opt_class = registry.optimizer(optimizer).factory
    for count, name, other in sorted(sizes, key=lambda s: -s[0]):
        if count * per_weight + framework > budget:  # its weights alone do not fit
            continue
        p = plan_run(optimizer, opt_class, hp, other, plan_.device, measure_framework=False,
                     isolated=False)
        if peak(p) <= budget:
            fits.append(f"--problem {name} ({_gib(peak(p))})")
            break
    return fits


def preflight(optimizer: str, optimizer_class, hp: dict, problem, device: torch.device,
              kind: str) -> Plan | None:
    """Raise PreflightError (exit 3) when the planned peak exceeds the device's memory."""
    have, what = available_bytes(device)
    device_type = device.type
    # Weights alone over the limit: refused whatever the rest, so trace in this process
    # (no fork; the model code is imported once for the alternatives too).
    isolated, shadow = True, None
    if facts_key(problem, device_type) not in FACTS:
        shadow = meta_problem(problem, device_type)
        if shadow is not None:
            weights = sum(t.numel() * t.element_size()
                          for t in list(shadow.model.parameters()) + list(shadow.model.buffers()))
            isolated = weights <= have
    facts = cached_model_facts(problem, device_type, isolated, shadow)
    del shadow

    from harness import distributed

    world = distributed.world_size()   # under torchrun the plan is per rank

    def plan_now(measure: bool) -> Plan:
        return plan_run(optimizer, optimizer_class, hp, problem, device_type, facts=facts,
                        measure_framework=measure, world_size=world)

    plan_ = plan_now(False)
    if plan_.facts is None:
        return plan_
    # Measuring the CPU framework figure takes seconds: only when it decides.
    if plan_.peak_bytes + 2 * GiB <= have:
        return plan_
    if plan_.peak_bytes <= have:
        plan_ = plan_now(True)
        if plan_.peak_bytes <= have:
            return plan_
    # Refused. Say what would fit; an unmeasured framework figure is not waited for
    # (seconds) but counted as 0, and the need is then stated as a lower bound.
    framework = plan_.breakdown.get("framework", 0)
    unknown_fw = plan_.device == "cpu" and framework == 0
    fits = alternatives(optimizer, hp, problem, kind, plan_, have, framework)
    if device_type == "cuda":   # one device per rank: say how many devices like this one it needs
        ranks = ranks_needed(optimizer, optimizer_class, hp, problem, device_type, have, facts=facts)
        if ranks is not None and ranks > 1:
            fits.insert(0, f"{shard_flags(optimizer_class)} under torchrun --nproc_per_node {ranks} "
                           f"({ranks} devices like this one)")
    if unknown_fw:
        fits = [f.replace(")", " + framework)") for f in fits]
    hint = ("; would fit: " + ", ".join(fits)) if fits else "; nothing smaller of this family fits either"
    lower = "" if plan_.declared and not unknown_fw else " at least"
    what_peak = "planned tensors, framework RSS not measured yet" if unknown_fw else "planned peak"
    raise PreflightError(
        f"{optimizer} on {problem.name} needs{lower} {_gib(plan_.peak_bytes)} "
        f"({what_peak} on {plan_.device}) but only {_gib(have)} is {what}{hint}; "
        f"--force runs it anyway")
