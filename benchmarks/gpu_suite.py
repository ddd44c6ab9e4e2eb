"""One GPU measurement script: memory (measured vs planned), speed and MFU, the mission's
8B command, and the CUDA tests (docs/gpu.md).

    bash benchmarks/gpu_device.sh run OUT                       # the prepared command (GPU machine)
    python benchmarks/gpu_suite.py --out OUT --budget-s 330     # the same, without the offline install
    python benchmarks/gpu_suite.py --smoke --out /tmp/smoke     # CPU, tiny sizes, seconds (tested)

OUT/gpu_suite.json (everything) and OUT/gpu_suite.md (the tables) are rewritten after
every row, so a run cut short (budget, timeout, a crash) still leaves what it measured.
Every stage is guarded: an exception is recorded with its traceback and the next stage
runs. `--budget-s` skips what would start after that many seconds; a subprocess stage
gets the time that is left as its timeout.

Stages, in this order (the headline figures first):
  plans   the planner's prediction for every row below (no CUDA yet)
  speed   at the speed problem, methods interleaved in rotated order, median of --reps
          after one warm-up round:
          one plain forward of the step's batch (problem.loss, no grad); one es iteration
          of N members (in place, sequential) and its ratio to N forwards; one eggroll
          iteration of N members (members_per_forward: eggroll's auto, on CUDA the largest
          K in N, N/2, ... that the planner fits in 85% of the device); one mezo step;
          one adam step
  memory  each (optimizer, problem) one real 2-step run through the runner, bf16 weights,
          the problem's GPU presets: its recorded peak (max_memory_allocated after a reset
          at run start) against the plan; a run the preflight refuses is recorded refused
  cli     `python -m harness run --optimizer es --problem qwen3-8b --steps 3`, as a user
          types it (default settings), in its own process; its summary
  tests   the test cases that need CUDA (pytest -m cuda)
NCCL and FSDP2 need two ranks, so two GPUs (NCCL refuses two ranks on one device): a
one-GPU machine cannot run them, and this suite does not pretend to.

FLOPs are harness.costs' (the problem's forward_flops: 2 N + 4 L (H Q) T per token,
N = matmul parameters), the figures the runner records: forward F, es and eggroll N F per
iteration, mezo 2 F, adam 3 F. MFU = FLOPs / time / the device's dense bf16 peak
(harness.costs.peak_bf16_flops, or --peak-tflops).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's packages

import torch  # noqa: E402
from interleave import interleaved  # noqa: E402

GiB = 2**30
STAGES = ("speed", "memory", "cli", "tests")

FULL = {
    "memory": [("es", "qwen3-0.5b"), ("mezo", "qwen3-0.5b"), ("adam", "qwen3-0.5b"),
               ("es", "qwen3-1.7b"), ("mezo", "qwen3-1.7b"), ("adam", "qwen3-1.7b"),
               ("es", "qwen3-4b"), ("adam", "qwen3-4b"), ("es", "qwen3-8b"), ("adam", "qwen3-8b"),
               ("eggroll", "qwen3-0.5b")],
    "memory_sets": {"problem.dtype": "bfloat16"}, "memory_population": 4,
    "speed_problem": "qwen3-0.5b", "speed_sets": {"dtype": "bfloat16"}, "population": 30,
    "cli": ["run", "--optimizer", "es", "--problem", "qwen3-8b", "--steps", "3"],
}
SMOKE = {
    "memory": [("es", "qwen3-tiny"), ("mezo", "qwen3-tiny"), ("adam", "qwen3-tiny")],
    "memory_sets": {"problem.samples": "2", "problem.eval_samples": "4"}, "memory_population": 4,
    "speed_problem": "qwen3-tiny", "speed_sets": {"samples": "2"}, "population": 4,
    "cli": ["run", "--optimizer", "es", "--problem", "qwen3-tiny", "--steps", "3", "--set", "samples=2"],
}


class Suite:
    """The result dict, saved after every change; the budget clock."""

    def __init__(self, out: Path, budget_s: float, result: dict, device: torch.device):
        self.out, self.budget_s, self.result, self.device = out, budget_s, result, device
        self.t0 = time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def save(self) -> None:
        self.result["seconds"] = time.perf_counter() - self.t0
        for name, text in (("gpu_suite.json", json.dumps(self.result, indent=2, default=str)),
                           ("gpu_suite.md", markdown(self.result))):
            tmp = self.out / (name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.out / name)   # a reader never sees half a file

    def stage(self, name: str, fn) -> None:
        if self.left() <= 0:
            self.result["skipped"].append(name)
            self.save()
            return
        t = time.perf_counter()
        try:
            fn()
        except Exception as exc:   # noqa: BLE001 - recorded; the next stage still runs
            self.result["errors"].append({"stage": name, "error": f"{type(exc).__name__}: {exc}",
                                          "traceback": traceback.format_exc()[-4000:]})
            print(f"gpu_suite: stage {name} failed: {type(exc).__name__}: {exc}", flush=True)
        self.result["stage_seconds"][name] = round(time.perf_counter() - t, 1)
        free(self.device)
        self.save()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def peak_flops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    from harness.costs import peak_bf16_flops

    if override:
        return override * 1e12, f"--peak-tflops {override:g}"
    if device.type != "cuda":
        return None, "unknown (CPU)"
    peak = peak_bf16_flops(device)
    name = torch.cuda.get_device_name(device)
    if peak is None:
        return None, f"{name}: unknown peak (pass --peak-tflops)"
    return peak, f"{name}: {peak / 1e12:g} TFLOP/s bf16 dense (harness.costs)"


def row_sets(optimizer: str, cfg: dict) -> dict:
    """The memory rows' settings: a population-based optimizer at cfg's population, named
    in its own spelling (POPULATION_PARAM); its peak does not depend on it."""
    from harness import registry

    param = registry.optimizer(optimizer).factory.POPULATION_PARAM
    return {**cfg["memory_sets"], **({f"optimizer.{param}": str(cfg["memory_population"])} if param else {})}


def plan_rows(cfg: dict, device: torch.device, suite: Suite) -> None:
    """The planner's figure for every memory row and the cli run (no CUDA touched)."""
    from harness import planner

    plans = suite.result["plans"]
    for optimizer, problem in cfg["memory"]:
        p = planner.plan(optimizer, problem, row_sets(optimizer, cfg), device=device.type)
        plans[f"{optimizer} {problem}"] = {"bytes": p.peak_bytes, "breakdown": p.breakdown}
    args = cfg["cli"]
    p = planner.plan(args[args.index("--optimizer") + 1], args[args.index("--problem") + 1],
                     _cli_sets(args), device=device.type)
    plans["cli"] = {"bytes": p.peak_bytes, "breakdown": p.breakdown}


def _cli_sets(args: list[str]) -> dict:
    return dict(a.split("=", 1) for i, a in enumerate(args) if i and args[i - 1] == "--set")


def memory_row(optimizer: str, problem: str, sets: dict, device: torch.device, planned: dict) -> dict:
    """One 2-step run: its recorded peak against the planner's prediction."""
    from harness import runner
    from harness.errors import HarnessError

    row = {"optimizer": optimizer, "problem": problem, "planned_bytes": planned["bytes"],
           "planned_breakdown": planned["breakdown"],
           # tensors still allocated from earlier rows would count in this run's peak
           "allocated_before_bytes": torch.cuda.memory_allocated(device) if device.type == "cuda" else 0}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        spec = runner.RunSpec(optimizer, problem, seed=0, budget=runner.Budget(steps=2), overrides=sets,
                              device=str(device), eval_every=1000, checkpoint_every=0, runs_dir=tmp)
        try:
            _, summary = runner.run(spec, progress=False)
        except HarnessError as exc:   # the preflight refused it: recorded, not forced
            row.update(status="refused", reason=str(exc).splitlines()[0])
            return row
    row.update(status=summary["status"], reason=summary.get("reason"), seconds=time.perf_counter() - t0,
               measured_bytes=summary["peak_memory_bytes"], measured_as=summary["peak_memory_method"],
               optimizer_time_s=summary.get("optimizer_time_s"), mfu=summary.get("mfu"))
    if summary["peak_memory_bytes"]:
        row["planned_over_measured"] = planned["bytes"] / summary["peak_memory_bytes"]
        # In this process cuBLAS's workspaces outlive a run: the next run's peak counts those
        # already allocated instead of its own. Tensors alone compare like for like.
        ws = planned["breakdown"].get("cublas_workspace", 0)
        if ws:
            row["planned_tensors_over_measured"] = ((planned["bytes"] - ws) /
                                                    (summary["peak_memory_bytes"] - row["allocated_before_bytes"]))
    return row


def memory(cfg: dict, device: torch.device, suite: Suite) -> None:
    for optimizer, problem in cfg["memory"]:
        if suite.left() <= 0:
            suite.result["skipped"].append(f"memory {optimizer} {problem}")
            continue
        try:
            row = memory_row(optimizer, problem, row_sets(optimizer, cfg), device,
                             suite.result["plans"][f"{optimizer} {problem}"])
        except Exception as exc:   # noqa: BLE001 - one row's failure is a result too
            row = {"optimizer": optimizer, "problem": problem, "status": "error",
                   "reason": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
        suite.result["memory"].append(row)
        free(device)
        suite.save()
        print(json.dumps({k: v for k, v in row.items() if k not in ("planned_breakdown", "traceback")}),
              flush=True)


def speed(cfg: dict, device: torch.device, reps: int, peak: float | None) -> dict:
    from harness import registry

    n, name = cfg["population"], cfg["speed_problem"]
    prob = registry.problem(name).create(cfg["speed_sets"])
    prob.build(device)
    batch = prob.batch(0)
    params, tokens, fwd = prob.param_count(), prob.batch_tokens(batch), prob.forward_flops(batch)
    opts = {"es": registry.optimizer("es").build(prob, 0, population=n),
            "eggroll": registry.optimizer("eggroll").build(prob, 0, population=n),   # its auto K
            "mezo": registry.optimizer("mezo").build(prob, 0),
            "adam": registry.optimizer("adam").build(prob, 0)}
    for opt in opts.values():
        opt.setup()
    k = opts["eggroll"].hp["members_per_forward"]
    flops = {"forward": fwd, "es": n * fwd, "eggroll": n * fwd, "mezo": 2 * fwd, "adam": 3 * fwd}

    def forward(_k):
        with torch.no_grad():
            prob.loss(batch)

    work = {"forward": forward, **{m: opt.step for m, opt in opts.items()}}
    # rotated order (benchmarks/interleave.py), one warm-up round (kernels, allocator)
    times = interleaved(work, reps, sync=lambda: sync(device))
    out = {"problem": name, "params": params, "tokens_per_batch": tokens, "population": n,
           "forward_flops": fwd, "eggroll_members_per_forward": k, "reps": reps, "methods": {}}
    for m, ts in times.items():
        t = statistics.median(ts)
        row = {"seconds": t, "spread": [min(ts), max(ts)], "flops": flops[m],
               "mfu": flops[m] / t / peak if peak else None}
        if m in ("es", "eggroll"):
            row["members_per_s"] = n / t
        out["methods"][m] = row
    meth = out["methods"]
    out["es_iteration_over_n_forwards"] = meth["es"]["seconds"] / (n * meth["forward"]["seconds"])
    out["eggroll_over_es_members_per_s"] = meth["eggroll"]["members_per_s"] / meth["es"]["members_per_s"]
    return out


def _run(cmd: list[str], suite: Suite, cap: float, log: str | None = None) -> dict:
    """A subprocess with the time that is left (at most `cap` s); output tail kept, the
    whole output in OUT/`log` when named."""
    timeout = max(10.0, min(cap, suite.left()))
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        rc = "timeout"
        out = "".join(x.decode() if isinstance(x, bytes) else (x or "") for x in (exc.stdout, exc.stderr))
    if log:
        (suite.out / log).write_text(out)
    return {"command": "python " + " ".join(cmd[1:]), "rc": rc,
            "seconds": time.perf_counter() - t0, "timeout_s": timeout, "output_tail": out[-3000:]}


def _summary(runs_dir: Path) -> dict:
    found = sorted(runs_dir.glob("*/summary.json"))
    if not found:
        return {}
    s = json.loads(found[-1].read_text())
    keep = ("status", "reason", "steps", "evals", "peak_memory_bytes", "peak_memory_method", "wall_clock_s",
            "optimizer_time_s", "mfu", "flops", "final_loss", "final_metric", "world_size")
    return {k: s.get(k) for k in keep}


def cli_run(cfg: dict, suite: Suite) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        res = _run([sys.executable, "-m", "harness", *cfg["cli"], "--runs-dir", tmp], suite, 300)
        res["summary"] = _summary(Path(tmp))
    planned = suite.result["plans"].get("cli", {}).get("bytes")
    if planned and res["summary"].get("peak_memory_bytes"):
        res["planned_bytes"] = planned
        res["planned_over_measured"] = planned / res["summary"]["peak_memory_bytes"]
    return res


def cuda_tests(suite: Suite) -> dict:
    import importlib.util

    # -rA prints each test's captured output (the planner test's figures); xdist when present
    workers = ["-n", "4"] if importlib.util.find_spec("xdist") else []
    res = _run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *workers, "-m", "cuda",
                "tests"], suite, 300, log="cuda_tests.txt")
    tail = (suite.out / "cuda_tests.txt").read_text()
    # pytest's closing line (warnings may follow it)
    last = next((ln for ln in reversed(tail.splitlines()) if re.search(r"\d+ (passed|failed).* in [\d.]+s", ln)), "")
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", last)}
    res.update(counts=counts, figures=re.findall(r"^\w+ \S+: planned .* measured .*$", tail, re.M))
    return res


def markdown(result: dict) -> str:
    lines = [f"Device: {result['device']} ({result['device_name']}); torch {result['torch']}, "
             f"transformers {result['transformers']}; peak for MFU: {result['peak']}; "
             f"{result.get('seconds', 0):.0f} s; command: `{result['command']}`"]
    if result["memory"]:
        lines += ["", "| optimizer | problem | planned GiB | measured GiB | planned / measured | "
                  "tensors: planned / measured | status |", "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
        for r in result["memory"]:
            planned = f"{r['planned_bytes'] / GiB:.2f}" if r.get("planned_bytes") else "-"
            measured = f"{r['measured_bytes'] / GiB:.2f}" if r.get("measured_bytes") else "-"
            ratio = f"{r['planned_over_measured']:.3f}" if r.get("planned_over_measured") else "-"
            tensors = (f"{r['planned_tensors_over_measured']:.4f}" if r.get("planned_tensors_over_measured")
                       else "-")
            lines.append(f"| {r['optimizer']} | {r['problem']} | {planned} | {measured} | {ratio} | {tensors} | "
                         f"{r['status']} |")
    s = result.get("speed")
    if s:
        lines += ["", f"Speed on {s['problem']} ({s['params']:,} params, {s['tokens_per_batch']} tokens per "
                  f"batch), population {s['population']}, eggroll {s['eggroll_members_per_forward']} members "
                  f"per forward, median of {s['reps']} (min-max):", "",
                  "| method | seconds | members/s | est. FLOPs | MFU |", "| --- | ---: | ---: | ---: | ---: |"]
        for m, r in s["methods"].items():
            mps = f"{r['members_per_s']:.1f}" if "members_per_s" in r else "-"
            mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
            lo, hi = r["spread"]
            lines.append(f"| {m} | {r['seconds']:.4f} ({lo:.4f}-{hi:.4f}) | {mps} | {r['flops']:.3g} | {mfu} |")
        lines += ["", f"es iteration / (N x forward) = {s['es_iteration_over_n_forwards']:.3f}; "
                  f"eggroll / es members per second = {s['eggroll_over_es_members_per_s']:.2f}x"]
    r = result.get("cli")
    if r:
        sm = r.get("summary") or {}
        peak = f"{sm['peak_memory_bytes'] / GiB:.2f} GiB" if sm.get("peak_memory_bytes") else "-"
        extra = (f", planned / measured {r['planned_over_measured']:.3f}"
                 if r.get("planned_over_measured") else "")
        lines += ["", f"`{r['command']}`: rc {r['rc']}, status {sm.get('status')}, {r['seconds']:.0f} s "
                  f"with start-up; peak {peak} ({sm.get('peak_memory_method')}){extra}; "
                  f"optimizer time {sm.get('optimizer_time_s')}, MFU {sm.get('mfu')}, "
                  f"final metric {sm.get('final_metric')}"]
    t = result.get("tests")
    if t:
        lines += ["", f"CUDA tests (`{t['command']}`): {t['counts']}"] + [f"    {f}" for f in t["figures"]]
    for e in result["errors"]:
        lines += ["", f"ERROR in {e['stage']}: {e['error']}"]
    if result["skipped"]:
        lines += ["", "Skipped (budget): " + ", ".join(result["skipped"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("gpu_suite_out"))
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: checks the script in seconds")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU, TFLOP/s")
    ap.add_argument("--budget-s", type=float, default=330.0,
                    help="start nothing new once this many seconds have passed")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    args = ap.parse_args(argv)
    import transformers

    from harness import registry

    registry.load_all()
    stages = [s for s in args.stages.split(",") if s]
    if bad := [s for s in stages if s not in STAGES]:
        raise SystemExit(f"gpu_suite: unknown stage(s) {', '.join(bad)}; choose from {', '.join(STAGES)}")
    if args.smoke:
        cfg, device, args.reps = SMOKE, torch.device("cpu"), 1
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            raise SystemExit("gpu_suite: no CUDA device here; use --smoke to check the script on CPU")
        cfg, device = FULL, torch.device("cuda")
    result = {"device": device.type, "torch": torch.__version__, "transformers": transformers.__version__,
              "python": sys.version.split()[0], "smoke": args.smoke, "peak": None,
              "device_name": "cpu", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": "python benchmarks/gpu_suite.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "plans": {}, "memory": [], "speed": None, "cli": None, "tests": None,
              "skipped": [], "errors": [], "stage_seconds": {}}
    suite = Suite(args.out, args.budget_s, result, device)
    suite.stage("plans", lambda: plan_rows(cfg, device, suite))   # before any CUDA context
    if device.type == "cuda":
        result["device_name"] = torch.cuda.get_device_name(device)
    peak, result["peak"] = peak_flops(device, args.peak_tflops)
    for name in stages:
        if name == "speed":
            suite.stage("speed", lambda: result.update(speed=speed(cfg, device, args.reps, peak)))
        elif name == "memory":
            suite.stage("memory", lambda: memory(cfg, device, suite))
        elif name == "cli":
            suite.stage("cli", lambda: result.update(cli=cli_run(cfg, suite)))
        elif name == "tests" and not args.smoke:   # on CPU every CUDA test is skipped
            suite.stage("tests", lambda: result.update(tests=cuda_tests(suite)))
    suite.save()
    print(markdown(result), flush=True)
    return result


if __name__ == "__main__":
    main()
