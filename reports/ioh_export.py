"""Export the runs for IOHanalyzer through the `ioh` package's own Analyzer logger.

`ioh` has no writer for externally recorded runs: its Analyzer logs the
evaluations of an ioh problem. So each stored run is replayed through a
problem made with `ioh.wrap_problem` (one per harness problem, named after it,
dimension 1, minimised or maximised as the metric says) and the Analyzer
writes IOHanalyzer's own format (IOHprofiler_f*_NAME.json + .dat files), one
folder per optimizer, runs in seed order.

The replayed evaluation counter is the run's forward-pass equivalents (equal to
evaluations on search spaces; evaluations for runs recorded before forwards
existed), so ES, MeZO and Adam line up on one axis. A stored run has the metric
at eval steps only: each replayed evaluation returns the metric of the
solution known at that point, and a new value is attributed to the last
evaluation of the step that produced it (the same convention as
reports.targets: a runtime is counted at the end of its step).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reports.targets import higher_is_better

FOLDER = "ioh"


def available() -> bool:
    try:
        import ioh  # noqa: F401
    except ImportError:
        return False
    return True


def _replay(curve: pd.DataFrame) -> list[tuple[int, float]]:
    """[(evaluation counter, metric known from then on)] of one run, counter rising."""
    axis = "forwards" if "forwards" in curve and curve["forwards"].notna().any() else "evals"
    d = curve[curve["metric"].notna()] if "metric" in curve else curve.iloc[0:0]
    out = []
    for _, r in d.iterrows():
        count = 0 if r["step"] == 0 else int(round(float(r[axis])))
        if np.isfinite(r["metric"]):
            out.append((count, float(r["metric"])))
    return out


def export(runs: pd.DataFrame, curves: dict, out: Path) -> str | None:
    """Write out/ioh/<optimizer>/...; returns the folder name, or None without `ioh`."""
    if not available():
        return None
    import ioh

    root = Path(out) / FOLDER
    values: list[float] = []   # what the replayed problem returns next
    problems = {}
    for problem, prob in runs.groupby("problem", sort=True):
        kind = ioh.OptimizationType.MAX if higher_is_better(prob) else ioh.OptimizationType.MIN
        problems[problem] = (ioh.wrap_problem(lambda x: values.pop(0), name=problem, dimension=1,
                                              lb=0.0, ub=1.0, optimization_type=kind),
                             higher_is_better(prob))
    for label, g in runs.groupby("label", sort=True):   # one Analyzer (folder) per optimizer
        logger = ioh.logger.Analyzer(root=str(root), folder_name=_safe(label), algorithm_name=label,
                                     algorithm_info="replayed from a harness run store")
        for problem, runs_p in g.groupby("problem", sort=True):
            fn, higher = problems[problem]
            fn.attach_logger(logger)
            for _, run in runs_p.sort_values("seed").iterrows():
                points = _replay(curves[run["run_id"]])
                if not points:
                    continue
                # before the first metric the run knows nothing: the worst value
                known, done = -np.inf if higher else np.inf, 0
                for count, metric in points:
                    if count <= done:   # the initial evaluation (0 evaluations spent)
                        known = metric
                        continue
                    values[:] = [known] * (count - done - 1) + [metric]
                    for _ in range(count - done):
                        fn([0.0])
                    known, done = metric, count
                fn.reset()   # the logger closes this run
            fn.detach_logger()
        logger.close()
    return FOLDER


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "._+-" else "_" for c in label)
