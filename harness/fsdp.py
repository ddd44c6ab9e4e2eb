"""FSDP2 (torch.distributed.fsdp.fully_shard) for gradient optimizers under torchrun.

`shard` wraps a problem's model in place: each of its shard units (a transformer's
decoder layers, WeightsProblem.shard_units) is one FSDP group, then the root takes
what is left (embeddings, final norm, LM head). Parameters, gradients and the
optimizer states built over them are then DTensors sharded on dim 0 over the ranks;
a forward or backward all-gathers one group at a time.

Checkpoints stay ordinary: `full_model_state` gathers every sharded tensor whole, so
checkpoint.pt holds the same keys and shapes as an unsharded run's (any world size
resumes it), and `load_full_model_state` scatters them back. Both are collectives:
every rank calls them (Optimizer.collective_checkpoint tells the runner so).
"""

from __future__ import annotations

import torch

LOW_PRECISION = (torch.bfloat16, torch.float16)


def shard(model: torch.nn.Module, units, fp32_master: bool, offload: bool) -> dict:
    """fully_shard every unit, then the root. Low-precision weights (bf16/fp16): with
    fp32_master the sharded parameters are fp32 (the master copy AdamW steps; forward and
    backward run in the weights' dtype); gradients are reduced in fp32 either way.
    Returns what was applied, for the run's record."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    low = next((d for d in LOW_PRECISION if d in dtypes), None)
    if low is not None:   # MixedPrecisionPolicy casts to `low` for compute
        policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32)
    else:
        policy = MixedPrecisionPolicy()
    upcast = low is not None and fp32_master
    placement = CPUOffloadPolicy(pin_memory=torch.cuda.is_available()) if offload else OffloadPolicy()
    units = list(units)
    in_units = {id(p) for unit in units for p in unit.parameters()}
    root_params = [p for p in model.parameters() if id(p) not in in_units]
    for unit in units:   # fp32 masters made one unit at a time: never a whole fp32 model per rank
        if upcast:
            _upcast(unit.parameters())
        fully_shard(unit, mp_policy=policy, offload_policy=placement)
    if upcast:
        _upcast(root_params)
    fully_shard(model, mp_policy=policy, offload_policy=placement)
    return {"units": len(units) + 1, "param_dtype": str(policy.param_dtype or next(iter(dtypes), None)),
            "sharded_param_dtype": str(next(p.dtype for p in model.parameters())),
            "reduce_dtype": str(policy.reduce_dtype or policy.param_dtype or next(iter(dtypes), None)),
            "offload": "cpu" if offload else "none"}


def _upcast(params) -> None:
    with torch.no_grad():
        for p in params:
            if p.dtype in LOW_PRECISION:
                p.data = p.data.float()


def is_sharded(model: torch.nn.Module | None) -> bool:
    import sys

    if model is None or "torch.distributed.fsdp" not in sys.modules:
        return False   # never sharded, and no import (RSS) for runs that do not use FSDP
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def _resharded(model) -> None:
    """A forward without backward (evaluate) leaves the root's parameters gathered (FSDP2
    does not reshard the root after forward): put every group back to its shards so the
    module's parameters are again the sharded ones the optimizer steps."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_model_state(model) -> dict:
    """The model's state dict with every tensor whole, on rank 0's CPU (all ranks call,
    gathering one tensor at a time; the others get an empty dict: rank 0 writes the file)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    _resharded(model)
    return get_model_state_dict(model, options=_options(cpu_offload=True))


def load_full_model_state(model, state: dict) -> None:
    """Every rank holds the whole state (each loads checkpoint.pt) and keeps its shard."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    _resharded(model)
    set_model_state_dict(model, state, options=_options())


def full_optimizer_state(model, optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    _resharded(model)
    return get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))


def load_full_optimizer_state(model, optimizer, state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    _resharded(model)
    set_optimizer_state_dict(model, optimizer, state, options=_options())
