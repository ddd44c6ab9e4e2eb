"""Any nevergrad optimizer by name (`--set name=...`, default NGOpt), ask/tell.

The search space becomes nevergrad's own parametrization (ng.p.Dict of
ng.p.Scalar / ng.p.Log with integer casting for Int, ng.p.Choice for
Choice), whose random_state is a numpy RandomState seeded from the run seed,
so a run is reproducible. nevergrad optimizers plan for a budget (NGOpt
picks its algorithm from budget and dimension): `budget` says how many
evaluations to plan for (default: the run's --evals, else --steps x batch;
none with --time only). One step = `batch`
candidates asked, evaluated and told. Solution: the optimizer's
recommendation. Checkpoint: the history of told (candidate, loss) pairs, not a
pickle (several nevergrad optimizers, e.g. the recast SQP/Cobyla ones NGOpt
picks for small budgets, refuse pickling); on resume a freshly seeded
optimizer is replayed through that history, and each replayed ask must give
the stored candidate again (checked), which makes the continuation exact.
"""

from __future__ import annotations

import difflib

import numpy as np

from harness.errors import UsageError
from harness.optimizer import Optimizer, StepResult
from harness.params import Param
from harness.registry import register_optimizer
from harness.seeding import derive_seed
from harness.space import Choice, Int


def ng_parametrization(space, seed: int):
    import nevergrad as ng

    params = {}
    for d in space.dims:
        if isinstance(d, Choice):
            params[d.name] = ng.p.Choice(list(d.options))
        else:
            scalar = (ng.p.Log(lower=d.low, upper=d.high) if d.log
                      else ng.p.Scalar(lower=d.low, upper=d.high))
            params[d.name] = scalar.set_integer_casting() if isinstance(d, Int) else scalar
    param = ng.p.Dict(**params)
    param.random_state = np.random.RandomState(derive_seed(seed, "nevergrad") % 2**32)
    return param


@register_optimizer("nevergrad", kinds=["search-space"],
                    description="any nevergrad optimizer by --set name=... (default NGOpt)")
class Nevergrad(Optimizer):
    REFERENCE = ("nevergrad (Rapin & Teytaud, facebookresearch/nevergrad); NGOpt: Meunier et al., Black-Box "
                 "Optimization Revisited, IEEE TEVC 2022")
    RUNTIME_IMPORTS = ("nevergrad",)
    SMOKE_SETTINGS = {"budget": 6}
    PARAMS = {
        "name": Param("NGOpt", str, "nevergrad optimizer (a key of nevergrad.optimizers.registry)"),
        "budget": Param(None, int, "evaluations nevergrad plans for (NGOpt chooses by it); default: "
                        "the run's --evals, else --steps x batch", low=1, optional=True),
        "batch": Param(1, int, "candidates per step", low=1),
    }

    @classmethod
    def check_hparams(cls, hp) -> None:
        import nevergrad as ng

        names = sorted(ng.optimizers.registry)
        if hp["name"] not in ng.optimizers.registry:
            close = difflib.get_close_matches(hp["name"], names, n=5, cutoff=0.5)
            common = [n for n in ("NGOpt", "CMA", "TwoPointsDE", "PSO", "OnePlusOne", "RandomSearch")
                      if n not in close]
            raise UsageError(
                f"--set name={hp['name']!r}: not a nevergrad optimizer; valid names include "
                f"{', '.join(close + common)} ({len(names)} in nevergrad.optimizers.registry)")

    def setup(self) -> None:
        import nevergrad as ng

        param = ng_parametrization(self.problem.space, self.seed)
        budget = self.hp["budget"]
        run = self.budget
        if budget is None and run is not None:   # NGOpt needs one to choose its algorithm
            budget = run.evals or (run.steps * self.hp["batch"] if run.steps else None)
        self.opt = ng.optimizers.registry[self.hp["name"]](parametrization=param, budget=budget,
                                                           num_workers=1)
        self.best = float("inf")
        self.history: list[tuple[np.ndarray, float]] = []   # standardized candidate, loss
        self.finished: str | None = None                      # nevergrad's own termination

    def _data(self, cand) -> np.ndarray:
        return np.asarray(cand.get_standardized_data(reference=self.opt.parametrization), dtype=float)

    def _ask(self):
        """The next candidate, or None once nevergrad says its underlying optimizer has
        finished (it would only return random points from then on)."""
        import warnings

        from nevergrad.common.errors import FinishedUnderlyingOptimizerWarning

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FinishedUnderlyingOptimizerWarning)
            cand = self.opt.ask()
        if any(issubclass(w.category, FinishedUnderlyingOptimizerWarning) for w in caught):
            self.finished = f"converged: nevergrad's {self.hp['name']} finished its underlying optimizer"
            return None
        return cand

    def is_finished(self) -> bool:
        """nevergrad's termination: its underlying optimizer finished, or the evaluation
        budget it planned for (`budget`) is spent."""
        spent = self.opt.budget is not None and self.opt.num_tell >= self.opt.budget
        if spent and self.finished is None:
            self.finished = f"done: the {self.opt.budget} evaluations nevergrad planned for are spent"
        return self.finished is not None

    def finish_reason(self) -> str | None:
        return self.finished

    def step(self, step: int) -> StepResult:
        values = []
        for _ in range(self.hp["batch"]):
            cand = self._ask()
            if cand is None:
                break
            value = float(self.problem.objective(dict(cand.value)))
            self.opt.tell(cand, value)
            self.history.append((self._data(cand), value))
            values.append(value)
        self.best = min([self.best, *values])
        return StepResult(loss=min(values, default=self.best), evals=len(values), forwards=len(values),
                          extra={"best_so_far": self.best})

    def solution(self):
        if self.opt.num_tell == 0:
            return None
        return dict(self.opt.provide_recommendation().value)

    def state_dict(self) -> dict:
        return {"history": [(x.copy(), f) for x, f in self.history], "best": self.best,
                "finished": self.finished}

    def load_state_dict(self, state: dict) -> None:
        self.setup()   # a fresh optimizer with the run's seed, replayed below
        for i, (x, f) in enumerate(state["history"]):
            cand = self.opt.ask()
            if not np.allclose(self._data(cand), x, rtol=0, atol=1e-12):
                raise RuntimeError(f"nevergrad {self.hp['name']}: replay diverged at candidate {i}; "
                                   "the checkpoint cannot be continued exactly")
            self.opt.tell(cand, f)
            self.history.append((x, f))
        self.best = state["best"]
        self.finished = state.get("finished")
