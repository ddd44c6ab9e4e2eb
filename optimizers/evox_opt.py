"""Any single-objective EvoX algorithm by name (`--set name=...`, default PSO).

EvoX (EMI-Group/evox, PyTorch) writes population algorithms as tensor
operations, so a whole population is one tensor; its StdWorkflow hands the
population to a Problem's `evaluate(pop) -> fitness` and the algorithm minimises.
The adapter builds the named algorithm from its constructor's own arguments,
filled by name from what the problem gives:

  pop_size                          --set pop_size (default 20)
  lb, ub (PSO, DE, CSO, ...)        search space: the space's encoded box (harness.space);
                                    weights: initial weights -+ `radius`
  center_init / mean_init /         search space: a seeded uniform point of the box
  init_mean (ES, CMA-ES, NES, ...)  (as cma starts); weights: the initial weights
  sigma / noise_stdev / sigma_init  --set sigma: search space a fraction of the box's
  / init_std / init_covar           widest side (default 0.3), weights an absolute std
                                    (default 0.05), as cma's sigma0
  learning_rate / lr / lrate_mean   --set lr, only when the algorithm requires one
                                    (OpenES; default 0.05)

every other argument at EvoX's default. Unbounded (ES-type) candidates are
clipped into the box before a search-space objective sees them. One step =
one workflow step (the first: `init_step`); every candidate of a step on a
weights problem is scored on that step's batch. Seeding: EvoX draws from
torch's global generator; the adapter runs EvoX inside torch.random.fork_rng
with a generator state of its own, seeded torch.manual_seed(evox_seed(seed)),
kept across steps and checkpointed, so nothing else in the process shifts its
draws and a resumed run continues exactly. Calling EvoX directly with
torch.manual_seed(evox_seed(seed)), the same algorithm and bounds, gives the
same values (tests/test_evox.py, on bbob-f1-d5).

Solution: search space, the best candidate evaluated; weights, the algorithm's
centre (`center` / `mean`) when it has one, else its global best (`PSO`'s
global_best_location) or, failing that, the best member of the last step. The
logged loss is the step's best on a search space, its mean over the population
on weights (as cma). Multi-objective algorithms and the virtual-population ES
(VirtualES, VirtualLoRAES: they need EvoX's own problem interface) are refused.
"""

from __future__ import annotations

import difflib
import inspect

import numpy as np
import torch

from harness.errors import UsageError
from harness.optimizer import Optimizer, StepResult
from harness.params import Param
from harness.registry import register_optimizer
from harness.seeding import derive_seed

REFUSED = {"VirtualES", "VirtualLoRAES"}
CENTRE_ARGS = ("center_init", "mean_init", "init_mean")
SIGMA_ARGS = ("sigma", "noise_stdev", "sigma_init")
LR_ARGS = ("learning_rate", "lr", "lrate_mean")


def evox_seed(seed: int) -> int:
    """The torch seed EvoX's draws of run `seed` start from."""
    return derive_seed(seed, "evox") % 2**63


def algorithm_names() -> list[str]:
    from evox.algorithms import so

    return sorted(n for n in so.__all__ if n not in REFUSED)


def build_algorithm(name: str, pop_size: int, lb: torch.Tensor, ub: torch.Tensor, centre: torch.Tensor,
                    sigma: float, lr: float):
    """EvoX's `name` with the arguments its constructor declares filled as the module
    docstring says (the caller seeds torch first: construction draws the initial population)."""
    from evox import algorithms

    cls = getattr(algorithms, name)
    declared = inspect.signature(cls.__init__).parameters
    values = {"pop_size": pop_size, "lb": lb, "ub": ub,
              "init_std": torch.full_like(centre, sigma),
              "init_covar": torch.eye(len(centre), dtype=centre.dtype) * sigma ** 2,
              **{k: centre for k in CENTRE_ARGS}, **{k: sigma for k in SIGMA_ARGS}}
    kwargs = {k: values[k] for k in declared if k in values}
    for k in LR_ARGS:   # a step size only where EvoX has no default for it
        if k in declared and declared[k].default is inspect.Parameter.empty:
            kwargs[k] = lr
    return cls(**kwargs)


@register_optimizer("evox", kinds=["search-space", "weights"],
                    description="any single-objective EvoX algorithm by --set name=... (default PSO)")
class EvoX(Optimizer):
    REFERENCE = ("EvoX (EMI-Group/evox): Huang et al., EvoX: A Distributed GPU-accelerated Framework for "
                 "Scalable Evolutionary Computation, IEEE TEVC 2024; Liang et al., Bridging Evolutionary "
                 "Multiobjective Optimization and GPU Acceleration via Tensorization, IEEE TEVC 2025")
    RUNTIME_IMPORTS = ("evox",)
    SMOKE_SETTINGS = {"pop_size": 4}
    POPULATION_PARAM = "pop_size"
    PARAMS = {
        "name": Param("PSO", str, "EvoX single-objective algorithm (a name in evox.algorithms.so)"),
        "pop_size": Param(20, int, "population per step", low=2),
        "sigma": Param(None, float, "initial std of ES-type algorithms: fraction of the box's widest side "
                       "(search space, default 0.3) or weight units (weights, default 0.05)",
                       low=0.0, optional=True),
        "lr": Param(0.05, float, "step size, for algorithms that require one (OpenES)", low=0.0),
        "radius": Param(0.1, float, "weights: box of box-bounded algorithms (PSO, DE, ...) around the "
                        "initial weights, in weight units", low=0.0),
    }

    @classmethod
    def check_hparams(cls, hp) -> None:
        import importlib.util

        if importlib.util.find_spec("evox") is None:   # refused in one line by RUNTIME_IMPORTS
            return
        if hp["name"] == cls.PARAMS["name"].default:
            # valid (tests/test_evox.py), and importing evox to list the names costs seconds,
            # which every plan that merely considers evox (a preflight's suggestions) would pay
            return
        names = algorithm_names()
        if hp["name"] not in names:
            close = difflib.get_close_matches(hp["name"], names, n=5, cutoff=0.5)
            raise UsageError(f"--set name={hp['name']!r}: not a single-objective EvoX algorithm; valid names: "
                             f"{', '.join(close or names)}")

    @classmethod
    def memory_model(cls, hp, facts) -> dict[str, int]:
        """Weights: the population tensor and EvoX's per-member state (PSO: positions,
        velocities, personal bests and the new population: about 4 copies), fp32."""
        return {"population": int(4 * hp["pop_size"] * max(int(facts.trainable_count), 1) * 4)}

    # -- setup ----------------------------------------------------------------------
    def setup(self) -> None:
        self.on_weights = self.kind == "weights"
        self.best_f, self.best_x = float("inf"), None
        self.started = False
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(evox_seed(self.seed))
            self.workflow = self._workflow()
            self.rng = torch.get_rng_state()

    def _workflow(self):
        from evox.core import Problem
        from evox.workflows import StdWorkflow

        if self.on_weights:
            self.params = [p for _, p in self.problem.trainable()]
            x0 = torch.nn.utils.parameters_to_vector(self.params).detach().float().cpu()
            lb, ub, centre = x0 - self.hp["radius"], x0 + self.hp["radius"], x0
            sigma = self.hp["sigma"] if self.hp["sigma"] is not None else 0.05
        else:
            from optimizers.cmaes import initial_point

            lo, hi = (torch.as_tensor(b, dtype=torch.float32) for b in self.problem.space.bounds())
            lb, ub = lo, hi
            centre = torch.as_tensor(initial_point(self.problem.space, self.seed), dtype=torch.float32)
            sigma = (self.hp["sigma"] if self.hp["sigma"] is not None else 0.3) * float((hi - lo).max())
        algorithm = build_algorithm(self.hp["name"], self.hp["pop_size"], lb, ub, centre, sigma, self.hp["lr"])
        adapter = self

        class Objective(Problem):
            def evaluate(self, pop: torch.Tensor) -> torch.Tensor:
                return adapter._evaluate(pop)

        return StdWorkflow(algorithm, Objective(), device="cpu")

    # -- evaluation -----------------------------------------------------------------
    def _evaluate(self, pop: torch.Tensor) -> torch.Tensor:
        if self.on_weights:
            with torch.no_grad():
                values = []
                for x in pop:
                    self._load_vector(x)
                    values.append(float(self.problem.loss(self._batch)))
        else:
            lo, hi = self.problem.space.bounds()
            decode = self.problem.space.decode
            values = [float(self.problem.objective(decode(np.clip(x.double().numpy(), lo, hi)))) for x in pop]
        fitness = torch.tensor(values, dtype=pop.dtype)
        self._seen.append((pop.detach().clone(), fitness))
        return torch.nan_to_num(fitness, nan=torch.inf)   # EvoX minimises; NaN ranks last

    def _load_vector(self, x: torch.Tensor) -> None:
        vec = x.to(dtype=self.params[0].dtype, device=self.params[0].device)
        torch.nn.utils.vector_to_parameters(vec, self.params)

    def _centre(self) -> torch.Tensor | None:
        n = sum(p.numel() for p in self.params)
        for attr in ("center", "mean", "global_best_location"):
            value = getattr(self.workflow.algorithm, attr, None)
            if isinstance(value, torch.Tensor) and value.numel() == n:
                return value.reshape(-1)
        return None

    def step(self, step: int) -> StepResult:
        self._seen: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._batch = self.problem.batch(step) if self.on_weights else None
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.rng)
            (self.workflow.step if self.started else self.workflow.init_step)()
            self.rng = torch.get_rng_state()
        self.started = True
        xs = torch.cat([x for x, _ in self._seen])
        fs = torch.cat([f for _, f in self._seen]).double()
        finite = torch.nan_to_num(fs, nan=torch.inf)
        i = int(torch.argmin(finite))
        if float(finite[i]) < self.best_f:
            self.best_f, self.best_x = float(finite[i]), xs[i].clone()
        if self.on_weights:
            centre = self._centre()
            self._load_vector(centre if centre is not None else xs[i])
            loss = float(fs.mean())
        else:
            loss = float(fs[i])
        return StepResult(loss=loss, evals=len(fs), forwards=len(fs), extra={"best_so_far": self.best_f})

    def solution(self):
        if self.on_weights or self.best_x is None:
            return None
        lo, hi = self.problem.space.bounds()
        return self.problem.space.decode(np.clip(self.best_x.double().numpy(), lo, hi))

    def state_dict(self) -> dict:
        return {"algorithm": {k: v.clone() for k, v in self.workflow.algorithm.state_dict().items()},
                "rng": self.rng.clone(), "started": self.started, "best": (self.best_f, self.best_x)}

    def load_state_dict(self, state: dict) -> None:
        # assign: EvoX may start two buffers on one tensor (PSO's pop and local_best_location),
        # which an in-place copy of the checkpoint into each would overwrite with the other
        self.workflow.algorithm.load_state_dict({k: v.clone() for k, v in state["algorithm"].items()},
                                                assign=True)
        self.rng, self.started = state["rng"], state["started"]
        self.best_f, self.best_x = state["best"]   # the weights come back with the problem's state
