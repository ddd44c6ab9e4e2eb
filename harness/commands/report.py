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
    p.add_argument("--memory-limit", default=None, metavar="SIZE",
                   help="e.g. 80GiB: a run whose peak memory exceeds it counts as unsuccessful on every target")


def main(args) -> int:
    from reports.index import build
    from reports.targets import parse_bytes, parse_targets

    given, limit = parse_targets(args.targets), parse_bytes(args.memory_limit)
    result = build(args.runs_dir or args.runs_dir_pos or "runs", args.out, given, limit)
    figs = result["figures"]
    n_figs = len(figs["curves"]) + len(figs["memory_by_size"]) + bool(figs["memory"]) + bool(figs["profile"])
    print(f"report of {result['runs']} runs: {len(result['tables'])} problem tables, {n_figs} figures "
          f"-> {result['out']}/index.md, {result['out']}/index.html")
    return 0
