"""ES overhead against plain forward passes (run on demand, not in CI).

    python benchmarks/es_overhead.py                       # qwen3-small, population 30
    python benchmarks/es_overhead.py --problem qwen3-tiny --population 10

Time (in this process): one ES iteration (N perturb/score/restore cycles plus
the update that regenerates all noise) divided by N x the time of one plain
forward of the same batch (problem.loss under no_grad, i.e. one fitness).
Target <= 1.10. The two sides are timed in one process on one torch thread,
interleaved in rotated order (forwards, ES, ES, forwards, ...: benchmarks/
interleave.py) after a warm-up round; the ratio printed is the median of the
per-repeat ratios with its spread (min-max). An ES iteration includes its N
forwards, so a median below 1 is a measurement error: it is flagged and the
script exits non-zero. `--no-memory`
skips the memory ratio below.

Memory (each measurement in a fresh subprocess, so nothing of one pollutes
the other): after imports, model build, batch creation and one warm-up
forward (one-time lazy allocations), the process's peak RSS (VmHWM) is reset
by writing 5 to /proc/self/clear_refs; then the measured work runs (N plain
forwards of the batch, or one ES iteration of N members: the same number of
forwards, so allocator slack from repeated forwards counts on both sides)
and the extra memory is VmHWM - RSS just before the work. Both children run
with glibc's malloc given fixed thresholds (MALLOC_MMAP_THRESHOLD_=65536,
MALLOC_TRIM_THRESHOLD_=0: large blocks are mmapped and unmapped on free, so
RSS tracks live tensors). With the default dynamic threshold the heap's
high-water mark reflects allocator history rather than live tensors: on
qwen3-small the same ratio came out 1.26, 1.30 and 0.13 in three runs.
`--default-malloc` measures that way anyway. The peak is weights + extra (weights =
the model's parameter bytes), and the ratio is
(weights + ES extra) / (weights + forward extra). Target <= 1.15. On CUDA the
allocator's peak (max_memory_allocated) is used instead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's packages

import torch  # noqa: E402
from interleave import impossible_below_one, interleaved, ratios, summary  # noqa: E402


def build(problem: str, device: str, overrides: dict):
    from harness import registry

    overrides = dict(overrides)
    pop = overrides.pop("_pop")
    prob = registry.problem(problem).create(overrides)
    prob.check()
    prob.build(torch.device(device))
    es = registry.optimizer("es").build(prob, 0, population=pop)
    es.setup()
    return prob, es


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def child_memory(args) -> None:
    """One measurement in this fresh process; prints a JSON line."""
    prob, es = build(args.problem, args.device, {"_pop": args.population, **dict(args.set)})
    batch = prob.batch(0)
    weights = sum(p.numel() * p.element_size() for p in prob.model.parameters())
    with torch.no_grad():
        prob.loss(batch)  # warm-up
    if args.device.startswith("cuda"):
        sync(args.device)
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")
        before = vm_kib("VmRSS") * 1024
    if args.child == "forward":
        with torch.no_grad():
            for _ in range(args.population):
                prob.loss(batch)
    else:
        es.update(0, es.gather_fitness(0, batch))
    sync(args.device)
    if args.device.startswith("cuda"):
        extra = torch.cuda.max_memory_allocated() - before
    else:
        extra = vm_kib("VmHWM") * 1024 - before
    print(json.dumps({"weights": weights, "extra": max(int(extra), 0)}))


FIXED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def measure_memory(args, what: str, env: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", what, "--problem", args.problem, "--device", args.device,
           "--population", str(args.population), "--threads", str(args.threads)]
    for k, v in args.set:
        cmd += ["--set", f"{k}={v}"]
    full_env = {k: v for k, v in os.environ.items() if k not in FIXED_MALLOC}
    full_env.update(env)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT, env=full_env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_pairs(args, env: dict) -> list[tuple[dict, dict]]:
    """args.mem_reps (forward, es) measurements, each in its own process, in rotated order."""
    pairs = []
    for r in range(max(args.mem_reps, 1)):
        order = ("forward", "es") if r % 2 == 0 else ("es", "forward")
        got = {what: measure_memory(args, what, env) for what in order}
        pairs.append((got["forward"], got["es"]))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="qwen3-small")
    ap.add_argument("--population", type=int, default=30)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--set", action="append", default=[], type=lambda s: tuple(s.split("=", 1)),
                    help="problem hyperparameter KEY=VALUE (repeatable)")
    ap.add_argument("--default-malloc", action="store_true",
                    help="measure CPU memory with glibc's default malloc thresholds (noisy)")
    ap.add_argument("--no-memory", action="store_true", help="time only")
    ap.add_argument("--mem-reps", type=int, default=5,
                    help="pairs of memory measurements (each side a fresh process, rotated order; "
                         "at qwen3-tiny one pair's ratio spreads 1.0-1.4)")
    ap.add_argument("--child", choices=["forward", "es"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.child:
        return child_memory(args)

    prob, es = build(args.problem, args.device, {"_pop": args.population, **dict(args.set)})
    batch = prob.batch(0)
    n = args.population

    def forwards(_r):
        with torch.no_grad():
            for _ in range(n):
                prob.loss(batch)

    def iteration(r):
        es.update(r, es.gather_fitness(r, batch))

    # one process, one thread, the two sides in rotated order (AB, BA, ...), every repeat kept
    times = interleaved({"forwards": forwards, "es": iteration}, args.reps, sync=lambda: sync(args.device))
    ratio = ratios(times["es"], times["forwards"])
    modes = {"fixed malloc thresholds": FIXED_MALLOC}
    if args.default_malloc:
        modes = {"default glibc malloc": {}}
    if args.device.startswith("cuda"):
        modes = {"CUDA allocator": {}}
    mem = {} if args.no_memory else {m: memory_pairs(args, env) for m, env in modes.items()}
    print(f"problem {args.problem} ({prob.param_count():,} params, {prob.hp['samples']} samples x "
          f"{prob.hp['seq_len']} tokens, micro_batch {prob.hp['micro_batch']}), population {n}, "
          f"device {args.device}, torch threads {args.threads}")
    print(f"forward (one fitness): {statistics.median(times['forwards']) / n * 1e3:.2f} ms; "
          f"ES iteration: {statistics.median(times['es']) * 1e3:.1f} ms (medians)")
    print(f"time ratio  ES iteration / (N x forward) = {summary(ratio)}  (target <= 1.10; per-repeat "
          f"ratios, sides interleaved in rotated order)")
    flag = impossible_below_one("ES iteration / (N x forward)", ratio)
    for mode, pairs in mem.items():
        peaks = [(f["weights"] + f["extra"], e["weights"] + e["extra"]) for f, e in pairs]
        mib = [[x / 2**20 for x in side] for side in zip(*[(f["extra"], e["extra"]) for f, e in pairs])]
        print(f"memory ({mode}): weights {pairs[0][0]['weights'] / 2**20:.1f} MiB; forward extra "
              f"{statistics.median(mib[0]):.1f} MiB; ES extra {statistics.median(mib[1]):.1f} MiB (medians); "
              f"ratio ES peak / forward peak = {summary([pe / pf for pf, pe in peaks])}  (target <= 1.15)")
    if flag:
        sys.exit(flag)


if __name__ == "__main__":
    main()
