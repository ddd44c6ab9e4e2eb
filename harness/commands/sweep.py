"""`sweep`: every compatible optimizer x problem x seed, each run in its own process."""

from __future__ import annotations

from harness.commands._common import add_budget_arguments, add_device_argument, add_set_argument

NAME = "sweep"
HELP = "run every compatible optimizer/problem pair over seeds, one process per run (resumable)"


def add_arguments(p) -> None:
    p.add_argument("--optimizers", required=True, help="comma-separated optimizer names")
    p.add_argument("--problems", required=True, help="comma-separated problem names")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    add_budget_arguments(p)
    add_set_argument(p)
    p.add_argument("--runs-dir", default="runs", help="where run directories go (default runs/)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (default 1; each is a process)")
    add_device_argument(p)
    p.add_argument("--eval-every", type=int, help="evaluate the metric every K steps (every run)")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="checkpoint every K steps (default: run's default, 100)")
    p.add_argument("--retry-failed", action="store_true",
                   help="run again the runs recorded as failed (default: keep the failure)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and skipped pairs, run nothing")


def _names(text: str, flag: str) -> list[str]:
    from harness.errors import UsageError

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError(f"{flag} {text!r}: expected a comma-separated list of names")
    return list(dict.fromkeys(names))


def _seeds(text: str) -> list[int]:
    from harness.errors import UsageError

    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds:
        raise UsageError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2")
    return list(dict.fromkeys(seeds))


def main(args) -> int:
    from pathlib import Path

    from harness import sweep
    from harness.commands._common import budget_from_args
    from harness.errors import UsageError
    from harness.params import parse_set_args

    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: must be >= 1")
    if args.eval_every is not None and args.eval_every <= 0:
        raise UsageError(f"--eval-every {args.eval_every}: must be a positive number of steps")
    if args.checkpoint_every is not None and args.checkpoint_every < 0:
        raise UsageError(f"--checkpoint-every {args.checkpoint_every}: must be >= 0 (0 = never)")
    budget = budget_from_args(args, default_steps=None)
    if budget is None:
        raise UsageError("no budget: give --steps N, --evals N or --time SECONDS")
    budget_d = {k: v for k, v in vars(budget).items() if v is not None}
    sets = parse_set_args(args.set)
    plan = sweep.plan(_names(args.optimizers, "--optimizers"), _names(args.problems, "--problems"),
                      _seeds(args.seeds), budget_d, sets, device=args.device)
    extra = []
    if args.eval_every is not None:
        extra += ["--eval-every", str(args.eval_every)]
    if args.checkpoint_every is not None:
        extra += ["--checkpoint-every", str(args.checkpoint_every)]
    for opt, prob, why in plan.incompatible:
        print(f"skipped (incompatible): {opt} x {prob}: {why}")
    print(f"{len(plan.items)} runs in {args.runs_dir} ({args.jobs} at a time)")
    if args.dry_run:
        for it in plan.items:
            print(f"  {it.label:<40} {Path(args.runs_dir) / it.name}  [{sweep.state_of(Path(args.runs_dir) / it.name)}]")
        return 0
    sweep.sweep_record(Path(args.runs_dir), {
        "optimizers": args.optimizers, "problems": args.problems, "seeds": args.seeds,
        "budget": budget_d, "sets": sets, "jobs": args.jobs, "device": args.device}, plan)
    try:
        outcomes = sweep.execute(plan.items, Path(args.runs_dir), jobs=args.jobs, device=args.device,
                                 extra_args=tuple(extra), retry_failed=args.retry_failed)
    except KeyboardInterrupt:
        print("sweep interrupted: run the same command again to resume", flush=True)
        return 130
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    print("sweep done: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
          + (f"; {len(plan.incompatible)} incompatible pairs skipped" if plan.incompatible else ""))
    failed = [o for o in outcomes if o.status not in sweep.DONE]
    for o in failed:
        print(f"  {o.status}: {o.item.label}: {o.reason}  ({o.run_dir})")
    return 1 if failed else 0
