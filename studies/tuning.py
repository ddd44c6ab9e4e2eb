"""Fair tuning (`tune`): the same number of trials and the same budget per trial for
every optimizer, the best configuration chosen on validation and rerun on fresh seeds.

The protocol is AlgoPerf's external tuning ruleset (Dahl et al. 2023, "Benchmarking
Neural Network Training Algorithms", section 4): a search space per submission
(studies.tuning_space), M studies of K trials, quasi-random points, the
best trial chosen on the validation metric. Here:

- study m runs every trial on tuning seed seeds[m];
- trial 0 of every study is the default configuration (no --set beyond the
  user's own), so tuning can only help and the default's cost is counted;
- trials 1..K-1 are points of a scrambled Halton sequence (scipy.stats.qmc.Halton,
  seeded per optimizer and study), or asked of optuna's TPE (ask/tell; a TPE
  study is sequential by nature: trial k+1 waits for trial k's result, so only
  optimizers and studies run in parallel);
- every trial is an ordinary RunItem executed by harness.executor (one process
  per run, resumable, parallel with --jobs; a rerun skips finished runs);
- the best trial over all studies (the problem's VALIDATION_KEY at the end of the
  budget; the metric itself where the problem has no validation split) and the
  default configuration are rerun on fresh seeds disjoint from the tuning seeds,
  reported on the problem's metric (the test split).

tuning.json in the runs directory records the request, the spaces, every trial's
run and the choice; reports/tuning.py builds tuning.csv and the table from it and
the stored runs alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness import executor as executor_mod
from harness import experiments, registry, store
from harness.errors import UsageError
from harness.experiments import RunItem
from harness.pair import resolve_pair
from harness.params import unused_sets
from harness.seeding import derive_seed
from harness.store import read_result
from studies import tuning_space

SAMPLERS = ("halton", "tpe")
FRESH_DEFAULT = 3


@dataclass
class Request:
    optimizers: list[str]
    problem: str
    trials: int
    budget: dict
    studies: int = 1
    sampler: str = "halton"
    sampler_seed: int = 0
    seeds: list[int] | None = None          # one per study; default 0..studies-1
    fresh_seeds: list[int] | None = None    # default: the 3 integers after the largest tuning seed
    sets: dict = field(default_factory=dict)
    space: list[str] = field(default_factory=list)
    eval_every: int | None = None
    checkpoint_every: int | None = None
    eval_schedule: str = "linear"            # or "log": a trial's final metric is the same either way


@dataclass
class Trial:
    optimizer: str
    study: int
    index: int                  # 0 = the default configuration
    hparams: dict               # tuned key -> value ({} for the default)
    item: RunItem


@dataclass
class Plan:
    request: Request
    problem_cls: Any
    family: str
    spaces: dict[str, tuning_space.TuningSpace]
    schemas: dict
    base_sets: dict[str, dict]  # optimizer -> the user's --set values routed to it (and the problem)

    @property
    def higher(self) -> bool:
        return bool(self.problem_cls.METRIC_HIGHER_IS_BETTER)

    @property
    def selected_on(self) -> str:
        return self.problem_cls.VALIDATION_KEY or "metric"


def prepare(req: Request, device: str = "auto") -> Plan:
    """Every check before anything is written: names, pairs, spaces, seeds, sets, items."""
    if req.sampler not in SAMPLERS:
        raise UsageError(f"--sampler {req.sampler!r}: must be one of {', '.join(SAMPLERS)}")
    if req.trials < 1:
        raise UsageError(f"--trials {req.trials}: must be >= 1 (trial 0 is the default configuration)")
    if req.studies < 1:
        raise UsageError(f"--studies {req.studies}: must be >= 1")
    if not req.optimizers:
        raise UsageError("--optimizers: expected a comma-separated list of optimizer names")
    seeds = req.seeds if req.seeds is not None else list(range(req.studies))
    if len(seeds) != req.studies:
        raise UsageError(f"--seeds {','.join(map(str, seeds))}: give one tuning seed per study "
                         f"({req.studies} with --studies {req.studies})")
    req.seeds = seeds
    if req.fresh_seeds is None:
        req.fresh_seeds = [max(seeds) + 1 + i for i in range(FRESH_DEFAULT)]
    overlap = sorted(set(req.fresh_seeds) & set(seeds))
    if overlap:
        raise UsageError(f"--fresh-seeds: seed {overlap[0]} is also a tuning seed; the rerun of the best "
                         f"configuration needs seeds disjoint from --seeds {','.join(map(str, seeds))}")
    prob = registry.problem(req.problem)
    opts = [registry.optimizer(o) for o in dict.fromkeys(req.optimizers)]
    req.optimizers = [o.name for o in opts]
    pairs = {o.name: resolve_pair(o, prob) for o in opts}
    schemas = {name: pair.optimizer_schema for name, pair in pairs.items()}
    tuning_space.check_overrides_used(req.space, schemas)
    spaces, base_sets, used = {}, {}, set()
    for opt in opts:
        spaces[opt.name] = tuning_space.load(opt.name, prob.family, registry.base_optimizer(opt), schemas[opt.name],
                                             req.space, tuple(req.optimizers))
        routed = pairs[opt.name].route(req.sets, partial=True)
        tuned = sorted(set(routed.optimizer) & {d.key for d in spaces[opt.name].dims})
        if tuned:
            raise UsageError(f"--set {tuned[0]}: {opt.name} tunes it (its tuning space has it); "
                             f"drop the --set or fix the space with --space {opt.name}.{tuned[0]}=VALUE")
        used.update(routed.used)
        base_sets[opt.name] = dict(routed.used)
    unused_sets(req.sets, used, "tuning")
    plan = Plan(req, prob.factory, prob.family, spaces, schemas, base_sets)
    # every item is checked as `run` would check it (Halton: all; TPE: the space's corners)
    probe = halton_trials(plan) if req.sampler == "halton" else _corner_trials(plan)
    experiments.validate([t.item for t in probe], device)
    return plan


def _item(plan: Plan, opt: str, seed: int, hparams: dict) -> RunItem:
    req = plan.request
    sets = {**plan.base_sets[opt], **{k: tuning_space.set_text(v) for k, v in hparams.items()}}
    return experiments.item(opt, req.problem, seed, req.budget, sets, eval_every=req.eval_every,
                            checkpoint_every=req.checkpoint_every, eval_schedule=req.eval_schedule)


def _fixed(space: tuning_space.TuningSpace) -> dict:
    return {d.key: d.points[0] for d in space.dims if not d.varies}


def halton_trials(plan: Plan) -> list[Trial]:
    """Every trial: study s, trial 0 the default, trials 1..K-1 Halton points; ordered
    trial-major so an interrupted tune has spent equally on every optimizer."""
    from scipy.stats import qmc

    req = plan.request
    out = []
    for opt in req.optimizers:
        space = plan.spaces[opt]
        dims = space.varying
        for s, seed in enumerate(req.seeds):
            out.append(Trial(opt, s, 0, {}, _item(plan, opt, seed, {})))
            if req.trials < 2:
                continue
            sampler = qmc.Halton(d=len(dims), scramble=True, seed=derive_seed(req.sampler_seed, "halton", opt, s))
            for k, u in enumerate(sampler.random(req.trials - 1), start=1):
                hp = {**_fixed(space), **{d.key: d.value(float(x), plan.schemas[opt][d.key]) for d, x in zip(dims, u)}}
                out.append(Trial(opt, s, k, hp, _item(plan, opt, seed, hp)))
    return sorted(out, key=lambda t: (t.index, t.study, req.optimizers.index(t.optimizer)))


def _corner_trials(plan: Plan) -> list[Trial]:
    """The default and the low and high corners of each space (validation of TPE plans)."""
    out = []
    for opt in plan.request.optimizers:
        space, seed = plan.spaces[opt], plan.request.seeds[0]
        out.append(Trial(opt, 0, 0, {}, _item(plan, opt, seed, {})))
        for u in (0.0, 0.999999):
            hp = {d.key: d.value(u, plan.schemas[opt][d.key]) for d in space.dims}
            out.append(Trial(opt, 0, -1, hp, _item(plan, opt, seed, hp)))
    return out


# -- results ------------------------------------------------------------------------

def best_trial(plan: Plan, trials: list[Trial], results: dict[str, dict]) -> Trial | None:
    """The trial with the best validation value over all studies (first on ties); None
    when no trial ended ok with a finite value."""
    sign = -1.0 if plan.higher else 1.0
    scored = [(sign * results[t.item.name]["validation"], t.study, t.index, t) for t in trials
              if not math.isnan(results[t.item.name]["validation"])]
    return min(scored, key=lambda x: x[:3])[3] if scored else None


# -- running --------------------------------------------------------------------------

def _execute(items: list[RunItem], runs_dir: Path, jobs: int, device: str, retry_failed: bool,
             executor, echo) -> None:
    unique = list({it.name: it for it in items}.values())
    executor_mod.execute(unique, runs_dir, jobs=jobs, device=device, retry_failed=retry_failed,
                         echo=echo, executor=executor)


def run_trials(plan: Plan, runs_dir: Path, jobs: int = 1, device: str = "auto", retry_failed: bool = False,
               executor=None, echo=print) -> list[Trial]:
    """Execute every trial (Halton: one batch; TPE: one batch per round of asks)."""
    if plan.request.sampler == "halton":
        trials = halton_trials(plan)
        _execute([t.item for t in trials], runs_dir, jobs, device, retry_failed, executor, echo)
        return trials
    return _run_tpe(plan, runs_dir, jobs, device, retry_failed, executor, echo)


def _distributions(space, schema):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for d in space.varying:
        if d.points is not None:
            out[d.key] = CategoricalDistribution(list(d.points))
        elif schema[d.key].type is int:
            out[d.key] = IntDistribution(math.ceil(d.low), math.floor(d.high), log=d.scaling == "log")
        else:
            out[d.key] = FloatDistribution(d.low, d.high, log=d.scaling == "log")
    return out


def _run_tpe(plan, runs_dir, jobs, device, retry_failed, executor, echo) -> list[Trial]:
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    req = plan.request
    # optuna's default of 10 random startup trials would leave a short study pure random search
    startup = min(10, max(2, req.trials // 2))
    studies, dists, trials = {}, {}, []
    for opt in req.optimizers:
        dists[opt] = _distributions(plan.spaces[opt], plan.schemas[opt])
        for s in range(req.studies):
            sampler = optuna.samplers.TPESampler(seed=derive_seed(req.sampler_seed, "tpe", opt, s) % 2**32,
                                                 n_startup_trials=startup)
            studies[opt, s] = optuna.create_study(direction="maximize" if plan.higher else "minimize",
                                                  sampler=sampler)
    for k in range(req.trials):
        batch = []
        for opt in req.optimizers:
            for s, seed in enumerate(req.seeds):
                if k == 0:
                    batch.append((None, Trial(opt, s, 0, {}, _item(plan, opt, seed, {}))))
                    continue
                asked = studies[opt, s].ask(dists[opt])
                hp = {**_fixed(plan.spaces[opt]), **{
                    key: (float(f"{v:.4g}") if isinstance(v, float) else v) for key, v in asked.params.items()}}
                batch.append((asked, Trial(opt, s, k, hp, _item(plan, opt, seed, hp))))
        _execute([t.item for _, t in batch], runs_dir, jobs, device, retry_failed, executor, echo)
        for asked, t in batch:
            value = read_result(runs_dir / t.item.name, plan.problem_cls.VALIDATION_KEY)["validation"]
            study = studies[t.optimizer, t.study]
            if asked is None:   # the default: told only where it lies inside the space
                schema = plan.schemas[t.optimizer]
                params = {key: schema[key].default for key in dists[t.optimizer]}
                try:
                    if not math.isnan(value):
                        study.add_trial(create_trial(params=params, distributions=dists[t.optimizer], value=value))
                except (ValueError, TypeError):   # outside the space (or None: "use the library's")
                    pass
            elif math.isnan(value):
                study.tell(asked, state=TrialState.FAIL)
            else:
                study.tell(asked, value)
            trials.append(t)
    return trials


def final_items(plan: Plan, best: dict[str, Trial | None]) -> dict[str, dict[str, list[RunItem]]]:
    """optimizer -> {"tuned": items, "default": items} on the fresh seeds."""
    out = {}
    for opt in plan.request.optimizers:
        b = best[opt]
        out[opt] = {
            "tuned": [_item(plan, opt, s, b.hparams) for s in plan.request.fresh_seeds] if b else [],
            "default": [_item(plan, opt, s, {}) for s in plan.request.fresh_seeds],
        }
    return out


def tune(plan: Plan, runs_dir: Path, jobs: int = 1, device: str = "auto", retry_failed: bool = False,
         executor=None, echo=print, command: str = "") -> dict:
    """The whole protocol; returns the tuning.json record (also written to runs_dir).
    `executor` is the launcher harness.executor.execute hands each process to (LocalExecutor
    by default; a cluster executor plugs in here)."""
    runs_dir = store.ensure_dir(Path(runs_dir))
    req = plan.request
    path = runs_dir / "tuning.json"
    if path.exists():
        old = store.read_json(path)
        if old.get("problem") != req.problem:
            raise UsageError(f"--runs-dir {runs_dir}: it holds the tuning of problem {old.get('problem')!r}; "
                             f"give another --runs-dir for {req.problem}")
    record = {
        "problem": req.problem, "family": plan.family, "metric": plan.problem_cls.METRIC,
        "higher_is_better": plan.higher, "selected_on": plan.selected_on,
        "optimizers": req.optimizers, "trials": req.trials, "studies": req.studies,
        "sampler": req.sampler, "sampler_seed": req.sampler_seed, "seeds": req.seeds,
        "fresh_seeds": req.fresh_seeds, "budget": req.budget, "sets": req.sets,
        "spaces": {o: plan.spaces[o].to_json() for o in req.optimizers},
        "space_sources": {o: list(plan.spaces[o].sources) for o in req.optimizers},
        "command": command, "status": "running",
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    store.write_json(path, record)
    trials = run_trials(plan, runs_dir, jobs, device, retry_failed, executor, echo)
    key = plan.problem_cls.VALIDATION_KEY
    results = {t.item.name: read_result(runs_dir / t.item.name, key) for t in trials}
    best = {opt: best_trial(plan, [t for t in trials if t.optimizer == opt], results) for opt in req.optimizers}
    record["trial_runs"] = [{"optimizer": t.optimizer, "study": t.study, "seed": t.item.seed, "trial": t.index,
                             "hparams": t.hparams, "run": t.item.name} for t in trials]
    record["best"] = {opt: ({"study": b.study, "trial": b.index, "hparams": b.hparams, "run": b.item.name,
                             "validation": results[b.item.name]["validation"]} if b else None)
                      for opt, b in best.items()}
    finals = final_items(plan, best)
    record["final"] = {opt: {k: [it.name for it in v] for k, v in d.items()} for opt, d in finals.items()}
    store.write_json(path, record)
    echo(f"tuning done: rerunning the best and the default configuration of each optimizer on fresh seeds "
         f"{','.join(map(str, req.fresh_seeds))}")
    _execute([it for d in finals.values() for v in d.values() for it in v], runs_dir, jobs, device,
             retry_failed, executor, echo)
    record["status"] = "done"
    record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    store.write_json(path, record)
    return record
