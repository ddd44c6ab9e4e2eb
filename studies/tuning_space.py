"""Tuning search spaces: data kept beside each optimizer, validated against its PARAMS.

The format is AlgoPerf's `tuning_search_space.json` (mlcommons/algorithmic-efficiency,
one file next to each baseline):

    {"lr":      {"min": 1e-4, "max": 1e-2, "scaling": "log"},
     "shaping": {"feasible_points": ["zscore", "rank"]}}

`min`/`max` with `scaling` "linear" (default) or "log" is a range of an int or
float hyperparameter; `feasible_points` a finite set (one point fixes the value).

Files: optimizers/tuning/<optimizer>.json, and per problem family
optimizers/tuning/<optimizer>.<family>.json whose keys replace the default
file's (a key set to null leaves the space). A variant without its own file
uses its base optimizer's. Command-line overrides (`tune --space`) replace keys
last: `[OPT.]KEY=MIN:MAX[:log|linear]`, `[OPT.]KEY=V1,V2,...` or a JSON file
{optimizer: space}. Every key and value is checked against the optimizer's
declared Param (type, bounds, choices) before anything runs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.params import Param

TUNING_DIR = Path(__file__).resolve().parent.parent / "optimizers" / "tuning"
SCALINGS = ("linear", "log")


@dataclass(frozen=True)
class Dim:
    """One tuned hyperparameter: a range (low, high, scaling) or feasible points."""

    key: str
    low: float | None = None
    high: float | None = None
    scaling: str = "linear"
    points: tuple | None = None

    @property
    def varies(self) -> bool:
        return self.points is None or len(self.points) > 1

    def value(self, u: float, param: Param) -> Any:
        """The value at u in [0, 1): a point of the range on its scale, or the
        floor(u n)-th feasible point; ints rounded; floats kept to 4 significant digits
        (readable run names and tables; far finer than any tuning resolution)."""
        if self.points is not None:
            return self.points[min(int(u * len(self.points)), len(self.points) - 1)]
        if self.scaling == "log":
            x = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            x = self.low + u * (self.high - self.low)
        if param.type is int:
            return int(min(max(round(x), math.ceil(self.low)), math.floor(self.high)))
        return float(f"{min(max(x, self.low), self.high):.4g}")

    def to_json(self) -> dict:
        if self.points is not None:
            return {"feasible_points": list(self.points)}
        return {"min": self.low, "max": self.high, "scaling": self.scaling}


@dataclass(frozen=True)
class TuningSpace:
    """The ranges `tune` draws one optimizer's hyperparameters from (not a problem's
    search space: that is harness.space.Space, what search-space optimizers optimise)."""

    optimizer: str
    dims: tuple[Dim, ...]
    sources: tuple[str, ...]      # where it came from: files, then --space

    @property
    def varying(self) -> tuple[Dim, ...]:
        return tuple(d for d in self.dims if d.varies)

    def to_json(self) -> dict:
        return {d.key: d.to_json() for d in self.dims}


def set_text(value: Any) -> str:
    """A sampled value as a --set string (bools lower case, as Param parses them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def files_for(optimizer: str, family: str, base: str | None) -> list[Path]:
    """The space files that apply, general first: <name>.json (else the base optimizer's),
    then <name>.<family>.json (else the base's)."""
    out = []
    for suffix in ("", f".{family}") if family else ("",):
        for name in (optimizer, base):
            if name and (TUNING_DIR / f"{name}{suffix}.json").exists():
                out.append(TUNING_DIR / f"{name}{suffix}.json")
                break
    return out


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot read it ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} {path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{what} {path}: expected a JSON object {{key: {{min, max, scaling}} or "
                         f"{{feasible_points: [...]}}}}")
    return data


def parse_dim(key: str, spec: Any, param: Param | None, owner: str, schema: dict[str, Param]) -> Dim:
    """A raw JSON entry -> Dim, checked against the optimizer's Param; UsageError names `owner`."""
    if param is None:
        raise UsageError(f"{owner}: unknown hyperparameter {key!r}; valid: {', '.join(sorted(schema))}")
    where = f"{owner}: {key}"
    if not isinstance(spec, dict) or not (("feasible_points" in spec) ^ ("min" in spec or "max" in spec)):
        raise UsageError(f"{where}: expected {{\"min\": A, \"max\": B, \"scaling\": \"log\"|\"linear\"}} "
                         f"or {{\"feasible_points\": [...]}}, got {json.dumps(spec)}")
    extra = sorted(set(spec) - {"feasible_points", "min", "max", "scaling"})
    if extra:
        raise UsageError(f"{where}: unknown field {extra[0]!r}; fields: min, max, scaling, feasible_points")
    if "feasible_points" in spec:
        points = spec["feasible_points"]
        if not isinstance(points, list) or not points:
            raise UsageError(f"{where}: feasible_points must be a non-empty list")
        parsed = tuple(_parse(param, key, p, where) for p in points)
        return Dim(key, points=tuple(dict.fromkeys(parsed)))
    if param.type not in (int, float):
        raise UsageError(f"{where}: a range needs an int or float hyperparameter; {key} is "
                         f"{param.type.__name__}: give feasible_points")
    if "min" not in spec or "max" not in spec:
        raise UsageError(f"{where}: a range needs both min and max")
    scaling = spec.get("scaling", "linear")
    if scaling not in SCALINGS:
        raise UsageError(f"{where}: scaling {scaling!r}: must be one of {', '.join(SCALINGS)}")
    low, high = (_parse(param, key, spec[b], where) for b in ("min", "max"))
    if not low < high:
        raise UsageError(f"{where}: min {low} must be below max {high}")
    if scaling == "log" and not low > 0:
        raise UsageError(f"{where}: a log range needs min > 0 (got {low})")
    return Dim(key, float(low), float(high), scaling)


def _parse(param: Param, key: str, raw: Any, where: str) -> Any:
    try:
        return param.parse(key, raw)
    except UsageError as exc:
        raise UsageError(f"{where}: {str(exc).replace('--set ', '')}") from None


def parse_override(text: str) -> tuple[str | None, str, dict]:
    """'[OPT.]KEY=MIN:MAX[:SCALING]' or '[OPT.]KEY=V1,V2,...' -> (opt or None, key, raw spec)."""
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value:
        raise UsageError(f"--space {text!r}: expected [OPTIMIZER.]KEY=MIN:MAX[:log|linear], "
                         f"[OPTIMIZER.]KEY=V1,V2,... or a path to a .json file")
    opt, _, key = name.rpartition(".")
    if ":" in value:
        parts = value.split(":")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"--space {text!r}: a range is MIN:MAX or MIN:MAX:log|linear")
        spec = {"min": parts[0], "max": parts[1]}
        if len(parts) == 3:
            spec["scaling"] = parts[2]
        return opt or None, key, spec
    return opt or None, key, {"feasible_points": [v.strip() for v in value.split(",") if v.strip()]}


def load(optimizer: str, family: str, base: str | None, schema: dict[str, Param],
         overrides: list[str] | None = None, all_optimizers: tuple[str, ...] = ()) -> TuningSpace:
    """The validated space of one optimizer on a problem family: files, then --space."""
    raw: dict[str, Any] = {}
    sources: list[str] = []
    for path in files_for(optimizer, family, base):
        for key, spec in _read_json(path, "tuning space").items():
            if spec is None:
                raw.pop(key, None)
            else:
                raw[key] = (spec, f"tuning space of {optimizer} ({path.relative_to(TUNING_DIR.parent.parent)})")
        sources.append(str(path.relative_to(TUNING_DIR.parent.parent)))
    for text in overrides or []:
        if text.endswith(".json"):
            data = _read_json(Path(text), "--space")
            unknown = sorted(set(data) - set(all_optimizers))
            if unknown:
                raise UsageError(f"--space {text}: {unknown[0]!r} is not one of the tuned optimizers "
                                 f"({', '.join(all_optimizers)}); the file maps optimizer -> space")
            for key, spec in (data.get(optimizer) or {}).items():
                raw[key] = (spec, f"--space {text} ({optimizer})")
            if optimizer in data:
                sources.append(text)
            continue
        opt, key, spec = parse_override(text)
        if opt is not None and opt not in all_optimizers:
            raise UsageError(f"--space {text}: {opt!r} is not one of the tuned optimizers "
                             f"({', '.join(all_optimizers)})")
        if opt == optimizer or (opt is None and key in schema):
            raw[key] = (spec, f"--space {text}")
            sources.append(f"--space {text}")
    if not raw:
        raise UsageError(f"optimizer {optimizer!r} has no tuning space (no optimizers/tuning/{base or optimizer}"
                         f".json); give one with --space {optimizer}.KEY=MIN:MAX:log or --space FILE.json")
    dims = tuple(parse_dim(key, spec, schema.get(key), owner, schema) for key, (spec, owner) in raw.items())
    if not any(d.varies for d in dims):
        raise UsageError(f"tuning space of {optimizer}: every hyperparameter is fixed; give at least one "
                         f"range or two feasible points")
    return TuningSpace(optimizer, dims, tuple(sources))


def check_overrides_used(overrides: list[str], schemas: dict[str, dict[str, Param]]) -> None:
    """A bare --space KEY that no tuned optimizer declares is a typo: one line naming it."""
    for text in overrides or []:
        if text.endswith(".json"):
            continue
        opt, key, _ = parse_override(text)
        if opt is None and not any(key in s for s in schemas.values()):
            valid = sorted({k for s in schemas.values() for k in s})
            raise UsageError(f"--space {text}: no tuned optimizer declares {key!r}; valid: {', '.join(valid)}")
