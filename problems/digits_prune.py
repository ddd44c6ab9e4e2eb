"""Prune an Adam-trained digits MLP to a global sparsity (pruning kind).

`digits-prune-<s>` for s in 50, 70, 90, 95, 98 (percent of the prunable
weights removed). The dense network is problems/digits.py's MLP on the same
fixed split, trained with AdamW (full-batch epochs of shuffled minibatches)
for `train_steps` steps; it is cached per (run seed, architecture, training
settings) under the harness cache dir, so reruns and other optimizers reuse
the identical network instead of retraining.

Prunable tensors: the weight matrices of every Linear layer (biases are
kept, as in Tanaka et al. 2020). A solution is a harness.problem.Pruned
(masks + optional per-layer scales). Metric: test macro-F1 of the masked
network without retraining. With `finetune_steps` > 0 the evaluation also
reports `finetuned_f1`: the masked net after that many AdamW steps with the
masks held fixed (reported separately, never as the metric). The loss the
optimizers minimise is 1 - validation macro-F1 of the masked network.
With `bias_correction` the biases of the masked net are recalibrated (each
layer's mean pre-activation on the train split restored, no weight
training) before every score. For gradient-based mask learning (softmask)
the problem offers training minibatches (`batch`) and a loss differentiable
in swapped-in weight tensors (`masked_loss`).
"""

from __future__ import annotations

import io

import torch
from torch import nn

from harness.cache import cache_dir
from harness.errors import UsageError
from harness.params import Param
from harness.problem import Pruned, PruningProblem
from harness.registry import register_problem
from harness.seeding import derive_seed
from harness.store import atomic_write_bytes
from problems.digits import DigitsSplit, load_split, macro_f1, make_mlp

SPARSITIES = (50, 70, 90, 95, 98)


def train_dense(hidden: int, depth: int, split_seed: int, seed: int, steps: int, lr: float,
                batch_size: int = 64) -> nn.Sequential:
    """AdamW on the digits train split; a pure function of its arguments."""
    data = load_split(split_seed)
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(seed, "prune-init"))
        model = make_mlp([hidden] * depth)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(derive_seed(seed, "prune-batches"))
    n = data.x_train.shape[0]
    perm, pos = torch.randperm(n, generator=g), 0
    for _ in range(steps):
        if pos + batch_size > n:   # epochs of shuffled minibatches
            perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos:pos + batch_size]
        pos += batch_size
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
        opt.step()
    return model.eval()


def cached_dense(hidden: int, depth: int, split_seed: int, seed: int, steps: int, lr: float) -> dict:
    """State dict of train_dense, trained once per key and kept in the harness cache."""
    key = f"mlp_h{hidden}_d{depth}_split{split_seed}_s{seed}_steps{steps}_lr{lr:g}.pt"
    path = cache_dir("digits-prune") / key
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v.detach().clone() for k, v in
             train_dense(hidden, depth, split_seed, seed, steps, lr).state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())
    return state


class DigitsPrune(PruningProblem):
    # training with torch.optim imports torch._dynamo at its first step (~70 MiB of CPU RSS)
    RUNTIME_IMPORTS = ("sklearn.datasets", "sklearn.model_selection", "sklearn.metrics", "torch._dynamo")
    REFERENCE = ("seed paper 003's pruning setting on scikit-learn's digits data; unstructured pruning at a "
                 "global sparsity as in Tanaka et al. 2020")
    SMOKE_SETTINGS = {"hidden": 32, "train_steps": 30}
    PARAMS = {
        # 64-256-256-10: wide enough that <= 70% sparsity costs almost nothing (measured)
        "hidden": Param(256, int, "width of each hidden layer", low=1),
        "depth": Param(2, int, "number of hidden layers", low=1, high=8),
        "train_steps": Param(2000, int, "AdamW steps (batch 64) of the dense network", low=1),
        "train_lr": Param(3e-3, float, "AdamW learning rate of the dense network", low=0.0),
        "finetune_steps": Param(0, int, "AdamW steps on the masked net, reported as finetuned_f1 "
                                "(0 = off)", low=0),
        "split_seed": Param(0, int, "seed of the fixed train/val/test split"),
        "bias_correction": Param(False, bool, "after masking, shift each layer's bias so its mean "
                                 "pre-activation on the train split equals the dense net's (no weight "
                                 "training)"),
        "batch_size": Param(64, int, "minibatch of batch(), for gradient-based mask learning "
                            "(softmask)", low=1),
    }
    METRIC = "macro_f1"
    EVAL_EVERY = 1
    DIFFERENTIABLE = True

    def __init__(self, name, hparams, seed, *, sparsity: float):
        super().__init__(name, hparams, seed)
        self.sparsity = sparsity

    def check(self) -> None:
        if not 0.0 <= self.sparsity < 1.0:
            raise UsageError(f"{self.name}: sparsity {self.sparsity} must be in [0, 1)")

    def param_count(self) -> int:
        h, d = self.hp["hidden"], self.hp["depth"]
        return 64 * h + h + (d - 1) * (h * h + h) + h * 10 + 10

    def build(self, device) -> None:
        super().build(device)
        hp = self.hp
        data = load_split(hp["split_seed"])
        self.data = DigitsSplit(*(t.to(device) for t in (
            data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test)))
        self.model = make_mlp([hp["hidden"]] * hp["depth"])
        self.model.load_state_dict(cached_dense(hp["hidden"], hp["depth"], hp["split_seed"], self.seed,
                                                hp["train_steps"], hp["train_lr"]))
        self.model.to(device).eval().requires_grad_(False)
        self.linears = [m for m in self.model if isinstance(m, nn.Linear)]
        self.dense = [m.weight.detach().clone() for m in self.linears]
        self.dense_biases = [m.bias.detach().clone() for m in self.linears]
        # the dense net's mean pre-activation of each Linear on the train split (bias_correction)
        self.dense_means, x = [], self.data.x_train
        for m in self.model:
            x = m(x)
            if isinstance(m, nn.Linear):
                self.dense_means.append(x.mean(0))
        self.dense_f1 = macro_f1(self.model(self.data.x_test), self.data.y_test)

    def prunable(self) -> list[tuple[str, torch.Tensor]]:
        return [(f"layer{i}.weight", w) for i, w in enumerate(self.dense)]

    def _masked(self, pruned: Pruned) -> list[torch.Tensor]:
        if len(pruned.masks) != len(self.dense):
            raise ValueError(f"{len(pruned.masks)} masks for {len(self.dense)} prunable tensors")
        scales = pruned.scales or [1.0] * len(self.dense)
        return [w * mask.to(w.device, w.dtype) * c for w, mask, c in zip(self.dense, pruned.masks, scales)]

    @torch.no_grad()
    def _biases(self, weights: list[torch.Tensor]) -> list[torch.Tensor]:
        """The biases of the masked net: as trained or, with bias_correction, shifted layer
        by layer (each after the previous ones) so that each Linear's mean pre-activation
        over the train split equals the dense net's: a statistics recalibration without
        weight training, the bias correction of Nagel et al. 2019 (data-free quantization)
        applied to pruning error."""
        if not self.hp["bias_correction"]:
            return self.dense_biases
        out, x, it = [], self.data.x_train, iter(zip(weights, self.dense_biases, self.dense_means))
        for m in self.model:
            if isinstance(m, nn.Linear):
                w, b, target = next(it)
                x = nn.functional.linear(x, w)
                out.append(target - x.mean(0))
                x = x + out[-1]
            else:
                x = m(x)
        return out

    @torch.no_grad()
    def _load(self, pruned: Pruned, linears=None) -> None:
        """The masked net (weights and, with bias_correction, recalibrated biases) into
        `linears` (default: the problem's own model)."""
        weights = self._masked(pruned)
        _write(self.linears if linears is None else linears, weights, self._biases(weights))

    def _restore(self) -> None:
        _write(self.linears, self.dense, self.dense_biases)

    @torch.no_grad()
    def _f1(self, pruned: Pruned, split: str) -> float:
        x, y = (self.data.x_val, self.data.y_val) if split == "val" else (self.data.x_test, self.data.y_test)
        self._load(pruned)
        try:
            return macro_f1(self.model(x), y)
        finally:
            self._restore()

    def loss(self, pruned: Pruned) -> float:
        return 1.0 - self._f1(pruned, "val")

    def batch(self, step: int):
        g = torch.Generator().manual_seed(derive_seed(self.seed, "prune-mask-batch", step))
        idx = torch.randint(self.data.x_train.shape[0], (self.hp["batch_size"],), generator=g).to(self.device)
        return self.data.x_train[idx], self.data.y_train[idx]

    def masked_loss(self, weights: list[torch.Tensor], batch) -> torch.Tensor:
        x, y = batch
        it = iter(weights)
        for m in self.model:   # the trained net with its weight matrices swapped for `weights`
            x = nn.functional.linear(x, next(it), m.bias) if isinstance(m, nn.Linear) else m(x)
        return nn.functional.cross_entropy(x, y)

    def _finetuned_f1(self, pruned: Pruned) -> float:
        """AdamW on the masked net (masks fixed: pruned weights stay exactly 0)."""
        model = make_mlp([self.hp["hidden"]] * self.hp["depth"]).to(self.device)
        model.load_state_dict(self.model.state_dict())
        linears = [m for m in model if isinstance(m, nn.Linear)]
        masks = [mask.to(self.device, torch.float32) for mask in pruned.masks]
        self._load(pruned, linears)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
        g = torch.Generator().manual_seed(derive_seed(self.seed, "prune-finetune"))
        n = self.data.x_train.shape[0]
        for _ in range(self.hp["finetune_steps"]):
            idx = torch.randint(n, (64,), generator=g).to(self.device)
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(self.data.x_train[idx]), self.data.y_train[idx]).backward()
            opt.step()
            with torch.no_grad():
                for m, mask in zip(linears, masks):
                    m.weight.mul_(mask)
        with torch.no_grad():
            return macro_f1(model.eval()(self.data.x_test), self.data.y_test)

    def evaluate(self, solution: Pruned | None = None) -> dict[str, float]:
        if solution is None:   # before the first step: the dense network, not a metric
            return {"dense_f1": self.dense_f1}
        kept = sum(int(m.sum()) for m in solution.masks)
        total = sum(w.numel() for w in self.dense)
        out = {"metric": self._f1(solution, "test"), "val_f1": self._f1(solution, "val"),
               "dense_f1": self.dense_f1, "sparsity": 1.0 - kept / total}
        if self.hp["finetune_steps"] > 0:
            out["finetuned_f1"] = self._finetuned_f1(solution)
        return out


for _s in SPARSITIES:
    register_problem(
        f"digits-prune-{_s}", DigitsPrune, family="digits-prune", sparsity=_s / 100.0,
        description=f"prune an AdamW-trained digits MLP (64-256-256-10) to {_s}% global sparsity; "
                    "metric test macro-F1 without retraining",
    )


@torch.no_grad()
def _write(linears: list[nn.Linear], weights: list[torch.Tensor], biases: list[torch.Tensor]) -> None:
    for m, w, b in zip(linears, weights, biases):
        m.weight.copy_(w)
        m.bias.copy_(b)
