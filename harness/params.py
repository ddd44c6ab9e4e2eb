"""Typed, validated hyperparameters, settable from the CLI with --set key=value."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from harness.errors import UsageError

FLOAT32_MAX = 3.4028234663852886e38   # numpy.finfo(numpy.float32).max, without importing numpy


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its default, type and the values it accepts."""

    default: Any
    type: type = float
    help: str = ""
    choices: Sequence[Any] | None = None
    low: float | None = None   # inclusive bounds for int/float
    high: float | None = None
    optional: bool = False     # None is allowed (e.g. "use the problem's default")
    finite: bool = True        # floats: inf is refused (nan always is)

    def parse(self, key: str, raw: Any) -> Any:
        """Convert a CLI string (or a Python value) to this param's type, or raise UsageError."""
        if raw is None or (isinstance(raw, str) and raw.lower() == "none"):
            if self.optional:
                return None
            raise UsageError(f"--set {key}: a value is required ({self.describe()})")
        try:
            if self.type is bool:
                value = _parse_bool(raw)
            elif self.type is int:
                value = _parse_int(raw)
            elif self.type is float:
                value = float(raw)
                if math.isnan(value) or (self.finite and math.isinf(value)):
                    raise ValueError
                if self.finite and abs(value) > FLOAT32_MAX:   # inf in every float32 tensor it meets
                    raise UsageError(f"--set {key}={raw!r}: beyond float32's range (|x| <= {FLOAT32_MAX:.4g}), "
                                     f"which the run computes in ({self.describe()})")
            else:
                value = self.type(raw)
        except (TypeError, ValueError):
            raise UsageError(
                f"--set {key}={raw!r}: expected {self.type.__name__} ({self.describe()})"
            ) from None
        if self.choices is not None and value not in self.choices:
            raise UsageError(
                f"--set {key}={raw!r}: must be one of {', '.join(map(str, self.choices))}"
            )
        if self.low is not None and value < self.low:
            raise UsageError(f"--set {key}={raw!r}: must be >= {self.low}")
        if self.high is not None and value > self.high:
            raise UsageError(f"--set {key}={raw!r}: must be <= {self.high}")
        return value

    def describe(self) -> str:
        parts = [self.type.__name__]
        if self.choices is not None:
            parts.append("one of " + "|".join(map(str, self.choices)))
        if self.low is not None or self.high is not None:
            parts.append(f"in [{self.low if self.low is not None else '-inf'}, "
                         f"{self.high if self.high is not None else 'inf'}]")
        parts.append(f"default {self.default!r}")
        return ", ".join(parts)


def _parse_int(raw: Any) -> int:
    """An integer, written as one ("30") or in exponent form if integral ("1e3");
    "2.5", "2.5e0", True and inf are refused, never truncated."""
    if isinstance(raw, bool):
        raise ValueError(raw)
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) or any(c in str(raw).lower() for c in ".e"):
        value = float(raw)
        if not value.is_integer():
            raise ValueError(raw)
        return int(value)
    return int(str(raw).strip())


def _parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def resolve(schema: dict[str, Param], overrides: dict[str, Any], owner: str) -> dict[str, Any]:
    """Fill defaults, parse overrides; unknown keys are an error naming the valid ones."""
    unknown = sorted(set(overrides) - set(schema))
    if unknown:
        raise UsageError(
            f"unknown hyperparameter {unknown[0]!r} for {owner}; valid: {', '.join(sorted(schema)) or '(none)'}"
            f" (types, defaults, ranges: `python -m harness describe NAME`)"
        )
    values = {k: p.default for k, p in schema.items()}
    for key, raw in overrides.items():
        values[key] = schema[key].parse(key, raw)
    return values


def parse_set_args(items: Sequence[str] | None) -> dict[str, str]:
    """Turn ["a=1", "b=x"] into {"a": "1", "b": "x"}; a malformed item is a UsageError."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set {item!r}: expected key=value")
        out[key] = value
    return out


@dataclass
class Routed:
    """--set items routed to one optimizer/problem pair."""

    optimizer: dict[str, Any]     # bare key -> raw value, for the optimizer
    problem: dict[str, Any]       # bare key -> raw value, for the problem
    used: dict[str, Any]          # the items as given (key text unchanged) that this pair takes


def route_sets(
    sets: dict[str, Any],
    optimizer_schema: dict[str, Param],
    problem_schema: dict[str, Param],
    optimizer_name: str,
    problem_name: str,
    partial: bool = False,
) -> Routed:
    """Route each --set key to the optimizer or the problem: the one router of the harness.

    `optimizer.KEY` and `problem.KEY` name a side; a bare key goes to the side that
    declares it, and one both declare must be prefixed. partial=False (one run): a key
    neither side declares is an error naming every valid key. partial=True (one pair
    of a sweep, a table, a reproduction): such keys are left out; the caller checks
    that each key was used by some pair (`unused_sets`).
    """
    out = Routed({}, {}, {})
    for key, value in sets.items():
        side, _, bare = key.partition(".")
        if side in ("optimizer", "problem") and bare:
            schema = optimizer_schema if side == "optimizer" else problem_schema
        elif key in optimizer_schema and key in problem_schema:
            raise UsageError(
                f"--set {key}: both optimizer {optimizer_name!r} and problem {problem_name!r} "
                f"have it; write optimizer.{key}= or problem.{key}="
            )
        else:
            bare = key
            side = "optimizer" if key in optimizer_schema else "problem" if key in problem_schema else ""
            schema = optimizer_schema if side == "optimizer" else problem_schema
        if side and bare in schema:
            getattr(out, side)[bare] = value
            out.used[key] = value
        elif side and not partial and key != bare:   # a prefixed key that side lacks
            owner = optimizer_name if side == "optimizer" else problem_name
            resolve(schema, {bare: value}, f"{side} {owner!r}")   # raises, naming the valid keys
        elif not partial:
            valid = sorted(set(optimizer_schema) | set(problem_schema))
            raise UsageError(
                f"unknown hyperparameter {key!r} for optimizer {optimizer_name!r} / problem "
                f"{problem_name!r}; valid: {', '.join(valid) or '(none)'} (types, defaults, ranges: "
                f"`python -m harness describe {optimizer_name}` / `describe {problem_name}`)"
            )
    return out


def unused_sets(sets: dict[str, Any], used: set[str], where: str) -> None:
    """A --set key that no pair of a sweep/table took is a typo: one line naming it."""
    unused = sorted(set(sets) - used)
    if unused:
        raise UsageError(f"--set {unused[0]}: no optimizer or problem of this {where} declares it "
                         f"(see `python -m harness describe NAME`; prefix optimizer. or problem. "
                         f"if needed)")


# torch.manual_seed and numpy take seeds below 2**64 and 2**32; derive_seed folds any
# integer, but a run seed is also handed to libraries directly: keep it where all agree.
SEED_MAX = 2**32 - 1


def parse_seed(raw: Any, flag: str = "--seed") -> int:
    """One run seed: an integer in [0, 2**32 - 1]."""
    try:
        seed = int(str(raw).strip())
    except ValueError:
        raise UsageError(f"{flag} {raw!r}: expected an integer in [0, {SEED_MAX}]") from None
    if not 0 <= seed <= SEED_MAX:
        raise UsageError(f"{flag} {raw!r}: expected an integer in [0, {SEED_MAX}]")
    return seed


def parse_seeds(text: str, flag: str = "--seeds") -> list[int]:
    """'0,1,2' -> [0, 1, 2]: distinct run seeds, in order (the one seeds parser)."""
    expected = f"expected distinct comma-separated integers in [0, {SEED_MAX}], e.g. 0,1,2"
    parts = [t.strip() for t in str(text).split(",") if t.strip()]
    try:
        seeds = [parse_seed(t, flag) for t in parts]
    except UsageError:
        raise UsageError(f"{flag} {text!r}: {expected}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"{flag} {text!r}: {expected}")
    return seeds


def schema_of(obj: Any) -> dict[str, Param]:
    """The PARAMS dict of a class (merged along its MRO, subclass wins)."""
    merged: dict[str, Param] = {}
    for klass in reversed(type(obj).__mro__ if not isinstance(obj, type) else obj.__mro__):
        merged.update(getattr(klass, "PARAMS", {}) or {})
    return merged


Factory = Callable[..., Any]
