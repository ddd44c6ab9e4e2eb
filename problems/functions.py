"""Hand-written test functions for what COCO's BBOB suite lacks: high dimension.

BBOB (problems/bbob.py) covers dimensions 2-40 with 24 functions; these are
sphere and rastrigin in 50 and 100 dimensions, for high-dimension scaling.
Names are `<function>-<dimension>`, optimum 0. The optimizers start from a
seeded random point in the box (not its centre, where both are optimal).
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


FUNCTIONS = {
    "sphere": (sphere, -5.12, 5.12, "sum of squares"),
    "rastrigin": (rastrigin, -5.12, 5.12, "highly multimodal, 10n + sum(x^2 - 10 cos 2 pi x)"),
}
DIMENSIONS = (50, 100)   # below 50: the bbob problems


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

    def objective_encoded(self, x) -> float:
        return self.fn(self.space.clip(x))   # linear Floats: the encoding is the point


for _fname, (_fn, _lo, _hi, _doc) in FUNCTIONS.items():
    for _d in DIMENSIONS:
        register_problem(
            f"{_fname}-{_d}", FunctionProblem, family="functions",
            description=f"{_fname} in {_d}-D on [{_lo}, {_hi}]^{_d}: {_doc}; optimum 0",
            function=_fname, dim=_d,
        )
