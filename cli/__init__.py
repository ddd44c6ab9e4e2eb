"""`python -m harness VERB ...`: each verb is a module in cli/commands/.

A command module defines NAME, HELP, add_arguments(parser) and main(args)
returning an exit code. HarnessError subclasses become one line on stderr
and their exit code (2 bad input, 3 preflight refusal, 1 failure).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from harness.errors import HarnessError, Terminated, os_error_line, raise_terminated


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, like every other bad input
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    import cli.commands as commands

    parser = _Parser(prog="python -m harness", description="Optimizer benchmarking harness")
    sub = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"cli.commands.{info.name}")
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_main=mod.main)
    return parser


def main(argv=None) -> int:
    from cli import quiet

    quiet.install()   # before the verbs import torch, transformers, nevergrad
    args = build_parser().parse_args(argv)
    previous = _on_sigterm(raise_terminated)   # runs and batches install their own meanwhile
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt as exc:   # Ctrl-C or SIGTERM outside a run: one line, 130 / 143
        term = isinstance(exc, Terminated)
        print(f"{args.verb} interrupted by {'SIGTERM' if term else 'Ctrl-C'}: nothing more was done; "
              "run the same command again to resume", file=sys.stderr, flush=True)
        return 143 if term else 130
    except HarnessError as exc:
        print(f"{exc.prefix}{exc}", file=sys.stderr if exc.exit_code else sys.stdout)
        return exc.exit_code
    except OSError as exc:   # a full, read-only or missing disk location: one line, not a traceback
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            _on_sigterm(previous)


def _on_sigterm(handler):
    """Install a SIGTERM handler; the previous one, or None off the main thread."""
    import signal

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
