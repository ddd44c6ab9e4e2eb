"""Objective time: the part of an optimizer step spent inside the problem's objective."""

from __future__ import annotations

import time


class ObjectiveClock:
    """Seconds spent inside the problem's OBJECTIVE_METHODS (outermost calls only), so
    that a step's time splits into objective time and the optimizer's own overhead
    (ask/tell, sampling, surrogate fitting) the same way for every optimizer."""

    def __init__(self, problem):
        self.total = 0.0
        self._depth = 0
        for name in problem.OBJECTIVE_METHODS:
            setattr(problem, name, self._timed(getattr(problem, name)))

    def _timed(self, fn):
        def timed(*args, **kwargs):
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.total += time.perf_counter() - t0
        return timed
