"""`tune`: equal tuning budgets per optimizer, best configuration rerun on fresh seeds."""

from __future__ import annotations

from cli.commands._common import add_batch_arguments, add_budget_arguments, add_set_argument

NAME = "tune"
HELP = ("tune every optimizer with the same number of trials and budget per trial (Halton or TPE), "
        "rerun the best and the default configuration on fresh seeds (resumable)")


def add_arguments(p) -> None:
    p.add_argument("--optimizers", required=True, help="comma-separated optimizer names")
    p.add_argument("--problem", required=True, help="the problem to tune on")
    p.add_argument("--trials", type=int, required=True,
                   help="trials per optimizer and study; trial 0 is the default configuration")
    add_budget_arguments(p)
    p.add_argument("--studies", type=int, default=1, help="independent studies (default 1), each on its own seed")
    p.add_argument("--sampler", default="halton",
                   help="halton (scrambled, scipy.stats.qmc; default) or tpe (optuna; sequential per study)")
    p.add_argument("--sampler-seed", type=int, default=0, help="seed of the Halton scrambling / TPE (default 0)")
    p.add_argument("--seeds", default=None, help="tuning seed of each study (default 0,1,...)")
    p.add_argument("--fresh-seeds", default=None,
                   help="seeds of the reruns of the best and default configuration, disjoint from --seeds "
                        "(default: the 3 integers after the largest tuning seed)")
    p.add_argument("--space", action="append", default=[], metavar="[OPT.]KEY=MIN:MAX[:log]|V1,V2,...|FILE.json",
                   help="override the tuning space (repeatable): a range, feasible points, or a JSON file "
                        "{optimizer: space}; default spaces: optimizers/tuning/")
    add_set_argument(p)
    add_batch_arguments(p, runs_dir="runs/tune")
    p.add_argument("--eval-every", type=int, help="evaluate the metric every K steps (every run)")
    p.add_argument("--eval-schedule", default="linear", choices=["linear", "log"],
                   help="when every trial evaluates the metric: linear (every --eval-every steps, default) "
                        "or log (10 log-spaced steps per decade); the last step always")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="checkpoint every K steps (default: run's default, 100)")


def main(args) -> int:
    import shlex
    import sys
    from pathlib import Path

    from harness import cluster
    from studies import tuning
    from cli.commands._common import budget_from_args, check_batch_args, interrupted_exit, report_hint
    from harness.errors import UsageError
    from harness.executor import state_of
    from harness.params import parse_seed, parse_seeds, parse_set_args
    from harness.spec import RunSpec
    from reports import tuning as tuning_report

    check_batch_args(args)
    budget = budget_from_args(args, default_steps=None)
    if budget is None:
        raise UsageError("no budget per trial: give --steps N, --evals N, --time SECONDS or --forwards N")
    RunSpec("", "", eval_every=args.eval_every, checkpoint_every=args.checkpoint_every or 0)
    req = tuning.Request(
        optimizers=[n.strip() for n in args.optimizers.split(",") if n.strip()], problem=args.problem,
        trials=args.trials,
        budget=budget.as_dict(), studies=args.studies, sampler=args.sampler.lower(),
        sampler_seed=parse_seed(args.sampler_seed, "--sampler-seed"),
        seeds=parse_seeds(args.seeds) if args.seeds is not None else None,
        fresh_seeds=parse_seeds(args.fresh_seeds, "--fresh-seeds") if args.fresh_seeds is not None else None,
        sets=parse_set_args(args.set), space=list(args.space), eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every, eval_schedule=args.eval_schedule)
    plan = tuning.prepare(req, device=args.device)
    runs_dir = Path(args.runs_dir)
    if args.dry_run:
        trials = tuning.halton_trials(plan) if req.sampler == "halton" else [
            t for t in tuning.halton_trials(plan) if t.index == 0]
        print(f"{len(trials)} trial runs in {runs_dir}" + (" (TPE: only trial 0 of each study is known "
                                                           "before results come in)" if req.sampler == "tpe" else ""))
        for t in trials:
            hp = ", ".join(f"{k}={v}" for k, v in sorted(t.hparams.items())) or "default"
            print(f"  {t.optimizer:<10} study {t.study} trial {t.index:<3} {hp:<50} "
                  f"[{state_of(runs_dir / t.item.name)}]")
        print(f"then the best and the default configuration of each optimizer on fresh seeds "
              f"{','.join(map(str, req.fresh_seeds))}")
        return 0
    command = "python -m harness " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""
    try:
        record = tuning.tune(plan, runs_dir, jobs=args.jobs, device=args.device, retry_failed=args.retry_failed,
                             executor=cluster.make(args.executor, args.executor_sets, runs_dir), command=command)
    except KeyboardInterrupt as exc:
        return interrupted_exit("tune", exc)
    out = tuning_report.write(runs_dir)
    print(out["md"].read_text())
    print(f"tuning.csv, final.csv, tuning.md, tuning.json -> {runs_dir}")
    print(report_hint(runs_dir))
    missing = [o for o, b in record["best"].items() if b is None]
    return 1 if missing else 0
