"""The tables of a tuning run (`tune`), from tuning.json and the stored runs alone.

- tuning.csv: one row per trial: optimizer, study, seed, trial (0 = the default
  configuration), run, status, one column per tuned hyperparameter, validation
  (what the choice is made on), metric (the trial's test metric, for
  information only) and its cost on every axis (evals, forwards, tokens, flops,
  optimizer seconds, wall-clock seconds).
- final.csv: the reruns on fresh seeds of each optimizer's best and default
  configuration.
- tuning.md: per optimizer the best configuration, its test metric over the
  fresh seeds (median and 95% bootstrap interval, reports.stats.median_ci), the
  default configuration's beside it, and the total tuning cost on each axis.
  The tuning cost belongs to the comparison: a tuned result was bought with it.

`targets_from(DIR[:OPTIMIZER])`: AlgoPerf's target setting (Dahl et al. 2023,
section 4.1: targets from the median over seeds of the best tuned baseline): the
median over the fresh seeds of the tuned optimizer's final metric, for
`report --targets-from`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from harness import store
from harness.errors import UsageError
from harness.store import COST_KEYS, read_result
from reports.stats import median_ci

AXES = {"forwards": "forwards", "tokens": "tokens", "flops": "flops", "optimizer_time_s": "optimizer s",
        "evals": "evals"}


def load(tuning_dir: Path) -> dict:
    path = Path(tuning_dir) / "tuning.json"
    if not path.exists():
        raise UsageError(f"{tuning_dir}: no tuning.json there; give the --runs-dir of a `tune`")
    try:
        return store.read_json(path)
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it ({exc})") from None


def _validation_key(meta: dict) -> str | None:
    return None if meta["selected_on"] == "metric" else meta["selected_on"]


def trials_frame(meta: dict, runs_dir: Path) -> pd.DataFrame:
    keys = sorted({k for t in meta.get("trial_runs", []) for k in t["hparams"]})
    rows = []
    for t in meta.get("trial_runs", []):
        res = read_result(Path(runs_dir) / t["run"], _validation_key(meta))
        row = {"problem": meta["problem"], "optimizer": t["optimizer"], "study": t["study"], "seed": t["seed"],
               "trial": t["trial"], "default": t["trial"] == 0, "run": t["run"], "status": res["status"]}
        row.update({f"hp_{k}": t["hparams"].get(k) for k in keys})
        row.update({"validation": res["validation"], "metric": res["metric"]})
        row.update({k: res[k] for k in COST_KEYS})
        rows.append(row)
    return pd.DataFrame(rows)


def final_frame(meta: dict, runs_dir: Path) -> pd.DataFrame:
    rows = []
    for opt, kinds in (meta.get("final") or {}).items():
        for kind, runs in kinds.items():
            for run in runs:
                res = read_result(Path(runs_dir) / run, _validation_key(meta))
                seed = store.read_json(Path(runs_dir) / run / "config.json").get("seed") \
                    if (Path(runs_dir) / run / "config.json").exists() else None
                rows.append({"problem": meta["problem"], "optimizer": opt, "configuration": kind, "seed": seed,
                             "run": run, "status": res["status"], "validation": res["validation"],
                             "metric": res["metric"], **{k: res[k] for k in COST_KEYS}})
    return pd.DataFrame(rows)


def _ci_text(values) -> tuple[str, float]:
    med, lo, hi = median_ci(values)
    n = sum(1 for v in values if v == v)
    if not n:
        return "-", math.nan
    if lo != lo:
        return f"{med:.4g} (n={n})", med
    return f"{med:.4g} [{lo:.4g}, {hi:.4g}] (n={n})", med


def _fmt_hp(hp: dict | None) -> str:
    if hp is None:
        return "(no trial ended ok)"
    return ", ".join(f"{k}={v}" for k, v in sorted(hp.items())) or "default"


def summary(meta: dict, trials: pd.DataFrame, final: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for opt in meta["optimizers"]:
        tr = trials[trials["optimizer"] == opt] if not trials.empty else trials
        fi = final[final["optimizer"] == opt] if not final.empty else final
        best = (meta.get("best") or {}).get(opt)
        ok = lambda f, kind: f[(f["configuration"] == kind) & (f["status"] == "ok")]["metric"].tolist() \
            if not f.empty else []  # noqa: E731
        tuned_text, _ = _ci_text(ok(fi, "tuned"))
        default_text, _ = _ci_text(ok(fi, "default"))
        row = {"optimizer": opt, "trials": int(len(tr)),
               "best configuration (trial)": (_fmt_hp(best["hparams"]) + f" (study {best['study']}, trial "
                                              f"{best['trial']})") if best else _fmt_hp(None),
               f"best {meta['selected_on']}": f"{best['validation']:.4g}" if best else "-",
               f"{meta['metric']} tuned, median [95% CI]": tuned_text,
               f"{meta['metric']} default, median [95% CI]": default_text}
        for key, name in AXES.items():
            total = tr[key].sum(min_count=1) if key in tr else math.nan
            row[f"tuning {name}"] = f"{total:.3g}" if total == total else "-"
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(meta: dict, table: pd.DataFrame) -> str:
    budget = ", ".join(f"{k}={v:g}" for k, v in meta["budget"].items())
    selected = (f"`{meta['selected_on']}` (the problem's validation split) at the end of the budget"
                if meta["selected_on"] != "metric" else
                "the metric itself at the end of the budget (the problem has no validation split: on the "
                "functions the objective is all there is, so selection and report use the same quantity; "
                "the fresh seeds make the rerun independent of the selection)")
    return "\n".join([
        f"# Tuning: {meta['problem']}", "",
        f"{meta['trials']} trials per optimizer and study x {meta['studies']} "
        f"{'study' if meta['studies'] == 1 else 'studies'} (sampler {meta['sampler']}, seed "
        f"{meta['sampler_seed']}; trial 0 = the default configuration), budget per trial {budget}, tuning "
        f"seeds {','.join(map(str, meta['seeds']))}. Best trial chosen on {selected}; the best and the default "
        f"configuration rerun on fresh seeds {','.join(map(str, meta['fresh_seeds']))}, reported on "
        f"`{meta['metric']}` ({'higher' if meta['higher_is_better'] else 'lower'} is better): median over "
        "the fresh seeds with a 95% percentile-bootstrap interval.", "",
        "**The tuning cost belongs to the comparison**: each tuned row was bought with the `tuning` columns "
        "(the sums over all its trials, the default's included), on every cost axis; an optimizer that needs "
        "fewer trials to reach a result is cheaper than its single run suggests.", "",
        table.to_markdown(index=False), "",
        "Every trial: [tuning.csv](tuning.csv); the reruns: [final.csv](final.csv). Command: "
        f"`{meta.get('command') or '(not recorded)'}`", ""])


def write(tuning_dir: Path) -> dict:
    """tuning.csv, final.csv and tuning.md in tuning_dir; returns their paths and the table."""
    tuning_dir = Path(tuning_dir)
    meta = load(tuning_dir)
    trials, final = trials_frame(meta, tuning_dir), final_frame(meta, tuning_dir)
    trials.to_csv(tuning_dir / "tuning.csv", index=False)
    final.to_csv(tuning_dir / "final.csv", index=False)
    table = summary(meta, trials, final)
    (tuning_dir / "tuning.md").write_text(markdown(meta, table))
    return {"table": table, "csv": tuning_dir / "tuning.csv", "md": tuning_dir / "tuning.md"}


def targets_from(spec: str) -> tuple[str, float, str]:
    """'DIR[:OPTIMIZER]' -> (problem, target in the metric's units, optimizer): the median
    over the fresh seeds of the tuned configuration's final metric; without OPTIMIZER,
    the tuned optimizer with the best such median."""
    path, sep, opt = spec.rpartition(":") if ":" in spec and not Path(spec).exists() else (spec, "", "")
    meta = load(Path(path))
    final = final_frame(meta, Path(path))
    tuned = final[(final["configuration"] == "tuned") & (final["status"] == "ok")] if not final.empty else final
    medians = {o: float(np.median(g["metric"].dropna())) for o, g in tuned.groupby("optimizer")
               if g["metric"].notna().any()} if not tuned.empty else {}
    if opt:
        if opt not in meta["optimizers"]:
            raise UsageError(f"--targets-from {spec}: {opt!r} was not tuned there; tuned: "
                             f"{', '.join(meta['optimizers'])}")
        if opt not in medians:
            raise UsageError(f"--targets-from {spec}: {opt} has no finished rerun on fresh seeds there; "
                             f"run the same `tune` command again to finish it")
    elif not medians:
        raise UsageError(f"--targets-from {spec}: no finished rerun on fresh seeds there; "
                         f"run the same `tune` command again to finish it")
    else:
        pick = max if meta["higher_is_better"] else min
        opt = pick(medians, key=lambda o: (medians[o], o))
    return meta["problem"], medians[opt], opt
