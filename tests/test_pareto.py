"""The memory-quality figure: its Pareto front and what its memory axis shows."""

import numpy as np
import pandas as pd

from reports import pareto


def test_pareto_front_keeps_the_points_nothing_beats_on_both_axes():
    memory = np.array([10.0, 20.0, 15.0, 30.0, 12.0])
    quality = np.array([5.0, 1.0, 3.0, 2.0, 6.0])   # lower is better
    assert pareto.pareto_front(memory, quality).tolist() == [0, 2, 1]   # 30/2 is beaten by 20/1


def _runs(framework):
    return pd.DataFrame({"problem": "p", "label": ["es", "adam"], "status": "ok", "final_metric": [-4.4, -2.4],
                         "metric_name": "heldout_logprob", "metric_higher_is_better": True,
                         "peak_memory_bytes": [420 * 2**20, 440 * 2**20], "peak_memory_method": "peak_rss",
                         "framework_bytes": framework})


def test_cpu_memory_subtracts_the_planners_framework_baseline(tmp_path):
    mem, label = pareto.memory_of(_runs([400 * 2**20] * 2))
    assert mem.tolist() == [20.0, 40.0] and "minus the framework baseline (400 MiB" in label
    mem, label = pareto.memory_of(_runs([400 * 2**20, np.nan]))   # one run without it: nothing subtracted
    assert mem.tolist() == [420.0, 440.0] and "includes interpreter + libraries" in label
    assert pareto.figure(_runs([400 * 2**20] * 2), tmp_path) == "memory_quality.png"
    assert (tmp_path / "memory_quality.png").stat().st_size > 0
