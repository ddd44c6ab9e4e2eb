"""Typed search spaces and their continuous encoding for vector optimizers.

Encoding (what cma, nevergrad and random see): a linear Float is its own
value; a log Float/Int is log10 of its value; an Int is a real rounded to
the nearest integer; a Choice of n options is a real in [0, n) floored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True)
class Float:
    name: str
    low: float
    high: float
    log: bool = False

    def bounds(self):
        return (math.log10(self.low), math.log10(self.high)) if self.log else (self.low, self.high)

    def decode(self, x: float) -> float:
        lo, hi = self.bounds()
        return self.value(min(max(float(x), lo), hi))

    def value(self, x: float) -> float:
        """The value of an encoded coordinate already inside bounds()."""
        return 10.0 ** x if self.log else x

    def encode(self, v: float) -> float:
        return math.log10(v) if self.log else float(v)


@dataclass(frozen=True)
class Int:
    name: str
    low: int
    high: int
    log: bool = False

    def bounds(self):
        if self.log:
            return (math.log10(self.low), math.log10(self.high))
        return (self.low - 0.4999, self.high + 0.4999)

    def decode(self, x: float) -> int:
        lo, hi = self.bounds()
        return self.value(min(max(float(x), lo), hi))

    def value(self, x: float) -> int:
        """The value of an encoded coordinate already inside bounds()."""
        v = int(round(10.0 ** x)) if self.log else int(round(x))
        return min(max(v, self.low), self.high)

    def encode(self, v: int) -> float:
        return math.log10(v) if self.log else float(v)


@dataclass(frozen=True)
class Choice:
    name: str
    options: Sequence[Any]

    def bounds(self):
        return (0.0, float(len(self.options)) - 1e-9)

    def decode(self, x: float):
        lo, hi = self.bounds()
        return self.value(min(max(float(x), lo), hi))

    def value(self, x: float):
        """The option of an encoded coordinate already inside bounds()."""
        return self.options[int(math.floor(x))]

    def encode(self, v) -> float:
        return list(self.options).index(v) + 0.5


class Space:
    """Dimensions are fixed at construction: the bounds are computed once, and decode
    clips a whole vector at once (what a vector optimizer pays per candidate)."""

    def __init__(self, dims: Sequence[Float | Int | Choice]):
        self.dims = tuple(dims)
        names = [d.name for d in self.dims]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate dimension names in {names}")
        self._names = tuple(names)
        lo, hi = zip(*(d.bounds() for d in self.dims)) if self.dims else ((), ())
        self._lo, self._hi = np.array(lo, dtype=float), np.array(hi, dtype=float)
        # linear Floats are their own value: such a space decodes without a call per dimension
        self._identity = all(isinstance(d, Float) and not d.log for d in self.dims)

    def __len__(self) -> int:
        return len(self.dims)

    @property
    def names(self) -> list[str]:
        return list(self._names)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self._lo.copy(), self._hi.copy()

    def clip(self, x: Sequence[float]) -> np.ndarray:
        """The encoded point clipped into the box (as each dimension's decode clips)."""
        return np.clip(np.asarray(x, dtype=float), self._lo, self._hi)

    def decode(self, x: Sequence[float]) -> dict[str, Any]:
        clipped = self.clip(x).tolist()
        if self._identity:
            return dict(zip(self._names, clipped))
        return {d.name: d.value(v) for d, v in zip(self.dims, clipped)}

    def encode(self, config: dict[str, Any]) -> np.ndarray:
        return np.array([d.encode(config[d.name]) for d in self.dims], dtype=float)

    def sample_encoded(self, rng: np.random.Generator) -> np.ndarray:
        """A uniform point in the encoded box (log dims uniform in log space)."""
        lo, hi = self.bounds()
        return rng.uniform(lo, hi)

    def is_continuous(self) -> bool:
        return self._identity
