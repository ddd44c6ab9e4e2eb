"""`report`: tables, figures and an index page from stored runs alone."""

from __future__ import annotations

NAME = "report"
HELP = "build tables (Markdown, CSV), figures (PNG) and an index page (Markdown, HTML) from stored runs"


def add_arguments(p) -> None:
    p.add_argument("runs_dir_pos", nargs="?", metavar="RUNS_DIR", help="same as --runs-dir")
    p.add_argument("--runs-dir", default=None, help="directory of stored runs (default runs/)")
    p.add_argument("--out", required=True, help="output directory (created; files in it are replaced)")


def main(args) -> int:
    from reports.index import build

    result = build(args.runs_dir or args.runs_dir_pos or "runs", args.out)
    figs = result["figures"]
    n_figs = len(figs["curves"]) + len(figs["memory_by_size"]) + bool(figs["memory"]) + bool(figs["profile"])
    print(f"report of {result['runs']} runs: {len(result['tables'])} problem tables, {n_figs} figures "
          f"-> {result['out']}/index.md, {result['out']}/index.html")
    if result["coco"]:
        print(result["coco"]["note"])
    return 0
