"""Predicted peak memory of a run, before anything is allocated.

The plan is the sum of
  weights      exact bytes of every parameter and buffer of the problem's model,
               built on the meta device (shapes and dtypes only),
  optimizer    the components the optimizer's `memory_model(hp, facts)` declares
               (gradients, optimizer states, noise, activations, population...),
  framework    what the process holds before any model exists: on CPU the
               measured peak RSS of a fresh interpreter that imports the harness
               and every registered optimizer and problem (measured once per
               software stack and cached); on CUDA 0, since the harness's CUDA
               figure (`torch.cuda.max_memory_allocated`) counts tensors only.

Activation bytes come from tracing one micro-batch of the problem's own
`loss` on the meta device (see `LiveBytes`): the forward peak under no_grad
for inference-only optimizers, and the peak of forward+backward (gradients
of the weights excluded: the optimizer's model counts those) for gradient
optimizers. Attention is traced as the fused kernel the real run uses (flash
attention on CPU and CUDA), not the meta device's unfused math path.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import weakref
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from harness.errors import PreflightError, UsageError

GiB = 2**30


@dataclass(frozen=True)
class ModelFacts:
    """What an optimizer's memory model may use (all ints, bytes unless *_count).

    For search-space problems (no torch model) param_count and trainable_count
    are the dimension of the encoded space and the byte fields are 0.
    """

    param_count: int = 0
    trainable_count: int = 0
    weight_bytes: int = 0             # parameters + buffers
    trainable_bytes: int = 0
    largest_tensor_bytes: int = 0     # largest trainable tensor
    forward_activation_bytes: int = 0  # extra peak of a no-grad forward+loss of one micro-batch
    backward_activation_bytes: int = 0  # extra peak of forward+backward of one micro-batch, grads excluded
    saved_activation_bytes: int = 0   # of which: tensors autograd saves for backward (information)
    dtype_bytes: int = 4              # element size of the trainable weights
    model_modules: tuple[str, ...] = ()  # modules defining the model's classes (framework RSS)


# -- tracing ------------------------------------------------------------------

class LiveBytes(TorchDispatchMode):
    """Counts the bytes of live tensor storages created inside the mode and their peak.

    Every new storage an op returns (not a view of, nor in place on, one of its
    inputs) is added when created and subtracted when Python frees it
    (weakref.finalize on the storage). `exclude` is subtracted from the live
    count when the peak is taken (the weight gradients during backward).
    """

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self.exclude = 0
        self._seen: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage._cdata
            if key in inputs or key in self._seen:
                continue
            self._seen.add(key)
            nbytes = storage.nbytes()
            self.live += nbytes
            self.peak = max(self.peak, self.live - self.exclude)
            weakref.finalize(storage, self._free, key, nbytes)
        return out

    def _free(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._seen.discard(key)


def _fused_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                enable_gqa=False):
    """Meta stand-in for F.scaled_dot_product_attention with the memory of the fused
    kernels (output + logsumexp saved; no T x T score matrix)."""
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        rep = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(rep, dim=-3)
        value = value.repeat_interleave(rep, dim=-3)
    out = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)
    return out[0]


@contextmanager
def _fused_attention():
    """Trace as the real run computes: fused attention; and transformers' check for packed
    sequences (a data-dependent .item(), impossible on meta) answered "not packed", which
    is what it finds for the harness's plain position ids."""
    import sys as _sys

    patches = [(torch.nn.functional, "scaled_dot_product_attention", _fused_sdpa)]
    masking = _sys.modules.get("transformers.masking_utils")
    if masking is not None and hasattr(masking, "find_packed_sequence_indices"):
        original = masking.find_packed_sequence_indices
        patches.append((masking, "find_packed_sequence_indices",
                        lambda position_ids: None if position_ids.is_meta else original(position_ids)))
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    for obj, name, value in patches:
        setattr(obj, name, value)
    try:
        yield
    finally:
        for obj, name, value in saved:
            setattr(obj, name, value)


def _meta_problem(problem, device_type: str):
    """A shallow copy of `problem` whose model lives on the meta device, or None."""
    from harness.problem import WeightsProblem

    if not isinstance(problem, WeightsProblem):
        return None
    shadow = copy.copy(problem)
    shadow.device = torch.device(device_type)  # lets meta_model pick the device's dtype
    model = shadow.meta_model()
    if model is None:
        return None
    shadow.model = model
    shadow.device = torch.device("meta")
    return shadow


def model_facts(problem, device_type: str = "cpu", shadow=None) -> ModelFacts | None:
    """Facts of the problem's model, traced on the meta device; None if it has none.
    `shadow`: the result of _meta_problem if the caller already built it."""
    shadow = shadow if shadow is not None else _meta_problem(problem, device_type)
    if shadow is None:
        space = getattr(problem, "space", None)
        if space is not None:
            return ModelFacts(param_count=len(space), trainable_count=len(space), dtype_bytes=8)
        return None
    model = shadow.model
    params = list(model.parameters())
    buffers = list(model.buffers())
    trainable = [p for _, p in shadow.trainable()]
    nbytes = lambda t: t.numel() * t.element_size()  # noqa: E731
    weight_bytes = sum(nbytes(t) for t in params + buffers)
    trainable_bytes = sum(nbytes(p) for p in trainable)

    batch = shadow.example_batch(torch.device("meta"))
    with _fused_attention():
        with torch.no_grad(), LiveBytes() as fwd:
            loss = shadow.loss(batch)
            del loss
        saved: dict[int, int] = {}
        weight_keys = {t.untyped_storage()._cdata for t in params + buffers}

        def pack(t):  # activations saved for backward (weights, and views of them, excluded)
            st = t.untyped_storage()
            if st._cdata not in weight_keys:
                saved[st._cdata] = st.nbytes()
            return t

        live = LiveBytes()
        hooks = [p.register_post_accumulate_grad_hook(
            lambda p: setattr(live, "exclude", live.exclude + nbytes(p.grad))) for p in trainable]
        with torch.enable_grad(), live, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = shadow.loss(batch)
            if loss.requires_grad:
                loss.backward()
            del loss
        for h in hooks:
            h.remove()
    return ModelFacts(
        param_count=sum(p.numel() for p in params),
        trainable_count=sum(p.numel() for p in trainable),
        weight_bytes=weight_bytes,
        trainable_bytes=trainable_bytes,
        largest_tensor_bytes=max((nbytes(p) for p in trainable), default=0),
        forward_activation_bytes=fwd.peak,
        backward_activation_bytes=live.peak,
        saved_activation_bytes=sum(saved.values()),
        dtype_bytes=trainable[0].element_size() if trainable else 4,
        model_modules=tuple(sorted({type(m).__module__ for m in model.modules()})),
    )


def model_facts_isolated(problem, device_type: str = "cpu") -> ModelFacts | None:
    """model_facts in a forked child, so the run's own process (whose peak RSS is the
    figure a CPU run records) never holds what tracing imports (torch's Python meta
    kernels pull in sympy: about 75 MiB). In-process where fork is unavailable or
    torch.distributed already runs threads."""
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not hasattr(os, "fork") or dist:
        return model_facts(problem, device_type)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: trace, send the result, leave without running any cleanup
        code = 0
        try:
            facts = model_facts(problem, device_type)
            payload = {"facts": asdict(facts) if facts is not None else None}
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            payload, code = {"error": f"{type(exc).__name__}: {exc}"}, 1
        with os.fdopen(write_fd, "w") as fh:
            fh.write(json.dumps(payload))
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        text = fh.read()
    os.waitpid(pid, 0)
    payload = json.loads(text) if text else {"error": "the tracing process died"}
    if "error" in payload:
        raise RuntimeError(f"memory plan: tracing the model failed: {payload['error']}")
    if payload["facts"] is None:
        return None
    facts = payload["facts"]
    facts["model_modules"] = tuple(facts["model_modules"])
    return ModelFacts(**facts)


def _facts_key(problem, device_type: str) -> str:
    """Problem name, hyperparameters, device type, and a hash of the code that defines
    the model (the problem's classes, this planner) and of the library versions."""
    import hashlib
    import inspect

    h = hashlib.sha1()
    files = {os.path.abspath(__file__)}
    for klass in type(problem).__mro__:
        try:
            files.add(inspect.getsourcefile(klass))
        except TypeError:
            continue
    for path in sorted(f for f in files if f):
        with open(path, "rb") as fh:
            h.update(fh.read())
    hp = json.dumps(problem.hp, sort_keys=True, default=str)
    return f"{problem.name}|{hp}|{device_type}|{_stack_key()}|{h.hexdigest()}"


def _facts_path():
    from harness.cache import cache_dir

    return cache_dir("planner") / "facts.json"


def cached_model_facts(problem, device_type: str = "cpu", isolated: bool = True,
                       shadow=None) -> ModelFacts | None:
    """model_facts_isolated, remembered in the harness cache dir: tracing costs 1-3 s
    (imports), a cache hit about a millisecond, so repeated runs start at once."""
    from harness.store import atomic_write_bytes

    path = _facts_path()
    key = _facts_key(problem, device_type)
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if key in cached:
        entry = cached[key]
        return None if entry is None else ModelFacts(**{**entry, "model_modules": tuple(entry["model_modules"])})
    facts = (model_facts_isolated(problem, device_type) if isolated
             else model_facts(problem, device_type, shadow))
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    if len(cached) > 500:  # keep the file small
        cached = {}
    cached[key] = asdict(facts) if facts is not None else None
    atomic_write_bytes(path, json.dumps(cached).encode())
    return facts


# -- framework overhead -------------------------------------------------------

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


def _stack_key() -> str:
    from harness.envinfo import _version

    return "|".join(str(v) for v in ("vmhwm", sys.executable, sys.version.split()[0], torch.__version__,
                                     _version("transformers"), _version("numpy"),
                                     os.environ.get("OMP_NUM_THREADS", "")))


def cpu_framework_bytes(modules: tuple[str, ...] = (), measure: bool = True) -> int | None:
    """Peak RSS of a fresh interpreter that imports the harness, every registered
    optimizer and problem, and `modules` (what this run imports when it builds),
    then runs one tiny forward/backward and a torch.save: the part of a CPU run's
    peak RSS that is not the run's own tensors.

    Measured once per software stack and module list (a subprocess, 3-8 s) and
    cached in the harness cache dir; HARNESS_FRAMEWORK_BYTES overrides it.
    With measure=False an uncached figure is None.
    """
    probe = FrameworkProbe(modules, start=measure)
    return probe.result() if measure or probe.cached is not None else None


class FrameworkProbe:
    """The framework RSS measurement, started in the background (a subprocess) so the
    caller can trace models meanwhile; result() waits and caches it."""

    def __init__(self, modules: tuple[str, ...], start: bool = True):
        from harness.cache import cache_dir

        self.modules = tuple(sorted(set(modules)))
        self.path = cache_dir("planner") / "framework_rss.json"
        self.key = _stack_key() + "|" + ",".join(self.modules)
        self.cached = _read_json(self.path).get(self.key)
        self.proc = None
        if os.environ.get("HARNESS_FRAMEWORK_BYTES"):
            self.cached = int(os.environ["HARNESS_FRAMEWORK_BYTES"])
        if self.cached is None and start:
            root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
        from harness.store import atomic_write_bytes

        cached = _read_json(self.path)  # re-read: another process may have added entries
        cached[self.key] = self.cached
        atomic_write_bytes(self.path, json.dumps(cached, indent=1).encode())
        return self.cached


def _read_json(path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def runtime_modules(prepared, facts: "ModelFacts | None") -> tuple[str, ...]:
    """Modules the run imports lazily: RUNTIME_IMPORTS of the problem and optimizer
    classes, plus the modules defining the model's classes."""
    mods = set(getattr(prepared.prob_entry.factory, "RUNTIME_IMPORTS", ()))
    mods |= set(getattr(prepared.opt_entry.factory, "RUNTIME_IMPORTS", ()))
    if facts is not None:
        mods |= set(facts.model_modules)
    return tuple(sorted(mods))


# -- the plan -----------------------------------------------------------------

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

    def to_json(self) -> dict:
        out = asdict(self)
        out["peak_gib"] = round(self.peak_bytes / GiB, 3)
        return out


def plan_prepared(prepared, device_type: str | None = None, facts: ModelFacts | None = None,
                  measure_framework: bool = True, isolated: bool = True) -> Plan:
    """Plan of a validated run (harness.runner.Prepared); nothing is allocated.

    measure_framework=False uses the cached CPU framework figure and counts 0
    when none is cached yet (the preflight's quick first look)."""
    device_type = device_type or prepared.device.type
    opt_cls = prepared.opt_entry.factory
    if facts is None:
        facts = cached_model_facts(prepared.problem, device_type, isolated)
    notes = []
    breakdown: dict[str, int] = {"weights": facts.weight_bytes if facts else 0}
    declared = False
    model_fn = getattr(opt_cls, "memory_model", None)
    if facts is None:
        notes.append(f"problem {prepared.spec.problem!r} gives no model to plan (no meta_model)")
    elif model_fn is not None:
        parts = model_fn(prepared.opt_hp, facts)
        if parts is not None:
            declared = True
            for k, v in parts.items():
                breakdown[k] = breakdown.get(k, 0) + int(v)
    if not declared and facts is not None:
        notes.append(f"optimizer {prepared.spec.optimizer!r} declares no memory model: "
                     "the plan counts weights and framework only (a lower bound)")
    if device_type == "cpu":
        fw = cpu_framework_bytes(runtime_modules(prepared, facts), measure_framework)
        breakdown["framework"] = fw or 0
        if fw is None:
            notes.append("framework RSS not measured yet (counted as 0)")
    else:
        breakdown["framework"] = 0
    return Plan(
        optimizer=prepared.spec.optimizer, problem=prepared.spec.problem, device=device_type,
        peak_bytes=int(sum(breakdown.values())), breakdown=breakdown, facts=facts, declared=declared,
        measured_as="peak RSS of the run's process" if device_type == "cpu"
        else "torch.cuda.max_memory_allocated (tensors only; the CUDA context is not counted)",
        notes=notes,
    )


def plan(optimizer: str, problem: str, overrides: dict | None = None, device: str = "cpu",
         seed: int = 0) -> Plan:
    """Plan by names; device may be 'cuda' on a machine without CUDA (a prediction)."""
    from harness.runner import Prepared, RunSpec

    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UsageError(f"--device {device!r}: expected cpu or cuda")
    prepared = Prepared(RunSpec(optimizer=optimizer, problem=problem, seed=seed,
                                overrides=dict(overrides or {}), device="cpu"))
    return plan_prepared(prepared, device_type=torch.device(device).type)


# -- preflight ----------------------------------------------------------------

def available_bytes(device: torch.device) -> tuple[int, str]:
    """(bytes the run can still use, what that figure is)."""
    if os.environ.get("HARNESS_TEST_AVAILABLE_BYTES"):  # test hook: pretend a smaller machine
        return int(os.environ["HARNESS_TEST_AVAILABLE_BYTES"]), "available (HARNESS_TEST_AVAILABLE_BYTES)"
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


def _size_key(name: str) -> tuple:
    return tuple(int(x) if x.isdigit() else x for x in re.split(r"(\d+)", name))


def alternatives(prepared, plan_: Plan, budget: int, framework: int = 0) -> list[str]:
    """What would fit in `budget` bytes: other optimizers on this problem, the largest
    smaller size of the same family. Traces in this process (the run is refused). On
    CPU every alternative is counted with this run's framework figure."""
    from harness import registry
    from harness.runner import Prepared, RunSpec

    def peak(p: Plan) -> int:  # tensors of that plan + this run's framework figure
        tensors = p.peak_bytes - p.breakdown.get("framework", 0)
        return tensors + framework

    fits = []
    device_type = plan_.device
    # Same problem, another optimizer of the same kind with a declared model (facts reused).
    for name, entry in sorted(registry.OPTIMIZERS.items()):
        if name == prepared.spec.optimizer or prepared.kind not in entry.kinds:
            continue
        try:
            other = Prepared(RunSpec(optimizer=name, problem=prepared.spec.problem, device="cpu"))
            p = plan_prepared(other, device_type, facts=plan_.facts, measure_framework=False)
        except Exception:  # an optimizer that cannot plan is simply not suggested
            continue
        if p.declared and peak(p) <= budget:
            fits.append(f"--optimizer {name} ({_gib(peak(p))})")
    # Same optimizer, the largest smaller size of the same family that fits.
    family = prepared.prob_entry.family
    if family:
        own = plan_.facts.param_count if plan_.facts else 0
        sizes = []
        for name, entry in registry.PROBLEMS.items():
            if entry.family != family or name == prepared.spec.problem:
                continue
            try:
                other = Prepared(RunSpec(optimizer=prepared.spec.optimizer, problem=name, device="cpu"))
                count = other.problem.param_count()
            except Exception:
                continue
            if count is not None and count < own:
                sizes.append((count, name, other))
        per_weight = plan_.facts.weight_bytes / max(own, 1)
        for count, name, other in sorted(sizes, key=lambda s: -s[0]):
            if count * per_weight + framework > budget:  # its weights alone do not fit
                continue
            p = plan_prepared(other, device_type, measure_framework=False, isolated=False)
            if peak(p) <= budget:
                fits.append(f"--problem {name} ({_gib(peak(p))})")
                break
    return fits


def preflight(prepared) -> Plan | None:
    """Raise PreflightError (exit 3) when the planned peak exceeds the device's memory."""
    have, what = available_bytes(prepared.device)
    device_type = prepared.device.type
    # Weights alone over the limit: refused whatever the rest, so trace in this process
    # (no fork; the model code is imported once for the alternatives too).
    isolated, shadow = True, None
    if _facts_key(prepared.problem, device_type) not in _read_json(_facts_path()):
        shadow = _meta_problem(prepared.problem, device_type)
        if shadow is not None:
            weights = sum(t.numel() * t.element_size()
                          for t in list(shadow.model.parameters()) + list(shadow.model.buffers()))
            isolated = weights <= have
    facts = cached_model_facts(prepared.problem, device_type, isolated, shadow)
    del shadow
    plan_ = plan_prepared(prepared, facts=facts, measure_framework=False)
    if plan_.facts is None:
        return plan_
    # Measuring the CPU framework figure takes seconds: only when it decides.
    if plan_.peak_bytes + 2 * GiB <= have:
        return plan_
    if plan_.peak_bytes <= have:
        plan_ = plan_prepared(prepared, facts=facts)
        if plan_.peak_bytes <= have:
            return plan_
    # Refused. Say what would fit; an unmeasured framework figure is not waited for
    # (seconds) but counted as 0, and the need is then stated as a lower bound.
    framework = plan_.breakdown.get("framework", 0)
    unknown_fw = plan_.device == "cpu" and framework == 0
    fits = alternatives(prepared, plan_, have, framework)
    if unknown_fw:
        fits = [f.replace(")", " + framework)") for f in fits]
    hint = ("; would fit: " + ", ".join(fits)) if fits else "; nothing smaller of this family fits either"
    lower = "" if plan_.declared and not unknown_fw else " at least"
    what_peak = "planned tensors, framework RSS not measured yet" if unknown_fw else "planned peak"
    raise PreflightError(
        f"{prepared.spec.optimizer} on {prepared.spec.problem} needs{lower} {_gib(plan_.peak_bytes)} "
        f"({what_peak} on {plan_.device}) but only {_gib(have)} is {what}{hint}; "
        f"--force runs it anyway")
