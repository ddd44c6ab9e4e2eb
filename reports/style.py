"""One colour per optimizer across every figure of every report.

Known optimizers get fixed colours (so a figure from one report matches the
next); any other name gets a stable colour from its hash, never its position.
"""

from __future__ import annotations

import zlib

import matplotlib

matplotlib.use("Agg")  # files only, no display

FIXED = {
    "es": "#1f77b4", "adam": "#d62728", "mezo": "#2ca02c", "cma": "#ff7f0e", "tpe": "#9467bd",
    "random": "#7f7f7f", "nevergrad": "#8c564b", "genome": "#e377c2", "genome+": "#f7b6d2",
    "synflow": "#17becf", "synflow-cma": "#bcbd22", "magnitude": "#393b79",
}


def colour(label: str) -> str:
    """Colour of an optimizer label ("cma [popsize=8]" shares cma's hue family)."""
    name = label.split(" [")[0]
    if name in FIXED and name == label:
        return FIXED[name]
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return matplotlib.colors.to_hex(cmap(zlib.crc32(label.encode()) % 20))


def mib(nbytes: float) -> float:
    return nbytes / 2**20


def spans_decades(values, factor: float = 100.0) -> bool:
    """Log scale when positive values span more than `factor`."""
    import numpy as np

    v = np.asarray([x for x in values if x == x], dtype=float)
    return v.size > 1 and bool((v > 0).all()) and v.max() / v.min() > factor
