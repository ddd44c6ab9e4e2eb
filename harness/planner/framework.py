"""The framework part of a CPU run's peak RSS: what the process holds before any model
exists (interpreter, torch, the harness and what the run imports), measured once per
software stack in a fresh interpreter and cached."""

from __future__ import annotations

import os
import subprocess
import sys

from harness.planner.memo import JsonMemo, stack_key

_BASELINE_SCRIPT = """
import importlib, io, sys, torch
from harness import registry
from harness.memory import cpu_peak_rss_bytes
registry.load_all()
for name in sys.argv[1:]:  # what the problem and optimizer import when they build
    importlib.import_module(name)
# first ops start torch's thread pools and allocator; a checkpoint imports the serializer
lin = torch.nn.Linear(64, 64)
lin(torch.randn(8, 64)).sum().backward()
torch.save({"w": lin.weight}, io.BytesIO())
print(cpu_peak_rss_bytes())
"""

FRAMEWORK = JsonMemo("framework_rss.json")


def runtime_modules(optimizer_class, problem, facts=None) -> tuple[str, ...]:
    """Modules the run imports lazily: RUNTIME_IMPORTS of the problem and optimizer
    classes, plus the modules defining the model's classes."""
    mods = set(problem.RUNTIME_IMPORTS) | set(optimizer_class.RUNTIME_IMPORTS)
    if facts is not None:
        mods |= set(facts.model_modules)
    return tuple(sorted(mods))


class FrameworkProbe:
    """The framework RSS measurement, started in the background (a subprocess) so the
    caller can trace models meanwhile; result() waits and caches it.
    HARNESS_FRAMEWORK_BYTES overrides the measurement."""

    def __init__(self, modules: tuple[str, ...], start: bool = True):
        self.modules = tuple(sorted(set(modules)))
        self.key = stack_key() + "|" + ",".join(self.modules)
        self.cached = FRAMEWORK.get(self.key, None)
        self.proc = None
        if os.environ.get("HARNESS_FRAMEWORK_BYTES"):
            self.cached = int(os.environ["HARNESS_FRAMEWORK_BYTES"])
        if self.cached is None and start:
            root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                filter(None, [root, os.environ.get("PYTHONPATH")])))
            self.proc = subprocess.Popen([sys.executable, "-c", _BASELINE_SCRIPT, *self.modules],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                         cwd=root, env=env)

    def result(self) -> int:
        if self.cached is not None:
            return int(self.cached)
        if self.proc is None:
            raise RuntimeError("framework probe was not started")
        out, err = self.proc.communicate(timeout=300)
        if self.proc.returncode != 0:
            raise RuntimeError(f"measuring the framework RSS failed: {err.strip()[-300:]}")
        self.cached = int(out.strip().splitlines()[-1])
        FRAMEWORK.put(self.key, self.cached)
        return self.cached


def cpu_framework_bytes(modules: tuple[str, ...] = (), measure: bool = True) -> int | None:
    """Peak RSS of a fresh interpreter that imports the harness, every registered
    optimizer and problem, and `modules` (what this run imports when it builds),
    then runs one tiny forward/backward and a torch.save: the part of a CPU run's
    peak RSS that is not the run's own tensors. Measured once per software stack and
    module list (a subprocess, 3-8 s); with measure=False an uncached figure is None.
    """
    probe = FrameworkProbe(modules, start=measure)
    return probe.result() if measure or probe.cached is not None else None
