"""`reproduce NAME [ARGS...]`: run a paper reproduction, harness/reproductions/NAME.py.

Each reproduction module defines `main(argv) -> int` (parsing its own ARGS) and a
docstring; the verb only finds it by name, so adding one is adding a module.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil

NAME = "reproduce"
HELP = "run a paper reproduction (harness/reproductions/NAME.py); ARGS go to it (NAME --help)"


def available() -> list[str]:
    import harness.reproductions as pkg

    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules(pkg.__path__)
                  if not m.name.startswith("_"))


def add_arguments(p) -> None:
    p.add_argument("name", help="reproduction name")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the reproduction")


def main(args) -> int:
    from harness.errors import UsageError

    names = available()
    if args.name not in names:
        raise UsageError(f"unknown reproduction {args.name!r}; available: {', '.join(names) or '(none)'}")
    mod = importlib.import_module(f"harness.reproductions.{args.name.replace('-', '_')}")
    return int(mod.main(list(args.args)) or 0)
