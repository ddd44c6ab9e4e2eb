"""COCO's 24 noiseless BBOB functions through `cocoex` (package coco-experiment).

Names are `bbob-f<F>-d<D>` (F in 1..24, D in COCO's dimensions 2, 3, 5, 10, 20,
40). The loss, and the metric, is delta-f = f(x) - f_opt, so every function's
optimum is 0 and COCO's targets (1e2 .. 1e-8) apply unchanged. The space is
the function's box, [-5, 5]^D for every BBOB function.

Seeds and instances: `--set instance=K` picks the function (COCO's instance K:
its own x_opt, f_opt and rotations; COCO's convention is 1..15), the run's
seed drives the optimizer only. So `--seed 0..4 --set instance=1` is five
trials of one function, and a sweep per instance (`--set instance=K`) covers
several functions of one class, as COCO's experiments do.

COCO data: when the runner attaches a run directory, every objective call
(the optimizer's evaluations, exactly those) is logged by cocoex's own bbob
Observer into `<run dir>/coco/`, which `cocopp` reads. The eval metric's
re-evaluation of the solution goes through an unobserved copy of the same
function (a cocoex BareProblem), so it never shows up in the COCO data.
"""

from __future__ import annotations

import atexit
import shutil
from pathlib import Path

import numpy as np

from harness import store
from harness.errors import UsageError
from harness.params import Param
from harness.problem import SearchSpaceProblem
from harness.registry import register_problem
from harness.space import Float, Space

FUNCTIONS = {
    1: "sphere", 2: "separable ellipsoid", 3: "Rastrigin", 4: "Bueche-Rastrigin",
    5: "linear slope", 6: "attractive sector", 7: "step ellipsoid", 8: "Rosenbrock",
    9: "rotated Rosenbrock", 10: "ellipsoid", 11: "discus", 12: "bent cigar",
    13: "sharp ridge", 14: "different powers", 15: "rotated Rastrigin", 16: "Weierstrass",
    17: "Schaffers F7", 18: "Schaffers F7, ill-conditioned", 19: "composite Griewank-Rosenbrock",
    20: "Schwefel x*sin(x)", 21: "Gallagher 101 peaks", 22: "Gallagher 21 peaks",
    23: "Katsuura", 24: "Lunacek bi-Rastrigin",
}
DIMENSIONS = (2, 3, 5, 10, 20, 40)
BOX = (-5.0, 5.0)     # every BBOB function's domain (checked against cocoex in the tests)
COCO_DIR = "coco"     # the COCO data folder inside a run directory
# The longest run directory (absolute path) cocoex 2.8 writes COCO data in, its folder
# given quoted as here; one character more and its C code aborts the whole process
# (`coco_vstrdupf(): string is too long`). Measured for every function, dimension and
# algorithm-name length 3..60 (tests/test_faults.py checks the limit itself).
COCO_PATH_LIMIT = 265

# The bbob observer must not watch two problems at once (the C logger crashes the
# interpreter): the problem observed in this process, freed before the next one and
# at exit (freeing is what writes the last line of COCO's .info file).
_observed = []


def close_coco_log() -> None:
    """Finish the COCO data of the run observed in this process. A run process does it at
    exit; code that runs several runs in one process gets it when the next bbob problem
    is built, or calls this before reading the data."""
    while _observed:
        problem, folder = _observed.pop()
        problem.free()
        _share(folder)


def _share(folder: Path) -> None:
    """COCO's C code makes its folders 0700: give them the mode a new directory gets here
    (the umask's), so colleagues reading the run store read the COCO data too."""
    mode = 0o777 & ~store.FILE_MODE_MASK
    for path in [folder, *(p for p in Path(folder).rglob("*") if p.is_dir())]:
        try:
            path.chmod(mode)
        except OSError:
            pass


atexit.register(close_coco_log)


class BBOBProblem(SearchSpaceProblem):
    REFERENCE = ("COCO's noiseless BBOB suite (Hansen et al., Real-Parameter Black-Box Optimization "
                 "Benchmarking 2009: Noiseless Functions Definitions), through cocoex")
    PARAMS = {
        "instance": Param(1, int, "COCO instance of the function (1..15 by COCO's convention): "
                                  "x_opt, f_opt, rotations; the seed drives the optimizer only", low=1),
    }
    METRIC = "delta_f"
    METRIC_HIGHER_IS_BETTER = False
    OPTIMUM = 0.0
    RUNTIME_IMPORTS = ("cocoex",)
    TRIAL_PARAMS = ("instance",)   # instances are trials of one function (pooled in reports)

    def __init__(self, name, hparams, seed, *, function: int, dim: int):
        super().__init__(name, hparams, seed)
        self.function, self.dim = function, dim
        # the box is known without cocoex: construction stays cheap (`list problems`)
        self.space = Space([Float(f"x{i}", *BOX) for i in range(dim)])
        self._coco_dir: Path | None = None
        self._algorithm = "harness"
        self._f = self._bare = self._suite = self._observer = None
        self._fopt = 0.0
        self._history: list[np.ndarray] = []   # observed points (replayed on resume)

    # -- lifecycle -------------------------------------------------------------------
    @classmethod
    def check_run_dir(cls, run_dir) -> None:
        path = str(Path(run_dir).absolute())
        if len(path) > COCO_PATH_LIMIT:
            raise UsageError(f"run directory {path} is {len(path)} characters; COCO's logger (cocoex) "
                             f"aborts beyond {COCO_PATH_LIMIT}: choose a shorter --runs-dir or --run-id")
        if '"' in path:
            raise UsageError(f"run directory {path}: contains '\"', which COCO's option string cannot "
                             "hold; choose another --runs-dir or --run-id")

    def attach_run_dir(self, run_dir) -> None:
        run_dir = Path(run_dir)
        self.check_run_dir(run_dir)
        self._coco_dir = run_dir / COCO_DIR
        cfg = run_dir / "config.json"
        if cfg.exists():
            self._algorithm = store.read_json(cfg).get("optimizer") or self._algorithm

    def build(self, device) -> None:
        super().build(device)
        import cocoex

        cocoex.log_level("warning")
        k = self.hp["instance"]
        # the unobserved copy: f_opt, and the metric's re-evaluations
        self._bare = cocoex.BareProblem("bbob", self.function, self.dim, k)
        self._fopt = float(self._bare.best_value())
        self._open(fresh=True)

    def _open(self, fresh: bool) -> None:
        """The function as the optimizer sees it, observed when a run directory is attached."""
        import cocoex

        close_coco_log()
        k = self.hp["instance"]
        # the suite and the observer stay referenced: the problem's C logger points into both
        self._suite = cocoex.Suite("bbob", f"instances:{k}",
                                   f"function_indices:{self.function} dimensions:{self.dim}")
        self._f = self._suite.get_problem_by_function_dimension_instance(self.function, self.dim, k)
        if self._coco_dir is None:
            return
        if fresh and self._coco_dir.exists():   # cocoex would start a "coco-001" beside it
            shutil.rmtree(self._coco_dir)
        # the folder in double quotes: COCO's option parser reads a quoted value whole
        # (spaces included) and accepts longer paths that way (check_run_dir)
        self._observer = cocoex.Observer(
            "bbob", f'outer_folder: "{self._coco_dir.parent}" result_folder: {COCO_DIR} '
                    f"algorithm_name: {self._algorithm} algorithm_info: harness")
        self._f.observe_with(self._observer)
        _observed.append((self._f, self._coco_dir))

    # -- objective -------------------------------------------------------------------
    def _vector(self, config) -> np.ndarray:
        return np.fromiter((config[f"x{i}"] for i in range(self.dim)), float, self.dim)

    def objective(self, config) -> float:
        return self.objective_encoded(self._vector(config))

    def objective_encoded(self, x) -> float:
        """The space is linear Floats named x0..: its encoding is the point itself (clipped
        into the box, as decode clips), with no dict in between."""
        x = self.space.clip(x)
        if self._coco_dir is not None:
            self._history.append(x)
        return float(self._f(x)) - self._fopt

    def evaluate(self, solution=None) -> dict[str, float]:
        if solution is None:
            return {}
        return {"metric": float(self._bare(self._vector(solution))) - self._fopt}

    def optimum(self) -> np.ndarray:
        """x_opt of this instance (from cocoex; for tests)."""
        return np.asarray(self._bare.best_parameter(), dtype=float)

    # -- resume: COCO data restarts from the checkpoint ----------------------------
    def state_dict(self) -> dict:
        if self._coco_dir is None:
            return {}
        return {"coco_history": np.array(self._history, dtype=float).reshape(-1, self.dim)}

    def load_state_dict(self, state: dict) -> None:
        """The COCO log of a resumed run is rewritten from scratch: the evaluations up to
        the checkpoint are replayed through a fresh observer, so the log holds exactly the
        evaluations the finished run counts (none after the checkpoint twice)."""
        history = state.get("coco_history")
        if self._coco_dir is None or history is None:
            return
        self._open(fresh=True)
        self._history = []
        for x in history:
            self._f(x)
            self._history.append(np.array(x))


for _f, _title in FUNCTIONS.items():
    for _d in DIMENSIONS:
        register_problem(
            f"bbob-f{_f}-d{_d}", BBOBProblem, family="bbob",
            description=f"COCO BBOB f{_f} ({_title}) in {_d}-D on [-5, 5]^{_d}; loss delta-f = f - f_opt, "
                        "optimum 0; --set instance=K (default 1)",
            function=_f, dim=_d,
        )
