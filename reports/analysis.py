"""Fixed-target analysis and uncertainty: writes its files and returns the report blocks.

Files: targets.csv, targets_<problem>.md, runtimes.csv (every run x target),
significance.csv, scores.csv (normalized against random search), ecdf_<axis>.png,
ecdf_auc.csv, algoperf.csv and algoperf_profile.png. Formulas and sources:
reports/targets.py, stats.py, ecdf.py, algoperf.py and docs/analysis.md.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from reports import algoperf, ecdf, stats, targets
from reports.tables import slug


def build(runs: pd.DataFrame, curves: dict, out: Path, given_targets: dict | None = None,
          memory_limit: float | None = None) -> dict:
    """Everything fixed-target; returns {"blocks": [(kind, content)], "winners": {...}}:
    kinds are "h2", "h3", "p", "md" (a Markdown table) and "img" (a file name)."""
    rt = targets.runtimes(runs, curves, given_targets, memory_limit)
    rt.to_csv(out / "runtimes.csv", index=False)
    tt = targets.table(rt)
    tt.to_csv(out / "targets.csv", index=False)
    sig = stats.significance(runs, rt)
    sig.to_csv(out / "significance.csv", index=False)
    scores = stats.normalized_scores(runs)
    if not scores.empty:   # no random search among the runs: no file rather than an empty one
        scores.to_csv(out / "scores.csv", index=False)
    family_of = dict(zip(runs["problem"], runs["family"]))
    problems_of = {f: sorted(p for p, g in family_of.items() if g == f) for f in set(family_of.values())}
    blocks: list[tuple[str, str]] = [("h2", "Fixed-target analysis")]
    limit = f" Runs whose peak memory exceeds {memory_limit / 2**30:.4g} GiB count as unsuccessful." \
        if memory_limit is not None else ""
    blocks.append(("p", "Runtime of each run to each target on every cost axis: [runtimes.csv](runtimes.csv); "
                        "aRT = (runtimes of successful runs + budgets of unsuccessful ones) / successes, "
                        "bracketed: 10-90% bootstrap range; all targets: [targets.csv](targets.csv)." + limit))
    if not tt.empty:
        for problem in sorted(tt["problem"].unique()):
            src = tt[tt["problem"] == problem]["source"].iloc[0]
            text = targets.markdown(tt, problem)
            name = f"targets_{slug(problem)}.md"
            (out / name).write_text(f"# Fixed targets: {problem} ({SOURCES[src]})\n\n{text}\n")
            blocks += [("h3", f"{problem}: targets {SOURCES[src]}"), ("p", f"[Markdown]({name})"), ("md", text)]
    auc_all = []
    for axis in ecdf.axes_of(rt) if not rt.empty else []:
        auc, plots = ecdf.curves(rt, axis, family_of)
        name = ecdf.figure(axis, plots, out, problems_of)
        if name:
            auc_all.append(auc)
            blocks += [("h3", f"ECDF on {ecdf.LABELS.get(axis, axis)}"), ("img", name)]
    if auc_all:
        auc = pd.concat(auc_all, ignore_index=True)
        auc.to_csv(out / "ecdf_auc.csv", index=False)
        blocks += [("h3", "ECDF area under the curve (ranking per axis and family)"),
                   ("p", "[ecdf_auc.csv](ecdf_auc.csv); AUC over log10(cost), 1 = every target at the "
                         "smallest cost; p5/p95: bootstrap over runs."),
                   ("md", auc.to_markdown(index=False, floatfmt=".3g"))]
    t = algoperf.times(rt)
    scores_ap, prof = algoperf.profile(t, family_of)
    n_problems = runs["problem"].nunique()
    if not scores_ap.empty and n_problems < MIN_PROFILE_PROBLEMS:
        blocks += [("h3", "AlgoPerf performance profile"), ("p", profile_skipped(n_problems))]
    elif not scores_ap.empty:
        t.to_csv(out / "algoperf.csv", index=False)
        name = algoperf.figure(prof, out)
        blocks += [("h3", "AlgoPerf performance profile (time to target, tau 1..4)"),
                   ("p", "Times per problem: [algoperf.csv](algoperf.csv)."),
                   ("md", scores_ap.to_markdown(index=False, floatfmt=".3g")), ("img", name)]
    blocks += [("h2", "Significance"),
               ("p", "Two-sided Mann-Whitney U between every pair of optimizers per problem, Holm-corrected "
                     "within each (problem, quantity); `better` only where p_holm < 0.05; beside it the effect "
                     "size A12 (chance a run of optimizer_a beats one of optimizer_b), Welch's t and an exact "
                     "permutation test (Holm-corrected), the seeds per side the rank test needs (`min_seeds`) "
                     "and its `verdict` (\"too few seeds\" below that): [significance.csv](significance.csv).")]
    if not sig.empty:
        blocks.append(("md", sig.to_markdown(index=False, floatfmt=".3g")))
    if not scores.empty:
        blocks += [("h3", "Score normalized against random search"),
                   ("p", "100 (f_random - f) / (f_random - f_best): 0 = random search's median, 100 = the "
                         "optimum (or best run); median over seeds [95% bootstrap CI]: [scores.csv](scores.csv)."),
                   ("md", scores.to_markdown(index=False, floatfmt=".4g"))]
    return {"blocks": blocks, "winners": stats.winners(sig) if not sig.empty else {}, "significance": sig}


MIN_PROFILE_PROBLEMS = 3


def profile_skipped(n: int) -> str:
    return (f"Not drawn: a performance profile is the fraction of problems on which an optimizer is within a "
            f"factor tau of the best, and with {n} problem{'s' if n != 1 else ''} (fewer than "
            f"{MIN_PROFILE_PROBLEMS}) it is a few flat steps that hide one optimizer under another; the "
            "tables and curves say more.")


SOURCES = {"coco": "COCO: f_opt + 10^2 ... 10^-8, 51 log-spaced",
           "ioh": "IOH: 10 between worst initial and best final value",
           "given": "given with --targets or --targets-from a tuning run"}
