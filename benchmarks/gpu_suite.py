"""One GPU measurement script: memory (measured vs planned), speed and MFU (run on demand).

    python benchmarks/gpu_suite.py --out gpu_suite_out          # one CUDA GPU, under 8 minutes
    python benchmarks/gpu_suite.py --smoke --out /tmp/smoke     # CPU, tiny sizes, seconds (tested)

Writes OUT/gpu_suite.json and OUT/gpu_suite.md (a Markdown table to commit as
docs/gpu.md's figures, with the command and the device next to them).

Memory: each (optimizer, problem) is one real run through the runner (2 steps,
bf16 weights on CUDA, the problem's GPU presets), so the measured figure is the
run's own peak_memory_bytes (the CUDA allocator's max_memory_allocated after a
reset at run start, as every run records it), next to the planner's prediction
(harness.planner.plan, the figure the preflight uses). Rows: es, mezo and adam
at qwen3-0.5b and qwen3-1.7b, es at qwen3-8b. A run the preflight refuses is
recorded as refused, not forced.

Speed, at qwen3-0.5b (one built problem, methods interleaved, median of
--reps): one plain forward of the step's batch (problem.loss, no grad); one
es iteration of N members (in place, sequential) and its ratio to N forwards;
one eggroll iteration of N members (members_per_forward = the largest K from
N, N/2, ... that the planner fits in 85% of the device memory); one mezo step
and one adam step. Members per second = N / iteration time.

MFU = estimated FLOPs / time / peak FLOPs of the device. FLOPs, analytic (the
nanoGPT / Kaplan estimate, attention's T^2 term left out): a forward costs
2 P tokens, a forward+backward 6 P tokens, with P the model's parameter count
(embedding included: the tied lm_head matmul is real work) and tokens = samples
x seq_len of the step's batch. So: forward 2PT, es and eggroll N x 2PT per
iteration (eggroll's low-rank terms add 2 r (m + n) per token and layer,
ignored), mezo 2 x 2PT, adam 6PT. Peak: dense bf16 tensor-core FLOP/s of the
device from PEAK_TFLOPS by name, or --peak-tflops; unknown: MFU not reported.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's packages

import torch  # noqa: E402

# Dense bf16 tensor-core peak (no sparsity), TFLOP/s, from the vendors' data sheets.
PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0,
               "H100 NVL": 835.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0,
               "RTX 4090": 165.0}

FULL = {
    "memory": [("es", "qwen3-0.5b"), ("mezo", "qwen3-0.5b"), ("adam", "qwen3-0.5b"),
               ("es", "qwen3-1.7b"), ("mezo", "qwen3-1.7b"), ("adam", "qwen3-1.7b"), ("es", "qwen3-8b")],
    "memory_sets": {"problem.dtype": "bfloat16", "optimizer.population": "4"},
    "speed_problem": "qwen3-0.5b", "speed_sets": {"dtype": "bfloat16"}, "population": 30,
}
SMOKE = {
    "memory": [("es", "qwen3-tiny"), ("mezo", "qwen3-tiny"), ("adam", "qwen3-tiny")],
    "memory_sets": {"problem.samples": "2", "problem.eval_samples": "4", "optimizer.population": "4"},
    "speed_problem": "qwen3-tiny", "speed_sets": {"samples": "2"}, "population": 4,
}


def peak_flops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    if override:
        return override * 1e12, f"--peak-tflops {override:g}"
    if device.type != "cuda":
        return None, "unknown (CPU)"
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_TFLOPS.items():
        if key.lower() in name.lower():
            return tflops * 1e12, f"{name}: {tflops:g} TFLOP/s bf16 dense"
    return None, f"{name}: unknown peak (pass --peak-tflops)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def memory_row(optimizer: str, problem: str, sets: dict, device: torch.device) -> dict:
    """One 2-step run: its recorded peak against the planner's prediction."""
    from harness import planner, runner
    from harness.errors import HarnessError

    if optimizer != "es":   # population is es's own hyperparameter
        sets = {k: v for k, v in sets.items() if k != "optimizer.population"}
    plan = planner.plan(optimizer, problem, sets, device=device.type)
    row = {"optimizer": optimizer, "problem": problem, "planned_bytes": plan.peak_bytes,
           "planned_breakdown": plan.breakdown}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        spec = runner.RunSpec(optimizer, problem, seed=0, budget=runner.Budget(steps=2), overrides=sets,
                              device=str(device), eval_every=1000, checkpoint_every=0, runs_dir=tmp)
        try:
            _, summary = runner.run(spec, progress=False)
        except HarnessError as exc:   # the preflight refused it: recorded, not forced
            row.update(status="refused", reason=str(exc).splitlines()[0])
            return row
    free(device)
    row.update(status=summary["status"], reason=summary.get("reason"), seconds=time.perf_counter() - t0,
               measured_bytes=summary["peak_memory_bytes"], measured_as=summary["peak_memory_method"])
    if summary["peak_memory_bytes"]:
        row["planned_over_measured"] = plan.peak_bytes / summary["peak_memory_bytes"]
    return row


def eggroll_chunk(problem: str, sets: dict, n: int, device: torch.device) -> int:
    """The largest K in N, N/2, ... whose eggroll plan fits in 85% of the device's memory."""
    from harness import planner

    if device.type != "cuda":
        return n
    have = 0.85 * torch.cuda.get_device_properties(device).total_memory
    k = n
    while k > 1:
        plan = planner.plan("eggroll", problem, {**{f"problem.{a}": b for a, b in sets.items()},
                                                 "optimizer.population": str(n),
                                                 "optimizer.members_per_forward": str(k)}, device="cuda")
        if plan.peak_bytes <= have:
            return k
        k = max(k // 2, 1)
    return 1


def speed(cfg: dict, device: torch.device, reps: int, peak: float | None) -> dict:
    from harness import registry

    n, name = cfg["population"], cfg["speed_problem"]
    k = eggroll_chunk(name, cfg["speed_sets"], n, device)
    prob = registry.problem(name).create(cfg["speed_sets"])
    prob.build(device)
    params, tokens = prob.param_count(), prob.hp["samples"] * prob.hp["seq_len"]
    fwd = 2 * params * tokens
    opts = {"es": registry.optimizer("es").build(prob, 0, population=n),
            "eggroll": registry.optimizer("eggroll").build(prob, 0, population=n, members_per_forward=k),
            "mezo": registry.optimizer("mezo").build(prob, 0),
            "adam": registry.optimizer("adam").build(prob, 0)}
    for opt in opts.values():
        opt.setup()
    flops = {"forward": fwd, "es": n * fwd, "eggroll": n * fwd, "mezo": 2 * fwd, "adam": 3 * fwd}
    batch = prob.batch(0)

    def forward(_k):
        with torch.no_grad():
            prob.loss(batch)

    work = {"forward": forward, **{m: opt.step for m, opt in opts.items()}}
    times: dict[str, list[float]] = {m: [] for m in work}
    for rep in range(reps + 1):                       # rep 0: warm-up (kernels, allocator)
        for m, fn in work.items():
            sync(device)
            t0 = time.perf_counter()
            fn(rep)
            sync(device)
            if rep:
                times[m].append(time.perf_counter() - t0)
    out = {"problem": name, "params": params, "tokens_per_batch": tokens, "population": n,
           "eggroll_members_per_forward": k, "reps": reps, "methods": {}}
    for m, ts in times.items():
        t = statistics.median(ts)
        row = {"seconds": t, "flops": flops[m], "mfu": flops[m] / t / peak if peak else None}
        if m in ("es", "eggroll"):
            row["members_per_s"] = n / t
        out["methods"][m] = row
    meth = out["methods"]
    out["es_iteration_over_n_forwards"] = meth["es"]["seconds"] / (n * meth["forward"]["seconds"])
    out["eggroll_over_es_members_per_s"] = meth["eggroll"]["members_per_s"] / meth["es"]["members_per_s"]
    return out


def markdown(result: dict) -> str:
    gib = 2**30
    lines = [f"Device: {result['device']} ({result['device_name']}); torch {result['torch']}; "
             f"peak for MFU: {result['peak']}; total {result['seconds']:.0f} s; "
             f"command: `{result['command']}`", "",
             "| optimizer | problem | planned GiB | measured GiB | planned / measured | status |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    for r in result["memory"]:
        measured = f"{r['measured_bytes'] / gib:.2f}" if r.get("measured_bytes") else "-"
        ratio = f"{r['planned_over_measured']:.2f}" if r.get("planned_over_measured") else "-"
        lines.append(f"| {r['optimizer']} | {r['problem']} | {r['planned_bytes'] / gib:.2f} | {measured} | "
                     f"{ratio} | {r['status']} |")
    s = result.get("speed")
    if s:
        lines += ["", f"Speed on {s['problem']} ({s['params']:,} params, {s['tokens_per_batch']} tokens per "
                  f"batch), population {s['population']}, eggroll {s['eggroll_members_per_forward']} members "
                  f"per forward, median of {s['reps']}:", "",
                  "| method | seconds | members/s | est. FLOPs | MFU |", "| --- | ---: | ---: | ---: | ---: |"]
        for m, r in s["methods"].items():
            mps = f"{r['members_per_s']:.1f}" if "members_per_s" in r else "-"
            mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
            lines.append(f"| {m} | {r['seconds']:.4f} | {mps} | {r['flops']:.3g} | {mfu} |")
        lines += ["", f"es iteration / (N x forward) = {s['es_iteration_over_n_forwards']:.2f}; "
                  f"eggroll / es members per second = {s['eggroll_over_es_members_per_s']:.2f}x"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("gpu_suite_out"))
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: checks the script in seconds")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU, TFLOP/s")
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="skip the remaining parts once this many seconds have passed")
    args = ap.parse_args(argv)
    from harness import registry

    registry.load_all()
    t_start = time.perf_counter()
    if args.smoke:
        cfg, device, args.reps = SMOKE, torch.device("cpu"), 1
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            raise SystemExit("gpu_suite: no CUDA device here; use --smoke to check the script on CPU")
        cfg, device = FULL, torch.device("cuda")
    peak, peak_text = peak_flops(device, args.peak_tflops)
    result = {"device": device.type, "torch": torch.__version__, "peak": peak_text, "smoke": args.smoke,
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "command": "python benchmarks/gpu_suite.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "memory": [], "speed": None, "skipped": []}
    for optimizer, problem in cfg["memory"]:
        if time.perf_counter() - t_start > args.budget_s:
            result["skipped"].append(f"memory {optimizer} {problem}")
            continue
        result["memory"].append(memory_row(optimizer, problem, cfg["memory_sets"], device))
        print(json.dumps(result["memory"][-1]), flush=True)
    if time.perf_counter() - t_start <= args.budget_s:
        result["speed"] = speed(cfg, device, args.reps, peak)
        free(device)
    else:
        result["skipped"].append("speed")
    result["seconds"] = time.perf_counter() - t_start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_suite.json").write_text(json.dumps(result, indent=2))
    (args.out / "gpu_suite.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
