"""MLP classifier on scikit-learn's bundled digits data (weights kind).

The 1797 8x8 images ship inside scikit-learn, so nothing is downloaded. The
train/validation/test split is stratified and fixed by `split_seed`
(independent of the run seed, so every run of every optimizer sees the same
split); features are scaled with the training split's mean and std.
The metric is macro-F1 on the test split; macro-F1 on the validation split is
recorded beside it (val_macro_f1, what `tune` selects on).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from harness.params import Param
from harness.problem import WeightsProblem
from harness.registry import register_problem
from harness.seeding import derive_seed


@dataclass(frozen=True)
class DigitsSplit:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@lru_cache(maxsize=4)
def load_split(split_seed: int = 0, test_frac: float = 0.25, val_frac: float = 0.15) -> DigitsSplit:
    """Stratified train/val/test split of sklearn's digits, standardised on train."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_frac, random_state=split_seed, stratify=y)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_frac / (1 - test_frac), random_state=split_seed, stratify=y_rest)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-3
    t = lambda a: torch.from_numpy((a - mean) / std)  # noqa: E731
    l = lambda a: torch.from_numpy(a.astype(np.int64))  # noqa: E731,E741
    return DigitsSplit(t(x_train), l(y_train), t(x_val), l(y_val), t(x_test), l(y_test))


def make_mlp(widths: list[int], dropout: float = 0.0) -> nn.Sequential:
    """64 -> widths... -> 10 with ReLU (and dropout) between layers."""
    layers: list[nn.Module] = []
    dims = [64] + list(widths)
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(dims[-1], 10))
    return nn.Sequential(*layers)


def macro_f1(logits: torch.Tensor, y: torch.Tensor) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y.cpu().numpy(), logits.argmax(-1).cpu().numpy(), average="macro"))


class DigitsMLP(WeightsProblem):
    REFERENCE = ("scikit-learn's digits data (UCI Optical Recognition of Handwritten Digits, Alpaydin & Kaynak "
                 "1998), sklearn.datasets.load_digits")
    PARAMS = {
        "hidden": Param(64, int, "width of each hidden layer", low=1),
        "depth": Param(1, int, "number of hidden layers", low=1, high=8),
        "batch_size": Param(64, int, "training minibatch size per step", low=1),
        "split_seed": Param(0, int, "seed of the fixed train/val/test split"),
    }
    METRIC = "macro_f1"
    VALIDATION_KEY = "val_macro_f1"
    EVAL_EVERY = 25
    SAMPLE_LOSSES = True
    RUNTIME_IMPORTS = ("sklearn.datasets", "sklearn.model_selection", "sklearn.metrics")

    def param_count(self) -> int:
        h, d = self.hp["hidden"], self.hp["depth"]
        return 64 * h + h + (d - 1) * (h * h + h) + h * 10 + 10

    def build(self, device) -> None:
        super().build(device)
        data = load_split(self.hp["split_seed"])
        self.data = DigitsSplit(*(t.to(device) for t in (
            data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test)))
        torch.manual_seed(derive_seed(self.seed, "init"))
        self.model = make_mlp([self.hp["hidden"]] * self.hp["depth"]).to(device)

    def meta_model(self) -> nn.Module:
        with torch.device("meta"):
            return make_mlp([self.hp["hidden"]] * self.hp["depth"])

    def example_batch(self, device):
        n = self.hp["batch_size"]
        return (torch.empty(n, 64, device=device),
                torch.zeros(n, dtype=torch.long, device=device))

    def batch(self, step: int):
        n = self.data.x_train.shape[0]
        idx = torch.randint(n, (self.hp["batch_size"],), generator=self.batch_generator(step))
        idx = idx.to(self.device)
        return self.data.x_train[idx], self.data.y_train[idx]

    def loss(self, batch) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.model(x), y)

    def sample_losses(self, batch) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self.model(x), y, reduction="none")

    @torch.no_grad()
    def evaluate(self, solution=None) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        logits = self.model(self.data.x_test)
        out = {
            "metric": macro_f1(logits, self.data.y_test),
            "test_loss": float(nn.functional.cross_entropy(logits, self.data.y_test)),
            "test_accuracy": float((logits.argmax(-1) == self.data.y_test).float().mean()),
            "val_macro_f1": macro_f1(self.model(self.data.x_val), self.data.y_val),
        }
        self.model.train(was_training)
        return out


register_problem(
    "digits-mlp", DigitsMLP, family="digits",
    description="MLP 64-64-10 on sklearn's bundled digits; metric test macro-F1",
)
