"""`run`: one optimizer on one problem, recorded in the run store."""

from __future__ import annotations

import sys
from pathlib import Path

from cli.commands._common import (
    add_budget_arguments, add_device_argument, add_log_argument, add_set_argument, budget_from_args,
)

NAME = "run"
HELP = "run one optimizer on one problem and record it under --runs-dir"


def add_arguments(p) -> None:
    p.add_argument("--optimizer", help="optimizer name (see `list optimizers`)")
    p.add_argument("--problem", help="problem name (see `list problems`)")
    p.add_argument("--seed", type=int, default=0)
    add_budget_arguments(p)
    add_set_argument(p)
    p.add_argument("--runs-dir", default="runs", help="where run directories go (default runs/)")
    add_device_argument(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stored run from its checkpoint")
    p.add_argument("--eval-every", type=int, help="evaluate the metric every K steps")
    p.add_argument("--eval-schedule", default="linear", choices=["linear", "log"],
                   help="when to evaluate the metric: linear (every --eval-every steps, default) or log "
                        "(10 log-spaced steps per decade: 1, 2, 3, 4, 5, 6, 8, 10, 13, ...; resolves early "
                        "progress for compute multipliers); the last step always")
    p.add_argument("--checkpoint-every", type=int, default=100,
                   help="checkpoint every K steps (0 = never; default 100)")
    p.add_argument("--run-id", help="name of the run directory (default: generated)")
    p.add_argument("--force", action="store_true",
                   help="skip the memory preflight (run even if the plan says it will not fit)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: OMP_NUM_THREADS if set, else 1 for models "
                        "under 20M parameters, else torch's default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    add_log_argument(p)


def _check_args(args) -> None:
    """The refusals that need nothing but the arguments, before torch is imported (seconds)."""
    from harness import tracking
    from harness.errors import UsageError

    tracking.parse_log(args.log)   # a missing extra: exit 2 here, nothing written
    if args.resume:
        if not (Path(args.resume) / "config.json").exists():
            raise UsageError(f"--resume {args.resume}: no config.json there; expected a run directory")
    elif not args.optimizer or not args.problem:
        raise UsageError("run needs --optimizer NAME and --problem NAME (or --resume RUN_DIR)")


def main(args) -> int:
    _check_args(args)
    from harness import distributed

    try:
        return _run(args)
    finally:
        # Tear the process group down before the interpreter exits: a gloo group left
        # to static destructors can abort the process ("terminate called without an
        # active exception") after a run that succeeded.
        distributed.shutdown()


def _metric_start(run_dir) -> str:
    """' (start -5.49074, higher is better)': the held-out metric's first evaluation and its
    direction, from the run's own files, so the one-line result shows where the run began."""
    import json

    from harness import store

    try:
        higher = store.read_json(Path(run_dir) / "config.json").get("metric_higher_is_better")
        with open(Path(run_dir) / "metrics.jsonl") as fh:
            start = next((r["metric"] for r in map(json.loads, fh) if r.get("metric") is not None), None)
    except (OSError, ValueError):
        return ""
    if not isinstance(start, (int, float)):
        return ""
    direction = "" if higher is None else f", {'higher' if higher else 'lower'} is better"
    return f" (start {start:.6g}{direction})"


def _run(args) -> int:
    from harness import runner, tracking
    from harness.spec import Prepared
    from harness.errors import UsageError
    from harness.params import parse_set_args

    logs = tracking.parse_log(args.log)   # a missing extra: exit 2 here, nothing written
    budget = budget_from_args(args, default_steps=None)
    if args.resume:
        loggers = tracking.callbacks(logs, Path(args.resume).parent)
        # connected once every check of the resume has passed: a refusal writes nothing
        run_dir, summary = runner.resume(args.resume, budget, progress=not args.no_progress,
                                         force=args.force, callbacks=loggers,
                                         ready=lambda: tracking.connect(loggers))
    else:
        if not args.optimizer or not args.problem:
            raise UsageError("run needs --optimizer NAME and --problem NAME (or --resume RUN_DIR)")
        spec = runner.RunSpec(
            optimizer=args.optimizer, problem=args.problem, seed=args.seed,
            budget=budget or runner.Budget(steps=100), overrides=parse_set_args(args.set),
            device=args.device, eval_every=args.eval_every, eval_schedule=args.eval_schedule,
            checkpoint_every=args.checkpoint_every, runs_dir=args.runs_dir, run_id=args.run_id,
            force=args.force, threads=args.threads,
        )
        loggers = tracking.callbacks(logs, args.runs_dir)
        if loggers:   # bad input exits 2 before a logger writes anything; then connect,
            Prepared(spec)   # before the run's clock starts
            tracking.connect(loggers)
        run_dir, summary = runner.run(spec, progress=not args.no_progress, callbacks=loggers)
    metric = summary.get("final_metric")
    metric_txt = f"{summary.get('metric_name')}={metric:.6g}" if isinstance(metric, float) else ""
    if metric_txt:
        metric_txt += _metric_start(run_dir)
    loss = summary.get("final_loss")
    loss_txt = f"final_loss={loss:.6g}" if isinstance(loss, float) else ""
    from harness import distributed

    if distributed.is_main():  # one line per run, not one per rank
        print(f"{summary['status']}: {summary['optimizer']} on {summary['problem']} "
              f"seed={summary['seed']} steps={summary['steps']} evals={summary['evals']} "
              f"{loss_txt} {metric_txt} wall={summary['wall_clock_s']:.1f}s "
              f"peak_mem={summary['peak_memory_bytes'] / 2**20:.0f}MiB -> {run_dir}"
              + (f" ({summary['reason']})" if summary["status"] == "ok" and summary.get("reason") else ""))
    if summary["status"] == "failed":
        print(f"error: run failed: {summary['reason']}", file=sys.stderr)
        return 1
    if summary["status"] == "interrupted":   # 128 + the signal, as a shell reports it
        return 143 if "SIGTERM" in (summary.get("reason") or "") else 130
    return 0
