"""CMA-ES through pycma (`cma` package), on search spaces and on small nets.

Search space: pycma runs in the space's encoded box (harness.space) with
bounds, per-coordinate stds = sigma0 x box width, and starts from a seeded
uniform point of the box (`initial_point`). Weights: pycma runs on the
flattened trainable parameters, starting from the initialised weights with
an absolute sigma0; every candidate of a generation is scored on the same
minibatch, and the distribution mean is written back into the model as the
solution. `variant=sep` (pycma's CMA_diagonal) keeps O(n) memory and time
per sample, which is what makes nets with thousands of weights feasible.

Logged loss: the best candidate of the generation on search spaces; the
mean over the population on weights problems (the minimum over a population
on one minibatch is biased low).
"""

from __future__ import annotations

import pickle

import numpy as np
import torch

from harness.optimizer import Optimizer, StepResult
from harness.params import Param
from harness.registry import register_optimizer
from harness.seeding import derive_seed

SEP_AUTO_DIM = 1000   # above this, variant=auto uses sep-CMA (full C is O(n^2) memory)

# Memory of pycma 4.x's full-covariance sampler, in units of n^2 float64 (measured on
# digits-mlp, n=4810, see docs/memory.md): C, B and C^-1/2 persist (3); an eigen-
# decomposition adds about 4 more (LAPACK syevd workspace, copies of C and B); a
# checkpoint (pickle of the strategy, then torch.save of those bytes) about 11.
FULL_PERSISTENT_N2 = 3
FULL_TRANSIENT_N2 = 11


def initial_point(space, seed: int) -> np.ndarray:
    return space.sample_encoded(np.random.default_rng(derive_seed(seed, "cma-x0")))


def pycma_seed(seed: int) -> int:
    # pycma treats seed 0 as "draw one from the clock"; keep it positive.
    return derive_seed(seed, "cma") % (2**31 - 2) + 1


@register_optimizer("cma", kinds=["search-space", "weights"],
                    description="CMA-ES (pycma) ask/tell; sep-CMA for large dimension")
class CMAES(Optimizer):
    REFERENCE = ("CMA-ES: Hansen & Ostermeier, Evolutionary Computation 9(2), 2001; sep-CMA: Ros & Hansen, PPSN "
                 "2008; library: pycma (`cma` package)")
    SMOKE_SETTINGS = {"popsize": 4}
    POPULATION_PARAM = "popsize"
    PARAMS = {
        "sigma0": Param(None, float, "initial step: fraction of box width (search space) or "
                        "absolute std in weight units (weights); default 0.3 / 0.05",
                        low=0.0, optional=True),
        "popsize": Param(None, int, "population per generation (default pycma's 4+3ln n)",
                         low=2, optional=True),
        "variant": Param("auto", str, "full covariance, sep (diagonal) or auto",
                         choices=("auto", "full", "sep")),
        "restarts": Param(0, int, "IPOP restarts after pycma's termination criteria are met "
                          "(population doubled each time); 0: the run ends there", low=0),
    }

    RUNTIME_IMPORTS = ("cma",)

    @classmethod
    def memory_model(cls, hp, facts) -> dict[str, int]:
        """Covariance state (full: n^2 doubles several times, sep: O(n)), the sampled
        population in float64, and the transient of an eigendecomposition or a checkpoint."""
        n = max(int(facts.trainable_count), 1)
        lam = hp.get("popsize") or 4 + int(3 * np.log(n))
        full = hp.get("variant") == "full" or (hp.get("variant") == "auto" and n <= SEP_AUTO_DIM)
        if full:
            state = FULL_PERSISTENT_N2 * n * n * 8
            transient = FULL_TRANSIENT_N2 * n * n * 8
        else:   # sep: C diagonal, D, paths, mean, ... a few vectors of n (x3 at a checkpoint)
            state = 8 * n * 8
            transient = 3 * state
        return {
            "covariance": state,
            "population": 3 * lam * n * 8,   # ask() samples, pycma's copies at tell()
            "transient": transient,          # eigendecomposition / checkpoint pickle
        }

    def setup(self) -> None:

        self.on_weights = self.kind == "weights"
        self.restarts_done = 0
        self.best_f, self.best_x = float("inf"), None    # over every restart
        if self.on_weights:
            self.params = [p for _, p in self.problem.trainable()]
            x0 = torch.nn.utils.parameters_to_vector(self.params).detach().cpu().double().numpy()
        else:
            x0 = initial_point(self.problem.space, self.seed)
        self.es = self._strategy(x0, self.hp["popsize"], pycma_seed(self.seed))

    def _strategy(self, x0, popsize, seed: int):
        import cma

        # pycma draws from numpy's *global* RandomState by default, which a pickle of
        # the strategy then copies: a resumed run would continue on a private copy
        # while the original kept sharing the global stream. A private RandomState,
        # seeded as pycma seeds the global one, gives the same samples and makes
        # the checkpoint (a pickle of the strategy) carry the exact stream position.
        self.rs = np.random.RandomState(seed)
        opts = {"seed": seed, "verbose": -9, "randn": self.rs.randn}
        if popsize:
            opts["popsize"] = popsize
        if self.on_weights:
            sigma0 = self.hp["sigma0"] if self.hp["sigma0"] is not None else 0.05
        else:
            lo, hi = self.problem.space.bounds()
            sigma0 = self.hp["sigma0"] if self.hp["sigma0"] is not None else 0.3
            opts["bounds"] = [list(lo), list(hi)]
            opts["CMA_stds"] = list(hi - lo)
        variant = self.hp["variant"]
        if variant == "sep" or (variant == "auto" and len(x0) > SEP_AUTO_DIM):
            opts["CMA_diagonal"] = True
        return cma.CMAEvolutionStrategy(x0, sigma0, opts)

    def _restart(self) -> None:
        """IPOP (Auger and Hansen 2005), as pycma's fmin(restarts=, incpopsize=2): a new
        strategy with twice the population, from a fresh seeded point of the box (search
        space) or from the current mean (weights)."""
        self.restarts_done += 1
        k = self.restarts_done
        if self.on_weights:
            x0 = np.array(self.es.mean)
        else:
            x0 = self.problem.space.sample_encoded(np.random.default_rng(derive_seed(self.seed, "cma-x0", k)))
        self.es = self._strategy(x0, 2 * self.es.popsize, derive_seed(self.seed, "cma", k) % (2**31 - 2) + 1)

    def is_finished(self) -> bool:
        """pycma's own termination criteria (tolfun, tolx, ...) met and no restart left:
        further steps would only ask pycma past its convergence."""
        return bool(self.es.stop()) and self.restarts_done >= self.hp["restarts"]

    def finish_reason(self) -> str | None:
        stop = self.es.stop()
        after = f" after {self.restarts_done} restarts" if self.restarts_done else ""
        return f"converged: {', '.join(stop)}{after}" if stop else None

    def _load_vector(self, x) -> None:
        vec = torch.as_tensor(np.asarray(x), dtype=self.params[0].dtype, device=self.params[0].device)
        torch.nn.utils.vector_to_parameters(vec, self.params)

    def step(self, step: int) -> StepResult:
        if self.es.stop():   # converged with restarts left (else the run has ended)
            self._restart()
        xs = self.es.ask()
        if self.on_weights:
            with torch.no_grad():
                batch = self.problem.batch(step)
                values = []
                for x in xs:
                    self._load_vector(x)
                    values.append(float(self.problem.loss(batch)))
                told = [v if np.isfinite(v) else 1e300 for v in values]
                self.es.tell(xs, told)
                self._load_vector(self.es.mean)
            loss = float(np.mean(values))
        else:   # grad mode left on: an objective may train a model (digits-hpo)
            values = [float(self.problem.objective_encoded(x)) for x in xs]
            told = values
            self.es.tell(xs, told)
            loss = float(np.min(values))
        self._track_best(xs, told)
        extra = {"sigma": float(self.es.sigma), "best_so_far": self.best_f}
        if self.hp["restarts"]:
            extra.update(restart=self.restarts_done, popsize=self.es.popsize)
        return StepResult(loss=loss, evals=len(xs), forwards=len(xs), extra=extra)

    def _track_best(self, xs, told) -> None:
        """The best-so-far over every restart, from the values just told, chosen as pycma's
        BestSolution.update chooses (first minimum ignoring NaN, strictly better): the same
        as reading es.result.fbest/xbest, without building pycma's result object."""
        if all(v != v for v in told):   # all NaN: pycma keeps its best too
            return
        i = int(np.nanargmin(told))
        if told[i] < self.best_f:
            self.best_f, self.best_x = float(told[i]), np.array(xs[i])

    def solution(self):
        if self.on_weights or self.best_x is None:
            return None
        return self.problem.space.decode(self.best_x)

    def state_dict(self) -> dict:
        return {"es": pickle.dumps(self.es), "restarts_done": self.restarts_done,
                "best": (self.best_f, self.best_x)}

    def load_state_dict(self, state: dict) -> None:
        self.es = pickle.loads(state["es"])
        self.restarts_done = state.get("restarts_done", 0)
        self.best_f, self.best_x = state.get("best", (float(self.es.result.fbest), self.es.result.xbest))
        if self.on_weights:
            self._load_vector(self.es.mean)
