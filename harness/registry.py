"""Name -> factory registry for optimizers and problems.

Optimizer and problem modules register themselves when imported. The engine
holds no import statement of them: `load_all` imports, by name, every module
of the packages in PLUGIN_PACKAGES (the floors above it), so it never names a
specific optimizer and the import contract (tests/test_layers.py) holds.

A variant is configuration, not a subclass: `register_variant("genome+",
of="genome", succession=True, ...)` registers the same class under a new
name with other defaults (optax's `nadamw = partial(adamw, nesterov=True)`).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from harness.errors import UsageError
from harness.params import Param, schema_of

# weights: a model, a batch stream and a loss; search-space: a typed space and an
# objective; pruning: a trained model and a sparsity target; experts: weights plus a
# population of expert adapters (the lora problems; genome and its baselines need it)
KINDS = ("weights", "search-space", "pruning", "experts")


@dataclass
class ProblemEntry:
    """One registered problem name: a size of a family, with its fixed settings."""

    name: str
    factory: Callable[..., Any]          # the problem class
    kinds: tuple[str, ...]
    description: str
    presets: dict[str, Any] = field(default_factory=dict)  # this size's defaults and fixed kwargs
    family: str = ""

    @classmethod
    def of(cls, problem) -> "ProblemEntry":
        """The entry of a constructed problem: the registry's when its name is registered,
        else one made from its class (a problem built by a test or a script)."""
        load_all()
        entry = PROBLEMS.get(problem.name)
        if entry is not None and isinstance(problem, entry.factory):
            return entry
        return cls(problem.name, type(problem), tuple(problem.KINDS), "")

    def schema(self) -> dict[str, Param]:
        """The hyperparameters (--set keys) with this size's defaults: a preset that names a
        declared param is that param's default here."""
        return {key: replace(p, default=self.presets[key]) if key in self.presets else p
                for key, p in schema_of(self.factory).items()}

    def fixed(self) -> dict[str, Any]:
        """The presets that are no param: keyword arguments of the class (e.g. a shape)."""
        declared = schema_of(self.factory)
        return {k: v for k, v in self.presets.items() if k not in declared}

    def instantiate(self, hparams: dict, seed: int):
        """The problem with resolved hyperparameters and its fixed settings (nothing built)."""
        return self.factory(self.name, hparams, seed, **self.fixed())

    def create(self, overrides: dict[str, Any] | None = None, seed: int = 0, owner: str | None = None):
        """The problem of this name with its defaults and `overrides` (validated as
        `--set` values are; errors name `owner`, default this name). Nothing is built."""
        from harness.params import resolve

        return self.instantiate(resolve(self.schema(), overrides or {}, owner or self.name), seed)


@dataclass
class OptimizerEntry:
    """One registered optimizer name: its class, or a variant of it (other defaults)."""

    name: str
    factory: Callable[..., Any]          # the optimizer class
    kinds: tuple[str, ...]
    description: str
    presets: dict[str, Any] = field(default_factory=dict)  # a variant's defaults

    def schema(self, problem: ProblemEntry | None = None) -> dict[str, Param]:
        """The hyperparameters (--set keys) with this name's defaults: the class's, the
        ones it recommends for the problem's family (PROBLEM_DEFAULTS), then a variant's
        presets, which win."""
        recommended = self.factory.PROBLEM_DEFAULTS.get(problem.family, {}) if problem else {}
        defaults = {**recommended, **self.presets}
        return {key: replace(p, default=defaults[key]) if key in defaults else p
                for key, p in schema_of(self.factory).items()}

    def build(self, problem, seed: int = 0, budget=None, **hp):
        """The optimizer of this name on `problem` (an instance; build() it before
        setup()), through the one resolution a run uses (harness.pair): kinds, defaults
        (the problem's family's included), `hp` typed as --set values are, the optimizer's
        own checks. The twin of `create` for problems."""
        from harness.pair import resolve_pair

        pair = resolve_pair(self, ProblemEntry.of(problem))
        hparams = pair.resolve({f"optimizer.{k}": v for k, v in hp.items()}).optimizer
        self.factory.check_launch(hparams)
        self.factory.check_problem(problem)
        return self.factory(problem, hparams, seed, kind=pair.kind, budget=budget)


# Whose modules register optimizers and problems, imported by name on the first lookup.
PLUGIN_PACKAGES = ("optimizers", "problems")

OPTIMIZERS: dict[str, OptimizerEntry] = {}
PROBLEMS: dict[str, ProblemEntry] = {}
_loaded = False


def _check_kinds(name: str, kinds) -> tuple[str, ...]:
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"{name}: kinds must be a non-empty subset of {KINDS}, got {kinds}")
    return kinds


def _new_name(table: dict, name: str, what: str) -> str:
    if name in table:
        raise ValueError(f"{what} {name!r} registered twice")
    if name != name.lower():
        raise ValueError(f"{what} {name!r}: names are lower case (the CLI folds case)")
    return name


def register_optimizer(name: str, *, kinds, description: str):
    """Class decorator: `@register_optimizer("es", kinds=["weights"], description=...)`."""

    def deco(cls):
        _new_name(OPTIMIZERS, name, "optimizer")
        cls.KINDS = _check_kinds(name, kinds)
        declared = schema_of(cls)
        for family, defaults in cls.PROBLEM_DEFAULTS.items():
            unknown = sorted(set(defaults) - set(declared))
            if unknown:
                raise ValueError(f"optimizer {name!r}: PROBLEM_DEFAULTS[{family!r}] names {unknown[0]!r}, "
                                 "which it does not declare")
        OPTIMIZERS[name] = OptimizerEntry(name, cls, cls.KINDS, description)
        return cls

    return deco


def register_variant(name: str, *, of: str, description: str, **defaults):
    """Register optimizer `of` again as `name` with other defaults (same class)."""
    base = OPTIMIZERS[of]
    _new_name(OPTIMIZERS, name, "optimizer")
    unknown = sorted(set(defaults) - set(schema_of(base.factory)))
    if unknown:
        raise ValueError(f"variant {name!r}: {of!r} declares no hyperparameter {unknown[0]!r}")
    OPTIMIZERS[name] = OptimizerEntry(name, base.factory, base.kinds, description, {**base.presets, **defaults})


def base_optimizer(entry: OptimizerEntry) -> str | None:
    """The optimizer a variant was registered from (same class, no presets); for a base
    optimizer, another name of its class without presets, if any."""
    for name, other in OPTIMIZERS.items():
        if other.factory is entry.factory and not other.presets and name != entry.name:
            return name
    return None


def register_problem(name: str, factory, *, description: str, family: str = "", **presets):
    """Register one named problem (one size of a family) with its fixed settings."""
    _new_name(PROBLEMS, name, "problem")
    PROBLEMS[name] = ProblemEntry(name, factory, _check_kinds(name, factory.KINDS), description, presets, family)


def import_modules(pkg_name: str) -> None:
    """Import every public module (name not starting with _) of the package `pkg_name`,
    in name order: how a floor above the engine registers what it defines."""
    pkg = importlib.import_module(pkg_name)
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{pkg_name}.{info.name}")


def load_all() -> None:
    """Import every module of the PLUGIN_PACKAGES (registers them)."""
    global _loaded
    if _loaded:
        return
    for pkg_name in PLUGIN_PACKAGES:
        import_modules(pkg_name)
    _loaded = True


def _lookup(table: dict, name: str, what: str):
    load_all()
    if name in table:
        return table[name]
    if name.lower() in table:   # names are lower case; `--optimizer CMA` means cma
        return table[name.lower()]
    close = difflib.get_close_matches(name.lower(), list(table), n=3, cutoff=0.5)
    if not close:  # fall back to names sharing a prefix, then to a short list
        close = [n for n in table if n.split("-")[0] == name.lower().split("-")[0]][:3] or sorted(table)[:5]
    raise UsageError(f"unknown {what} {name!r}; did you mean: {', '.join(close)}?")


def find(name: str) -> list[tuple[str, OptimizerEntry | ProblemEntry]]:
    """Every entry called `name` (case folded) as ("optimizer" | "problem", entry): one,
    or two when an optimizer and a problem share it; none is a UsageError with the close
    matches over both tables."""
    load_all()
    key = name.lower()
    found = [(what, table[key]) for what, table in (("optimizer", OPTIMIZERS), ("problem", PROBLEMS))
             if key in table]
    if found:
        return found
    names = sorted(set(OPTIMIZERS) | set(PROBLEMS))
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
    if not close:
        close = [n for n in names if n.split("-")[0] == key.split("-")[0]][:3] or sorted(OPTIMIZERS)[:5]
    raise UsageError(f"unknown optimizer or problem {name!r}; did you mean: {', '.join(close)}?")


def optimizer(name: str) -> OptimizerEntry:
    return _lookup(OPTIMIZERS, name, "optimizer")


def problem(name: str) -> ProblemEntry:
    return _lookup(PROBLEMS, name, "problem")


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def select_problems(spec: str) -> list[str]:
    """Registered problem names from a comma-separated list of names or shell patterns
    (`bbob-f*-d5`, fnmatch over registered names), in natural order within each pattern,
    without repeats. A part matching nothing is a UsageError with close names."""
    load_all()
    names = []
    for part in (s.strip() for s in spec.split(",")):
        if not part:
            continue
        matched = sorted(fnmatch.filter(PROBLEMS, part), key=_natural)
        if not matched:
            if any(c in part for c in "*?["):
                raise UsageError(f"--problems {part!r}: no registered problem matches this pattern "
                                 "(see `python -m harness list problems`)")
            problem(part)  # raises with close matches
        names += [m for m in matched if m not in names]
    if not names:
        raise UsageError(f"--problems {spec!r}: no registered problem matches")
    return names


def compatible_kind(opt_kinds, prob_kinds, opt_name: str, prob_name: str) -> str:
    """The first of the optimizer's kinds that the problem offers, or a UsageError
    saying what each side has."""
    common = [k for k in opt_kinds if k in prob_kinds]
    if not common:
        raise UsageError(
            f"optimizer {opt_name!r} works on [{', '.join(opt_kinds)}] problems but problem "
            f"{prob_name!r} offers [{', '.join(prob_kinds)}]"
        )
    return common[0]


def check_compatible(opt: OptimizerEntry, prob: ProblemEntry) -> str:
    """The kind the pair will use, or a UsageError saying what each side has and
    which problems would do."""
    try:
        return compatible_kind(opt.kinds, prob.kinds, opt.name, prob.name)
    except UsageError as exc:
        examples: dict[str, str] = {}   # one problem per family
        for e in PROBLEMS.values():
            if set(e.kinds) & set(opt.kinds):
                examples.setdefault(e.family or e.name, e.name)
        hint = f"; it runs on e.g. {', '.join(list(examples.values())[:4])}" if examples else ""
        raise UsageError(f"{exc}{hint}") from None
