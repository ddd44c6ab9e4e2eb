"""The memory table's files (studies/memory_table.py computes its rows): the table as
Markdown and CSV, the measured runs as CSV, and a PNG bar chart on a log scale."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

GiB = 2**30


def write(rows, optimizers, ratios, measured, device, overrides, population, out: Path) -> tuple[str, list[str]]:
    """memory_table.md, memory_table.csv, memory.png (and memory_measured.csv when runs were
    measured) in `out`; `ratios` [(a, b)]: the columns a/b (row key a_over_b). Returns the
    Markdown and the files written."""
    out.mkdir(parents=True, exist_ok=True)
    markdown = _markdown(rows, optimizers, ratios, measured, device, overrides, population)
    (out / "memory_table.md").write_text(markdown + "\n")
    flat = pd.DataFrame([{k: v for k, v in r.items() if not k.endswith(("_breakdown", "_settings"))}
                         for r in rows])
    flat.to_csv(out / "memory_table.csv", index=False)
    if measured:
        pd.DataFrame(measured).to_csv(out / "memory_measured.csv", index=False)
    _plot(rows, optimizers, measured, device, out / "memory.png")
    files = [str(out / f) for f in ("memory_table.md", "memory_table.csv", "memory.png")]
    if measured:
        files.append(str(out / "memory_measured.csv"))
    return markdown, files


def _gib(n) -> str:
    return "-" if n is None else f"{n / GiB:.2f}"


def _markdown(rows, optimizers, ratios, measured, device, overrides, population) -> str:
    what = ("torch.cuda.max_memory_allocated: tensors only" if device == "cuda"
            else "peak RSS of the run's process, framework included")
    head = ["problem", "parameters", "micro-batch"] + [f"{o} (GiB)" for o in optimizers]
    head += [f"{a}/{b}" for a, b in ratios]
    lines = [f"Predicted peak memory on {device} ({what}); population {population}"
             + (", " + ", ".join(f"{k}={v}" for k, v in overrides.items()) if overrides else "")
             + "; problem defaults otherwise.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ps = r.get("problem_settings", {})
        shape = (f"{ps['micro_batch']} x {ps['seq_len']} tok" if {"micro_batch", "seq_len"} <= set(ps) else "-")
        shape += f", {r['weight_dtype_bytes']}-byte weights"
        cells = [r["problem"], f"{r['params'] / 1e9:.2f}B" if r["params"] >= 1e8 else f"{r['params']:,}", shape]
        cells += [_gib(r.get(f"{o}_bytes")) for o in optimizers]
        cells += [f"{r[f'{a}_over_{b}']:.2f}" if f"{a}_over_{b}" in r else "-" for a, b in ratios]
        lines.append("| " + " | ".join(cells) + " |")
    if rows:
        lines += ["", "Settings per optimizer (first row): " + "; ".join(
            f"{o}: {rows[0].get(f'{o}_settings') or 'defaults'}" for o in optimizers)]
    if measured:
        lines += ["", "Measured runs (their own settings), against the plan of those settings:", "",
                  "| problem | optimizer | measured (GiB) | planned (GiB) | planned/measured | run |",
                  "|---|---|---|---|---|---|"]
        for m in measured:
            ratio = f"{m['planned_bytes'] / m['measured_bytes']:.2f}" if m["planned_bytes"] else "-"
            lines.append(f"| {m['problem']} | {m['optimizer']} | {_gib(m['measured_bytes'])} | "
                         f"{_gib(m['planned_bytes'])} | {ratio} | {m['run']} |")
    return "\n".join(lines)


def _plot(rows, optimizers, measured, device, path: Path) -> None:
    import numpy as np

    from reports.style import colour   # before pyplot: it chooses the Agg backend
    import matplotlib.pyplot as plt

    x = np.arange(len(rows))
    width = 0.8 / max(len(optimizers), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows) + 2), 4.5))
    index = {r["problem"]: i for i, r in enumerate(rows)}
    labelled = False
    for j, opt in enumerate(optimizers):
        offset = (j - (len(optimizers) - 1) / 2) * width
        vals = [r.get(f"{opt}_bytes", 0) / GiB for r in rows]
        ax.bar(x + offset, vals, width, label=f"{opt} (plan)", color=colour(opt))
        pts = [(index[m["problem"]] + offset, m["measured_bytes"] / GiB) for m in measured
               if m["optimizer"] == opt]
        if pts:
            ax.scatter(*zip(*pts), marker="D", color="black", zorder=3, s=18,
                       label=None if labelled else "measured (own settings)")
            labelled = True
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([r["problem"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("peak memory (GiB, log scale)")
    ax.set_title(f"Predicted peak memory per optimizer on {device}")
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
