"""`reproduce NAME`: rerun a paper's comparison through the normal runner and write a
report next to the paper's numbers. Each NAME is a module in harness/reproductions/."""

from __future__ import annotations

import importlib
import pkgutil

from harness.commands._common import add_set_argument

NAME = "reproduce"
HELP = "rerun a paper's comparison (e.g. seed003) across seeds and report it next to the paper's numbers"


def available() -> list[str]:
    import harness.reproductions as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def add_arguments(p) -> None:
    p.add_argument("name", help="which reproduction (" + ", ".join(available()) + ")")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated run seeds (default 0,1,2)")
    p.add_argument("--out", default=None, help="report directory (default reports/NAME)")
    p.add_argument("--runs-dir", default=None, help="where the runs are stored (default runs/NAME)")
    add_set_argument(p)


def parse_seeds(text: str) -> list[int]:
    from harness.errors import UsageError

    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text!r}: expected distinct comma-separated integers, e.g. 0,1,2")
    return seeds


def main(args) -> int:
    from harness.errors import UsageError
    from harness.params import parse_set_args, resolve

    names = available()
    if args.name not in names:
        raise UsageError(f"unknown reproduction {args.name!r}; valid: {', '.join(names)}")
    mod = importlib.import_module(f"harness.reproductions.{args.name}")
    seeds = parse_seeds(args.seeds)
    options = resolve(mod.PARAMS, parse_set_args(args.set), f"reproduction {args.name!r}")
    mod.check(options)
    report = mod.reproduce(seeds, out_dir=args.out or f"reports/{args.name}",
                           runs_dir=args.runs_dir or f"runs/{args.name}", options=options)
    print(report.read_text())
    print(f"written: {report}")
    return 0
