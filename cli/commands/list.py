"""`list [optimizers|problems] [--all]`: what is registered."""

from __future__ import annotations

import re

NAME = "list"
HELP = "list registered optimizers and problems"

# A family with more sizes than this (bbob: 24 functions x 6 dimensions) is one row, named by
# its range, unless --all: 144 rows would bury every other problem.
FOLD_OVER = 20


def add_arguments(p) -> None:
    p.add_argument("what", nargs="?", choices=["optimizers", "problems"], default=None)
    p.add_argument("--all", action="store_true",
                   help=f"one row per problem, also in families of more than {FOLD_OVER} (bbob's 144)")


def _fmt_count(n) -> str:
    if n is None:
        return "-"
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit} ({n:,})"
    return f"{n:,}"


_NUM = r"(\d+(?:\.\d+)?)"


def _natural(name: str):
    """sphere-2 before sphere-10; qwen3-0.5b before qwen3-14b."""
    return [float(t) if re.fullmatch(_NUM, t) else t for t in re.split(_NUM, name)]


def _values(tokens: list[str]) -> str:
    """{1..24} for a run of consecutive integers, else {2,3,5,...} in natural order."""
    vals = sorted(set(tokens), key=float)
    if len(vals) == 1:
        return vals[0]
    ints = [int(v) for v in vals] if all(v.isdigit() for v in vals) else None
    if ints and ints == list(range(ints[0], ints[-1] + 1)):
        return f"{{{ints[0]}..{ints[-1]}}}"
    return "{" + ",".join(vals) + "}"


def fold_names(names: list[str]) -> str | None:
    """One pattern for names that differ only in their numbers (`bbob-f{1..24}-d{2,3,5,10,20,40}`),
    or None when their text differs elsewhere."""
    parts = [re.split(_NUM, n) for n in names]
    if len({len(p) for p in parts}) != 1:
        return None
    out = []
    for i, column in enumerate(zip(*parts)):
        if i % 2 == 0:          # text between the numbers: must be the same in every name
            if len(set(column)) != 1:
                return None
            out.append(column[0])
        else:
            out.append(_values(list(column)))
    return "".join(out)


def _common_tail(texts: list[str]) -> str:
    """The '; '-separated clauses every description ends with."""
    clauses = [t.split("; ") for t in texts]
    tail = []
    for group in zip(*(reversed(c) for c in clauses)):
        if len(set(group)) != 1:
            break
        tail.insert(0, group[0])
    return "; ".join(tail)


def _folded_row(entries) -> list[str] | None:
    import sys

    pattern = fold_names([e.name for e in entries])
    if pattern is None:
        return None
    doc = (sys.modules[entries[0].factory.__module__].__doc__ or "").strip().splitlines()
    tail = _common_tail([e.description for e in entries])
    what = "; ".join(s for s in (doc[0].rstrip(".") if doc else "", tail) if s)
    kinds = list(dict.fromkeys(k for e in entries for k in e.kinds))
    counts = sorted({c for c in (e.create().param_count() for e in entries) if c is not None})
    params = "-" if not counts else " .. ".join(dict.fromkeys([_fmt_count(counts[0]), _fmt_count(counts[-1])]))
    return [pattern, ",".join(kinds), params, f"{len(entries)} problems: {what} (--all lists each)"]


def problem_rows(entries, expand: bool) -> list[list[str]]:
    """Rows of `list problems`: one per problem, a family of more than FOLD_OVER folded into one."""
    families: dict[str, list] = {}
    for e in entries:
        families.setdefault(e.family or e.name, []).append(e)
    rows = []
    for e in sorted(entries, key=lambda e: _natural(e.name)):
        family = families[e.family or e.name]
        folded = not expand and len(family) > FOLD_OVER and _folded_row(family)
        if folded:
            if e is family[0]:
                rows.append(folded)
            continue
        rows.append([e.name, ",".join(e.kinds), _fmt_count(e.create().param_count()), e.description])
    return rows


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
        rows = problem_rows(list(registry.PROBLEMS.values()), expand=args.all)
        print(_table(rows, ["problem", "kinds", "params", "description"]))
    return 0
