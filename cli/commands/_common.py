"""Flags and steps shared by verbs that start runs (run, sweep, check, reproduce, plan)."""

from __future__ import annotations

import argparse


def text_table(rows, headers) -> str:
    """Left-aligned columns under a dashed header line (list, describe)."""
    widths = [max(len(str(r[i])) for r in rows + [headers]) for i in range(len(headers))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def add_budget_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--steps", type=int, help="stop after N optimizer steps")
    group.add_argument("--evals", type=int, help="stop once N loss/objective evaluations are used")
    group.add_argument("--time", type=float, dest="time_s", metavar="SECONDS",
                       help="stop once the optimizer has used this much wall-clock time")
    group.add_argument("--forwards", type=float, metavar="N",
                       help="stop once N forward-pass equivalents are used (a backward counts 2; "
                            "the cost axis shared by ES, MeZO and Adam)")


def add_set_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hyperparameter of the optimizer or problem (repeatable); "
                        "prefix optimizer. or problem. when both have KEY")


def add_log_argument(p: argparse.ArgumentParser, what: str = "the run") -> None:
    # --tracking is the same flag: torchrun's own parser rejects --log as an abbreviation
    # of its --log-dir, even after `-m harness run`
    p.add_argument("--log", "--tracking", dest="log", metavar="BACKENDS", default=None,
                   help=f"also log {what} live to tensorboard and/or mlflow (comma-separated; needs "
                        "pip install -e '.[tracking]'; under torchrun spell it --tracking); "
                        "the run store stays the record")


def add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when present)")


def add_batch_arguments(p: argparse.ArgumentParser, runs_dir: str = "runs", device: bool = True) -> None:
    """Flags of every verb that executes a batch of runs through the executor."""
    p.add_argument("--runs-dir", default=runs_dir, help=f"where run directories go (default {runs_dir})")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (default 1; each is a process)")
    p.add_argument("--retry-failed", action="store_true",
                   help="run again the runs recorded as failed (default: keep the failure)")
    p.add_argument("--dry-run", action="store_true", help="list the runs, run nothing")
    p.add_argument("--executor", default="local", metavar="local|slurm|submitit-local",
                   help="where each run's process runs: a child of this one (local, default), a SLURM job "
                        "(slurm) or a submitit job on this machine (submitit-local); needs pip install -e "
                        "'.[cluster]' for the last two (docs/cluster.md)")
    p.add_argument("--executor-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a job resource of --executor slurm/submitit-local (repeatable): partition, "
                        "gpus_per_node, timeout_min, cpus_per_task, mem_gb, ... (docs/cluster.md)")
    if device:
        add_device_argument(p)


def budget_from_args(args, default_steps: int | None = None):
    from harness.spec import Budget

    forwards = args.forwards
    if args.steps is None and args.evals is None and args.time_s is None and forwards is None:
        if default_steps is None:
            return None
        return Budget(steps=default_steps)
    return Budget(steps=args.steps, evals=args.evals, time_s=args.time_s, forwards=forwards)


def check_batch_args(args) -> None:
    """The batch flags' own checks, before anything is validated or written."""
    from harness.errors import UsageError

    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: must be >= 1")
    from harness import cluster

    args.executor_sets = cluster.parse_executor_sets(args.executor_set)
    cluster.check_executor_args(args.executor, args.executor_sets)


def execute_batch(items, args, what: str = "runs", extra_args=()):
    """List (--dry-run) or execute items through the one executor; the outcomes, or
    None when nothing ran. KeyboardInterrupt propagates (the verb exits 130)."""
    from pathlib import Path

    from harness import cluster, executor

    runs_dir = Path(args.runs_dir)
    executor.check_run_dirs(items, runs_dir)
    where = "" if args.executor == "local" else f", each a {args.executor} job"
    print(f"{len(items)} {what} in {runs_dir} ({args.jobs} at a time{where})", flush=True)
    if args.dry_run:
        for it in items:
            print(f"  {it.label:<40} {runs_dir / it.name}  [{executor.state_of(runs_dir / it.name)}]")
        return None
    return executor.execute(items, runs_dir, jobs=args.jobs, device=args.device,
                            retry_failed=args.retry_failed, extra_args=extra_args,
                            executor=cluster.make(args.executor, args.executor_sets, runs_dir))


def report_hint(runs_dir) -> str:
    """The line a batch verb ends with: the `report` command for what it ran, written to a
    sibling folder (a report inside the runs-dir would sit among the runs)."""
    import shlex
    from pathlib import Path

    runs = Path(runs_dir)
    out = runs.parent / f"{runs.name or 'runs'}-report"
    return f"report: python -m harness report {shlex.quote(str(runs))} --out {shlex.quote(str(out))}"


def interrupted_exit(verb: str, exc: BaseException | None = None) -> int:
    """130 after Ctrl-C, 143 after SIGTERM (128 + the signal, as a shell reports it)."""
    from harness.errors import Terminated

    print(f"{verb} interrupted: run the same command again to resume", flush=True)
    return 143 if isinstance(exc, Terminated) else 130
