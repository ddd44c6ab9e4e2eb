"""The backprop family's base: every gradient optimizer's loop, written once.

A gradient optimizer is a subclass that builds its torch optimizer from the
parameter groups (`torch_optimizer`) and says how many numbers of state it keeps
per trained parameter (`STATES_PER_PARAM`, e.g. AdamW's two moments), which is
all the memory model needs; `lr` and `weight_decay` are declared here and every
other hyperparameter is the subclass's own PARAMS. Registered with
`@register_optimizer(...)`, it runs on every weights problem, under torchrun,
sharded or not, and the registry's conformance test covers it.

One step = one minibatch from the problem's stream, one forward and one
backward; it counts as 1 evaluation (3 forward-pass equivalents). A problem that
splits its batch into micro-batches (`problem.micro_batches(batch)` ->
[(piece, weight)]) gets one forward/backward per piece with the gradients
accumulated (weights sum to 1), so the step sees the same data as the other
optimizers. The learning rate of step k is lr (k+1)/N for k < warmup_steps = N,
a pure function of k (nothing to checkpoint); `grad_clip` clips the gradient
norm before the step.

Low-precision weights (bf16/fp16, the qwen3 default on CUDA): with
`fp32_master` (default) the torch optimizer steps an fp32 master copy of the
trainable weights with fp32 states, from fp32 copies of the gradients, and the
model weights are rounded from the master after each step (standard mixed
precision; a pure-bf16 step would lose updates smaller than half an ulp). On
CUDA the forward runs under bf16 autocast.

Under torchrun the model is wrapped in torch DistributedDataParallel: each rank
takes its slice of the step's batch (distributed.shard_batch), its loss is
scaled by W * n_rank / n so that DDP's gradient average equals the gradient of
the whole batch's mean loss, and DDP all-reduces the gradients. The result
matches one process up to float summation order (not bit for bit; see
docs/distributed.md for the measured difference).

`torch_optimizer` may return several torch optimizers over disjoint groups (Muon on
the hidden matrices, AdamW on the rest): they step, zero and checkpoint as one
(`Chain`). Each group's own lr is its peak, scaled by the warmup factor every step.
An optimizer that evaluates at another point than it trains at (Schedule-Free)
sets TRAIN_EVAL_MODES: its torch optimizer's eval() is called around every
evaluation (`evaluation`) and train() after it, the fp32 masters copied to the
model each time.

`--set shard=fsdp` (torchrun only) shards instead of replicating: FSDP2 per
decoder layer, then the root (harness/fsdp.py), so weights, gradients and the
optimizer's states are split over the ranks; the batch is sliced and the loss
scaled exactly as under DDP, so the gradient is the whole batch's. With
bf16/fp16 weights the sharded parameters are the fp32 masters (fp32_master) and
gradients are reduced in fp32; `offload=cpu` keeps the shards and the optimizer
step in host memory (FSDP2 CPUOffloadPolicy).
"""

from __future__ import annotations

import contextlib
import inspect

import torch

from harness import distributed
from harness.errors import UsageError
from harness.optimizer import Optimizer, StepResult
from harness.params import Param


class Backprop(Optimizer):
    DISTRIBUTED = True   # torchrun: DistributedDataParallel over slices of each batch
    BACKPROP = True
    SHARD_SETTINGS = {"shard": "fsdp"}   # or FSDP2: weights, gradients, states split over ranks
    # Numbers of optimizer state per trained parameter, each in the dtype the optimizer steps
    # (fp32 with fp32_master, else the weights'): AdamW 2 (two moments), momentum SGD 1.
    STATES_PER_PARAM: float = 0
    # Full-size temporaries the torch optimizer's step allocates at once, per trained parameter,
    # in the dtype it steps: torch's foreach AdamW on CUDA computes sqrt(v) for every tensor
    # (1; measured on an H200, docs/gpu.md). On CPU torch steps tensor by tensor (the for-loop
    # implementation): about twice the largest tensor instead.
    STEP_TEMPORARIES_PER_PARAM: float = 1
    # torch.optim's first step imports torch._dynamo: about 70 MiB of RSS on CPU (measured),
    # which the planner's framework figure must include
    RUNTIME_IMPORTS = ("torch._dynamo",)
    # The checkpoint's key of the torch optimizer's state (a subclass may keep an older name
    # so that its runs written before this base still resume).
    CHECKPOINT_KEY = "torch_optimizer"
    # Why shard=fsdp cannot step this optimizer correctly (e.g. it needs whole matrices):
    # when set, shard=fsdp is refused with this reason (and the planner offers no sharding)
    NOT_SHARDABLE = ""
    # True when the torch optimizer has train()/eval() modes and is to be evaluated in eval
    # mode (Schedule-Free: the averaged point x, while it trains at y)
    TRAIN_EVAL_MODES = False
    PARAMS = {
        "lr": Param(1e-3, float, "learning rate", low=0.0),
        "weight_decay": Param(0.0, float, "weight decay, as the torch optimizer applies it", low=0.0),
        "grad_clip": Param(0.0, float, "clip the gradient norm to this (0 = off)", low=0.0),
        "warmup_steps": Param(0, int, "linear learning-rate warmup: lr (k+1)/N at step k < N "
                              "(0 = off)", low=0),
        "fp32_master": Param(True, bool, "fp32 master weights and optimizer states when the weights "
                             "are bf16/fp16 (no effect on fp32 weights)"),
        "shard": Param("ddp", str, "under torchrun: ddp (weights replicated on every rank) or fsdp "
                       "(FSDP2: weights, gradients and optimizer states sharded over the ranks)",
                       choices=("ddp", "fsdp")),
        "offload": Param("off", str, "with shard=fsdp: cpu keeps the sharded weights, gradients and "
                         "optimizer states in host memory (FSDP2 CPUOffloadPolicy)", choices=("off", "cpu")),
    }

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.NOT_SHARDABLE:   # nothing to shard: the planner must not suggest shard=fsdp
            cls.SHARD_SETTINGS = {}

    # -- what a gradient optimizer declares ----------------------------------------
    def torch_optimizer(self, param_groups: list[dict]) -> torch.optim.Optimizer | list[torch.optim.Optimizer]:
        """The torch optimizer stepping `param_groups` (one group: {"params": [...]}, in the
        order of self.param_names), from self.hp, or several over a split of them; each
        group's lr as built is its peak, which the base scales every step (warmup)."""
        raise NotImplementedError

    @classmethod
    def states_per_param(cls, hp: dict) -> float:
        """Numbers of state per trained parameter under these hyperparameters (default
        STATES_PER_PARAM; e.g. SGD keeps none when momentum is 0)."""
        return cls.STATES_PER_PARAM

    @classmethod
    def state_count(cls, hp: dict, facts) -> float:
        """Numbers of optimizer state held for the whole model: states_per_param times the
        trainable parameters, unless the optimizer's state depends on the tensors' shapes
        or roles (SOAP, Muon), which override this from facts.trainable_shapes."""
        return cls.states_per_param(hp) * facts.trainable_count

    # -- checks and memory, before anything is built ---------------------------------
    @classmethod
    def check_hparams(cls, hp: dict) -> None:
        if hp.get("shard") == "fsdp" and cls.NOT_SHARDABLE:
            raise UsageError(f"--set shard=fsdp: {cls.NOT_SHARDABLE}; use shard=ddp")
        if hp.get("offload", "off") != "off" and hp.get("shard") != "fsdp":
            raise UsageError(f"--set offload={hp['offload']}: only with --set shard=fsdp")

    @classmethod
    def check_launch(cls, hp: dict) -> None:
        if hp["shard"] == "fsdp" and not distributed.launched():
            raise UsageError("--set shard=fsdp shards over torchrun's processes: launch with "
                             "torchrun --nproc_per_node N -m harness run ... (docs/cluster.md)")

    @classmethod
    def memory_model(cls, hp: dict, facts) -> dict[str, int]:
        """Held for the whole run beyond the weights: the optimizer's states and, under
        bf16/fp16 with fp32_master, the fp32 master copy (states fp32 too). The gradients
        and activations come and go: memory_phases."""
        if hp.get("shard") == "fsdp":
            return cls._sharded_memory(hp, facts)
        n, states = facts.trainable_count, cls.state_count(hp, facts)
        master = facts.dtype_bytes < 4 and hp.get("fp32_master", True)
        out = {"optimizer_states": int(states * (4 if master else facts.dtype_bytes))}
        if master:
            out["master_weights"] = int(4 * n)
        return out

    @classmethod
    def memory_phases(cls, hp: dict, facts) -> dict[str, dict[str, int]] | None:
        """backward: the weights' gradients (param dtype) while one micro-batch's activations
        are alive. step: under fp32_master the gradients become fp32 master gradients (each
        bf16 one freed as it is converted), then the torch optimizer's step temporaries
        (STEP_TEMPORARIES_PER_PARAM). Measured for AdamW on an H200 (docs/gpu.md): the
        backward is the peak up to 1.7B, the step from 4B up, each within 0.7%."""
        if hp.get("shard") == "fsdp":
            return None
        n = facts.trainable_count
        master = facts.dtype_bytes < 4 and hp.get("fp32_master", True)
        stepped = 4 * n if master else facts.trainable_bytes
        if facts.device_type == "cuda":
            temporary = cls.STEP_TEMPORARIES_PER_PARAM * stepped
        else:
            temporary = 2 * facts.largest_tensor_bytes * (4 // facts.dtype_bytes if master else 1)
        return {"backward": {"gradients": int(facts.trainable_bytes),
                             "activations": int(facts.backward_activation_bytes)},
                "step": {("master_gradients" if master else "gradients"): int(stepped),
                         "step_temporary": int(temporary)}}

    @classmethod
    def _sharded_memory(cls, hp: dict, facts) -> dict[str, int]:
        """shard=fsdp, per rank of W: 1/W of the sharded parameters (fp32 masters when the
        weights are bf16/fp16 and fp32_master), of their gradients and of the optimizer's
        states; plus what FSDP2 gathers whole: the root group (kept gathered from forward
        to backward) and up to two decoder layers (the one computing and the one prefetched)
        in the compute dtype, and their unsharded gradients (reduce dtype: fp32 for
        low-precision weights) before the reduce-scatter; plus one micro-batch's activations
        (an upper bound: a rank's slice of the batch may be smaller). offload=cpu moves the
        sharded parameters, gradients and states to host memory: off the device plan."""
        w, n = max(1, facts.world_size), facts.trainable_count
        low = facts.dtype_bytes < 4
        shard_bytes = 4 if low and hp.get("fp32_master", True) else facts.dtype_bytes
        reduce_scale = 4 / facts.dtype_bytes if low else 1
        gathered = facts.root_unit_bytes + 2 * facts.largest_unit_bytes
        buffers = facts.weight_bytes - facts.trainable_bytes       # replicated, not sharded
        on_device = hp.get("offload", "off") != "cpu"
        sharded = -(-n * shard_bytes // w) if on_device else 0     # ceil: the shards are padded
        return {"weights": int(buffers + sharded),
                "gathered_weights": int(gathered),
                "gradients": int(sharded + gathered * reduce_scale),
                "optimizer_states": int(cls.state_count(hp, facts) / max(1, n) * sharded),
                "activations": int(facts.backward_activation_bytes)}

    # -- the run --------------------------------------------------------------------
    def setup(self) -> None:
        self.ddp = self.fsdp = None
        if self.hp["shard"] == "fsdp":
            return self._setup_fsdp()   # before any full-size master copy exists
        params = [p for _, p in self.problem.trainable()]
        dev = self.problem.device
        low_precision = any(p.dtype in (torch.bfloat16, torch.float16) for p in params)
        self.autocast = dev.type == "cuda" and low_precision
        self.params = params
        self.master = None
        if low_precision and self.hp["fp32_master"]:
            self.master = [p.detach().float().clone().requires_grad_(True) for p in params]
        self.param_names = [n for n, _ in self.problem.trainable()]
        self._build_torch_optimizer(self.master if self.master is not None else params)
        if distributed.world_size() > 1:
            _check_splittable(self.problem)
            from torch.nn.parallel import DistributedDataParallel

            # buffers are not trained here (no batch norm): no per-forward broadcast
            buffers_off = ({"forward_sync_buffers": False} if "forward_sync_buffers" in
                           inspect.signature(DistributedDataParallel).parameters
                           else {"broadcast_buffers": False})
            self.ddp = DistributedDataParallel(
                self.problem.model, device_ids=[dev.index] if dev.type == "cuda" else None,
                **buffers_off)

    def _setup_fsdp(self) -> None:
        from harness import fsdp

        _check_splittable(self.problem)
        model = self.problem.model
        self.fsdp = fsdp.shard(model, self.problem.shard_units(), self.hp["fp32_master"],
                               self.hp["offload"] == "cpu")
        self.autocast, self.master = False, None   # FSDP's MixedPrecisionPolicy does both
        self.params = [p for _, p in self.problem.trainable()]   # now sharded DTensors
        self.param_names = [n for n, _ in self.problem.trainable()]
        self._build_torch_optimizer(self.params)

    def _build_torch_optimizer(self, stepped: list) -> None:
        built = self.torch_optimizer([{"params": stepped}])
        self.opt = Chain(built) if isinstance(built, (list, tuple)) else built
        self._peak_lrs = [group["lr"] for group in self.opt.param_groups]

    def collective_checkpoint(self) -> bool:
        return self.fsdp is not None

    def step(self, step: int) -> StepResult:
        if self.fsdp is not None:
            return self._step_fsdp(step)
        batch = self.problem.batch(step)
        lr = self._set_lr(step)
        self.opt.zero_grad(set_to_none=True)
        for p in self.params:
            p.grad = None
        share = 1.0   # this rank's fraction of the batch
        if self.ddp is not None:
            batch, share = _my_slice(batch)
        pieces = self.problem.micro_batches(batch)
        loss = 0.0
        with self._through_ddp():
            for i, (piece, weight) in enumerate(pieces):
                # DDP all-reduces on the last piece's backward only (gradient accumulation)
                sync = self.ddp is None or i == len(pieces) - 1
                with contextlib.nullcontext() if sync else self.ddp.no_sync():
                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.autocast):
                        part = self.problem.loss(piece) * weight
                    # DDP averages over W ranks: W * share makes that the whole batch's mean
                    (part * (distributed.world_size() * share) if self.ddp else part).backward()
                loss += float(part.detach())
        if self.ddp is not None:  # the logged loss is the whole batch's mean, as alone
            loss = distributed.all_reduce_sum([loss * share], self.problem.device)[0]
        if self.master is not None:
            for m, p in zip(self.master, self.params):
                m.grad = None if p.grad is None else p.grad.float()
                p.grad = None
        stepped = self.master if self.master is not None else self.params
        if self.hp["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(stepped, self.hp["grad_clip"])
        self.opt.step()
        self._copy_master()
        # one forward + one backward (2 forwards) over the whole batch, micro-batches summed
        return StepResult(loss=float(loss), evals=1, forwards=3, extra={"lr": lr})

    def _step_fsdp(self, step: int) -> StepResult:
        """As step under DDP: this rank's slice of the batch, its loss scaled by W * share
        so that FSDP's gradient average (reduce-scatter) is the whole batch's gradient."""
        model = self.problem.model
        batch = self.problem.batch(step)
        lr = self._set_lr(step)
        self.opt.zero_grad(set_to_none=True)
        batch, share = _my_slice(batch)
        w = distributed.world_size()
        pieces = self.problem.micro_batches(batch)
        loss = 0.0
        for i, (piece, weight) in enumerate(pieces):
            model.set_requires_gradient_sync(i == len(pieces) - 1)   # reduce once, after the last piece
            part = self.problem.loss(piece) * weight
            (part * (w * share)).backward()
            loss += float(part.detach())
        loss = distributed.all_reduce_sum([loss * share], self.problem.device)[0]
        if self.hp["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.hp["grad_clip"])
        self.opt.step()
        return StepResult(loss=float(loss), evals=1, forwards=3, extra={"lr": lr})

    def _set_lr(self, step: int) -> float:
        """This step's learning rate (linear warmup), set on the optimizer's groups; a pure
        function of the step, so there is no scheduler state to checkpoint."""
        warmup = self.hp["warmup_steps"]
        factor = min(1.0, (step + 1) / warmup) if warmup else 1.0
        for group, peak in zip(self.opt.param_groups, self._peak_lrs):
            group["lr"] = peak * factor
        return self.hp["lr"] * factor

    @contextlib.contextmanager
    def evaluation(self):
        """TRAIN_EVAL_MODES: the torch optimizer's eval point in the model while it is
        scored, its train point back afterwards (fp32 masters copied to the model both
        ways). eval() then train() is not bit for bit the identity, but every run, killed
        and resumed or not, makes the same calls at the same steps (the checkpoint,
        written after the evaluation, holds the train point): resume stays exact."""
        if not self.TRAIN_EVAL_MODES:
            yield
            return
        self.opt.eval()
        self._copy_master()
        try:
            yield
        finally:
            self.opt.train()
            self._copy_master()

    def _copy_master(self) -> None:
        if self.master is not None:
            with torch.no_grad():
                for m, p in zip(self.master, self.params):
                    p.copy_(m)

    @contextlib.contextmanager
    def _through_ddp(self):
        """problem.loss calls problem.model: let it call the DDP wrapper during the step."""
        if self.ddp is None:
            yield
            return
        model = self.problem.model
        self.problem.model = self.ddp
        try:
            yield
        finally:
            self.problem.model = model

    def state_dict(self) -> dict:
        key = self.CHECKPOINT_KEY
        if self.fsdp is not None:   # the whole optimizer state, keyed by parameter name (rank 0 gets it)
            from harness import fsdp

            return {f"{key}_full": fsdp.full_optimizer_state(self.problem.model, self.opt)}
        out = {key: self.opt.state_dict()}
        if self.master is not None:  # the model holds only the rounded weights
            out["master"] = [m.detach().cpu().clone() for m in self.master]
        return out

    def load_state_dict(self, state: dict) -> None:
        key = self.CHECKPOINT_KEY
        if self.fsdp is not None:
            from harness import fsdp

            if f"{key}_full" not in state:
                raise UsageError("this checkpoint was written without shard=fsdp; resume it the way it ran")
            fsdp.load_full_optimizer_state(self.problem.model, self.opt, state[f"{key}_full"])
            return
        self.opt.load_state_dict(state[key])
        if self.master is not None and "master" in state:
            with torch.no_grad():
                for m, saved in zip(self.master, state["master"]):
                    m.copy_(saved)


class Chain:
    """Several torch optimizers over disjoint parameter groups, used as one: zero_grad,
    step and train/eval go to each in order, param_groups is all of theirs, and the
    state dict is the list of theirs."""

    def __init__(self, optimizers):
        self.optimizers = list(optimizers)

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self.optimizers for g in opt.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def train(self) -> None:
        for opt in self.optimizers:
            opt.train()

    def eval(self) -> None:
        for opt in self.optimizers:
            opt.eval()

    def state_dict(self) -> dict:
        return {"chain": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        for opt, saved in zip(self.optimizers, state["chain"], strict=True):
            opt.load_state_dict(saved)


def _my_slice(batch):
    """This rank's slice of the batch and its fraction of the samples."""
    n = _batch_len(batch)
    mine = distributed.shard_batch(batch)
    return mine, (_batch_len(mine) / n if n else 1.0 / distributed.world_size())


def _check_splittable(problem) -> None:
    n, w = _batch_len(problem.batch(0)), distributed.world_size()
    if n is not None and n < w:
        raise UsageError(f"a batch of {n} samples cannot be split over {w} ranks; "
                         f"use a batch of at least {w} samples or fewer processes")


def _batch_len(batch) -> int | None:
    """Samples in a batch: dim 0 of its first tensor (tuple/list/dict of tensors)."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.dim() else None
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (tuple, list)) else ()
    for item in items:
        n = _batch_len(item)
        if n is not None:
            return n
    return None
