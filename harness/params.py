"""Typed, validated hyperparameters, settable from the CLI with --set key=value."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from harness.errors import UsageError


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
                if isinstance(raw, float) and not raw.is_integer():
                    raise ValueError
                value = int(float(raw)) if isinstance(raw, str) and "e" in raw.lower() else int(raw)
            elif self.type is float:
                value = float(raw)
                if math.isnan(value):
                    raise ValueError
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


def split_overrides(
    overrides: dict[str, str],
    optimizer_schema: dict[str, Param],
    problem_schema: dict[str, Param],
    optimizer_name: str,
    problem_name: str,
) -> tuple[dict[str, str], dict[str, str]]:
    """Route each --set key to the optimizer or the problem.

    A key both declare must be prefixed (optimizer.KEY / problem.KEY); an
    unknown key is rejected with every valid key of both sides.
    """
    opt: dict[str, str] = {}
    prob: dict[str, str] = {}
    for key, value in overrides.items():
        if key.startswith("optimizer."):
            opt[key.split(".", 1)[1]] = value
        elif key.startswith("problem."):
            prob[key.split(".", 1)[1]] = value
        elif key in optimizer_schema and key in problem_schema:
            raise UsageError(
                f"--set {key}: both optimizer {optimizer_name!r} and problem {problem_name!r} "
                f"have it; write optimizer.{key}= or problem.{key}="
            )
        elif key in optimizer_schema:
            opt[key] = value
        elif key in problem_schema:
            prob[key] = value
        else:
            valid = sorted(set(optimizer_schema) | set(problem_schema))
            raise UsageError(
                f"unknown hyperparameter {key!r} for optimizer {optimizer_name!r} / problem "
                f"{problem_name!r}; valid: {', '.join(valid) or '(none)'}"
            )
    return opt, prob


def schema_of(obj: Any) -> dict[str, Param]:
    """The PARAMS dict of a class (merged along its MRO, subclass wins)."""
    merged: dict[str, Param] = {}
    for klass in reversed(type(obj).__mro__ if not isinstance(obj, type) else obj.__mro__):
        merged.update(getattr(klass, "PARAMS", {}) or {})
    return merged


Factory = Callable[..., Any]
