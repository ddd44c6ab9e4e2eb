"""`reproduce NAME [ARGS]`: a registered experiment (studies/reproductions/NAME.py).

Each experiment yields run items that the one executor runs (one process per
run, resumable, --jobs at a time, each run's own peak memory), then renders
its tables from the stored runs. Running the same command again skips the
finished runs and resumes interrupted ones.
"""

from __future__ import annotations

NAME = "reproduce"
HELP = "run a registered experiment (a paper reproduction) and render its report (NAME --help)"


def add_arguments(p) -> None:
    import sys

    from harness import experiments
    from cli.commands._common import add_batch_arguments

    experiments.load_all()
    sub = p.add_subparsers(dest="experiment", required=True, metavar="NAME",
                           parser_class=type(p))
    for name, exp in sorted(experiments.EXPERIMENTS.items()):
        doc = sys.modules[type(exp).__module__].__doc__ or ""
        q = sub.add_parser(name, help=exp.HELP, description=doc, formatter_class=_raw())
        add_batch_arguments(q, runs_dir=exp.DEFAULT_RUNS_DIR)
        exp.add_arguments(q)


def _raw():
    import argparse

    return argparse.RawDescriptionHelpFormatter


def main(args) -> int:
    from harness import executor, experiments
    from cli.commands._common import check_batch_args, execute_batch, interrupted_exit, report_hint

    exp = experiments.experiment(args.experiment)
    check_batch_args(args)
    items = exp.items(args)
    try:
        outcomes = execute_batch(items, args)
    except KeyboardInterrupt as exc:
        return interrupted_exit(f"reproduce {args.experiment}", exc)
    if outcomes is None:
        return 0
    print(f"{args.experiment}: {executor.counts(outcomes)}")
    print(exp.render(args, outcomes))
    print(report_hint(args.runs_dir))
    return 0 if all(o.status in executor.DONE for o in outcomes) else 1
