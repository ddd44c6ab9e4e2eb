"""Hyperparameters of the digits MLP (search-space kind).

objective(config) = 1 - validation macro-F1 of the MLP after `train_steps`
AdamW steps with that configuration, on problems/digits.py's fixed split
(minimised). Training is a pure function of (run seed, config): weight init,
dropout and minibatches come from seeds derived from the run seed only, so
every configuration sees the same random numbers and reruns are identical.

- `digits-hpo` (6 dims): learning rate (log), width (log int), depth,
  weight decay (log), batch size (choice), dropout; every hidden layer
  shares them.
- `digits-hpo-<d>` (d = 4L + 3 for L hidden layers: 15 for L=3, 31 for
  L=7): per hidden layer a width, a learning rate, a weight decay and a
  dropout (AdamW parameter groups), plus the output layer's learning rate
  and weight decay and the batch size. Same training budget, so the growth
  of optimizer overhead with dimension can be read off directly.

`--set objective=synflow` replaces the trained objective by a data-free
one: -log of the SynFlow score (problems/synflow.py) of the configuration's
untrained network, the very network training would start from; higher
SynFlow is better, so its negative log is minimised. Nothing is trained and
no data is read per evaluation; only widths and depth enter it.

The metric (`val_f1`, higher is better) is the validation F1 of the
optimizer's current best configuration trained for `final_steps` AdamW steps
(default `train_steps`, so with the trained objective it is the objective's
own training); `test_f1` of that configuration is reported next to it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from harness.params import Param
from harness.problem import SearchSpaceProblem
from harness.registry import register_problem
from harness.seeding import derive_seed
from harness.space import Choice, Float, Int, Space
from problems.synflow import synflow_scores
from problems.digits import load_split, macro_f1

BATCH_SIZES = (16, 32, 64, 128, 256)
OBJECTIVES = ("trained", "synflow")
HIGH_DIM_LAYERS = {15: 3, 31: 7}


def build_net(layers: list[dict], out_lr: float, out_wd: float) -> tuple[nn.Sequential, list[dict]]:
    """The MLP of a configuration and its AdamW parameter groups, initialised from the
    global RNG (the caller seeds it)."""
    modules, groups, dim = [], [], 64
    for layer in layers:
        lin = nn.Linear(dim, int(layer["width"]))
        modules += [lin, nn.ReLU()]
        if layer["dropout"] > 0:
            modules.append(nn.Dropout(layer["dropout"]))
        groups.append({"params": lin.parameters(), "lr": layer["lr"],
                       "weight_decay": layer["weight_decay"]})
        dim = int(layer["width"])
    out = nn.Linear(dim, 10)
    groups.append({"params": out.parameters(), "lr": out_lr, "weight_decay": out_wd})
    return nn.Sequential(*modules, out), groups


def train_and_score(layers: list[dict], out_lr: float, out_wd: float, batch_size: int, steps: int,
                    seed: int, split_seed: int = 0) -> tuple[float, float]:
    """(validation F1, test F1) after `steps` AdamW steps. layers: one dict per hidden
    layer with width, lr, weight_decay, dropout."""
    data = load_split(split_seed)
    with torch.random.fork_rng():   # the run's global RNG stream stays untouched
        torch.manual_seed(derive_seed(seed, "hpo-train"))
        model, groups = build_net(layers, out_lr, out_wd)
        opt = torch.optim.AdamW(groups)
        g = torch.Generator().manual_seed(derive_seed(seed, "hpo-batches"))
        n = data.x_train.shape[0]
        for _ in range(steps):
            idx = torch.randint(n, (batch_size,), generator=g)
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val = macro_f1(model(data.x_val), data.y_val)
            test = macro_f1(model(data.x_test), data.y_test)
    return val, test


def synflow_score(layers: list[dict], seed: int) -> float:
    """Data-free SynFlow score of the untrained network of a configuration, the very
    network train_and_score starts from (same seed, same construction order): the sum
    of every weight's |w| * dR/d|w| (problems.synflow), the zero-cost proxy form of
    Abdelfattah et al. 2021; by SynFlow's conservation law it equals (layers) x R."""
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(seed, "hpo-train"))
        model, _ = build_net(layers, 0.0, 0.0)
    weights = [m.weight.detach() for m in model if isinstance(m, nn.Linear)]
    scores, _ = synflow_scores(weights, [torch.ones_like(w, dtype=torch.float64) for w in weights])
    return float(sum(float(s.sum()) for s in scores))


class DigitsHPO(SearchSpaceProblem):
    # training with torch.optim imports torch._dynamo at its first step (~70 MiB of CPU RSS)
    RUNTIME_IMPORTS = ("sklearn.datasets", "sklearn.model_selection", "sklearn.metrics", "torch._dynamo")
    REFERENCE = "seed paper 003's HPO setting on scikit-learn's digits data (sklearn.datasets.load_digits)"
    SMOKE_SETTINGS = {"train_steps": 5}
    PARAMS = {
        "train_steps": Param(100, int, "AdamW steps per configuration (the fixed training budget)", low=1),
        "split_seed": Param(0, int, "seed of the fixed train/val/test split"),
        "objective": Param("trained", str, "what objective() scores: trained (1 - val F1 after train_steps) "
                           "or synflow (-log SynFlow score of the untrained net, data free)",
                           choices=OBJECTIVES),
        "final_steps": Param(None, int, "AdamW steps of the evaluated configuration (the metric); "
                             "default train_steps", low=1, optional=True),
    }
    METRIC = "val_f1"
    METRIC_HIGHER_IS_BETTER = True

    def __init__(self, name, hparams, seed, *, layers: int = 0):
        super().__init__(name, hparams, seed)
        self.layers = layers      # 0: the shared 6-dim space; L > 0: per-layer space
        if layers == 0:
            dims = [Float("lr", 1e-4, 1e-1, log=True), Int("width", 8, 256, log=True),
                    Int("depth", 1, 4), Float("weight_decay", 1e-6, 1e-1, log=True),
                    Choice("batch_size", BATCH_SIZES), Float("dropout", 0.0, 0.5)]
        else:
            dims = []
            for i in range(layers):
                dims += [Int(f"width{i}", 8, 256, log=True), Float(f"lr{i}", 1e-4, 1e-1, log=True),
                         Float(f"weight_decay{i}", 1e-6, 1e-1, log=True), Float(f"dropout{i}", 0.0, 0.5)]
            dims += [Float("lr_out", 1e-4, 1e-1, log=True), Float("weight_decay_out", 1e-6, 1e-1, log=True),
                     Choice("batch_size", BATCH_SIZES)]
        self.space = Space(dims)
        self._scores: dict[tuple, tuple[float, float]] = {}

    def _args(self, config: dict) -> tuple[list[dict], float, float]:
        """(hidden layers, output lr, output weight decay) of a configuration."""
        if self.layers == 0:
            layer = {"width": config["width"], "lr": config["lr"],
                     "weight_decay": config["weight_decay"], "dropout": config["dropout"]}
            return [layer] * int(config["depth"]), config["lr"], config["weight_decay"]
        layers = [{"width": config[f"width{i}"], "lr": config[f"lr{i}"],
                   "weight_decay": config[f"weight_decay{i}"], "dropout": config[f"dropout{i}"]}
                  for i in range(self.layers)]
        return layers, config["lr_out"], config["weight_decay_out"]

    def _train(self, config: dict, steps: int | None = None) -> tuple[float, float]:
        steps = steps or self.hp["train_steps"]
        scores = train_and_score(*self._args(config), int(config["batch_size"]), steps, self.seed,
                                 self.hp["split_seed"])
        self._scores[(tuple(sorted(config.items())), steps)] = scores
        return scores

    def objective(self, config: dict) -> float:
        if self.hp["objective"] == "synflow":
            # minimised: the negative log of the score (higher SynFlow is better; the log
            # because R spans orders of magnitude across widths and depths)
            score = synflow_score(self._args(config)[0], self.seed)
            return -math.log(score) if score > 0 else math.inf
        # always trains (no memo): every evaluation costs the same for every optimizer
        return 1.0 - self._train(config)[0]

    def evaluate(self, solution=None) -> dict[str, float]:
        if solution is None:
            return {}
        steps = self.hp["final_steps"] or self.hp["train_steps"]
        key = (tuple(sorted(solution.items())), steps)
        val, test = self._scores.get(key) or self._train(solution, steps)
        return {"metric": val, "test_f1": test}


register_problem("digits-hpo", DigitsHPO, family="digits-hpo",
                 description="6 hyperparameters of the digits MLP (lr, width, depth, wd, batch, dropout); "
                             "objective 1 - val F1 after 100 AdamW steps")
for _d, _layers in HIGH_DIM_LAYERS.items():
    register_problem(f"digits-hpo-{_d}", DigitsHPO, family="digits-hpo", layers=_layers,
                     description=f"{_d} hyperparameters: per-layer width/lr/wd/dropout of {_layers} hidden "
                                 "layers + output lr/wd + batch; objective 1 - val F1")
