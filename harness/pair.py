"""An optimizer/problem pair resolved: the one way every caller goes from two names
(or entries) and --set values to typed hyperparameters.

`resolve_pair(optimizer, problem)` looks both names up (case folded, did-you-mean),
checks that the optimizer's kinds meet the problem's (a clear error naming what
each side has) and gives both schemas, the optimizer's with the defaults it
recommends for the problem's family. `Pair.route(sets)` sends each --set key to
its side (harness.params.route_sets, the one router); `Pair.resolve(sets)` types
every value and runs the optimizer's own check_hparams. A run (harness.spec), a
sweep grid and its validation (harness.experiments), `tune`, the memory table,
the preflight's alternatives and OptimizerEntry.build all resolve through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from harness import registry
from harness.params import Param, Routed, resolve, route_sets


@dataclass(frozen=True)
class Values:
    """Typed hyperparameters of both sides, and the --set items that were used."""

    optimizer: dict[str, Any]
    problem: dict[str, Any]
    used: dict[str, Any]


@dataclass(frozen=True)
class Pair:
    optimizer: registry.OptimizerEntry
    problem: registry.ProblemEntry
    kind: str                               # the problem kind this pair runs on
    optimizer_schema: dict[str, Param]      # with the defaults it recommends for this problem
    problem_schema: dict[str, Param]

    def route(self, sets: dict[str, Any], partial: bool = False) -> Routed:
        """Each --set key to its side; partial=True (one pair of many) leaves out the keys
        neither side declares instead of refusing them."""
        return route_sets(sets, self.optimizer_schema, self.problem_schema, self.optimizer.name,
                          self.problem.name, partial=partial)

    def resolve(self, sets: dict[str, Any], partial: bool = False, check: bool = True) -> Values:
        """Typed values of both sides (defaults filled in), the optimizer's check_hparams
        run on its values unless check=False (a single axis of a grid, checked with the
        rest of its run later)."""
        routed = self.route(sets, partial)
        opt_hp = resolve(self.optimizer_schema, routed.optimizer, f"optimizer {self.optimizer.name!r}")
        if check:
            self.optimizer.factory.check_hparams(opt_hp)
        prob_hp = resolve(self.problem_schema, routed.problem, f"problem {self.problem.name!r}")
        return Values(opt_hp, prob_hp, dict(routed.used))


def resolve_pair(optimizer: str | registry.OptimizerEntry, problem: str | registry.ProblemEntry) -> Pair:
    """The pair of these names or entries; an unknown name or incompatible kinds is a
    UsageError (with close matches, or with problems the optimizer does run on)."""
    opt = registry.optimizer(optimizer) if isinstance(optimizer, str) else optimizer
    prob = registry.problem(problem) if isinstance(problem, str) else problem
    kind = registry.check_compatible(opt, prob)
    return Pair(opt, prob, kind, opt.schema(prob), prob.schema())
