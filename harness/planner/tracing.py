"""Facts of a problem's model, traced on the meta device: nothing is allocated.

Activation bytes come from tracing one micro-batch of the problem's own `loss`
on the meta device (`LiveBytes`): the forward peak under no_grad for
inference-only optimizers, and the peak of forward+backward (gradients of the
weights excluded: the optimizer's memory model counts those) for gradient
optimizers. Attention is traced as the fused kernel the real run uses (flash
attention on CPU and CUDA), not the meta device's unfused math path.
"""

from __future__ import annotations

import copy
import json
import os
import weakref
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from harness.planner.memo import JsonMemo, stack_key
from harness.problem import SearchSpaceProblem, WeightsProblem


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
    low_rank_count: int = 0           # sum of rows + cols over 2-D trainable tensors (low-rank noise)
    micro_batches_per_step: int = 1   # micro-batches in one step's batch (problem.micro_batches_per_step)
    model_modules: tuple[str, ...] = ()  # modules defining the model's classes (framework RSS)
    # FSDP groups (WeightsProblem.shard_units): the largest unit's trainable bytes, and the
    # root's (trainable tensors in no unit: embeddings, final norm, LM head)
    largest_unit_bytes: int = 0
    root_unit_bytes: int = 0
    world_size: int = 1               # ranks the plan is for (set by the plan, not traced)
    device_type: str = "cpu"          # the device the facts are for (kernels differ: cpu, cuda)
    # each trainable tensor's (name, shape), in the problem's trainable() order, and the
    # nn.Linear modules' names in model order: for optimizers whose state depends on shapes
    # (SOAP's preconditioners) or on which layer a tensor belongs to (Muon's hidden matrices)
    trainable_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    linear_modules: tuple[str, ...] = ()


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


def meta_problem(problem, device_type: str):
    """A shallow copy of `problem` whose model lives on the meta device, or None."""
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
    `shadow`: the result of meta_problem if the caller already built it."""
    shadow = shadow if shadow is not None else meta_problem(problem, device_type)
    if shadow is None:
        if isinstance(problem, SearchSpaceProblem):
            n = len(problem.space)
            return ModelFacts(param_count=n, trainable_count=n, dtype_bytes=8)
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
    units = [[p for p in unit.parameters() if p.requires_grad] for unit in shadow.shard_units()]
    in_units = {id(p) for unit in units for p in unit}
    return ModelFacts(
        largest_unit_bytes=max((sum(nbytes(p) for p in unit) for unit in units), default=0),
        root_unit_bytes=sum(nbytes(p) for p in trainable if id(p) not in in_units),
        param_count=sum(p.numel() for p in params),
        trainable_count=sum(p.numel() for p in trainable),
        weight_bytes=weight_bytes,
        trainable_bytes=trainable_bytes,
        largest_tensor_bytes=max((nbytes(p) for p in trainable), default=0),
        forward_activation_bytes=fwd.peak,
        backward_activation_bytes=live.peak,
        saved_activation_bytes=sum(saved.values()),
        dtype_bytes=trainable[0].element_size() if trainable else 4,
        low_rank_count=sum(p.shape[0] + p.shape[1] for p in trainable if p.dim() == 2),
        micro_batches_per_step=int(shadow.micro_batches_per_step()),
        device_type=device_type,
        model_modules=tuple(sorted({type(m).__module__ for m in model.modules()})),
        trainable_shapes=tuple((name, tuple(p.shape)) for name, p in shadow.trainable()),
        linear_modules=tuple(name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)),
    )


def model_facts_isolated(problem, device_type: str = "cpu") -> ModelFacts | None:
    """model_facts in a forked child, so the run's own process (whose peak RSS is the
    figure a CPU run records) never holds what tracing imports (torch's Python meta
    kernels pull in sympy: about 75 MiB). In-process where fork is unavailable, where
    torch.distributed already runs threads, or where this process holds a CUDA context
    (a forked child of it must not touch CUDA, and a CUDA run records the allocator's
    peak, which tracing on the meta device leaves alone)."""
    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    if not hasattr(os, "fork") or dist or torch.cuda.is_initialized():
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
    return _from_json(payload["facts"])


def facts_key(problem, device_type: str) -> str:
    """Problem name, hyperparameters, device type, and a hash of the code that defines
    the model (the problem's classes, this module) and of the library versions."""
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
    return f"{problem.name}|{hp}|{device_type}|{stack_key()}|{h.hexdigest()}"


FACTS = JsonMemo("facts.json")


def _from_json(entry: dict | None) -> ModelFacts | None:
    if entry is None:
        return None
    return ModelFacts(**{**entry, "model_modules": tuple(entry["model_modules"]),
                         "trainable_shapes": tuple((name, tuple(shape)) for name, shape
                                                   in entry.get("trainable_shapes", ())),
                         "linear_modules": tuple(entry.get("linear_modules", ()))})


def cached_model_facts(problem, device_type: str = "cpu", isolated: bool = True,
                       shadow=None) -> ModelFacts | None:
    """model_facts_isolated, remembered in the harness cache dir: tracing costs 1-3 s
    (imports), a cache hit about a millisecond, so repeated runs start at once."""
    key = facts_key(problem, device_type)
    try:
        return _from_json(FACTS.get(key))
    except KeyError:
        pass
    facts = (model_facts_isolated(problem, device_type) if isolated
             else model_facts(problem, device_type, shadow))
    FACTS.put(key, asdict(facts) if facts is not None else None)
    return facts
