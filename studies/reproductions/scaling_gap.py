"""The gap across scale: how the compute cost of going gradient-free grows with model size.

    python -m harness reproduce scaling-gap [--sizes qwen3-tiny,qwen3-small,qwen3-3m,qwen3-10m]
        [--optimizers es,eggroll,mezo,adam,muon] [--seeds 0,1,2] [--base-forwards 600]
        [--exponent 0.25] [--out reports/scaling] [--runs-dir reports/scaling/runs] [--jobs J]

Every optimizer runs on every size of the qwen3 ladder (problems/qwen3.py) with every
seed, as ordinary harness runs (one process each, resumable, through the one executor, so
`--executor slurm` runs it on a cluster unchanged; the same command again skips finished
runs and resumes interrupted ones). The protocol, stated once (docs/scaling.md):

- Data, the same at every size: 64-token sequences, 8 samples a step, held-out metric on
  32 chunks, no validation split (nothing is tuned here).
- Budget rule: equal forward-pass equivalents for every optimizer at one size (a backward
  counts 2: adam and muon spend 3 a step, mezo 2, es and eggroll their population of 30),
  scaled with the parameter count N as
      forwards(N) = base x (N / N_tiny)^exponent, rounded up to a multiple of 60,
  base 600 (the budget at which the qwen3-tiny configurations were tuned) and exponent
  1/4 (tiny 600, small 1020, 3m 1380, 10m 1860 forwards).
- Hyperparameters: `tune`'s choices on qwen3-tiny (docs/tuning.md, docs/tuning/), carried
  up by the transfer rules of `transfer()` (each rule's reason beside it).
- Evaluation: log-spaced for every optimizer (`--eval-schedule log`: 10 evaluations per
  decade of steps, from step 1, and the last step), so that the gradient reference's cost to
  reach a level is resolved where it gets there fast (reports/equivalence.py: the multiplier
  errs low by at most the ratio of two consecutive evaluation costs, 1.26 on this grid).

The report (under --out) is built from the stored runs alone: per size, the
compute-equivalent multiplier of each gradient-free optimizer against the best gradient
optimizer of that size (reports.equivalence.multipliers, bootstrap CI over seeds); the
multiplier against parameter count on log-log axes with a fitted trend and its 95% band,
extrapolated to 0.5B-32B and labelled so; final quality against size; and memory against
size for every optimizer from 115K to 32B (measured peak where the size ran, planned by
harness.planner above it, with one-GPU capacity lines at 80 and 141 GiB).
"""

from __future__ import annotations

import math
from pathlib import Path

from harness.experiments import Experiment, item, register_experiment

SIZES = ("qwen3-tiny", "qwen3-small", "qwen3-3m", "qwen3-10m")
OPTIMIZERS = ("es", "eggroll", "mezo", "adam", "muon")
GRADIENT = ("adam", "muon")
BASE_PROBLEM, BASE_HIDDEN, BASE_PARAMS = "qwen3-tiny", 64, 115_072
BASE_FORWARDS, EXPONENT, UNIT = 600, 0.25, 60   # 60: a whole number of steps for 30, 3 and 2 forwards
FORWARDS_PER_STEP = {"es": 30, "eggroll": 30, "mezo": 2, "adam": 3, "muon": 3}
COMMON = {"seq_len": 64, "samples": 8, "micro_batch": 8, "eval_samples": 32, "val_samples": 0}
# Sizes the memory figure covers (115K to 32B): measured where they ran, planned above.
MEMORY_SIZES = ("qwen3-tiny", "qwen3-small", "qwen3-3m", "qwen3-10m", "qwen3-0.5b", "qwen3-0.6b",
                "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3-14b", "qwen3-32b")
EXTRAPOLATE_TO = ("qwen3-0.5b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3-14b", "qwen3-32b")

# The tuned qwen3-tiny configurations (tune at 600 forwards; fresh-seed medians in the docs):
TUNED = {
    # docs/tuning.md, "The gradient baselines tuned alike": es's default won its 6 trials
    "es": {"sigma": 0.01, "alpha": 0.05, "shaping": "zscore", "population": 30},
    # not tuned yet: its qwen3 recommendation (alpha 0.08, a 4-point screen, docs/qwen3_and_es.md)
    "eggroll": {"sigma": 0.01, "alpha": 0.08, "population": 30},
    # docs/tuning.md, "A measured example": 8 trials, best lr 1.893e-3, eps 5.892e-4
    "mezo": {"lr": 1.893e-3, "eps": 5.892e-4},
    # docs/tuning/gradient_baselines_qwen3-tiny: trial 2 (warmup 50 of its 200 steps)
    "adam": {"lr": 5.06e-3, "weight_decay": 0.01582, "warmup_steps": 50},
    # docs/tuning/gradient_baselines_qwen3-tiny: the default won its 6 trials
    "muon": {"lr": 0.02, "adam_lr": 3e-3, "weight_decay": 0.0, "warmup_steps": 0},
}
TUNED_STEPS = {opt: BASE_FORWARDS // f for opt, f in FORWARDS_PER_STEP.items()}

RULES = {
    "es": "sigma, alpha and population held: sigma is a per-element perturbation in weight units and every "
          "size starts from the same init std (initializer_range 0.02); with z-scored fitness the update per "
          "element is alpha/sqrt(population)-sized whatever the width. EA4LLM ablates population and samples, "
          "not sigma or alpha (docs/ea4llm_ablation.md)",
    "eggroll": "as es (sigma, alpha, population held; rank 1)",
    "mezo": "lr x 64/hidden, eps held: ZO-SGD's step has a variance that grows with the number of parameters "
            "(Malladi et al. 2023 bound its slowdown by the effective rank), and held, the tiny lr made qwen3-small "
            "worse than its initialisation in the reduced run (docs/scaling.md)",
    "adam": "lr x 64/hidden (muP's Adam rule for hidden matrices, Yang et al. 2022, applied to every tensor); "
            "weight decay held; warmup the same fraction of the run (50 of 200 steps = 1/4)",
    "muon": "lr and adam_lr held: Muon's orthogonalised, shape-scaled update is what makes its lr transfer "
            "across width (Jordan et al. 2024; Liu et al. 2025), and its AdamW part holds the embeddings and "
            "norms, whose muP Adam lr does not scale with width; warmup the same fraction of the run",
}


def budget_forwards(n_params: int, base: int = BASE_FORWARDS, exponent: float = EXPONENT) -> int:
    """The budget rule: base x (N / N_tiny)^exponent forward-pass equivalents, rounded up to a
    multiple of UNIT (so every optimizer's budget is a whole number of its steps)."""
    raw = base * (n_params / BASE_PARAMS) ** exponent
    return max(UNIT, UNIT * math.ceil(raw / UNIT - 1e-9))


def transfer(optimizer: str, hidden: int, steps: int) -> dict:
    """The tuned qwen3-tiny settings of `optimizer` carried to a model of width `hidden` run
    for `steps` steps, by the rule RULES[optimizer] states."""
    hp = dict(TUNED[optimizer])
    if optimizer in ("adam", "mezo"):
        hp["lr"] = float(f"{hp['lr'] * BASE_HIDDEN / hidden:.4g}")
    if "warmup_steps" in hp:
        hp["warmup_steps"] = round(hp["warmup_steps"] * steps / TUNED_STEPS[optimizer])
    return hp


def _names(text: str, flag: str, known) -> list[str]:
    from harness.errors import UsageError

    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in known]
    if not names or bad or len(set(names)) != len(names):
        raise UsageError(f"{flag} {text!r}: expected distinct names among {', '.join(known)}"
                         + (f" ({bad[0]!r} is not one)" if bad else ""))
    return names


@register_experiment("scaling-gap", help="the compute multiplier of es, eggroll and mezo against the best gradient "
                                          "optimizer across qwen3 sizes, its trend and memory (docs/scaling.md)")
class ScalingGap(Experiment):
    DEFAULT_RUNS_DIR = "reports/scaling/runs"

    def add_arguments(self, p) -> None:
        p.add_argument("--sizes", default=",".join(SIZES), help=f"qwen3 problems (default {','.join(SIZES)})")
        p.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                       help=f"among {','.join(OPTIMIZERS)} (default all; at least one of adam, muon)")
        p.add_argument("--seeds", default="0,1,2", help="comma-separated run seeds (default 0,1,2)")
        p.add_argument("--base-forwards", type=int, default=BASE_FORWARDS,
                       help=f"forwards at qwen3-tiny's size (default {BASE_FORWARDS})")
        p.add_argument("--exponent", type=float, default=EXPONENT,
                       help=f"forwards grow as (N / N_tiny)^exponent (default {EXPONENT})")
        p.add_argument("--out", default="reports/scaling")

    def plan(self, args) -> list[dict]:
        """One entry per run: size, params, hidden, forwards, item, in report order."""
        from harness import experiments, registry
        from harness.errors import UsageError
        from harness.params import parse_seeds

        registry.load_all()
        qwen3 = sorted(n for n in registry.PROBLEMS if n.startswith("qwen3-"))
        sizes = _names(args.sizes, "--sizes", qwen3)
        optimizers = _names(args.optimizers, "--optimizers", OPTIMIZERS)
        if not set(optimizers) & set(GRADIENT):
            raise UsageError(f"--optimizers {args.optimizers!r}: the multiplier needs a gradient reference; "
                             f"add adam or muon")
        if args.base_forwards < 1 or not (0 <= args.exponent <= 2):
            raise UsageError(f"--base-forwards {args.base_forwards} --exponent {args.exponent}: expected a "
                             f"positive budget and an exponent in [0, 2]")
        entries = []
        for size in sizes:
            prob = registry.problem(size).create(dict(COMMON))
            n, hidden = prob.param_count(), prob.shape[1]
            forwards = budget_forwards(n, args.base_forwards, args.exponent)
            for opt in optimizers:
                steps = forwards // FORWARDS_PER_STEP[opt]
                sets = {**COMMON, **transfer(opt, hidden, steps)}
                for seed in parse_seeds(args.seeds):
                    it = item(opt, size, seed, {"forwards": forwards}, sets, eval_schedule="log")
                    entries.append({"size": size, "params": n, "hidden": hidden, "forwards": forwards,
                                    "optimizer": opt, "seed": seed, "item": it})
        experiments.validate([e["item"] for e in entries], args.device)
        return entries

    def items(self, args):
        return [e["item"] for e in self.plan(args)]

    def render(self, args, outcomes) -> str:
        from reports import scaling   # pandas, matplotlib: only when rendering

        entries = self.plan(args)
        out = Path(args.out)
        optimizers = list(dict.fromkeys(e["optimizer"] for e in entries))
        result = scaling.build(entries, Path(args.runs_dir), out, planned=planned_memory(optimizers),
                               extrapolate_to=extrapolation_sizes(), gradient=GRADIENT)
        cmd = ("python -m harness reproduce scaling-gap"
               + "".join(f" --{k.replace('_', '-')} {getattr(args, k)}"
                         for k in ("sizes", "optimizers", "seeds", "base_forwards", "exponent")))
        text = scaling.markdown(result, cmd, RULES, budget_text(args))
        (out / "scaling.md").write_text(text)
        return text + f"\nwritten: {out / 'scaling.md'} and its figures and CSVs in {out}"


def planned_memory(optimizers, sizes=None) -> list[dict]:
    """harness.planner's peak of every optimizer at every MEMORY_SIZES size, on one CUDA
    device (bf16 weights) and on the CPU (fp32), with the problems' own defaults."""
    from harness import planner, registry

    rows = []
    for size in MEMORY_SIZES if sizes is None else sizes:
        n = registry.problem(size).create().param_count()
        for opt in optimizers:
            for device in ("cuda", "cpu"):
                if device == "cpu" and size not in SIZES:
                    continue   # the CPU plan of the ladder only, beside its measured peaks
                sets = dict(COMMON) if size in SIZES else {}
                if opt == "eggroll":   # its floor: auto's choice wherever stacking members does not fit
                    sets["members_per_forward"] = 1
                plan = planner.plan(opt, size, sets, device=device)
                rows.append({"size": size, "params": n, "optimizer": opt, "device": device,
                             "planned_bytes": plan.peak_bytes})
    return rows


def extrapolation_sizes() -> dict[str, int]:
    from harness import registry

    return {s: registry.problem(s).create().param_count() for s in EXTRAPOLATE_TO}


def budget_text(args) -> str:
    return (f"forwards(N) = {args.base_forwards} x (N / {BASE_PARAMS:,})^{args.exponent:g}, rounded up to a "
            f"multiple of {UNIT}; equal for every optimizer at one size")
