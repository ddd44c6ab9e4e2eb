"""`plan`: predicted peak memory of a run, or the EA4LLM memory table (--table)."""

from __future__ import annotations

import json

from cli.commands._common import add_batch_arguments, add_set_argument

NAME = "plan"
HELP = "predict the peak memory of a run (nothing is allocated), or the es/mezo/adam table"


def add_arguments(p) -> None:
    p.add_argument("--optimizer", help="optimizer name (see `list optimizers`)")
    p.add_argument("--problem", help="problem name (see `list problems`)")
    p.add_argument("--device", default=None,
                   help="cpu or cuda: the device to plan for (need not be present); default "
                        "cuda if visible else cpu, and cuda for --table")
    add_set_argument(p)
    p.add_argument("--world-size", type=int, default=1, metavar="W",
                   help="plan per rank of W torchrun processes (sharded optimizers: e.g. adam "
                        "--set shard=fsdp hold 1/W of their state each; default 1)")
    p.add_argument("--gpu-gib", default="80,141", metavar="GIB[,GIB...]",
                   help="device sizes in GiB for which to say how many ranks a sharded run needs "
                        "(default 80,141)")
    p.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    p.add_argument("--table", action="store_true",
                   help="EA4LLM comparison: predicted peak of --optimizers on every --problems size "
                        "(Markdown + CSV + PNG under --out)")
    p.add_argument("--optimizers", default=None,
                   help="--table: comma-separated optimizers, or all (every optimizer of weights problems "
                        "that declares a memory model); default es,mezo,adam, the EA4LLM paper's")
    p.add_argument("--problems", default="qwen3-*",
                   help="--table: comma-separated problem names or one NAME-* prefix (default qwen3-*)")
    p.add_argument("--population", type=int, default=30,
                   help="--table: population of optimizers that have one (default 30, the paper's)")
    p.add_argument("--out", default="reports/memory", help="--table: output directory")
    p.add_argument("--measure", default="", metavar="PROBLEMS",
                   help="--table: first run every optimizer on these sizes (comma-separated; sizes "
                        "that fit this machine) with the table's settings, one process each, and "
                        "put their measured peaks beside the plan")
    p.add_argument("--measure-steps", type=int, default=2, help="--measure: steps per run (default 2)")
    add_batch_arguments(p, device=False)   # --runs-dir: measured runs are stored (and read) there


def _fmt(n: int) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    if n >= 2**20:
        return f"{n / 2**20:.1f} MiB"
    return f"{n / 2**10:.1f} KiB"


def _default_device(args, table: bool) -> str:
    if args.device:
        return args.device
    if table:
        return "cuda"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _measure(args, optimizers, overrides, device: str):
    """Execute the measured runs of the table (the one executor); None if none ran."""
    import torch

    from studies import memory_table
    from cli.commands._common import check_batch_args, execute_batch
    from harness.errors import UsageError

    check_batch_args(args)
    if args.measure_steps < 1:
        raise UsageError(f"--measure-steps {args.measure_steps}: must be >= 1")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--measure: the table is for cuda but this machine has no CUDA device; "
                         "add --device cpu to measure CPU peaks here")
    items = memory_table.measure_items(optimizers, args.measure.split(","), overrides,
                                       args.population, args.measure_steps)
    args.device = device
    try:
        return execute_batch(items, args, what="measured runs")
    except KeyboardInterrupt:
        return None


def main(args) -> int:
    from harness import planner, registry
    from harness.errors import UsageError
    from harness.params import parse_set_args

    overrides = parse_set_args(args.set)
    if args.population < 1:
        raise UsageError(f"--population {args.population}: must be >= 1")
    if args.table:
        from studies import memory_table

        optimizers, skip_undeclared = memory_table.tabled_optimizers(args.optimizers)
        device = _default_device(args, True)
        if args.measure and _measure(args, optimizers, overrides, device) is None:
            return 0 if args.dry_run else 130
        result = memory_table.build(
            optimizers=optimizers, problems=args.problems, device=device, overrides=overrides,
            population=args.population, out_dir=args.out, runs_dir=args.runs_dir,
            skip_undeclared=skip_undeclared)
        if args.json:
            print(json.dumps(result["rows"], indent=1))
        else:
            print(result["markdown"])
            print(f"\nwritten: {', '.join(result['files'])}")
        return 0
    if not args.optimizer or not args.problem:
        raise UsageError("plan needs --optimizer NAME and --problem NAME (or --table)")
    if args.world_size < 1:
        raise UsageError(f"--world-size {args.world_size}: must be >= 1")
    sizes = _gib_list(args.gpu_gib)
    device = _default_device(args, False)
    plan = planner.plan(args.optimizer, args.problem, overrides, device=device, world_size=args.world_size)
    needs = planner.ranks_for(args.optimizer, args.problem, overrides, device, sizes)
    if args.json:
        print(json.dumps({**plan.to_json(), "ranks_needed": {f"{g:g}": n for g, n in needs.items()}}, indent=1))
        return 0
    per_rank = f", per rank of {plan.world_size}" if plan.world_size > 1 else ""
    print(f"{plan.optimizer} on {plan.problem} ({plan.device}{per_rank}): predicted peak {_fmt(plan.peak_bytes)}"
          f"  [compare with: {plan.measured_as}]")
    width = max(len(k) for k in plan.breakdown)
    for key, value in plan.breakdown.items():
        print(f"  {key.ljust(width)}  {_fmt(value):>12}")
    f = plan.facts
    if f is not None and f.weight_bytes:
        print(f"model: {f.param_count:,} parameters ({f.trainable_count:,} trainable, "
              f"{f.dtype_bytes} bytes each); one micro-batch: forward peak {_fmt(f.forward_activation_bytes)}, "
              f"forward+backward peak {_fmt(f.backward_activation_bytes)} "
              f"(saved for backward {_fmt(f.saved_activation_bytes)})")
    if needs:
        shard = planner.shard_flags(registry.optimizer(args.optimizer).factory)
        said = [f"{n} x {g:g} GiB" if n else f"not on {g:g} GiB devices (what every rank holds whole "
                f"does not fit)" for g, n in needs.items()]
        print(f"sharded ({shard}, torchrun --nproc_per_node N): needs " + ", ".join(said))
    for note in plan.notes:
        print(f"note: {note}")
    return 0


def _gib_list(text: str) -> list[float]:
    import math

    from harness.errors import UsageError

    try:
        sizes = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(not (0 < g < math.inf) for g in sizes):
        raise UsageError(f"--gpu-gib {text!r}: expected comma-separated sizes in GiB, e.g. 80,141")
    return sizes
