"""Flags shared by verbs that start runs (run, sweep, plan)."""

from __future__ import annotations

import argparse


def add_budget_arguments(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--steps", type=int, help="stop after N optimizer steps")
    group.add_argument("--evals", type=int, help="stop once N loss/objective evaluations are used")
    group.add_argument("--time", type=float, dest="time_s", metavar="SECONDS",
                       help="stop once the optimizer has used this much wall-clock time")


def add_set_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hyperparameter of the optimizer or problem (repeatable); "
                        "prefix optimizer. or problem. when both have KEY")


def add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (CUDA when present)")


def budget_from_args(args, default_steps: int | None = None):
    from harness.runner import Budget

    if args.steps is None and args.evals is None and args.time_s is None:
        if default_steps is None:
            return None
        return Budget(steps=default_steps)
    return Budget(steps=args.steps, evals=args.evals, time_s=args.time_s)
