"""Timing that cannot flatter one side: the sides of a comparison run in one process,
interleaved in rotated order (AB, BA, AB, ... ; ABC, BCA, CAB, ... for more), so drift
in machine load and caches hits every side alike; every repeat is kept, and a ratio is
reported as the median of the per-repeat ratios with its spread (min-max).

Used by the benchmark scripts in this folder (es_overhead, cma_overhead,
population_throughput, gpu_suite).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable


def interleaved(sides: dict[str, Callable[[int], object]], reps: int, *, warmup: int = 1,
                sync: Callable[[], None] = lambda: None,
                after: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Seconds of each side in each of `reps` repeats (after `warmup` untimed rounds).
    Repeat r runs the sides in the order rotated by r; each side gets the repeat's index
    (a step number). `sync` is called before and after each timed call (CUDA), `after`
    (untimed) after each call with the side's label (e.g. restore the weights)."""
    labels = list(sides)
    times: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(warmup + reps):
        k = r % len(labels)
        for label in labels[k:] + labels[:k]:
            sync()
            t0 = time.perf_counter()
            sides[label](r)
            sync()
            elapsed = time.perf_counter() - t0
            if after is not None:
                after(label)
            if r >= warmup:
                times[label].append(elapsed)
    return times


def ratios(num: list[float], den: list[float], den_scale: float = 1.0) -> list[float]:
    """Per-repeat ratios num_r / (den_scale x den_r): each from two adjacent timings."""
    return [a / (den_scale * b) for a, b in zip(num, den)]


def summary(values: list[float], fmt: str = "{:.3f}") -> str:
    """'median (min-max, n repeats)'."""
    return (f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-"
            f"{fmt.format(max(values))}, {len(values)} repeats)")


def impossible_below_one(name: str, values: list[float]) -> str | None:
    """For work that includes its baseline (an ES iteration includes its N forwards) a ratio
    below 1 cannot be real: the flag to print (None when the median is >= 1)."""
    if statistics.median(values) >= 1.0:
        return None
    return (f"MEASUREMENT ERROR: {name} median {statistics.median(values):.3f} < 1 is impossible (the work "
            f"includes its baseline); the machine's load changed within repeats; rerun with more --reps")
