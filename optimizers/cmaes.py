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
    PARAMS = {
        "sigma0": Param(None, float, "initial step: fraction of box width (search space) or "
                        "absolute std in weight units (weights); default 0.3 / 0.05",
                        low=0.0, optional=True),
        "popsize": Param(None, int, "population per generation (default pycma's 4+3ln n)",
                         low=2, optional=True),
        "variant": Param("auto", str, "full covariance, sep (diagonal) or auto",
                         choices=("auto", "full", "sep")),
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
        import cma

        self.on_weights = self.kind == "weights"
        # pycma draws from numpy's *global* RandomState by default, which a pickle of
        # the strategy then copies: a resumed run would continue on a private copy
        # while the original kept sharing the global stream. A private RandomState,
        # seeded as pycma seeds the global one, gives the same samples and makes
        # the checkpoint (a pickle of the strategy) carry the exact stream position.
        self.rs = np.random.RandomState(pycma_seed(self.seed))
        opts = {"seed": pycma_seed(self.seed), "verbose": -9, "randn": self.rs.randn}
        if self.hp["popsize"]:
            opts["popsize"] = self.hp["popsize"]
        if self.on_weights:
            self.params = [p for _, p in self.problem.trainable()]
            x0 = torch.nn.utils.parameters_to_vector(self.params).detach().cpu().double().numpy()
            sigma0 = self.hp["sigma0"] if self.hp["sigma0"] is not None else 0.05
        else:
            space = self.problem.space
            lo, hi = space.bounds()
            x0 = initial_point(space, self.seed)
            sigma0 = self.hp["sigma0"] if self.hp["sigma0"] is not None else 0.3
            opts["bounds"] = [list(lo), list(hi)]
            opts["CMA_stds"] = list(hi - lo)
        dim = len(x0)
        variant = self.hp["variant"]
        if variant == "sep" or (variant == "auto" and dim > SEP_AUTO_DIM):
            opts["CMA_diagonal"] = True
        self.es = cma.CMAEvolutionStrategy(x0, sigma0, opts)

    def _load_vector(self, x) -> None:
        vec = torch.as_tensor(np.asarray(x), dtype=self.params[0].dtype, device=self.params[0].device)
        torch.nn.utils.vector_to_parameters(vec, self.params)

    def step(self, step: int) -> StepResult:
        xs = self.es.ask()
        if self.on_weights:
            with torch.no_grad():
                batch = self.problem.batch(step)
                values = []
                for x in xs:
                    self._load_vector(x)
                    values.append(float(self.problem.loss(batch)))
                finite = [v if np.isfinite(v) else 1e300 for v in values]
                self.es.tell(xs, finite)
                self._load_vector(self.es.mean)
            loss = float(np.mean(values))
        else:   # grad mode left on: an objective may train a model (digits-hpo)
            decode = self.problem.space.decode
            values = [float(self.problem.objective(decode(x))) for x in xs]
            self.es.tell(xs, values)
            loss = float(np.min(values))
        return StepResult(loss=loss, evals=len(xs), forwards=len(xs), extra={
            "sigma": float(self.es.sigma), "best_so_far": float(self.es.result.fbest)})

    def solution(self):
        if self.on_weights or self.es.result.xbest is None:
            return None
        return self.problem.space.decode(self.es.result.xbest)

    def state_dict(self) -> dict:
        return {"es": pickle.dumps(self.es)}

    def load_state_dict(self, state: dict) -> None:
        self.es = pickle.loads(state["es"])
        if self.on_weights:
            self._load_vector(self.es.mean)
