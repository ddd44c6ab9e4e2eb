"""One run: validate, create the run directory, build, loop until the budget, record.

Validation (harness.spec.Prepared: names, kinds, --set values, problem inputs)
and the memory preflight happen before the run directory exists, so bad input
leaves nothing behind. Once the directory exists, every outcome ends in a
summary.json: ok, diverged, failed (with the reason) or interrupted.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from harness import distributed, store
from harness.envinfo import environment
from harness.errors import UsageError
from harness.faults import FaultHooks
from harness.memory import PeakMemory
from harness.optimizer import StepResult
from harness.progress import Progress
from harness.seeding import rng_state, seed_everything, set_rng_state
from harness.spec import Budget, Prepared, RunSpec
from harness.timing import ObjectiveClock

__all__ = ["Budget", "RunSpec", "Prepared", "RunState", "Runner", "run", "resume", "SUMMARY_KEYS"]

SUMMARY_KEYS = (
    "status", "reason", "optimizer", "problem", "seed", "steps", "evals", "wall_clock_s",
    "final_loss", "best_loss", "final_metric", "peak_memory_bytes", "device",
)


@dataclass
class RunState:
    """Everything the loop carries from step to step; checkpointed whole."""

    step: int = 0
    evals: int = 0
    time_s: float = 0.0          # optimizer wall-clock: inside step() only
    wall_s: float = 0.0          # the whole run: evaluations and checkpoints included
    objective_s: float = 0.0     # of time_s: inside the problem's OBJECTIVE_METHODS
    overhead_s: float = 0.0      # of time_s: the rest (ask/tell, sampling, model fitting)
    best_loss: float | None = None
    last_loss: float | None = None
    last_metric: float | None = None
    metrics: list = field(default_factory=list)     # every eval metric so far

    def advance(self, res: StepResult, seconds: float, objective: float | None) -> dict:
        """Count one optimizer step; its metrics record."""
        self.step += 1
        self.evals += int(res.evals)
        self.time_s += seconds
        self.last_loss = loss = float(res.loss)
        if math.isfinite(loss) and (self.best_loss is None or loss < self.best_loss):
            self.best_loss = loss
        record = {"step": self.step, "evals": self.evals, "time_s": round(self.time_s, 6), "loss": loss}
        if objective is not None:   # problems that declare OBJECTIVE_METHODS
            self.objective_s += objective
            self.overhead_s += seconds - objective
            record.update(objective_s=round(self.objective_s, 6), overhead_s=round(self.overhead_s, 6))
        record.update(res.extra)
        return record

    def evaluated(self, ev: dict) -> dict:
        self.last_metric = ev.get("metric")
        self.metrics.append(self.last_metric)
        return ev


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


class Runner:
    """Executes one prepared run in an existing run directory. Callbacks (objects with
    on_start(state), on_step(state, record), on_end(summary)) watch it: the progress
    display, loggers."""

    def __init__(self, prepared: Prepared, run_dir: Path, progress: bool = True, callbacks=()):
        self.p = prepared
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

    def run(self, resume: bool = False) -> dict:
        """Build, restore or start, loop; whatever happens, end with a summary.json."""
        if self.main:
            store.write_json(self.dir / "env.json", environment(self.p.device))
            store.write_json(self.dir / "summary.json", self._summary("running", None, 0))
        status, reason, writer = "running", None, None
        previous = _install_sigterm()
        try:
            self._build()
            writer = self._restore() if resume else self._fresh()
            for cb in self.callbacks:
                cb.on_start(self.state)
            status, reason = self._loop(writer)
            # every rank holds a model: the run needs the largest per-rank peak
            self.peak = max(distributed.gather_object(self.mem.peak_bytes()))
        except KeyboardInterrupt:
            status, reason = "interrupted", "KeyboardInterrupt"
        except Exception as exc:  # a run that fails records why
            status, reason = "failed", _one_line(exc)
            self._record_error(reason)
        finally:
            # a SIGTERM now (torchrun stopping the ranks after one failed) must not cut
            # the summary short: ignore it until the summary is written, then restore
            if previous is not None:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if writer is not None:
                writer.close()
            summary = self._finish(status, reason)
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        return summary

    # -- the loop: one line per stage --------------------------------------------
    def _loop(self, writer) -> tuple[str, str | None]:
        p, state = self.p, self.state
        while not self._finished():
            self.faults.before_step(state.step)                # test hooks: fail or hang here
            record = self._timed_step()                        # the step; time_s counts only this
            if not math.isfinite(record["loss"]):              # NaN/inf loss: the run diverged
                writer.write(record)
                return "diverged", f"non-finite loss {record['loss']} at step {state.step}"
            done = self._finished()
            if state.step % p.eval_every == 0 or done:         # held-out metric, untimed
                record.update(state.evaluated(p.problem.evaluate(self.opt.solution())))
            writer.write(record)                               # one whole line per step
            state.wall_s = self._wall()
            every = p.spec.checkpoint_every
            if every and (state.step % every == 0 or done):    # atomic: a kill keeps the last one
                self._checkpoint()
            self.faults.after_step(state.step, writer.close)   # test hook: die as kill -9 would
            for cb in self.callbacks:                          # progress, loggers
                cb.on_step(state, record)
        return "ok", None

    def _timed_step(self) -> dict:
        objective0 = self.clock.total if self.clock is not None else 0.0
        t0 = time.perf_counter()
        res = self.opt.step(self.state.step)
        if self.p.device.type == "cuda":   # kernels are asynchronous: time their completion
            torch.cuda.synchronize(self.p.device)
        seconds = time.perf_counter() - t0
        objective = self.clock.total - objective0 if self.clock is not None else None
        return self.state.advance(res, seconds, objective)

    def _finished(self) -> bool:
        budget = self.p.spec.budget
        spent = budget.spent(self.state.step, self.state.evals, self.state.time_s)
        if budget.time_s is not None and distributed.world_size() > 1:
            spent = distributed.broadcast_object(spent)  # rank 0's clock decides: all stop together
        return spent or self.opt.is_finished()

    def _wall(self) -> float:
        return self._wall_offset + (time.perf_counter() - self._wall0)

    # -- stages around the loop ----------------------------------------------------
    def _build(self) -> None:
        p = self.p
        seed_everything(p.spec.seed)
        self.mem.reset()
        p.problem.attach_run_dir(self.dir)
        p.problem.build(p.device)
        if p.problem.OBJECTIVE_METHODS:
            self.clock = ObjectiveClock(p.problem)
        self.opt = p.build_optimizer()
        self.opt.setup()

    def _fresh(self):
        """A new run: step 0 is the evaluation before any optimizer step."""
        if self.main:
            (self.dir / "metrics.jsonl").unlink(missing_ok=True)
        writer = self._writer()
        initial = {"step": 0, "evals": 0, "time_s": 0.0, "loss": None}
        initial.update(self.state.evaluated(self.p.problem.evaluate(self.opt.solution())))
        writer.write(initial)
        return writer

    def _restore(self):
        """Continue from checkpoint.pt (RNG states included); records after it are cut."""
        path = self.dir / "checkpoint.pt"
        if not path.exists():
            return self._fresh()
        ckpt = store.load_checkpoint(path)
        self.p.problem.load_state_dict(ckpt["problem"])
        self.opt.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
        self.state = RunState(**ckpt["state"])
        self._wall_offset = self.state.wall_s
        if self.main:
            store.truncate_metrics(self.dir / "metrics.jsonl", self.state.step)
        return self._writer()

    def _writer(self):
        return store.MetricsWriter(self.dir / "metrics.jsonl") if self.main else store.NullWriter()

    def _checkpoint(self) -> None:
        if self.main:
            store.save_checkpoint(self.dir / "checkpoint.pt", {
                "state": asdict(self.state),
                "optimizer": self.opt.state_dict(),
                "problem": self.p.problem.state_dict(),
                "rng": rng_state(),
            })

    def _finish(self, status: str, reason: str | None) -> dict:
        self.state.wall_s = self._wall()
        if status == "failed":   # under torchrun, the rank that failed first names the cause
            reason = distributed.attribute_failure(reason, self.dir)
        summary = self._summary(status, reason, self.peak or self.mem.peak_bytes())
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

    def _summary(self, status: str, reason: str | None, peak: int) -> dict:
        p, state = self.p, self.state
        metrics = [m for m in state.metrics if _finite(m)]
        higher = p.problem.METRIC_HIGHER_IS_BETTER
        timed = self.clock is not None
        return {
            "status": status, "reason": reason,
            "optimizer": p.spec.optimizer, "problem": p.spec.problem, "kind": p.kind, "seed": p.spec.seed,
            "steps": state.step, "evals": state.evals,
            "wall_clock_s": state.wall_s, "optimizer_time_s": state.time_s,
            # optimizer_time_s = objective_s + overhead_s on problems that declare
            # OBJECTIVE_METHODS (search-space, pruning); None elsewhere
            "objective_s": state.objective_s if timed else None,
            "overhead_s": state.overhead_s if timed else None,
            "final_loss": state.last_loss, "best_loss": state.best_loss,
            "final_metric": state.last_metric,
            "best_metric": (max(metrics) if higher else min(metrics)) if metrics else None,
            "metric_name": p.problem.METRIC,
            "peak_memory_bytes": peak, "peak_memory_method": self.mem.method,
            "device": str(p.device), "param_count": p.problem.param_count(),
            "world_size": distributed.world_size(),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


class Terminated(Exception):
    pass


def _raise_terminated(signum, frame):
    # torchrun sends SIGTERM to the other ranks when one fails: record, don't vanish.
    # Once only: a second signal must not interrupt the handling of the first.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated(f"terminated by signal {signal.Signals(signum).name}")


def _install_sigterm():
    try:
        return signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: leave signals alone
        return None


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]


# -- entry points -------------------------------------------------------------------

def _prepare(spec: RunSpec) -> Prepared:
    """Validate, join torchrun's process group, and refuse a run whose planned peak
    memory does not fit (exit 3), all before anything is written."""
    prepared = Prepared(spec)
    prepared.device = distributed.init(prepared.device)
    if not spec.force:
        from harness import planner

        planner.preflight(prepared.spec.optimizer, prepared.optimizer_class, prepared.opt_hp,
                          prepared.problem, prepared.device, prepared.kind)
    return prepared


def run(spec: RunSpec, progress: bool = True, callbacks=()) -> tuple[Path, dict]:
    """Validate, create the run directory, execute; returns (run_dir, summary).

    Under torchrun every rank validates, rank 0 creates the directory and
    tells the others its name.
    """
    prepared = _prepare(spec)
    outcome = None
    if distributed.is_main():
        try:
            run_dir = store.new_run_dir(Path(spec.runs_dir), prepared.spec.run_id,
                                          f"{prepared.spec.optimizer}_{prepared.spec.problem}_s{prepared.spec.seed}")
            store.write_json(run_dir / "config.json", prepared.config(run_dir.name))
            outcome = ("ok", str(run_dir))
        except UsageError as exc:
            outcome = ("error", str(exc))
    status, value = distributed.broadcast_object(outcome)
    if status == "error":
        raise UsageError(value)
    return Path(value), Runner(prepared, Path(value), progress, callbacks).run()


def resume(run_dir: Path, budget: Budget | None = None, progress: bool = True,
           force: bool = False, callbacks=()) -> tuple[Path, dict]:
    run_dir = Path(run_dir)
    prepared = _prepare(replace(RunSpec.from_run_dir(run_dir, budget), force=force))
    if budget is not None and distributed.is_main():  # a new budget extends the stored one
        cfg = store.read_json(run_dir / "config.json")
        cfg["budget"] = asdict(budget)
        store.write_json(run_dir / "config.json", cfg)
    return run_dir, Runner(prepared, run_dir, progress, callbacks).run(resume=True)
