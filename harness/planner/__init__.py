"""Predicted peak memory of a run, before anything is allocated.

  tracing     the problem's model on the meta device: sizes and activation peaks (ModelFacts)
  framework   the measured RSS of the software stack a CPU run carries
  plan        weights + the optimizer's declared memory model + framework = the plan
  preflight   the plan against the device's memory: refuse early, say what fits
  memo        the JSON caches the first two keep between processes
"""

from harness.planner.framework import FrameworkProbe, cpu_framework_bytes, runtime_modules
from harness.planner.plan import GiB, Plan, plan, plan_run, ranks_for, ranks_needed, shard_flags
from harness.planner.preflight import alternatives, available_bytes, preflight
from harness.planner.tracing import (
    LiveBytes, ModelFacts, cached_model_facts, meta_problem, model_facts, model_facts_isolated,
)

__all__ = [
    "FrameworkProbe", "GiB", "LiveBytes", "ModelFacts", "Plan", "alternatives", "available_bytes",
    "cached_model_facts", "cpu_framework_bytes", "meta_problem", "model_facts", "model_facts_isolated",
    "plan", "plan_run", "preflight", "ranks_for", "ranks_needed", "runtime_modules", "shard_flags",
]
