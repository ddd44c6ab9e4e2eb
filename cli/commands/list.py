"""`list [optimizers|problems]`: what is registered."""

from __future__ import annotations

NAME = "list"
HELP = "list registered optimizers and problems"


def add_arguments(p) -> None:
    p.add_argument("what", nargs="?", choices=["optimizers", "problems"], default=None)


def _fmt_count(n) -> str:
    if n is None:
        return "-"
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit} ({n:,})"
    return f"{n:,}"


def _natural(name: str):
    """sphere-2 before sphere-10; qwen3-0.5b before qwen3-14b."""
    import re

    return [float(t) if re.fullmatch(r"\d+(\.\d+)?", t) else t for t in re.split(r"(\d+(?:\.\d+)?)", name)]


def main(args) -> int:
    from harness import registry
    from cli.commands._common import text_table as _table

    registry.load_all()
    if args.what in (None, "optimizers"):
        rows = [[e.name, ",".join(e.kinds), e.description] for e in registry.OPTIMIZERS.values()]
        print(_table(sorted(rows), ["optimizer", "kinds", "description"]))
    if args.what is None:
        print()
    if args.what in (None, "problems"):
        rows = []
        for e in sorted(registry.PROBLEMS.values(), key=lambda e: _natural(e.name)):
            problem = e.create()
            rows.append([e.name, ",".join(e.kinds), _fmt_count(problem.param_count()), e.description])
        print(_table(rows, ["problem", "kinds", "params", "description"]))
    return 0
