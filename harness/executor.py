"""The one executor of batches of runs: each RunItem as its own `harness run` process.

One process per run keeps peak memory per run (the run's own VmHWM) and
contains crashes: a child that raises records `failed` itself; a child that
dies without a summary (out-of-memory kill, segfault) gets one written here.
Run directories are named by the item (RunItem.name), so executing the same
items again skips what is complete and resumes what was interrupted (`run
--resume`). Executors differ only in where the process runs: LocalExecutor
starts it as a child of this process.

Several executors may share a runs directory (two sweeps, a sweep and a
--resume): each item is handled under an OS lock (runs_dir/.locks/NAME.lock)
and each run holds its directory's own lock while it runs, so nobody deletes,
re-marks or restarts a run another live process owns; they wait for it and
take its result. A dead owner's locks are released by the kernel.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from harness import repair, store
from harness.errors import Terminated
from harness.experiments import RunItem
from harness.faults import sweep_child_env
from harness.heartbeat import Heartbeat

DONE = ("ok", "diverged")


class BatchTerminated(Terminated):
    """The batch was stopped by SIGTERM (its children checkpointed and stopped)."""


@dataclass
class Outcome:
    item: RunItem
    status: str                       # ok, diverged, failed, interrupted, skipped
    reason: str | None
    run_dir: Path
    action: str                       # ran, resumed, repaired, already-done, already-failed, not-started
    seconds: float = 0.0


def state_of(run_dir: Path) -> str:
    """new, done, failed, resumable, repairable (finished, by its metrics, but its summary
    is damaged or missing), stale (an unfinished directory that cannot be resumed) or
    busy (a live process runs it now)."""
    if not run_dir.exists():
        return "new"
    if store.run_lock(run_dir).held_elsewhere():
        return "busy"
    summary_path = run_dir / "summary.json"
    if not (run_dir / "config.json").exists():
        return "stale"
    try:
        status = store.read_json(summary_path).get("status") if summary_path.exists() else None
    except ValueError:
        status = None   # a damaged summary: what the checkpoint says decides
    if status in DONE:
        return "done"
    if status == "failed":
        return "failed"
    # its metrics reach the end but its summary was cut short: never rerun it (an
    # interrupted run has a checkpoint; resuming it writes its full summary)
    if status != "interrupted" and repair.finished_summary(run_dir) is not None:
        return "repairable"
    return "resumable" if (run_dir / "checkpoint.pt").exists() else "stale"


def wait_with_peak(proc: subprocess.Popen) -> tuple[int, int]:
    """Wait for a child run: (exit code, its peak RSS bytes). wait4 gives this child's own
    rusage, so a killed run still has a peak RSS. Linux starts a child's ru_maxrss at its
    parent's RSS, so this is an upper bound (max of the child's peak and the parent's RSS),
    used only for runs that died before writing their own figure."""
    _, wstatus, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(wstatus)
    return proc.returncode, int(usage.ru_maxrss) * 1024


class LocalExecutor:
    """Runs each item's process as a child of this one."""

    def __init__(self):
        self.children: set[subprocess.Popen] = set()
        self._guard = threading.Lock()

    def launch(self, cmd: list[str], env: dict, log, resume_cmd: list[str] | None = None) -> tuple[int, int]:
        """Run `cmd` to completion with output to `log`: (exit code, child's peak RSS bytes).
        `resume_cmd` continues the run from its checkpoint (for executors whose jobs are
        requeued, harness.cluster); a child here is never restarted."""
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        with self._guard:
            self.children.add(proc)
        try:
            return wait_with_peak(proc)
        finally:
            with self._guard:
                self.children.discard(proc)

    def has_live_job(self, run_dir: Path) -> bool:
        """A scheduler job submitted earlier still runs this run: never for local children."""
        return False

    def stop_waiting(self) -> None:
        """Ctrl-C: nothing to do here; the children got it too (same process group)."""

    def signal_all(self, signum: int) -> None:
        """Pass a signal on to every running child (preemption of the whole batch)."""
        with self._guard:
            for proc in self.children:
                try:
                    proc.send_signal(signum)
                except OSError:
                    pass


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def _why(rc: int) -> str:
    if rc < 0:
        why = f"killed by {_signal_name(rc)}"
        return why + (" (what the out-of-memory killer sends)" if rc == -signal.SIGKILL else "")
    if rc == 137:
        return "exit code 137 (128+SIGKILL: killed, e.g. out of memory)"
    return f"exit code {rc}"


def _write_failure(item: RunItem, run_dir: Path, reason: str, wall_s: float, peak: int,
                   device: str) -> None:
    """A child that died without a summary: record what is known, status failed."""
    run_dir.mkdir(parents=True, exist_ok=True)
    store.remove_stale_temps(run_dir)   # a write the death cut short (the child is gone)
    if not (run_dir / "config.json").exists():
        store.write_json(run_dir / "config.json", {
            "run_id": run_dir.name, "optimizer": item.optimizer, "problem": item.problem,
            "seed": item.seed, "budget": item.budget, "sets": dict(item.sets),
            "device_requested": device, "written_by": "executor (the run never started)",
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
        "peak_memory_bytes": peak,
        "peak_memory_method": "peak_rss (of the child, via wait4; at least the executor's own RSS)",
        "device": old.get("device", device), "written_by": "executor",
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    for key in ("kind", "best_metric", "metric_name"):
        summary.setdefault(key, None)
    store.write_json(run_dir / "summary.json", summary)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def _adopt_stale_log(log_path: Path, run_dir: Path) -> None:
    """The log of a child whose controller died (SIGKILL) before moving it into the run
    directory: moved now (the item's lock is ours and the run's owner has ended)."""
    if not log_path.exists():
        return
    if run_dir.exists():
        with open(run_dir / "sweep.log", "ab") as fh:
            fh.write(log_path.read_bytes())
    log_path.unlink(missing_ok=True)


def run_one(item: RunItem, runs_dir: Path, device: str = "auto", retry_failed: bool = False,
            stop: threading.Event | None = None, executor=None, echo=print,
            extra_args=(), beat: Heartbeat | None = None) -> Outcome:
    """Handle one item under its lock: skip, resume, (re)start, or wait for the live
    process that owns it and take its result."""
    (runs_dir / ".locks").mkdir(parents=True, exist_ok=True)
    lock = store.RunLock(runs_dir / ".locks" / f"{item.name}.lock")
    if not lock.acquire():
        echo(f"waiting: {item.label} is handled by process {lock.owner()} ({runs_dir / item.name})")
        lock.acquire(wait=True)
    try:
        return _run_one_locked(item, runs_dir, device, retry_failed, stop, executor or LocalExecutor(), echo,
                               extra_args, beat)
    finally:
        lock.release()


def _run_one_locked(item, runs_dir, device, retry_failed, stop, executor, echo, extra_args, beat) -> Outcome:
    run_dir = runs_dir / item.name
    # a scheduler job an earlier batch submitted still runs it (where file locks may not
    # reach the job's node, the directory must not be judged from here): wait for that job
    state = "attached" if executor.has_live_job(run_dir) else state_of(run_dir)
    if state == "busy":   # a run or --resume started by hand owns it: wait, then look again
        echo(f"waiting: {run_dir} is run by process {store.run_lock(run_dir).owner()}")
        held = store.run_lock(run_dir)
        held.acquire(wait=True)
        held.release()
        state = state_of(run_dir)
    _adopt_stale_log(runs_dir / ".sweep-logs" / f"{item.name}.log", run_dir)
    if state == "repairable":
        s = repair.rebuild(run_dir)
        echo(f"repaired: {run_dir}/summary.json rebuilt from metrics.jsonl and config.json "
             f"(the damaged file kept as {repair.DAMAGED})")
        return Outcome(item, s["status"], s.get("reason"), run_dir, "repaired")
    if state == "done":
        s = store.read_json(run_dir / "summary.json")
        return Outcome(item, s["status"], s.get("reason"), run_dir, "already-done")
    if state == "failed" and not retry_failed:
        s = store.read_json(run_dir / "summary.json")
        return Outcome(item, "failed", s.get("reason"), run_dir, "already-failed")
    if stop is not None and stop.is_set():
        return Outcome(item, "skipped", "interrupted before it started", run_dir, "not-started")
    if state == "failed" and (run_dir / "checkpoint.pt").exists():
        state = "resumable"     # --retry-failed continues from the last checkpoint
    elif state in ("stale", "failed"):
        # our own deterministic directory of a run that did not finish and left no
        # checkpoint: the same request remakes the same records from step 0; the first
        # attempt's directory is moved aside, never deleted
        moved = store.supersede(run_dir)
        echo(f"{item.label}: unfinished and without a checkpoint, starts again from step 0; "
             f"what it wrote is kept in {moved}")
        state = "new"
    cmd = [sys.executable, "-m", "harness", "run", "--no-progress"]
    resume_cmd = cmd + ["--resume", str(run_dir), *extra_args]
    if state == "attached":
        cmd += ["--resume", str(run_dir)]
        action = "re-attached"
    elif state == "resumable":
        cmd += ["--resume", str(run_dir)]
        action = "resumed"
    else:
        cmd += [*item.run_args(), "--runs-dir", str(runs_dir), "--run-id", item.name, "--device", device]
        action = "ran"
    cmd += list(extra_args)   # flags every child takes, fresh or resumed (sweep --log)
    log_dir = runs_dir / ".sweep-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{item.name}.log"
    t0 = time.perf_counter()
    header = f"$ {' '.join(cmd)}\n"
    with open(log_path, "ab") as log:
        log.write(header.encode())
        log.flush()
        env = sweep_child_env(os.environ, item.optimizer, item.problem, item.seed)
        if beat is not None:
            beat.started(item, run_dir)
        try:
            rc, child_peak = executor.launch(cmd, env, log, resume_cmd=resume_cmd)
        finally:
            if beat is not None:
                beat.ended(item)
    wall = time.perf_counter() - t0
    text = log_path.read_text(errors="replace")
    output = text.split(header, 1)[-1]  # what the child printed
    summary_path = run_dir / "summary.json"
    status = store.read_json(summary_path).get("status") if summary_path.exists() else None
    if status in DONE or status == "failed" or (status == "interrupted" and rc in (130, 143)):
        reason = store.read_json(summary_path).get("reason")
    elif rc in (-signal.SIGINT, -signal.SIGTERM, 130, 143):
        # stopped (Ctrl-C, SIGTERM: with the batch, or by a scheduler) before its run began
        # or could record it: an interruption, not a failure; the same command again runs
        # or resumes it
        status, reason = "interrupted", f"stopped with the batch ({_why(rc)}) before it recorded a result"
    else:
        tail = _last_line(output)
        reason = f"process ended without a summary: {_why(rc)}" + (f"; last output: {tail}" if tail else "")
        _write_failure(item, run_dir, reason, wall, child_peak, device)
        status = "failed"
    if run_dir.exists():  # the child's output goes with its run (appended on resume)
        with open(run_dir / "sweep.log", "a") as fh:
            fh.write(text)
        log_path.unlink()
    return Outcome(item, status, reason, run_dir, action, wall)


def check_run_dirs(items: list[RunItem], runs_dir: Path) -> None:
    """Each item's problem accepts its run directory (bbob: COCO's path limit): refused
    before any run starts, not as a failure of every run."""
    from harness import registry

    longest: dict[str, RunItem] = {}
    for it in items:
        if it.problem not in longest or len(it.name) > len(longest[it.problem].name):
            longest[it.problem] = it
    for name, it in longest.items():
        registry.problem(name).factory.check_run_dir(Path(runs_dir) / it.name)


def execute(items: list[RunItem], runs_dir: Path, jobs: int = 1, device: str = "auto",
            retry_failed: bool = False, echo=print, executor=None, extra_args=(),
            heartbeat_s: float | None = None) -> list[Outcome]:
    """Run the items, `jobs` processes at a time; one line per finished run, and every
    heartbeat_s (default $HARNESS_HEARTBEAT_S, else 30 s) one line on the running ones;
    outcomes in the order of `items`. SIGTERM to this process is passed on to the running children
    (they checkpoint and record `interrupted`), then raised here as KeyboardInterrupt."""
    check_run_dirs(items, runs_dir)
    runs_dir = store.ensure_dir(runs_dir)
    executor = executor or LocalExecutor()
    stop = threading.Event()
    restore = _forward_sigterm(executor, stop)
    beat = Heartbeat(echo, heartbeat_s).start()
    outcomes: list[Outcome] = []
    total = len(items)
    width = max(len(it.label) for it in items) if items else 0
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(run_one, it, runs_dir, device, retry_failed, stop, executor, echo, extra_args, beat)
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
            stop.set()  # children got the SIGINT (or our SIGTERM) too and record `interrupted`
            executor.stop_waiting()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            beat.stop()
            restore()
    if stop.is_set():   # SIGTERM arrived and every child has ended: the batch is interrupted
        raise BatchTerminated
    try:
        (runs_dir / ".sweep-logs").rmdir()   # each log went into its run directory
    except OSError:
        pass   # absent, or a run of another executor still writes there
    order = {id(it): i for i, it in enumerate(items)}
    return sorted(outcomes, key=lambda o: order[id(o.item)])


def _forward_sigterm(executor, stop: threading.Event):
    """Install a SIGTERM handler that passes the signal to the children and stops
    new runs; returns the function that restores the previous handler."""
    def on_term(signum, frame):
        stop.set()
        executor.signal_all(signum)

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:   # not the main thread
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, previous)


def counts(outcomes: list[Outcome]) -> str:
    """'2 failed, 7 ok'."""
    by: dict[str, int] = {}
    for o in outcomes:
        by[o.status] = by.get(o.status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(by.items()))
