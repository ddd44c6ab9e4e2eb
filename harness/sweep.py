"""Sweeps: every compatible (optimizer, problem, seed) as its own `harness run` process.

One process per run keeps peak memory per run (the run's own VmHWM) and
contains crashes: a child that raises records `failed` itself; a child that
dies without a summary (out-of-memory kill, segfault) gets one written here.
Run directories have deterministic names, so re-running a sweep skips what
is complete and resumes what was interrupted (`run --resume`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from harness import registry, store
from harness.errors import UsageError

DONE = ("ok", "diverged")
# Test hook: "OPT:PROBLEM:SEED" makes that one run raise at step 2; append ":kill"
# to make it die without a summary instead (what an out-of-memory kill leaves).
FAIL_HOOK = "HARNESS_TEST_SWEEP_FAIL"


@dataclass(frozen=True)
class RunItem:
    optimizer: str
    problem: str
    seed: int
    budget: dict                      # {"steps": N} or {"evals": N} or {"time_s": S}
    sets: tuple = ()                  # (("key", "value"), ...) applied to this run

    @property
    def name(self) -> str:
        """Deterministic directory name: same request, same directory."""
        (key, value), = [(k, v) for k, v in self.budget.items() if v is not None]
        tag = {"steps": f"steps{value}", "evals": f"evals{value}", "time_s": f"time{value:g}s"}[key]
        name = f"{self.optimizer}_{self.problem}_s{self.seed}_{tag}"
        if self.sets:
            digest = hashlib.sha1(json.dumps(sorted(self.sets)).encode()).hexdigest()[:8]
            name += f"_{digest}"
        return name

    @property
    def label(self) -> str:
        return f"{self.optimizer} on {self.problem} seed={self.seed}"

    def budget_args(self) -> list[str]:
        flags = {"steps": "--steps", "evals": "--evals", "time_s": "--time"}
        return [a for k, v in self.budget.items() if v is not None for a in (flags[k], str(v))]


@dataclass
class Outcome:
    item: RunItem
    status: str                       # ok, diverged, failed, interrupted, skipped
    reason: str | None
    run_dir: Path
    action: str                       # ran, resumed, already-done, already-failed
    seconds: float = 0.0


@dataclass
class Plan:
    items: list[RunItem] = field(default_factory=list)
    incompatible: list[tuple[str, str, str]] = field(default_factory=list)  # (opt, prob, why)


def _route_sets(sets: dict[str, str], opt_schema: dict, prob_schema: dict) -> tuple:
    """The --set items that concern this pair (a key neither side declares is left out)."""
    out = []
    for key, value in sets.items():
        side, _, bare = key.partition(".")
        if side == "optimizer" and bare:
            use = bare in opt_schema
        elif side == "problem" and bare:
            use = bare in prob_schema
        else:
            use = key in opt_schema or key in prob_schema
        if use:
            out.append((key, value))
    return tuple(sorted(out))


def plan(optimizers: list[str], problems: list[str], seeds: list[int], budget: dict,
         sets: dict[str, str] | None = None, validate: bool = True, device: str = "auto") -> Plan:
    """Resolve names, split compatible from incompatible pairs, route --set keys.

    Every name and --set value is validated here (as `run` would), so bad input
    fails before the first run starts.
    """
    from harness.params import schema_of

    sets = sets or {}
    if not optimizers or not problems or not seeds:
        raise UsageError("sweep needs --optimizers A,B,... --problems X,Y,... and --seeds 0,1,...")
    opts = [registry.optimizer(o) for o in optimizers]
    probs = [registry.problem(p) for p in problems]
    result = Plan()
    used = set()
    for opt in opts:
        for prob in probs:
            try:
                registry.check_compatible(opt, prob)
            except UsageError as exc:
                result.incompatible.append((opt.name, prob.name, str(exc)))
                continue
            pair_sets = _route_sets(sets, schema_of(opt.factory), prob.schema()[0])
            used.update(k for k, _ in pair_sets)
            for seed in seeds:
                result.items.append(RunItem(opt.name, prob.name, seed, dict(budget), pair_sets))
    unused = sorted(set(sets) - used)
    if unused:
        raise UsageError(f"--set {unused[0]}: no optimizer or problem of this sweep declares it "
                         f"(see `python -m harness list`; prefix optimizer. or problem. if needed)")
    if not result.items:
        raise UsageError("no compatible optimizer/problem pair in this sweep: "
                         + "; ".join(why for _, _, why in result.incompatible))
    if validate:
        _validate(result.items, device)
    return result


def _validate(items: list[RunItem], device: str = "auto") -> None:
    from harness.runner import Budget, Prepared, RunSpec

    seen = set()
    for it in items:
        key = (it.optimizer, it.problem, it.sets)
        if key in seen:
            continue
        seen.add(key)
        Prepared(RunSpec(optimizer=it.optimizer, problem=it.problem, seed=it.seed,
                         budget=Budget(**it.budget), overrides=dict(it.sets), device=device))


def state_of(run_dir: Path) -> str:
    """new, done, failed, resumable or stale (a directory that cannot be resumed)."""
    if not run_dir.exists():
        return "new"
    summary_path = run_dir / "summary.json"
    if not (run_dir / "config.json").exists():
        return "stale"
    status = store.read_json(summary_path).get("status") if summary_path.exists() else None
    if status in DONE:
        return "done"
    if status == "failed":
        return "failed"
    return "resumable" if (run_dir / "checkpoint.pt").exists() else "stale"


def _child_env(item: RunItem) -> dict:
    env = dict(os.environ)
    hook = env.pop(FAIL_HOOK, "")
    parts = hook.split(":")
    if len(parts) >= 3 and parts[:3] == [item.optimizer, item.problem, str(item.seed)]:
        key = "HARNESS_TEST_KILL_AT_STEP" if parts[3:] == ["kill"] else "HARNESS_TEST_FAIL_AT_STEP"
        env[key] = "2"
    return env


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def _write_failure(item: RunItem, run_dir: Path, reason: str, wall_s: float, peak: int,
                   device: str) -> None:
    """A child that died without a summary: record what is known, status failed."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "config.json").exists():
        store.write_json(run_dir / "config.json", {
            "run_id": run_dir.name, "optimizer": item.optimizer, "problem": item.problem,
            "seed": item.seed, "budget": item.budget, "sets": dict(item.sets),
            "device_requested": device, "written_by": "sweep (the run never started)",
        })
    records = store.read_metrics(run_dir / "metrics.jsonl")
    losses = [r["loss"] for r in records if isinstance(r.get("loss"), (int, float))]
    metrics = [r["metric"] for r in records if isinstance(r.get("metric"), (int, float))]
    last = records[-1] if records else {}
    old = store.read_json(run_dir / "summary.json") if (run_dir / "summary.json").exists() else {}
    summary = dict(old)
    summary.update({
        "status": "failed", "reason": reason, "optimizer": item.optimizer, "problem": item.problem,
        "seed": item.seed, "steps": last.get("step", 0), "evals": last.get("evals", 0),
        "wall_clock_s": wall_s, "optimizer_time_s": last.get("time_s", 0.0),
        "final_loss": losses[-1] if losses else None, "best_loss": min(losses) if losses else None,
        "final_metric": metrics[-1] if metrics else None,
        "peak_memory_bytes": peak, "peak_memory_method": "peak_rss (of the child, via wait4; at least the sweep's own RSS)",
        "device": old.get("device", device), "written_by": "sweep",
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    summary.setdefault("kind", None)
    summary.setdefault("best_metric", None)
    summary.setdefault("metric_name", None)
    store.write_json(run_dir / "summary.json", summary)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def run_one(item: RunItem, runs_dir: Path, device: str = "auto", extra_args: tuple = (),
            retry_failed: bool = False, stop: threading.Event | None = None) -> Outcome:
    run_dir = runs_dir / item.name
    state = state_of(run_dir)
    if state == "done":
        s = store.read_json(run_dir / "summary.json")
        return Outcome(item, s["status"], s.get("reason"), run_dir, "already-done")
    if state == "failed" and not retry_failed:
        s = store.read_json(run_dir / "summary.json")
        return Outcome(item, "failed", s.get("reason"), run_dir, "already-failed")
    if stop is not None and stop.is_set():
        return Outcome(item, "skipped", "sweep interrupted", run_dir, "not-started")
    if state in ("stale", "failed"):
        shutil.rmtree(run_dir)  # our own deterministic directory; nothing to resume in it
        state = "new"
    cmd = [sys.executable, "-m", "harness", "run", "--no-progress"]
    if state == "resumable":
        cmd += ["--resume", str(run_dir)]
        action = "resumed"
    else:
        cmd += ["--optimizer", item.optimizer, "--problem", item.problem, "--seed", str(item.seed),
                *item.budget_args(), "--runs-dir", str(runs_dir), "--run-id", item.name,
                "--device", device, *extra_args]
        for key, value in item.sets:
            cmd += ["--set", f"{key}={value}"]
        action = "ran"
    log_dir = runs_dir / ".sweep-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{item.name}.log"
    t0 = time.perf_counter()
    header = f"$ {' '.join(cmd)}\n"
    with open(log_path, "ab") as log:
        log.write(header.encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_child_env(item))
        # wait4: this child's own rusage, so a killed run still has a peak RSS. Linux
        # starts a child's ru_maxrss at its parent's RSS, so this is an upper bound
        # (max of the child's peak and this sweep's RSS), used only for runs that
        # died before writing their own figure.
        _, wstatus, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(wstatus)
    wall = time.perf_counter() - t0
    rc = proc.returncode
    text = log_path.read_text(errors="replace")
    output = text.split(header, 1)[-1]  # what the child printed
    summary_path = run_dir / "summary.json"
    status = store.read_json(summary_path).get("status") if summary_path.exists() else None
    if status in DONE or status == "failed" or (status == "interrupted" and rc == 130):
        s = store.read_json(summary_path)
        reason = s.get("reason")
    else:
        if rc < 0:
            why = f"killed by {_signal_name(rc)}"
            if rc == -signal.SIGKILL:
                why += " (what the out-of-memory killer sends)"
        elif rc == 137:
            why = "exit code 137 (128+SIGKILL: killed, e.g. out of memory)"
        else:
            why = f"exit code {rc}"
        tail = _last_line(output)
        reason = f"process ended without a summary: {why}" + (f"; last output: {tail}" if tail else "")
        _write_failure(item, run_dir, reason, wall, int(usage.ru_maxrss) * 1024, device)
        status = "failed"
    if run_dir.exists():  # the child's output goes with its run (appended on resume)
        _append(run_dir / "sweep.log", text)
        log_path.unlink()
    return Outcome(item, status, reason, run_dir, action, wall)


def _append(path: Path, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text)


def execute(items: list[RunItem], runs_dir: Path, jobs: int = 1, device: str = "auto",
            extra_args: tuple = (), retry_failed: bool = False, echo=print) -> list[Outcome]:
    """Run the items, `jobs` processes at a time; one line per finished run."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    outcomes: list[Outcome] = []
    total = len(items)
    width = max(len(it.label) for it in items) if items else 0
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(run_one, it, runs_dir, device, extra_args, retry_failed, stop)
                   for it in items]
        try:
            for fut in as_completed(futures):
                o = fut.result()
                outcomes.append(o)
                took = f"{o.seconds:6.1f}s" if o.action in ("ran", "resumed") else "      -"
                why = f"  ({o.reason})" if o.status not in DONE and o.reason else ""
                echo(f"[{len(outcomes)}/{total}] {o.status:<11} {o.action:<14} {o.item.label:<{width}} "
                     f"{took}  {o.run_dir}{why}")
        except KeyboardInterrupt:
            stop.set()  # children got the SIGINT too and record `interrupted`
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    order = {id(it): i for i, it in enumerate(items)}
    return sorted(outcomes, key=lambda o: order[id(o.item)])


def sweep_record(runs_dir: Path, request: dict, plan_: Plan) -> None:
    """sweep.json in the runs directory: what was asked and what was skipped."""
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    store.write_json(Path(runs_dir) / "sweep.json", {
        **request,
        "runs": [it.name for it in plan_.items],
        "incompatible": [{"optimizer": o, "problem": p, "reason": why} for o, p, why in plan_.incompatible],
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })


def item_to_json(item: RunItem) -> dict:
    d = asdict(item)
    d["sets"] = dict(item.sets)
    return d
