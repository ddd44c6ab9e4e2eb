"""Name -> factory registry for optimizers and problems.

Optimizer and problem modules register themselves when imported; the engine
only imports the *packages* `optimizers` and `problems` and walks their
modules (`load_all`), so it never names a specific optimizer.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

from harness.errors import UsageError

KINDS = ("weights", "search-space", "pruning")


@dataclass
class Entry:
    name: str
    factory: Callable[..., Any]          # class (or callable) building the object
    kinds: tuple[str, ...]
    description: str
    presets: dict[str, Any] = field(default_factory=dict)  # fixed kwargs of a named size
    family: str = ""

    def schema(self) -> tuple[dict, dict]:
        """(hyperparameter schema, remaining presets): a preset that names a declared
        param becomes that param's default for this named size; the rest are passed
        to the factory as keyword arguments."""
        from dataclasses import replace

        from harness.params import schema_of

        schema = dict(schema_of(self.factory))
        presets = dict(self.presets)
        for key in list(presets):
            if key in schema:
                schema[key] = replace(schema[key], default=presets.pop(key))
        return schema, presets

    def instantiate(self, name: str, hparams: dict, seed: int):
        """Build the object with resolved hyperparameters (problems get their presets)."""
        return self.factory(name, hparams, seed, **self.schema()[1])

    def create(self, overrides: dict[str, Any] | None = None, seed: int = 0, owner: str | None = None):
        """The problem of this name with its defaults and `overrides` (validated as
        `--set` values are; errors name `owner`, default this name). Nothing is built."""
        from harness.params import resolve

        schema, _ = self.schema()
        return self.instantiate(self.name, resolve(schema, overrides or {}, owner or self.name), seed)


OPTIMIZERS: dict[str, Entry] = {}
PROBLEMS: dict[str, Entry] = {}
_loaded = False


def _check_kinds(name: str, kinds) -> tuple[str, ...]:
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"{name}: kinds must be a non-empty subset of {KINDS}, got {kinds}")
    return kinds


def register_optimizer(name: str, *, kinds, description: str):
    """Class decorator: `@register_optimizer("es", kinds=["weights"], description=...)`."""

    def deco(cls):
        if name in OPTIMIZERS:
            raise ValueError(f"optimizer {name!r} registered twice")
        OPTIMIZERS[name] = Entry(name, cls, _check_kinds(name, kinds), description)
        cls.NAME = name
        return cls

    return deco


def register_problem(name: str, factory, *, kinds=None, description: str, family: str = "", **presets):
    """Register one named problem (one size of a family) with its fixed settings."""
    if name in PROBLEMS:
        raise ValueError(f"problem {name!r} registered twice")
    kinds = kinds if kinds is not None else getattr(factory, "KINDS", ())
    PROBLEMS[name] = Entry(name, factory, _check_kinds(name, kinds), description, presets, family)


def load_all() -> None:
    """Import every module of the optimizers and problems packages (registers them)."""
    global _loaded
    if _loaded:
        return
    for pkg_name in ("optimizers", "problems"):
        pkg = importlib.import_module(pkg_name)
        for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{pkg_name}.{info.name}")
    _loaded = True


def _lookup(table: dict[str, Entry], name: str, what: str) -> Entry:
    load_all()
    if name in table:
        return table[name]
    close = difflib.get_close_matches(name, list(table), n=3, cutoff=0.5)
    if not close:  # fall back to names sharing a prefix, then to a short list
        close = [n for n in table if n.split("-")[0] == name.split("-")[0]][:3] or sorted(table)[:5]
    raise UsageError(f"unknown {what} {name!r}; did you mean: {', '.join(close)}?")


def optimizer(name: str) -> Entry:
    return _lookup(OPTIMIZERS, name, "optimizer")


def problem(name: str) -> Entry:
    return _lookup(PROBLEMS, name, "problem")


def check_compatible(opt: Entry, prob: Entry) -> str:
    """The kind the pair will use, or a UsageError saying what each side has."""
    common = [k for k in opt.kinds if k in prob.kinds]
    if not common:
        raise UsageError(
            f"optimizer {opt.name!r} works on [{', '.join(opt.kinds)}] problems but problem "
            f"{prob.name!r} offers [{', '.join(prob.kinds)}]"
        )
    return common[0]
