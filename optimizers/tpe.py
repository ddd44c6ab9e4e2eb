"""Optuna's TPE sampler (optuna.samplers.TPESampler) through the ask/tell interface.

The search space maps one to one onto Optuna distributions (Float ->
FloatDistribution, Int -> IntDistribution, both with log where declared;
Choice -> CategoricalDistribution), so the adapter draws exactly the trials a
plain Optuna study with the same sampler seed draws. The sampler seed is
derived from the run seed. One step = `batch` trials asked, evaluated and
told in order. Logged loss: the best objective of the step.

Checkpoint: the study (in-memory storage, sampler and its RNG) is pickled.
"""

from __future__ import annotations

import pickle

from harness.optimizer import Optimizer, StepResult
from harness.params import Param
from harness.registry import register_optimizer
from harness.seeding import derive_seed
from harness.space import Choice, Float, Int


def optuna_distributions(space) -> dict:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for d in space.dims:
        if isinstance(d, Float):
            out[d.name] = FloatDistribution(d.low, d.high, log=d.log)
        elif isinstance(d, Int):
            out[d.name] = IntDistribution(d.low, d.high, log=d.log)
        elif isinstance(d, Choice):
            out[d.name] = CategoricalDistribution(list(d.options))
        else:
            raise TypeError(f"unsupported dimension {d!r}")
    return out


def sampler_seed(seed: int) -> int:
    return derive_seed(seed, "tpe") % 2**32


@register_optimizer("tpe", kinds=["search-space"], description="Optuna TPE sampler (seeded), ask/tell")
class TPE(Optimizer):
    REFERENCE = ("TPE: Bergstra et al., Algorithms for Hyper-Parameter Optimization (NeurIPS 2011); library: "
                 "Optuna (Akiba et al., KDD 2019) TPESampler")
    RUNTIME_IMPORTS = ("optuna",)
    PARAMS = {
        "batch": Param(1, int, "trials per step", low=1),
        "n_startup_trials": Param(10, int, "random trials before TPE takes over", low=0),
        "multivariate": Param(None, bool, "multivariate TPE (joint density over dimensions); "
                              "default: the installed Optuna's default", optional=True),
    }

    def make_sampler(self):
        import optuna

        kwargs = {} if self.hp["multivariate"] is None else {"multivariate": self.hp["multivariate"]}
        return optuna.samplers.TPESampler(seed=sampler_seed(self.seed),
                                          n_startup_trials=self.hp["n_startup_trials"], **kwargs)

    def setup(self) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(direction="minimize", sampler=self.make_sampler())
        self.dists = optuna_distributions(self.problem.space)

    def step(self, step: int) -> StepResult:
        values = []
        for _ in range(self.hp["batch"]):
            trial = self.study.ask(self.dists)
            value = float(self.problem.objective(dict(trial.params)))
            self.study.tell(trial, value)
            values.append(value)
        return StepResult(loss=min(values), evals=len(values), forwards=len(values),
                          extra={"best_so_far": float(self.study.best_value)})

    def solution(self):
        try:
            return dict(self.study.best_params)
        except ValueError:   # no finished trial yet
            return None

    def state_dict(self) -> dict:
        return {"study": pickle.dumps(self.study)}

    def load_state_dict(self, state: dict) -> None:
        self.study = pickle.loads(state["study"])
