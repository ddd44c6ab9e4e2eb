"""`build(runs_dir, out)`: every table and figure, and index.md + index.html linking them."""

from __future__ import annotations

import html
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

import harness
from harness import store
from harness.errors import UsageError
from reports import analysis, coco, equivalence, ioh_export, pareto, plots, profile, summary, tables
from reports.load import load_runs

ENV_KEYS = ["harness", "git_commit", "python", "torch", "device", "cpu", "gpu"]


def environment(runs: pd.DataFrame) -> pd.DataFrame:
    """Distinct software/hardware combinations of the runs, with how many runs each."""
    env = runs[ENV_KEYS].fillna("-").astype(str)
    return env.value_counts().rename("runs").reset_index()


def build(runs_dir: Path, out: Path, targets: dict | None = None, memory_limit: float | None = None) -> dict:
    runs_dir, out = Path(runs_dir), Path(out)
    if not runs_dir.is_dir():
        raise UsageError(f"--runs-dir {runs_dir}: no such directory; give the directory `run`/`sweep` wrote to")
    runs, curves = load_runs(runs_dir)
    if runs.empty:
        raise UsageError(f"--runs-dir {runs_dir}: no run directories (with config.json) found there")
    unknown = sorted(set(targets or {}) - set(runs["problem"]))
    if unknown:
        raise UsageError(f"--targets {unknown[0]}=...: no run of that problem in {runs_dir}; "
                         f"its problems are {', '.join(sorted(runs['problem'].unique()))}")
    out.mkdir(parents=True, exist_ok=True)
    fixed = analysis.build(runs, curves, out, targets, memory_limit)
    ioh_dir = ioh_export.export(runs, curves, out)
    fixed["blocks"] += [("h2", "IOHanalyzer export"), ("p", (
        f"[{ioh_dir}/]({ioh_dir}/): one folder per optimizer in IOHanalyzer's format, written by the `ioh` "
        "package's Analyzer logger (runs replayed; evaluation counter = forward-pass equivalents). "
        "Zip the folder and upload it to IOHanalyzer.") if ioh_dir else
        "Not written: the `ioh` package is not installed (`pip install -e .[ioh]`).")]
    table_files = tables.write(runs, out, fixed["winners"])
    mult = equivalence.multipliers(runs, curves)
    equivalence_files = summary.multiplier_tables(mult, out)
    sentences = [summary.sentence(p, runs, fixed["significance"], mult) for p in sorted(runs["problem"].unique())]
    figures = {"curves": {}, "memory": None, "memory_quality": None, "memory_by_size": {}, "profile": None}
    for problem in sorted(runs["problem"].unique()):
        name = plots.curves_figure(problem, runs, curves, out)
        if name:
            figures["curves"][problem] = name
    figures["memory"] = plots.memory_figure(runs, out)
    figures["memory_quality"] = pareto.figure(runs, out)
    figures["memory_by_size"] = plots.memory_by_size_figures(runs, out)
    cost = profile.costs(runs, curves)
    many = runs["problem"].nunique() >= analysis.MIN_PROFILE_PROBLEMS
    if many and not cost.empty:
        cost.to_csv(out / "profile_costs.csv", index=False)
    figures["profile"] = profile.figure(cost, out) if many else None
    runs.to_csv(out / "runs.csv", index=False)
    cocopp_result = coco.build(runs, runs_dir, out)   # None: no bbob runs
    sweep = store.read_json(runs_dir / "sweep.json") if (runs_dir / "sweep.json").exists() else {}
    ctx = {"runs_dir": str(runs_dir), "runs": runs, "tables": table_files, "figures": figures,
           "env": environment(runs), "incompatible": sweep.get("incompatible", []),
           "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "cost": cost, "coco": cocopp_result, "summary": sentences, "equivalence": equivalence_files}
    # the fixed-target analysis has its own page (many tables and figures), linked from the index
    title = "Fixed-target analysis, uncertainty and ECDFs"
    (out / "analysis.md").write_text("\n".join([f"# {title}", "", *_blocks_md(fixed["blocks"])]))
    (out / "analysis.html").write_text("\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{title}</title>",
        f"<style>{CSS}</style></head><body>", f"<h1>{title}</h1>", *_blocks_html(fixed["blocks"]),
        "</body></html>", ""]))
    (out / "index.md").write_text(_markdown(ctx))
    (out / "index.html").write_text(_html(ctx))
    written = [*figures["curves"].values(), *figures["memory_by_size"].values(),
               *(figures[k] for k in ("memory", "memory_quality", "profile") if figures[k]),
               *(content for kind, content in fixed["blocks"] if kind == "img")]
    return {"out": str(out), "runs": len(runs), "tables": table_files, "figures": figures,
            "figure_files": sorted(set(written)), "coco": cocopp_result}


NOTES = [
    "Statistics are over the seeds whose run ended with status ok (sample standard deviation, "
    "ddof=1); failed and diverged runs are counted in their own columns, never averaged.",
    "Loss is each optimizer's train loss as it records it (see its adapter's docstring); the "
    "metric is the problem's held-out evaluation, the like-for-like comparison.",
    "Wall-clock in the curves is optimizer time (the time inside steps; evaluations of the metric "
    "and checkpoints excluded); the table's wall-clock is the whole run.",
    "Peak memory on CPU is the peak resident set size of the run's own process (interpreter and "
    "libraries included); on CUDA the allocator's peak (tensors only).",
    f"Performance profile (Dolan-More): {profile.NOTE}",
]


def _no_profile(runs: pd.DataFrame) -> str:
    n = runs["problem"].nunique()
    if n < analysis.MIN_PROFILE_PROBLEMS:
        return analysis.profile_skipped(n)
    return "No problem has a finite loss to build a profile from."


def _failed(runs: pd.DataFrame) -> pd.DataFrame:
    bad = runs[~runs["status"].isin(["ok"])]
    return bad[["run_id", "optimizer", "problem", "seed", "status", "reason"]]


def _markdown(ctx: dict) -> str:
    runs = ctx["runs"]
    counts = ", ".join(f"{n} {s}" for s, n in runs["status"].value_counts().sort_index().items())
    lines = [
        "# Optimizer comparison report", "",
        f"Generated {ctx['generated']} by harness {harness.__version__} from `{ctx['runs_dir']}` "
        f"({len(runs)} runs: {counts}). All runs: [runs.csv](runs.csv).", "",
        "## Summary", "", *[line for s in ctx["summary"] for line in (f"- {s}",)], "",
        *_equivalence_md(ctx["equivalence"]),
        "## Environment of the runs", "", ctx["env"].to_markdown(index=False), "",
        "## Final results", "",
        "All problems in one file: [final_results.csv](final_results.csv).", "",
    ]
    for problem, f in ctx["tables"].items():
        lines += [f"### {problem}", "", f"[Markdown]({f['md']}) · [CSV]({f['csv']})", "", f["markdown"], ""]
        if problem in ctx["figures"]["curves"]:
            name = ctx["figures"]["curves"][problem]
            lines += [f"![{problem} curves]({name})", ""]
    lines += ["## Peak memory", ""]
    if ctx["figures"]["memory_quality"]:
        lines += ["### Memory against final quality", "", MEMORY_QUALITY, "",
                  f"![memory against quality]({ctx['figures']['memory_quality']})", ""]
    if ctx["figures"]["memory"]:
        lines += [f"![peak memory]({ctx['figures']['memory']})", ""]
    for family, name in ctx["figures"]["memory_by_size"].items():
        lines += [f"### {family}: by model size", "", f"![{family} memory by size]({name})", ""]
    lines += ["## Performance profile", ""]
    if ctx["figures"]["profile"]:
        lines += [f"![performance profile]({ctx['figures']['profile']})", "",
                  "Costs per problem and optimizer: [profile_costs.csv](profile_costs.csv).", ""]
    else:
        lines += [_no_profile(runs), ""]
    lines += ["## Fixed-target analysis, uncertainty, ECDFs", "", ANALYSIS_LINE.format(
        md="[analysis.md](analysis.md)", html="[analysis.html](analysis.html)"), ""]
    if ctx["coco"]:
        lines += ["## COCO post-processing (cocopp)", "", _coco_line(ctx["coco"], markdown=True), ""]
    failed = _failed(runs)
    if len(failed):
        lines += ["## Runs that did not finish ok", "", failed.to_markdown(index=False), ""]
    if ctx["incompatible"]:
        lines += ["## Pairs skipped by the sweep (incompatible kinds)", ""]
        lines += [f"- {i['optimizer']} x {i['problem']}: {i['reason']}" for i in ctx["incompatible"]] + [""]
    lines += ["## How the numbers are measured", ""] + [f"- {n}" for n in NOTES] + [""]
    return "\n".join(lines)


CSS = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}th,td{border:1px solid #ccc;
padding:.25em .6em;text-align:right}th{background:#f0f0f0}td{white-space:nowrap}td:first-child{text-align:left}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0 1.5em}code{background:#f4f4f4}
.scroll{overflow-x:auto}@page{size:420mm 297mm;margin:12mm}"""


def _table_html(frame: pd.DataFrame) -> str:
    return '<div class="scroll">' + frame.to_html(index=False, border=0, na_rep="-", escape=True) + "</div>"


def _html(ctx: dict) -> str:
    esc = html.escape
    runs = ctx["runs"]
    counts = ", ".join(f"{n} {s}" for s, n in runs["status"].value_counts().sort_index().items())
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>Optimizer comparison report</title>", f"<style>{CSS}</style></head><body>",
        "<h1>Optimizer comparison report</h1>",
        f"<p>Generated {esc(ctx['generated'])} by harness {esc(harness.__version__)} from "
        f"<code>{esc(ctx['runs_dir'])}</code> ({len(runs)} runs: {esc(counts)}). "
        '<a href="runs.csv">All runs (CSV)</a>.</p>',
        "<h2>Summary</h2><ul>", *[f"<li>{_bold(_links(s))}</li>" for s in ctx["summary"]], "</ul>",
        *_equivalence_html(ctx["equivalence"]),
        "<h2>Environment of the runs</h2>", _table_html(ctx["env"]),
        '<h2>Final results</h2><p>All problems in one file: <a href="final_results.csv">final_results.csv</a>.</p>',
    ]
    for problem, f in ctx["tables"].items():
        parts += [f"<h3>{esc(problem)}</h3>",
                  f'<p><a href="{esc(f["md"])}">Markdown</a> · <a href="{esc(f["csv"])}">CSV</a></p>',
                  _md_table_to_html(f["markdown"])]
        if problem in ctx["figures"]["curves"]:
            name = ctx["figures"]["curves"][problem]
            parts.append(f'<a href="{esc(name)}"><img src="{esc(name)}" alt="{esc(problem)} curves"></a>')
    parts.append("<h2>Peak memory</h2>")
    if ctx["figures"]["memory_quality"]:
        name = esc(ctx["figures"]["memory_quality"])
        parts += ["<h3>Memory against final quality</h3>", f"<p>{esc(MEMORY_QUALITY)}</p>",
                  f'<a href="{name}"><img src="{name}" alt="memory against final quality"></a>']
    if ctx["figures"]["memory"]:
        parts.append(f'<a href="memory.png"><img src="{esc(ctx["figures"]["memory"])}" alt="peak memory"></a>')
    for family, name in ctx["figures"]["memory_by_size"].items():
        parts += [f"<h3>{esc(family)}: by model size</h3>",
                  f'<a href="{esc(name)}"><img src="{esc(name)}" alt="{esc(family)} memory by size"></a>']
    parts.append("<h2>Performance profile</h2>")
    if ctx["figures"]["profile"]:
        parts += ['<a href="profile.png"><img src="profile.png" alt="performance profile"></a>',
                  '<p>Costs per problem and optimizer: <a href="profile_costs.csv">profile_costs.csv</a>.</p>']
    else:
        parts.append(f"<p>{esc(_no_profile(runs))}</p>")
    parts += ["<h2>Fixed-target analysis, uncertainty, ECDFs</h2>", "<p>" + ANALYSIS_LINE.format(
        md='<a href="analysis.md">analysis.md</a>', html='<a href="analysis.html">analysis.html</a>') + "</p>"]
    if ctx["coco"]:
        parts += ["<h2>COCO post-processing (cocopp)</h2>", f"<p>{_coco_line(ctx['coco'], markdown=False)}</p>"]
    failed = _failed(runs)
    if len(failed):
        parts += ["<h2>Runs that did not finish ok</h2>", _table_html(failed)]
    if ctx["incompatible"]:
        parts += ["<h2>Pairs skipped by the sweep (incompatible kinds)</h2><ul>"]
        parts += [f"<li>{esc(i['optimizer'])} x {esc(i['problem'])}: {esc(i['reason'])}</li>"
                  for i in ctx["incompatible"]] + ["</ul>"]
    parts += ["<h2>How the numbers are measured</h2><ul>"] + [f"<li>{esc(n)}</li>" for n in NOTES]
    parts += ["</ul></body></html>", ""]
    return "\n".join(parts)


ANALYSIS_LINE = ("Runtimes to COCO/IOH targets and aRT on every cost axis, significance tests (Mann-Whitney U, "
                 "Holm), scores against random search, ECDFs with AUC, the AlgoPerf profile score and the "
                 "IOHanalyzer export: {md} · {html} (formulas: docs/analysis.md).")


MEMORY_QUALITY = ("Each point is one seed: its peak memory (log) against its final metric; the dashed line is "
                  "the Pareto front. On CPU the peak is the process's RSS; where the runs recorded the planner's "
                  "framework baseline (interpreter + libraries) it is subtracted, as the axis says.")
EQUIVALENCE_TITLE = "Compute-equivalent multiplier"


def _equivalence_md(files: dict) -> list[str]:
    if not files:
        return [f"## {EQUIVALENCE_TITLE}", "", NO_REFERENCE, ""]
    lines = [f"## {EQUIVALENCE_TITLE}", "", summary.LEGEND, ""]
    for problem, f in files.items():
        lines += [f"### {problem} (reference {f['reference']})", "", f"[Markdown]({f['md']}) · "
                  "[CSV](equivalence.csv)", "", f["markdown"], ""]
    return lines


def _equivalence_html(files: dict) -> list[str]:
    esc = html.escape
    if not files:
        return [f"<h2>{EQUIVALENCE_TITLE}</h2>", f"<p>{esc(NO_REFERENCE)}</p>"]
    parts = [f"<h2>{EQUIVALENCE_TITLE}</h2>", f"<p>{esc(summary.LEGEND)}</p>"]
    for problem, f in files.items():
        parts += [f"<h3>{esc(problem)} (reference {esc(f['reference'])})</h3>",
                  f'<p><a href="{esc(f["md"])}">Markdown</a> · <a href="equivalence.csv">CSV</a></p>',
                  _md_table_to_html(f["markdown"])]
    return parts


NO_REFERENCE = ("No multiplier: no gradient (backprop) optimizer among the runs to measure the others against "
                "(reports.equivalence.multipliers takes a reference by name).")


def _blocks_md(blocks) -> list[str]:
    lines = []
    for kind, content in blocks:
        lines += {"h2": [f"## {content}", ""], "h3": [f"### {content}", ""], "p": [content, ""],
                  "md": [content, ""], "img": [f"![{content}]({content})", ""]}[kind]
    return lines


def _blocks_html(blocks) -> list[str]:
    esc = html.escape
    render = {"h2": lambda c: f"<h2>{esc(c)}</h2>", "h3": lambda c: f"<h3>{esc(c)}</h3>",
              "p": lambda c: f"<p>{_links(c)}</p>", "md": _md_table_to_html,
              "img": lambda c: f'<a href="{esc(c)}"><img src="{esc(c)}" alt="{esc(c)}"></a>'}
    return [render[kind](content) for kind, content in blocks]


def _links(text: str) -> str:
    """Escaped text with its Markdown links [name](href) as <a> elements."""
    import re

    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', html.escape(text, quote=False))


def _bold(text: str) -> str:
    """Markdown's **bold** as <b> (in text already escaped)."""
    import re

    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)


def _coco_line(result: dict, markdown: bool) -> str:
    """One line: the link to cocopp's pages, or why there are none."""
    note = result["note"] if markdown else html.escape(result["note"])
    if not result["index"]:
        return note
    link = (f"[cocopp's report]({result['index']})" if markdown
            else f'<a href="{html.escape(result["index"])}">cocopp\'s report</a>')
    return f"{link}: {note}."


def _md_table_to_html(text: str) -> str:
    """The Markdown table's cells (mean ± std) as an HTML table."""
    rows = [r.strip().strip("|").split("|") for r in text.splitlines() if r.strip()]
    head, body = rows[0], [r for r in rows[2:]]
    cells = "".join(f"<th>{html.escape(c.strip())}</th>" for c in head)
    out = ['<div class="scroll"><table><thead><tr>' + cells + "</tr></thead><tbody>"]
    out += ["<tr>" + "".join(f"<td>{_bold(html.escape(c.strip()))}</td>" for c in r) + "</tr>" for r in body]
    return "\n".join(out + ["</tbody></table></div>"])
