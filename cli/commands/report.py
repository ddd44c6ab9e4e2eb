"""`report`: tables, figures and an index page from stored runs alone."""

from __future__ import annotations

NAME = "report"
HELP = "build tables (Markdown, CSV), figures (PNG) and an index page (Markdown, HTML) from stored runs"


def add_arguments(p) -> None:
    p.add_argument("runs_dir_pos", nargs="?", metavar="RUNS_DIR", help="same as --runs-dir")
    p.add_argument("--runs-dir", default=None, help="directory of stored runs (default runs/)")
    p.add_argument("--out", required=True, help="output directory (created; files in it are replaced)")
    p.add_argument("--targets", action="append", default=[], metavar="PROBLEM=v1,v2,...",
                   help="targets of a problem in its metric's units (repeatable); default: COCO's 51 "
                        "delta-f targets where the optimum is known, else 10 from the data (IOH)")
    p.add_argument("--targets-from", action="append", default=[], metavar="TUNING_DIR[:OPTIMIZER]",
                   help="the target of a problem from a `tune` run (repeatable): the median over the fresh "
                        "seeds of OPTIMIZER's tuned configuration (default: the best tuned optimizer), AlgoPerf's "
                        "target setting, so everyone is measured against the same tuned reference")
    p.add_argument("--memory-limit", default=None, metavar="SIZE",
                   help="e.g. 80GiB: a run whose peak memory exceeds it counts as unsuccessful on every target")


def _check_writable(out) -> None:
    """--out must be creatable and writable; checked without creating anything."""
    import os

    from harness.errors import UsageError

    place = out
    while not place.exists() and place != place.parent:
        place = place.parent
    if not place.is_dir():
        raise UsageError(f"--out {out}: {place} is a file, not a directory; choose another --out")
    if not os.access(place, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: {place} is not writable; choose a writable directory")


def main(args) -> int:
    from reports.index import build
    from reports.targets import parse_bytes, parse_targets

    from pathlib import Path

    from harness.errors import UsageError

    runs_dir = Path(args.runs_dir or args.runs_dir_pos or "runs")
    if not runs_dir.is_dir():
        raise UsageError(f"--runs-dir {runs_dir}: no such directory of runs")
    _check_writable(Path(args.out))
    given, limit = parse_targets(args.targets), parse_bytes(args.memory_limit)
    for spec in args.targets_from:
        from reports.tuning import targets_from

        problem, value, opt = targets_from(spec)
        if problem in given:
            raise UsageError(f"--targets-from {spec}: problem {problem} already has a target "
                             f"(--targets or another --targets-from); give one")
        given[problem] = [value]
        print(f"target of {problem}: {value:.6g}, the median over fresh seeds of tuned {opt} ({spec})")
    result = build(runs_dir, args.out, given, limit)
    n_figs = len(result["figure_files"])   # every PNG this build wrote (cocopp's own pages aside)
    print(f"report of {result['runs']} runs: {len(result['tables'])} problem tables, {n_figs} figures "
          f"-> {result['out']}/index.md, {result['out']}/index.html")
    if result["coco"]:
        print(result["coco"]["note"])
    return 0
