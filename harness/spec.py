"""What a run is: its budget, its request (RunSpec), and the request resolved and
validated (Prepared).

Every check that can run before a run directory exists runs here: names (case
folded, did-you-mean), kinds, hyperparameters (typed, then the optimizer's own
check_hparams), intervals, torchrun support and the problem's inputs. Nothing
is allocated: the problem object is constructed, not built.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import torch

from harness import distributed
from harness.envinfo import resolve_device
from harness.errors import UsageError
from harness.pair import resolve_pair
from harness.params import parse_seed


@dataclass
class Budget:
    steps: int | None = None
    evals: int | None = None
    time_s: float | None = None
    forwards: float | None = None     # forward-pass equivalents (harness.costs)

    def __post_init__(self):
        for key in ("steps", "evals", "time_s", "forwards"):
            value = getattr(self, key)
            flag = f"--{key.replace('_s', '')}"
            if value is not None and not math.isfinite(value):   # nan never ends, inf never spends
                raise UsageError(f"{flag} {value}: the budget must be a finite positive number")
            if value is not None and value <= 0:
                raise UsageError(f"{flag} {value}: the budget must be positive")
        if self.steps is None and self.evals is None and self.time_s is None and self.forwards is None:
            raise UsageError("no budget: give --steps N, --evals N, --time SECONDS or --forwards N")

    def spent(self, step: int, evals: int, time_s: float, forwards: float = 0.0) -> bool:
        return (
            (self.steps is not None and step >= self.steps)
            or (self.evals is not None and evals >= self.evals)
            or (self.time_s is not None and time_s >= self.time_s)
            or (self.forwards is not None and forwards >= self.forwards)
        )

    def as_dict(self) -> dict:
        """Only the limits that are set, e.g. {"steps": 50}."""
        return {k: v for k, v in asdict(self).items() if v is not None}


EVAL_SCHEDULES = ("linear", "log")
LOG_PER_DECADE = 10     # log schedule: steps 1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, 40, 50, 63, 79, 100, ...


def on_log_grid(step: int) -> bool:
    """Whether `step` is round(10^(j / LOG_PER_DECADE)) for some integer j >= 0: consecutive
    evaluations a constant ~1.26x apart in cost, so early progress is resolved."""
    if step < 1:
        return False
    j = round(LOG_PER_DECADE * math.log10(step))
    return any(round(10 ** (i / LOG_PER_DECADE)) == step for i in (j - 1, j, j + 1) if i >= 0)


@dataclass
class RunSpec:
    optimizer: str
    problem: str
    seed: int = 0
    budget: Budget = field(default_factory=lambda: Budget(steps=100))
    overrides: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    eval_every: int | None = None     # None: the problem's EVAL_EVERY
    eval_schedule: str = "linear"     # "linear": every eval_every steps; "log": LOG_PER_DECADE per decade
    checkpoint_every: int = 100       # 0: never
    runs_dir: str = "runs"
    run_id: str | None = None
    force: bool = False               # skip the memory preflight
    threads: int | None = None        # torch intra-op threads; None: chosen by model size

    def __post_init__(self):
        parse_seed(self.seed)
        if self.run_id is not None and not _single_name(self.run_id):
            raise UsageError(f"--run-id {self.run_id!r}: must be one directory name inside --runs-dir "
                             "(no '/', not '.' or '..')")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads {self.threads}: must be >= 1")
        if self.eval_every is not None and self.eval_every <= 0:
            raise UsageError(f"--eval-every {self.eval_every}: must be a positive number of steps")
        if self.eval_schedule not in EVAL_SCHEDULES:
            raise UsageError(f"--eval-schedule {self.eval_schedule!r}: expected one of {', '.join(EVAL_SCHEDULES)}")
        if self.checkpoint_every < 0:
            raise UsageError(f"--checkpoint-every {self.checkpoint_every}: must be >= 0 (0 = never)")

    @classmethod
    def from_run_dir(cls, run_dir, budget: Budget | None = None) -> "RunSpec":
        """The RunSpec of a stored run (for --resume); a new budget may extend it."""
        from pathlib import Path

        from harness import store

        cfg_path = Path(run_dir) / "config.json"
        if not cfg_path.exists():
            raise UsageError(f"--resume {run_dir}: no config.json there; expected a run directory")
        try:
            cfg = store.read_json(cfg_path)
            cfg["optimizer_params"], cfg["problem_params"], cfg["budget"], cfg["seed"]  # noqa: B018
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"--resume {run_dir}: config.json is damaged ({type(exc).__name__}: "
                             f"{str(exc)[:120]}); it cannot be resumed") from None
        overrides = {f"optimizer.{k}": v for k, v in cfg["optimizer_params"].items()}
        overrides.update({f"problem.{k}": v for k, v in cfg["problem_params"].items()})
        return cls(
            optimizer=cfg["optimizer"], problem=cfg["problem"], seed=cfg["seed"],
            budget=budget or Budget(**cfg["budget"]), overrides=overrides,
            device=cfg.get("device_requested", "auto"), eval_every=cfg["eval_every"],
            eval_schedule=cfg.get("eval_schedule", "linear"),
            checkpoint_every=cfg["checkpoint_every"], runs_dir=str(Path(run_dir).parent),
            run_id=Path(run_dir).name, threads=cfg.get("threads_requested"),
        )


class Prepared:
    """A RunSpec resolved and validated; nothing allocated, nothing written."""

    def __init__(self, spec: RunSpec):
        self.pair = resolve_pair(spec.optimizer, spec.problem)
        self.opt_entry, self.prob_entry, self.kind = self.pair.optimizer, self.pair.problem, self.pair.kind
        # canonical names from here on (the user may have typed CMA for cma)
        self.spec = spec = _with_names(spec, self.opt_entry.name, self.prob_entry.name)
        check_installed(f"optimizer {spec.optimizer!r}", self.optimizer_class.RUNTIME_IMPORTS)
        check_installed(f"problem {spec.problem!r}", self.prob_entry.factory.RUNTIME_IMPORTS)
        values = self.pair.resolve(spec.overrides)
        self.opt_hp, self.prob_hp = values.optimizer, values.problem
        self.device = resolve_device(spec.device)
        if distributed.launched() and not self.optimizer_class.DISTRIBUTED:
            raise UsageError(f"optimizer {spec.optimizer!r} does not shard across processes; "
                             f"run it without torchrun (world size 1)")
        self.problem = self.prob_entry.instantiate(self.prob_hp, spec.seed)
        self.problem.check()
        self.optimizer_class.check_problem(self.problem)
        # as asked, before device-dependent defaults are settled (the planner predicts for
        # a device other than this process's from these)
        self.opt_hp_requested = self.opt_hp
        self.opt_hp = self.optimizer_class.for_device(self.opt_hp, self.device.type, self.problem)
        self.eval_every = spec.eval_every or self.problem.EVAL_EVERY
        self.plan = None   # the memory preflight's plan (harness.planner), once it ran
        self.threads = _threads(spec.threads, self.problem)

    @property
    def optimizer_class(self):
        return self.opt_entry.factory

    def evaluates(self, step: int) -> bool:
        """Whether the held-out metric is evaluated after `step` (a pure function of the step,
        so a resumed run evaluates where an uninterrupted one would; the last step always is)."""
        if self.spec.eval_schedule == "log":
            return on_log_grid(step)
        return step % self.eval_every == 0

    def build_optimizer(self):
        """The optimizer on the (built) problem, with its kind and the run's budget."""
        return self.optimizer_class(self.problem, self.opt_hp, self.spec.seed, kind=self.kind,
                                    budget=self.spec.budget)

    def config(self, run_id: str) -> dict:
        return {
            "run_id": run_id,
            "optimizer": self.spec.optimizer,
            "problem": self.spec.problem,
            "kind": self.kind,
            "backprop": bool(self.optimizer_class.BACKPROP),   # a gradient optimizer (the reports' reference)
            "seed": self.spec.seed,
            "budget": asdict(self.spec.budget),
            "optimizer_params": self.opt_hp,
            "problem_params": self.prob_hp,
            "device_requested": self.spec.device,
            "device": str(self.device),
            "eval_every": self.eval_every,
            "eval_schedule": self.spec.eval_schedule,
            "checkpoint_every": self.spec.checkpoint_every,
            "world_size": distributed.world_size(),
            "threads_requested": self.spec.threads,
            "threads": self.threads or torch.get_num_threads(),
            "metric_name": self.problem.METRIC,
            "metric_higher_is_better": self.problem.METRIC_HIGHER_IS_BETTER,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


# pip's names for the lazily imported modules whose distribution is named otherwise
PIP_NAMES = {"cocoex": "coco-experiment", "sklearn": "scikit-learn"}


def check_installed(owner: str, modules) -> None:
    """UsageError naming what to install when a library the run imports lazily is absent
    (the optional ones need not be on a machine whose runs do not use them)."""
    import importlib.util

    missing = sorted({m.split(".")[0] for m in modules if importlib.util.find_spec(m.split(".")[0]) is None})
    if missing:
        raise UsageError(f"{owner} needs {', '.join(missing)}, which is not installed here; "
                         f"pip install {' '.join(PIP_NAMES.get(m, m) for m in missing)}")


# Below this many parameters a model's ops are too small for several threads to pay
# off: on 2 cores the default threads made qwen3-tiny's main job 4x slower (measured).
SMALL_MODEL_PARAMS = 20_000_000


def _threads(requested: int | None, problem) -> int | None:
    """torch intra-op threads for the run: --threads; else the environment's
    OMP_NUM_THREADS (torchrun sets it); else 1 for small models; else torch's default."""
    import os

    if requested is not None:
        return requested
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    count = problem.param_count()
    return 1 if count is not None and count < SMALL_MODEL_PARAMS else None


def _single_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")


def _with_names(spec: RunSpec, optimizer: str, problem: str) -> RunSpec:
    if (spec.optimizer, spec.problem) == (optimizer, problem):
        return spec
    from dataclasses import replace

    return replace(spec, optimizer=optimizer, problem=problem)
