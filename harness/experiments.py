"""Batches of runs: an experiment is a generator of run items; one executor runs them.

Model: nevergrad's benchmark/experiments.py. `sweep` (the product of optimizers
x problems x seeds, `grid`), `check` (the reference suite), `reproduce NAME`
(registered experiments: paper reproductions) and `plan --table --measure` all
produce RunItems, and harness.executor runs them: one process per run,
resumable, failures recorded with their reason, each run's own peak memory.
A reproduction then renders its tables from the stored runs alone.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from harness import registry, store
from harness.errors import UsageError
from harness.pair import resolve_pair
from harness.params import unused_sets


@dataclass(frozen=True)
class RunItem:
    """One run as a request: what `harness run` needs, named deterministically."""

    optimizer: str
    problem: str
    seed: int
    budget: dict                      # {"steps": N} or {"evals": N} or {"time_s": S}
    sets: tuple = ()                  # (("key", "value"), ...) applied to this run
    eval_every: int | None = None     # None: the problem's default
    eval_schedule: str = "linear"     # or "log" (harness.spec.EVAL_SCHEDULES)
    checkpoint_every: int | None = None  # None: the run's default
    axes: tuple = ()                  # keys of `sets` that are grid axes (sweep --grid), in order

    @property
    def point(self) -> str:
        """The grid values of this run, "KEY=V-KEY=V" ("" outside a grid)."""
        values = dict(self.sets)
        return "-".join(f"{k}={values[k]}" for k in self.axes)

    @property
    def name(self) -> str:
        """Deterministic directory name: same request, same directory. Grid values are
        spelled out after the optimizer (es-sigma=0.02_qwen3-tiny_s0_steps10); the other
        --set values (and grid values not safe in a file name) are in a digest."""
        (key, value), = [(k, v) for k, v in self.budget.items() if v is not None]
        tag = {"steps": f"steps{value}", "evals": f"evals{value}", "time_s": f"time{value:g}s",
               "forwards": f"fwd{value:g}"}[key]
        point = self.point
        safe = _UNSAFE.sub("_", point)[:120]
        head = f"{self.optimizer}-{safe}" if point else self.optimizer
        name = f"{head}_{self.problem}_s{self.seed}_{tag}"
        if len(self.sets) > len(self.axes) or safe != point:
            digest = hashlib.sha1(json.dumps(sorted(self.sets)).encode()).hexdigest()[:8]
            name += f"_{digest}"
        if self.eval_schedule != "linear":   # another schedule is another run, not a finished one
            name += f"_ev{self.eval_schedule}"
        return name

    @property
    def label(self) -> str:
        point = f" [{self.point}]" if self.axes else ""
        return f"{self.optimizer}{point} on {self.problem} seed={self.seed}"

    def run_args(self) -> list[str]:
        """The `harness run` arguments of this item (runs-dir, run id and device aside)."""
        flags = {"steps": "--steps", "evals": "--evals", "time_s": "--time", "forwards": "--forwards"}
        args = ["--optimizer", self.optimizer, "--problem", self.problem, "--seed", str(self.seed)]
        args += [a for k, v in self.budget.items() if v is not None for a in (flags[k], str(v))]
        if self.eval_every is not None:
            args += ["--eval-every", str(self.eval_every)]
        if self.eval_schedule != "linear":
            args += ["--eval-schedule", self.eval_schedule]
        if self.checkpoint_every is not None:
            args += ["--checkpoint-every", str(self.checkpoint_every)]
        for key, value in self.sets:
            args += ["--set", f"{key}={value}"]
        return args

    def to_json(self) -> dict:
        return {**asdict(self), "sets": dict(self.sets), "axes": list(self.axes)}


_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")   # what a grid value may keep in a directory name


def item(optimizer: str, problem: str, seed: int, budget: dict, sets: dict | None = None,
         **kwargs) -> RunItem:
    """A RunItem with its --set values as sorted string pairs (names are stable)."""
    pairs = tuple(sorted((k, str(v)) for k, v in (sets or {}).items()))
    return RunItem(optimizer, problem, seed, dict(budget), pairs, **kwargs)


@dataclass
class Grid:
    items: list[RunItem] = field(default_factory=list)
    incompatible: list[tuple[str, str, str]] = field(default_factory=list)  # (opt, prob, why)


def parse_grid(items: list[str] | None) -> dict[str, list[str]]:
    """["sigma=0.01,0.02", "population=20,30"] -> {"sigma": ["0.01", "0.02"], ...}: the
    --grid axes in the order given; a malformed item is a UsageError naming it."""
    axes: dict[str, list[str]] = {}
    for text in items or ():
        key, sep, values = text.partition("=")
        key = key.strip()
        parts = [v.strip() for v in values.split(",")]
        if not sep or not key or not all(parts):
            raise UsageError(f"--grid {text!r}: expected KEY=V1,V2,... (comma-separated values, "
                             f"none empty)")
        if key in axes:
            raise UsageError(f"--grid {key}: given twice; list all its values in one --grid")
        if len(set(parts)) != len(parts):
            raise UsageError(f"--grid {text!r}: a value is repeated")
        axes[key] = parts
    return axes


def _check_axis(key: str, values: list[str], pair) -> None:
    """Each value of a grid axis parsed by the Param it routes to (the --set router):
    a bad one is one line naming --grid KEY=VALUE."""
    for value in values:
        try:
            pair.resolve({key: value}, partial=True, check=False)
        except UsageError as exc:
            raise _as_grid(exc) from None


def _check_one_setting(keys: list[str], on_axes, routed) -> None:
    """One hyperparameter, one source: two spellings of a key (sigma, optimizer.sigma) on
    two axes, or on an axis and in --set, would leave the run's value to argument order."""
    for side in ("optimizer", "problem"):
        axis_keys, set_keys = getattr(on_axes, side), getattr(routed, side)
        for bare in set(axis_keys) & set(set_keys):
            raise UsageError(f"--grid: {side} hyperparameter {bare!r} is also given with --set; give it once")
    if len(on_axes.optimizer) + len(on_axes.problem) < len(keys):
        raise UsageError(f"--grid {', '.join(keys)}: two of these name the same hyperparameter; give it once")


def _as_grid(exc: UsageError) -> UsageError:
    """The --set router's message, worded for the flag the user gave (--grid)."""
    text = str(exc)
    return UsageError("--grid " + text[len("--set "):] if text.startswith("--set ") else text)


def grid(optimizers: list[str], problems: list[str], seeds: list[int], budget: dict,
         sets: dict[str, str] | None = None, *, validate_on: str | None = "auto",
         eval_every: int | None = None, checkpoint_every: int | None = None, eval_schedule: str = "linear",
         axes: dict[str, list[str]] | None = None) -> Grid:
    """Every compatible optimizer x problem pair for every seed (the sweep), times the
    cartesian product of the grid axes (--grid KEY=V1,V2,...).

    Incompatible pairs are listed, not errors. Each --set key and each grid key goes
    to the pairs that declare it (params.route_sets, the one router) and must be used
    by one; a pair that does not take a grid key is run once, not once per value.
    Every name and value is validated as `run` would (validate_on: the device to
    validate for; None skips it), so bad input fails before the first run starts.
    """
    sets, axes = sets or {}, axes or {}
    if not optimizers or not problems or not seeds:
        raise UsageError("sweep needs --optimizers A,B,... --problems X,Y,... and --seeds 0,1,...")
    for key in axes:
        if key in sets:
            raise UsageError(f"--grid {key}: also given with --set; give it once")
    # names are case-insensitive: cma,CMA is one optimizer, run (and counted) once
    opts = list({e.name: e for e in (registry.optimizer(o) for o in optimizers)}.values())
    probs = list({e.name: e for e in (registry.problem(p) for p in problems)}.values())
    result = Grid()
    used: set[str] = set()
    used_axes: set[str] = set()
    for opt in opts:
        for prob in probs:
            try:
                pair = resolve_pair(opt, prob)
            except UsageError as exc:
                result.incompatible.append((opt.name, prob.name, str(exc)))
                continue
            routed = pair.route(sets, partial=True)
            used.update(routed.used)
            # the grid keys this pair takes, routed as --set keys are
            try:
                on_axes = pair.route({k: v[0] for k, v in axes.items()}, partial=True)
            except UsageError as exc:
                raise _as_grid(exc) from None
            mine = list(on_axes.used)
            _check_one_setting(mine, on_axes, routed)
            used_axes.update(mine)
            for key in mine:
                _check_axis(key, axes[key], pair)
            for values in itertools.product(*(axes[k] for k in mine)):
                point = dict(zip(mine, values))
                for seed in seeds:
                    result.items.append(item(opt.name, prob.name, seed, budget, {**routed.used, **point},
                                             eval_every=eval_every, checkpoint_every=checkpoint_every,
                                             eval_schedule=eval_schedule,
                                             axes=tuple(mine)))
    unused_sets(sets, used, "sweep")
    for key in axes:
        if key not in used_axes:
            skipped = "; ".join(f"{o} on {p}" for o, p, _ in result.incompatible[:3])
            raise UsageError(f"--grid {key}: no optimizer or problem of the pairs this sweep runs declares it"
                             + (f" (skipped as incompatible: {skipped})" if skipped else "")
                             + " (see `python -m harness describe NAME`; prefix optimizer. or problem. if needed)")
    if not result.items:
        raise UsageError("no compatible optimizer/problem pair in this sweep: "
                         + "; ".join(why for _, _, why in result.incompatible))
    if validate_on is not None:
        validate(result.items, validate_on)
    return result


def validate(items: list[RunItem], device: str = "auto") -> None:
    """Resolve every distinct (optimizer, problem, sets) as `run` would: UsageError early."""
    from harness.spec import Budget, Prepared, RunSpec

    seen = set()
    for it in items:
        key = (it.optimizer, it.problem, it.sets, it.eval_every, it.eval_schedule)
        if key in seen:
            continue
        seen.add(key)
        Prepared(RunSpec(optimizer=it.optimizer, problem=it.problem, seed=it.seed,
                         budget=Budget(**it.budget), overrides=dict(it.sets), device=device,
                         eval_every=it.eval_every, eval_schedule=it.eval_schedule))


def record(runs_dir: Path, request: dict, grid_: Grid) -> None:
    """sweep.json in the runs directory: what was asked and what was skipped."""
    store.ensure_dir(runs_dir)
    store.write_json(Path(runs_dir) / "sweep.json", {
        **request,
        "runs": [it.name for it in grid_.items],
        "incompatible": [{"optimizer": o, "problem": p, "reason": why} for o, p, why in grid_.incompatible],
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })


# -- registered experiments (`reproduce NAME`) ----------------------------------------

def ok_summary(runs_dir: Path, it: RunItem) -> dict:
    """The summary.json of an item's finished run, for an experiment's report; a run that
    did not end ok (or never ran) is a HarnessError naming it and how to retry."""
    from harness.errors import HarnessError

    path = Path(runs_dir) / it.name / "summary.json"
    summary = store.read_json(path) if path.exists() else {}
    if summary.get("status") != "ok":
        raise HarnessError(f"{it.label} ({path.parent}): {summary.get('status', 'no summary')}: "
                           f"{summary.get('reason')}; rerun to retry (--retry-failed)")
    return summary


class Experiment:
    """A named, registered batch of runs with its own report.

    add_arguments(parser) declares its options; items(args) yields the RunItems
    (pure: the same args give the same items, so a rerun resumes); render(args,
    outcomes) builds its tables from the stored runs of those items.
    """

    NAME = "?"
    HELP = ""
    DEFAULT_RUNS_DIR = "runs"

    def add_arguments(self, parser) -> None:
        pass

    def items(self, args) -> list[RunItem]:
        raise NotImplementedError

    def render(self, args, outcomes) -> str:
        """Write the experiment's report from the stored runs; return a short text."""
        raise NotImplementedError


EXPERIMENTS: dict[str, Experiment] = {}
_loaded = False


def register_experiment(name: str, *, help: str):
    """Class decorator: `@register_experiment("genome", help=...)` on an Experiment."""

    def deco(cls):
        if name in EXPERIMENTS:
            raise ValueError(f"experiment {name!r} registered twice")
        cls.NAME, cls.HELP = name, help
        EXPERIMENTS[name] = cls()
        return cls

    return deco


# Whose modules register experiments (the studies floor), imported by name on first lookup.
EXPERIMENT_PACKAGES = ("studies.reproductions",)


def load_all() -> None:
    """Import every module of the EXPERIMENT_PACKAGES (they register their experiments)."""
    global _loaded
    if _loaded:
        return
    from harness.registry import import_modules

    for pkg_name in EXPERIMENT_PACKAGES:
        import_modules(pkg_name)
    _loaded = True


def experiment(name: str) -> Experiment:
    load_all()
    if name not in EXPERIMENTS:
        raise UsageError(f"unknown experiment {name!r}; available: {', '.join(sorted(EXPERIMENTS)) or '(none)'}")
    return EXPERIMENTS[name]
