"""One run: resolve names, validate, build, loop until the budget, record.

Validation (names, kinds, --set values, problem inputs) happens before the
run directory exists, so bad input leaves nothing behind. Once the directory
exists, every outcome ends in a summary.json: ok, diverged, failed (with the
reason) or interrupted.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from harness import distributed, registry, store
from harness.envinfo import environment, resolve_device
from harness.errors import UsageError
from harness.memory import PeakMemory
from harness.params import resolve, schema_of, split_overrides
from harness.seeding import rng_state, seed_everything, set_rng_state

SUMMARY_KEYS = (
    "status", "reason", "optimizer", "problem", "seed", "steps", "evals", "wall_clock_s",
    "final_loss", "best_loss", "final_metric", "peak_memory_bytes", "device",
)


@dataclass
class Budget:
    steps: int | None = None
    evals: int | None = None
    time_s: float | None = None

    def __post_init__(self):
        for key in ("steps", "evals", "time_s"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise UsageError(f"--{key.replace('_s', '')} {value}: the budget must be positive")
        if self.steps is None and self.evals is None and self.time_s is None:
            raise UsageError("no budget: give --steps N, --evals N or --time SECONDS")

    def spent(self, step: int, evals: int, time_s: float) -> bool:
        return (
            (self.steps is not None and step >= self.steps)
            or (self.evals is not None and evals >= self.evals)
            or (self.time_s is not None and time_s >= self.time_s)
        )


@dataclass
class RunSpec:
    optimizer: str
    problem: str
    seed: int = 0
    budget: Budget = field(default_factory=lambda: Budget(steps=100))
    overrides: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    eval_every: int | None = None
    checkpoint_every: int = 100
    runs_dir: str = "runs"
    run_id: str | None = None
    force: bool = False          # skip the memory preflight


class Prepared:
    """Everything resolved and validated, nothing allocated."""

    def __init__(self, spec: RunSpec):
        self.spec = spec
        self.opt_entry = registry.optimizer(spec.optimizer)
        self.prob_entry = registry.problem(spec.problem)
        self.kind = registry.check_compatible(self.opt_entry, self.prob_entry)
        opt_schema = dict(schema_of(self.opt_entry.factory))
        suggested = getattr(self.prob_entry.factory, "OPTIMIZER_DEFAULTS", {}).get(spec.optimizer, {})
        for key, value in suggested.items():
            opt_schema[key] = replace(opt_schema[key], default=value)
        prob_schema, _ = self.prob_entry.schema()
        opt_raw, prob_raw = split_overrides(
            spec.overrides, opt_schema, prob_schema, spec.optimizer, spec.problem
        )
        self.opt_hp = resolve(opt_schema, opt_raw, f"optimizer {spec.optimizer!r}")
        check_hparams = getattr(self.opt_entry.factory, "check_hparams", None)
        if check_hparams is not None:
            check_hparams(self.opt_hp)
        self.prob_hp = resolve(prob_schema, prob_raw, f"problem {spec.problem!r}")
        self.device = resolve_device(spec.device)
        if spec.eval_every is not None and spec.eval_every <= 0:
            raise UsageError(f"--eval-every {spec.eval_every}: must be a positive number of steps")
        if spec.checkpoint_every < 0:
            raise UsageError(f"--checkpoint-every {spec.checkpoint_every}: must be >= 0 (0 = never)")
        self.problem = self.prob_entry.instantiate(spec.problem, self.prob_hp, spec.seed)
        self.problem.check()
        needs = getattr(self.opt_entry.factory, "REQUIRES_PROBLEM_METHODS", ())
        missing = [m for m in needs if not hasattr(self.problem, m)]
        if missing:  # same kind, but the optimizer needs more than the kind offers (genome: experts)
            raise UsageError(f"optimizer {spec.optimizer!r} needs a problem with {', '.join(needs)} "
                             f"(e.g. lora-*); {spec.problem!r} has no {missing[0]}")
        self.eval_every = spec.eval_every or self.problem.EVAL_EVERY

    def config(self, run_id: str) -> dict:
        return {
            "run_id": run_id,
            "optimizer": self.spec.optimizer,
            "problem": self.spec.problem,
            "kind": self.kind,
            "seed": self.spec.seed,
            "budget": asdict(self.spec.budget),
            "optimizer_params": self.opt_hp,
            "problem_params": self.prob_hp,
            "device_requested": self.spec.device,
            "device": str(self.device),
            "eval_every": self.eval_every,
            "checkpoint_every": self.spec.checkpoint_every,
            "world_size": distributed.world_size(),
            "metric_name": self.problem.METRIC,
            "metric_higher_is_better": self.problem.METRIC_HIGHER_IS_BETTER,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


def new_run_dir(runs_dir: Path, spec: RunSpec) -> Path:
    runs_dir.mkdir(parents=True, exist_ok=True)
    if spec.run_id:
        path = runs_dir / spec.run_id
        if path.exists():
            raise UsageError(f"--run-id {spec.run_id!r}: {path} exists; use --resume {path} or a new id")
        path.mkdir()
        return path
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{spec.optimizer}_{spec.problem}_s{spec.seed}_{stamp}"
    for i in range(1000):
        path = runs_dir / (base if i == 0 else f"{base}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a fresh run directory under {runs_dir}")


def spec_from_run_dir(run_dir: Path, budget: Budget | None = None) -> RunSpec:
    """Rebuild the RunSpec of a stored run (for --resume); a new budget may extend it."""
    cfg_path = Path(run_dir) / "config.json"
    if not cfg_path.exists():
        raise UsageError(f"--resume {run_dir}: no config.json there; expected a run directory")
    cfg = store.read_json(cfg_path)
    overrides = {f"optimizer.{k}": v for k, v in cfg["optimizer_params"].items()}
    overrides.update({f"problem.{k}": v for k, v in cfg["problem_params"].items()})
    return RunSpec(
        optimizer=cfg["optimizer"], problem=cfg["problem"], seed=cfg["seed"],
        budget=budget or Budget(**cfg["budget"]), overrides=overrides,
        device=cfg.get("device_requested", "auto"), eval_every=cfg["eval_every"],
        checkpoint_every=cfg["checkpoint_every"], runs_dir=str(Path(run_dir).parent),
        run_id=Path(run_dir).name,
    )


class _ObjectiveClock:
    """Seconds spent inside the problem's OBJECTIVE_METHODS (outermost calls only), so
    that a step's time splits into objective time and the optimizer's own overhead
    (ask/tell, sampling, surrogate fitting) the same way for every optimizer."""

    def __init__(self, problem):
        self.total = 0.0
        self._depth = 0
        for name in problem.OBJECTIVE_METHODS:
            setattr(problem, name, self._timed(getattr(problem, name)))

    def _timed(self, fn):
        def timed(*args, **kwargs):
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.total += time.perf_counter() - t0
        return timed


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


class Runner:
    def __init__(self, prepared: Prepared, run_dir: Path, progress: bool = True):
        self.p = prepared
        self.dir = Path(run_dir)
        self.progress = progress
        self.opt = None
        self.clock = None
        self.main = distributed.is_main()   # only rank 0 writes the run store

    # -- files ---------------------------------------------------------------
    def _summary(self, status: str, reason: str | None, state: dict, peak: int, method: str) -> dict:
        higher = self.p.problem.METRIC_HIGHER_IS_BETTER
        metrics = [m for m in state["metrics"] if _finite(m)]
        best_metric = (max(metrics) if higher else min(metrics)) if metrics else None
        return {
            "status": status,
            "reason": reason,
            "optimizer": self.p.spec.optimizer,
            "problem": self.p.spec.problem,
            "kind": self.p.kind,
            "seed": self.p.spec.seed,
            "steps": state["step"],
            "evals": state["evals"],
            "wall_clock_s": state["wall_s"],
            "optimizer_time_s": state["time_s"],
            # optimizer_time_s = objective_s + overhead_s on problems that declare
            # OBJECTIVE_METHODS (search-space, pruning); None elsewhere
            "objective_s": state["objective_s"] if self.clock is not None else None,
            "overhead_s": state["overhead_s"] if self.clock is not None else None,
            "final_loss": state["last_loss"],
            "best_loss": state["best_loss"],
            "final_metric": state["last_metric"],
            "best_metric": best_metric,
            "metric_name": self.p.problem.METRIC,
            "peak_memory_bytes": peak,
            "peak_memory_method": method,
            "device": str(self.p.device),
            "param_count": self.p.problem.param_count(),
            "world_size": distributed.world_size(),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def _checkpoint(self, state: dict) -> None:
        if not self.main:
            return
        store.save_checkpoint(self.dir / "checkpoint.pt", {
            "state": dict(state),
            "optimizer": self.opt.state_dict(),
            "problem": self.p.problem.state_dict(),
            "rng": rng_state(),
        })

    # -- the loop ------------------------------------------------------------
    def run(self, resume: bool = False) -> dict:
        p = self.p
        mem = PeakMemory(p.device)
        state = {"step": 0, "evals": 0, "time_s": 0.0, "wall_s": 0.0, "best_loss": None,
                 "last_loss": None, "last_metric": None, "metrics": [],
                 "objective_s": 0.0, "overhead_s": 0.0}
        if self.main:
            store.write_json(self.dir / "env.json", environment(p.device))
            store.write_json(self.dir / "summary.json", self._summary("running", None, state, 0, mem.method))
        status, reason = "running", None
        writer = None
        wall0 = time.perf_counter()
        wall_offset = 0.0
        peak = None
        previous_handler = _install_sigterm()
        try:
            seed_everything(p.spec.seed)
            mem.reset()
            p.problem.build(p.device)
            if p.problem.OBJECTIVE_METHODS:
                self.clock = _ObjectiveClock(p.problem)
            self.opt = p.opt_entry.factory(p.problem, p.opt_hp, p.spec.seed)
            self.opt.run_budget = p.spec.budget
            self.opt.setup()
            ckpt_path = self.dir / "checkpoint.pt"
            if resume and ckpt_path.exists():
                ckpt = store.load_checkpoint(ckpt_path)
                p.problem.load_state_dict(ckpt["problem"])
                self.opt.load_state_dict(ckpt["optimizer"])
                set_rng_state(ckpt["rng"])
                state.update(ckpt["state"])
                wall_offset = state["wall_s"]
                if self.main:
                    store.truncate_metrics(self.dir / "metrics.jsonl", state["step"])
            elif self.main:
                (self.dir / "metrics.jsonl").unlink(missing_ok=True)
            writer = store.MetricsWriter(self.dir / "metrics.jsonl") if self.main else store.NullWriter()
            if state["step"] == 0:
                initial = {"step": 0, "evals": 0, "time_s": 0.0, "loss": None}
                initial.update(p.problem.evaluate(self.opt.solution()))
                state["last_metric"] = initial.get("metric")
                state["metrics"].append(initial.get("metric"))
                writer.write(initial)
            status, reason = self._loop(state, writer, wall0, wall_offset)
            # per-rank peaks: every rank holds a model, the run needs the largest
            peak = max(distributed.gather_object(mem.peak_bytes()))
        except KeyboardInterrupt:
            status, reason = "interrupted", "KeyboardInterrupt"
        except Exception as exc:  # a run that fails records why
            status, reason = "failed", _one_line(exc)
            self._record_error(reason)
        finally:
            # a SIGTERM now (torchrun stopping the ranks after one failed) must not cut the
            # summary short: ignore it until the summary is written, then restore
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if writer is not None:
                writer.close()
            state["wall_s"] = wall_offset + (time.perf_counter() - wall0)
            if status == "failed" and distributed.world_size() > 1 and _secondary(reason):
                # this rank only saw the failure (a collective broke, torchrun's SIGTERM):
                # the cause is what the failing rank wrote, if it wrote anything
                reason = _peer_reason(self.dir) or reason
            summary = self._summary(status, reason, state, peak or mem.peak_bytes(), mem.method)
            if self.main:
                store.write_json(self.dir / "summary.json", summary)
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, previous_handler)
        return summary

    def _record_error(self, reason: str) -> None:
        import traceback

        name = "error.txt" if self.main else f"error-rank{distributed.rank()}.txt"
        try:
            (self.dir / name).write_text(reason + "\n" + traceback.format_exc())
        except OSError:
            pass

    def _spent(self, state: dict) -> bool:
        spent = self.p.spec.budget.spent(state["step"], state["evals"], state["time_s"])
        if self.p.spec.budget.time_s is not None and distributed.world_size() > 1:
            spent = distributed.broadcast_object(spent)  # rank 0's clock decides: all stop together
        return spent

    def _loop(self, state: dict, writer, wall0: float, wall_offset: float):
        p, opt, budget = self.p, self.opt, self.p.spec.budget
        kill_at = int(os.environ.get("HARNESS_TEST_KILL_AT_STEP", "0") or 0)
        fail_at = int(os.environ.get("HARNESS_TEST_FAIL_AT_STEP", "0") or 0)
        fail_rank = int(os.environ.get("HARNESS_TEST_FAIL_RANK", "-1"))
        hang_at = int(os.environ.get("HARNESS_TEST_HANG_AT_STEP", "0") or 0)
        bar = None
        if self.progress and self.main:
            from tqdm import tqdm

            bar = tqdm(total=budget.steps, initial=state["step"], desc=f"{p.spec.optimizer} on "
                       f"{p.spec.problem}", unit="step", disable=None, leave=False)
        try:
            while not (self._spent(state) or opt.is_finished()):
                step = state["step"]
                if fail_at and step + 1 == fail_at and fail_rank in (-1, distributed.rank()):
                    # test hook: a run (or one rank of it) that fails on purpose
                    raise RuntimeError(f"HARNESS_TEST_FAIL_AT_STEP={fail_at} reached")
                if hang_at and step + 1 == hang_at and fail_rank in (-1, distributed.rank()):
                    time.sleep(3600)  # test hook: a rank that stops answering (collective timeout)
                obj0 = self.clock.total if self.clock is not None else 0.0
                t0 = time.perf_counter()
                res = opt.step(step)
                if p.device.type == "cuda":
                    torch.cuda.synchronize(p.device)
                dt = time.perf_counter() - t0
                state["time_s"] += dt
                state["step"] = step + 1
                state["evals"] += int(res.evals)
                loss = float(res.loss)
                record = {"step": state["step"], "evals": state["evals"],
                          "time_s": round(state["time_s"], 6), "loss": loss}
                if self.clock is not None:
                    objective = self.clock.total - obj0
                    state["objective_s"] += objective
                    state["overhead_s"] += dt - objective
                    record["objective_s"] = round(state["objective_s"], 6)
                    record["overhead_s"] = round(state["overhead_s"], 6)
                record.update(res.extra)
                state["last_loss"] = loss
                if not math.isfinite(loss):
                    writer.write(record)
                    return "diverged", f"non-finite loss {loss} at step {state['step']}"
                if state["best_loss"] is None or loss < state["best_loss"]:
                    state["best_loss"] = loss
                done = self._spent(state) or opt.is_finished()
                if state["step"] % p.eval_every == 0 or done:
                    ev = p.problem.evaluate(opt.solution())
                    record.update(ev)
                    state["last_metric"] = ev.get("metric")
                    state["metrics"].append(ev.get("metric"))
                writer.write(record)
                state["wall_s"] = wall_offset + (time.perf_counter() - wall0)
                every = p.spec.checkpoint_every
                if every and (state["step"] % every == 0 or done):
                    self._checkpoint(state)
                if kill_at and state["step"] == kill_at and fail_rank in (-1, distributed.rank()):
                    # test hook: a hard kill mid-run (of every rank, or of HARNESS_TEST_FAIL_RANK)
                    writer.close()
                    os._exit(137)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4g}", evals=state["evals"])
        finally:
            if bar is not None:
                bar.close()
        return "ok", None


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


# what a rank sees when a peer is gone: our collectives' error, torchrun's SIGTERM,
# and the transport's own words for collectives inside torch (DDP's gradient all-reduce)
_PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Timed out waiting",
              "DistBackendError", "NCCL communicator was aborted")


def _secondary(reason: str | None) -> bool:
    """A failure caused by another rank's, not by this rank's own error."""
    return (reason is None or reason.startswith(("CollectiveError:", "Terminated:"))
            or any(text in reason for text in _PEER_LOST))


def _peer_reason(run_dir: Path, wait_s: float = 3.0) -> str | None:
    """The first line another rank wrote about its own failure (it may take a moment to
    land); ranks that only saw a broken collective are passed over for the cause."""
    deadline = time.monotonic() + wait_s
    while True:
        for path in sorted(Path(run_dir).glob("error-rank*.txt")):
            lines = path.read_text().splitlines()
            if lines and not _secondary(lines[0]):
                return f"rank {path.stem.replace('error-rank', '')}: {lines[0]}"
        if time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def _distributed_setup(prepared: Prepared) -> None:
    prepared.device = distributed.init(prepared.device)
    if distributed.world_size() > 1 and not getattr(prepared.opt_entry.factory, "DISTRIBUTED", False):
        raise UsageError(
            f"optimizer {prepared.spec.optimizer!r} does not shard across processes; "
            f"run it without torchrun (world size 1)")


def _preflight(prepared: Prepared) -> None:
    """Planned peak memory vs the device's free memory, before anything is allocated
    or written: PreflightError (exit 3) when it cannot fit, unless --force."""
    if not prepared.spec.force:
        from harness import planner

        planner.preflight(prepared)


def run(spec: RunSpec, progress: bool = True) -> tuple[Path, dict]:
    """Validate, create the run directory, execute; returns (run_dir, summary).

    Under torchrun every rank validates, rank 0 creates the directory and
    tells the others its name.
    """
    prepared = Prepared(spec)
    _distributed_setup(prepared)
    _preflight(prepared)
    outcome = None
    if distributed.is_main():
        try:
            run_dir = new_run_dir(Path(spec.runs_dir), spec)
            store.write_json(run_dir / "config.json", prepared.config(run_dir.name))
            outcome = ("ok", str(run_dir))
        except UsageError as exc:
            outcome = ("error", str(exc))
    status, value = distributed.broadcast_object(outcome)
    if status == "error":
        raise UsageError(value)
    return Path(value), Runner(prepared, Path(value), progress).run()


def resume(run_dir: Path, budget: Budget | None = None, progress: bool = True,
           force: bool = False) -> tuple[Path, dict]:
    run_dir = Path(run_dir)
    spec = replace(spec_from_run_dir(run_dir, budget), force=force)
    prepared = Prepared(spec)
    _distributed_setup(prepared)
    _preflight(prepared)
    if budget is not None and distributed.is_main():  # a new budget extends the stored one
        cfg = store.read_json(run_dir / "config.json")
        cfg["budget"] = asdict(budget)
        store.write_json(run_dir / "config.json", cfg)
    return run_dir, Runner(prepared, run_dir, progress).run(resume=True)
