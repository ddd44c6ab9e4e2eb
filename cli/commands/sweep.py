"""`sweep`: every compatible optimizer x problem x seed, each run in its own process."""

from __future__ import annotations

from cli.commands._common import (
    add_batch_arguments, add_budget_arguments, add_log_argument, add_set_argument,
)

NAME = "sweep"
HELP = "run every compatible optimizer/problem pair over seeds, one process per run (resumable)"


def add_arguments(p) -> None:
    p.add_argument("--optimizers", required=True, help="comma-separated optimizer names")
    p.add_argument("--problems", required=True,
                   help="comma-separated problem names or shell patterns, e.g. 'bbob-f*-d5'")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    add_budget_arguments(p)
    add_set_argument(p)
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a hyperparameter axis (repeatable): every run for each value, cartesian "
                        "product with the other axes, optimizers, problems and seeds; routed and "
                        "checked as --set; run names and report labels carry the values")
    add_batch_arguments(p)
    p.add_argument("--eval-every", type=int, help="evaluate the metric every K steps (every run)")
    p.add_argument("--eval-schedule", default="linear", choices=["linear", "log"],
                   help="when every run evaluates the metric: linear (every --eval-every steps, default) or log "
                        "(10 log-spaced steps per decade: 1, 2, 3, 4, 5, 6, 8, 10, 13, ...; resolves early "
                        "progress for compute multipliers); the last step always")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="checkpoint every K steps (default: run's default, 100)")
    add_log_argument(p, "every run")


def _names(text: str, flag: str) -> list[str]:
    from harness.errors import UsageError

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError(f"{flag} {text!r}: expected a comma-separated list of names")
    return list(dict.fromkeys(names))


def main(args) -> int:
    from pathlib import Path

    from cli.commands._common import check_batch_args

    check_batch_args(args)   # before torch's seconds of imports
    from harness import executor, experiments, registry, tracking
    from cli.commands._common import budget_from_args, execute_batch, interrupted_exit, report_hint
    from harness.errors import UsageError
    from harness.params import parse_seeds, parse_set_args
    from harness.spec import RunSpec

    logs = tracking.parse_log(args.log)   # checked once here; each child gets --log
    budget = budget_from_args(args, default_steps=None)
    if budget is None:
        raise UsageError("no budget: give --steps N, --evals N, --time SECONDS or --forwards N")
    # the intervals are checked where every run checks them (RunSpec), before anything runs
    RunSpec("", "", eval_every=args.eval_every, checkpoint_every=args.checkpoint_every or 0)
    sets = parse_set_args(args.set)
    axes = experiments.parse_grid(args.grid)
    grid = experiments.grid(_names(args.optimizers, "--optimizers"), registry.select_problems(args.problems),
                            parse_seeds(args.seeds), budget.as_dict(), sets, validate_on=args.device,
                            eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
                            eval_schedule=args.eval_schedule, axes=axes)
    for opt, prob, why in grid.incompatible:
        print(f"skipped (incompatible): {opt} x {prob}: {why}")
    executor.check_run_dirs(grid.items, Path(args.runs_dir))   # before anything is written
    if not args.dry_run:
        experiments.record(Path(args.runs_dir), {
            "optimizers": args.optimizers, "problems": args.problems, "seeds": args.seeds,
            "budget": budget.as_dict(), "sets": sets, "grid": axes, "jobs": args.jobs, "device": args.device,
            "eval_schedule": args.eval_schedule}, grid)
    try:
        outcomes = execute_batch(grid.items, args, extra_args=["--log", ",".join(logs)] if logs else [])
    except KeyboardInterrupt as exc:
        return interrupted_exit("sweep", exc)
    if outcomes is None:
        return 0
    print("sweep done: " + executor.counts(outcomes)
          + (f"; {len(grid.incompatible)} incompatible pairs skipped" if grid.incompatible else ""))
    failed = [o for o in outcomes if o.status not in executor.DONE]
    for o in failed:
        print(f"  {o.status}: {o.item.label}: {o.reason}  ({o.run_dir})")
    print(report_hint(args.runs_dir))
    return 1 if failed else 0
