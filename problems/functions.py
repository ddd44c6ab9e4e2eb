"""Classic black-box test functions with known optimum 0 (search-space kind).

Names are `<function>-<dimension>`. The domains are the usual ones; the
optimizers start from a seeded random point in the box (not its centre,
where sphere and rastrigin would already be optimal).
"""

from __future__ import annotations

import numpy as np

from harness.problem import SearchSpaceProblem
from harness.registry import register_problem
from harness.space import Float, Space


def sphere(x: np.ndarray) -> float:
    return float(np.sum(x * x))


def rastrigin(x: np.ndarray) -> float:
    return float(10.0 * x.size + np.sum(x * x - 10.0 * np.cos(2.0 * np.pi * x)))


def rosenbrock(x: np.ndarray) -> float:
    return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))


FUNCTIONS = {
    "sphere": (sphere, -5.12, 5.12, "sum of squares"),
    "rastrigin": (rastrigin, -5.12, 5.12, "highly multimodal, 10n + sum(x^2 - 10 cos 2 pi x)"),
    "rosenbrock": (rosenbrock, -5.0, 10.0, "curved valley, optimum at (1, ..., 1)"),
}
DIMENSIONS = (2, 5, 10, 20, 50, 100)


class FunctionProblem(SearchSpaceProblem):
    REFERENCE = "classic test functions (sphere; Rastrigin 1974; Rosenbrock 1960), as in COCO/BBOB (Hansen et al. 2009)"
    METRIC = "objective"
    METRIC_HIGHER_IS_BETTER = False
    OPTIMUM = 0.0

    def __init__(self, name, hparams, seed, *, function: str, dim: int):
        super().__init__(name, hparams, seed)
        self.fn, lo, hi, _ = FUNCTIONS[function]
        self.dim = dim
        self.space = Space([Float(f"x{i}", lo, hi) for i in range(dim)])

    def objective(self, config) -> float:
        return self.fn(np.fromiter((config[f"x{i}"] for i in range(self.dim)), float, self.dim))

    def objective_vector(self, x: np.ndarray) -> float:
        """The same function on a plain vector (what plain pycma would call)."""
        return self.fn(np.asarray(x, dtype=float))


for _fname, (_fn, _lo, _hi, _doc) in FUNCTIONS.items():
    for _d in DIMENSIONS:
        register_problem(
            f"{_fname}-{_d}", FunctionProblem, family="functions",
            description=f"{_fname} in {_d}-D on [{_lo}, {_hi}]^{_d}: {_doc}; optimum 0",
            function=_fname, dim=_d,
        )
