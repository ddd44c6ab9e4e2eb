"""One run: validate, create the run directory, build, loop until the budget, record.

Validation (harness.spec.Prepared: names, kinds, --set values, problem inputs)
and the memory preflight happen before the run directory exists, so bad input
leaves nothing behind. Once the directory exists, every outcome ends in a
summary.json: ok, diverged, failed (with the reason) or interrupted.
"""

from __future__ import annotations

import math
import shutil
import signal
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from harness import distributed, store
from harness import resume_checks as stored
from harness.costs import peak_bf16_flops
from harness.envinfo import environment
from harness.errors import HarnessError, StoreError, UsageError, os_error_line, os_failure
from harness.faults import FaultHooks
from harness.memory import PeakMemory
from harness.progress import Progress
from harness.seeding import rng_state, seed_everything, set_rng_state
from harness.spec import Budget, Prepared, RunSpec
from harness.state import RunState
from harness.timing import ObjectiveClock

__all__ = ["Budget", "RunSpec", "Prepared", "RunState", "Runner", "run", "resume", "SUMMARY_KEYS"]

SUMMARY_KEYS = (
    "status", "reason", "optimizer", "problem", "seed", "steps", "evals", "wall_clock_s",
    "final_loss", "best_loss", "final_metric", "peak_memory_bytes", "device",
)


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


class Runner:
    """Executes one prepared run in an existing run directory. Callbacks
    (harness.callbacks.Callback) watch it: the progress display, loggers."""

    def __init__(self, prepared: Prepared, run_dir: Path, progress: bool = True, callbacks=(),
                 lock: store.RunLock | None = None, checkpoint: dict | None = None,
                 previous: dict | None = None):
        self.prepared = prepared
        self.lock = lock                  # this process's hold on the run directory (rank 0)
        self.checkpoint = checkpoint      # resume: the loaded checkpoint.pt, None for a fresh start
        self.previous = previous or {}    # resume: the summary so far (its peak memory counts)
        self.stop_signal: str | None = None
        self.dir = Path(run_dir)
        self.main = distributed.is_main()        # only rank 0 writes the run store
        self.callbacks = list(callbacks)
        if progress and self.main:
            spec = prepared.spec
            self.callbacks.append(Progress(f"{spec.optimizer} on {spec.problem}", spec.budget.steps))
        self.faults = FaultHooks.from_env()
        self.mem = PeakMemory(prepared.device)
        self.state = RunState()
        self.opt = self.clock = None
        self.peak = None
        self._wall0, self._wall_offset = time.perf_counter(), 0.0

    def run(self) -> dict:
        """Build, restore or start, loop; whatever happens, end with a summary.json."""
        if self.main:
            store.remove_stale_temps(self.dir)   # a write a kill cut short (we hold the lock)
            store.write_json(self.dir / "env.json", environment(self.prepared.device))
            store.write_json(self.dir / "summary.json", self._summary("running", None, 0))
        status, reason, writer = "running", None, None
        previous = _install_sigterm(self._on_sigterm)
        try:
            self._build()
            writer = self._restore() if self.checkpoint is not None else self._fresh()
            for cb in self.callbacks:
                cb.bind(self.dir)
                cb.on_start(self.state)
            status, reason = self._loop(writer)
            # every rank holds a model: the run needs the largest per-rank peak
            self.peak = max(distributed.gather_object(self.mem.peak_bytes()))
        except KeyboardInterrupt:
            status, reason = "interrupted", "KeyboardInterrupt"
        except Terminated as exc:   # under torchrun: SIGTERM ends the step at once
            status, reason = "interrupted", f"Terminated: {exc}"
        except Exception as exc:  # a run that fails records why
            status, reason = "failed", _one_line(exc)
            self._record_error(reason)
        finally:
            # a SIGTERM now must not cut the summary short: ignore it until written
            if previous is not None:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if writer is not None:
                writer.close()
            summary = self._finish(status, reason)
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if self.lock is not None:
                self.lock.release()
        return summary

    def _on_sigterm(self, signum, frame):
        """SIGTERM (timeout, SLURM preemption, docker stop) is an interruption, not a
        failure. One process: finish the step, checkpoint, stop. Under torchrun
        (where it also means a peer failed) stop at once: the last periodic
        checkpoint is where a resume starts."""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)   # once: a second one must not cut the first
        self.stop_signal = signal.Signals(signum).name
        if distributed.world_size() > 1:
            raise Terminated(f"{self.stop_signal} at step {self.state.step}")

    # -- the loop: one line per stage --------------------------------------------
    def _loop(self, writer) -> tuple[str, str | None]:
        prepared, state = self.prepared, self.state
        while not (self._finished() or self.stop_signal):
            self.faults.before_step(state.step)                # test hooks: fail or hang here
            record = self._timed_step()                        # the step; time_s counts only this
            if not math.isfinite(record["loss"]):              # NaN/inf loss: the run diverged
                writer.write(record)
                return "diverged", f"non-finite loss {record['loss']} at step {state.step}"
            done = self._finished()
            if prepared.evaluates(state.step) or done:                # held-out metric, untimed
                with self.opt.evaluation():
                    record.update(state.evaluated(prepared.problem.evaluate(self.opt.solution())))
            writer.write(record)                               # one whole line per step
            state.wall_s = self._wall()
            every = prepared.spec.checkpoint_every
            if every and (state.step % every == 0 or done):    # atomic: a kill keeps the last one
                self._checkpoint()
            self.faults.after_step(state.step, writer.close)   # test hook: die as kill -9 would
            for cb in self.callbacks:                          # progress, loggers
                cb.on_step(state, record)
        if self.stop_signal:                                   # SIGTERM: checkpoint, then stop
            self._checkpoint()
            return "interrupted", (f"{self.stop_signal} at step {state.step}; checkpoint written, "
                                   f"--resume {self.dir} continues")
        return "ok", self.opt.finish_reason() if self.opt.is_finished() else None

    def _timed_step(self) -> dict:
        objective0 = self.clock.total if self.clock is not None else 0.0
        t0 = time.perf_counter()
        res = self.opt.step(self.state.step)
        if self.prepared.device.type == "cuda":   # kernels are asynchronous: time their completion
            torch.cuda.synchronize(self.prepared.device)
        seconds = time.perf_counter() - t0
        objective = self.clock.total - objective0 if self.clock is not None else None
        cost = self.prepared.problem.step_cost(self.state.step)   # untimed: bookkeeping, not work
        return self.state.advance(res, seconds, objective, cost, peak_bf16_flops(self.prepared.device))

    def _finished(self) -> bool:
        budget = self.prepared.spec.budget
        spent = budget.spent(self.state.step, self.state.evals, self.state.time_s, self.state.forwards)
        if budget.time_s is not None and distributed.world_size() > 1:
            spent = distributed.broadcast_object(spent)  # rank 0's clock decides: all stop together
        return spent or self.opt.is_finished()

    def _wall(self) -> float:
        return self._wall_offset + (time.perf_counter() - self._wall0)

    # -- stages around the loop ----------------------------------------------------
    def _build(self) -> None:
        prepared = self.prepared
        if prepared.threads:
            torch.set_num_threads(prepared.threads)
        seed_everything(prepared.spec.seed)
        self.mem.reset()
        prepared.problem.attach_run_dir(self.dir)
        prepared.problem.build(prepared.device)
        if prepared.problem.OBJECTIVE_METHODS:
            self.clock = ObjectiveClock(prepared.problem)
        self.opt = prepared.build_optimizer()
        self.opt.setup()

    def _fresh(self):
        """A new run: step 0 is the evaluation before any optimizer step."""
        if self.main:
            (self.dir / "metrics.jsonl").unlink(missing_ok=True)
        writer = self._writer()
        initial = {"step": 0, "evals": 0, "time_s": 0.0, "loss": None}
        with self.opt.evaluation():
            initial.update(self.state.evaluated(self.prepared.problem.evaluate(self.opt.solution())))
        writer.write(initial)
        return writer

    def _restore(self):
        """Continue from the checkpoint (RNG states included); later records are cut
        (they are made again), every valid earlier one is kept."""
        ckpt = self.checkpoint
        self.prepared.problem.load_state_dict(ckpt["problem"])
        self.opt.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
        self.state = RunState(**ckpt["state"])
        self._wall_offset = self.state.wall_s
        if self.main:
            for problem in store.truncate_metrics(self.dir / "metrics.jsonl", self.state.step):
                print(f"warning: {problem}", file=sys.stderr, flush=True)
        return self._writer()

    def _writer(self):
        return store.MetricsWriter(self.dir / "metrics.jsonl") if self.main else store.NullWriter()

    def _checkpoint(self) -> None:
        if not (self.main or self.opt.collective_checkpoint()):
            return
        payload = {"state": asdict(self.state), "optimizer": self.opt.state_dict(),
                   "problem": self.prepared.problem.state_dict(), "rng": rng_state()}
        if self.main:
            store.save_checkpoint(self.dir / "checkpoint.pt", payload)

    def _finish(self, status: str, reason: str | None) -> dict:
        self.state.wall_s = self._wall()
        if status in ("failed", "interrupted") and distributed.world_size() > 1:
            # under torchrun, the rank that failed first names the cause
            attributed = distributed.attribute_failure(reason, self.dir)
            status, reason = ("failed", attributed) if attributed != reason else (status, reason)
        peak = max(self.peak or self.mem.peak_bytes(), self.previous.get("peak_memory_bytes") or 0)
        summary = self._summary(status, reason, peak)
        if self.main:
            store.write_json(self.dir / "summary.json", summary)
        for cb in self.callbacks:
            cb.on_end(summary)
        return summary

    def _record_error(self, reason: str) -> None:
        import traceback

        try:
            (self.dir / distributed.error_file_name()).write_text(reason + "\n" + traceback.format_exc())
        except OSError:
            pass

    def _framework_bytes(self) -> int | None:
        """On CPU, the planner's measured RSS of the software stack alone (interpreter, torch,
        libraries: harness.planner.framework) when its cache holds it, so a report can show
        the run's own memory above it; None on CUDA, with --force, or when not measured."""
        plan = self.prepared.plan
        if plan is None or self.prepared.device.type != "cpu":
            return None
        return plan.breakdown.get("framework") or None

    def _summary(self, status: str, reason: str | None, peak: int) -> dict:
        prepared, state = self.prepared, self.state
        metrics = [m for m in state.metrics if _finite(m)]
        higher = prepared.problem.METRIC_HIGHER_IS_BETTER
        timed = self.clock is not None
        return {
            "status": status, "reason": reason,
            "optimizer": prepared.spec.optimizer, "problem": prepared.spec.problem, "kind": prepared.kind,
            "seed": prepared.spec.seed,
            "steps": state.step, "evals": state.evals,
            "wall_clock_s": state.wall_s, "optimizer_time_s": state.time_s,
            # optimizer_time_s = objective_s + overhead_s on problems that declare
            # OBJECTIVE_METHODS (search-space, pruning); None elsewhere
            "objective_s": state.objective_s if timed else None,
            "overhead_s": state.overhead_s if timed else None,
            "final_loss": state.last_loss, "best_loss": state.best_loss,
            "final_metric": state.last_metric,
            "best_metric": (max(metrics) if higher else min(metrics)) if metrics else None,
            "metric_name": prepared.problem.METRIC,
            **state.costs(peak_bf16_flops(prepared.device)),   # forwards, tokens, flops, mfu (CUDA)
            "peak_memory_bytes": peak, "peak_memory_method": self.mem.method,
            "framework_bytes": self._framework_bytes(),
            "device": str(prepared.device), "param_count": prepared.problem.param_count(),
            "world_size": distributed.world_size(),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


class Terminated(Exception):
    pass


def _install_sigterm(handler):
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        return None


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError):   # a full, read-only or limited disk: the path and the cause
        return f"{type(exc).__name__}: {os_error_line(exc)}"[:500]
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]


# -- entry points -------------------------------------------------------------------

def _prepare(spec: RunSpec) -> Prepared:
    """Validate, join torchrun's process group, and refuse a run whose planned peak
    memory does not fit (exit 3), all before anything is written."""
    prepared = Prepared(spec)
    prepared.optimizer_class.check_launch(prepared.opt_hp)
    prepared.device = distributed.init(prepared.device)
    if not spec.force:
        from harness import planner

        prepared.plan = planner.preflight(prepared.spec.optimizer, prepared.optimizer_class, prepared.opt_hp,
                                          prepared.problem, prepared.device, prepared.kind)
    return prepared


def _prefix(spec: RunSpec) -> str:
    return f"{spec.optimizer}_{spec.problem}_s{spec.seed}"


def run(spec: RunSpec, progress: bool = True, callbacks=()) -> tuple[Path, dict]:
    """Validate, create the run directory, execute; returns (run_dir, summary).

    Under torchrun every rank validates, rank 0 creates the directory and
    tells the others its name.
    """
    prepared = _prepare(spec)
    outcome, lock = None, None
    if distributed.is_main():
        s = prepared.spec
        try:
            type(prepared.problem).check_run_dir(store.longest_run_dir(Path(s.runs_dir), s.run_id, _prefix(s)))
            run_dir = store.new_run_dir(Path(s.runs_dir), s.run_id, _prefix(s))
            lock = store.run_lock(run_dir)
            lock.acquire()     # a new directory: nobody else holds it
            try:
                store.write_json(run_dir / "config.json", prepared.config(run_dir.name))
            except OSError as exc:   # full or read-only: leave nothing behind
                lock.release()
                shutil.rmtree(run_dir, ignore_errors=True)
                raise os_failure(f"--runs-dir {s.runs_dir}: cannot write the run's files", exc) from None
            outcome = ("ok", str(run_dir))
        except HarnessError as exc:
            outcome = ("error", (type(exc).__name__, str(exc)))
    status, value = distributed.broadcast_object(outcome)
    if status == "error":
        raise {"StoreError": StoreError}.get(value[0], UsageError)(value[1])
    return Path(value), Runner(prepared, Path(value), progress, callbacks, lock=lock).run()


def resume(run_dir: Path, budget: Budget | None = None, progress: bool = True,
           force: bool = False, callbacks=(), ready=None) -> tuple[Path, dict]:
    """Continue a stored run from its checkpoint (or from step 0 without one). Nothing is
    written until the directory's lock is held and every stored file checks out: a
    finished run is left alone (NothingToDo), a corrupt file is one line (exit 2).
    `ready` is called once every check has passed, before the run starts."""
    run_dir = Path(run_dir)
    spec = replace(RunSpec.from_run_dir(run_dir, budget), force=force)
    lock = None
    if distributed.is_main():
        lock = store.run_lock(run_dir)
        if not lock.acquire():
            raise UsageError(f"--resume {run_dir}: process {lock.owner()} is running it now "
                             "(a run, resume or sweep); wait for it to end")
    try:
        stored.check_extends(run_dir, budget)
        previous = stored.summary(run_dir)
        stored.check_unfinished(run_dir, previous, budget)
        checkpoint = stored.checkpoint(run_dir)
        prepared = _prepare(spec)
        type(prepared.problem).check_run_dir(run_dir)
        if budget is not None and distributed.is_main():  # a new budget extends the stored one
            cfg = store.read_json(run_dir / "config.json")
            if cfg["budget"] != asdict(budget):
                cfg["budget"] = asdict(budget)
                store.write_json(run_dir / "config.json", cfg)
        if ready is not None:   # every check passed: e.g. open the tracking stores now
            ready()
    except BaseException:
        if lock is not None:
            lock.release(discard=True)   # refused: leave no lock file it did not have
        raise
    return run_dir, Runner(prepared, run_dir, progress, callbacks, lock=lock, checkpoint=checkpoint,
                           previous=previous).run()
