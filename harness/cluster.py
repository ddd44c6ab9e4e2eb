"""Executors that run each item's `harness run` process as a scheduler job, through submitit.

They plug into harness.executor at its one seam, `launch(cmd, env, log)`: the run
store, per-item locks, skip and retry logic stay in executor.run_one, so a sweep
through SLURM handles runs exactly as a local sweep does. What differs is where
the process runs: in a job that submitit submits (`slurm`) or starts on this
machine (`submitit-local`, the same code path without a cluster, for tests).

A job is one run's process (RunJob below, a submitit Checkpointable). When the
scheduler warns that the job is about to end (SLURM's USR2 before the time limit or
at preemption; submitit's signal handler), RunJob.checkpoint sends the run SIGTERM,
which makes it checkpoint and stop, and returns the same RunJob for requeuing; the
requeued job finds the checkpoint and resumes the run (`harness run --resume`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

EXECUTORS = ("local", "slurm", "submitit-local")

# --executor-set KEY: (type, what it sets). Generic keys are submitit's AutoExecutor
# parameters (translated for each cluster); the others are SlurmExecutor parameters
# (passed as slurm_KEY; submitit-local ignores them).
GENERIC = {"timeout_min": int, "mem_gb": float, "cpus_per_task": int, "gpus_per_node": int, "name": str}
SLURM = {"partition": str, "account": str, "qos": str, "constraint": str, "exclude": str, "nodelist": str,
         "comment": str, "gres": str, "mem_per_gpu": str, "cpus_per_gpu": int, "gpus_per_task": int,
         "signal_delay_s": int, "array_parallelism": int, "wckey": str}
CONSTRUCTOR = {"max_num_timeout": int}   # how many timeouts a job is requeued after (default 3)
# array=true: runs whose jobs are submitted within ARRAY_WINDOW_S of each other go in one
# job array (submitit's executor.batch(); SLURM's --array, array_parallelism at a time)
HARNESS = {"array": bool}
VALID_KEYS = {**GENERIC, **SLURM, **CONSTRUCTOR, **HARNESS}
ARRAY_WINDOW_S = 2.0


def parse_executor_sets(pairs: list[str]) -> dict:
    """`--executor-set key=value` pairs into typed values; one UsageError line naming the
    bad key (and the valid ones) or value."""
    from harness.errors import UsageError

    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--executor-set {pair!r}: expected KEY=VALUE, e.g. partition=gpu")
        if key not in VALID_KEYS:
            raise UsageError(f"--executor-set {key}: unknown key; valid keys: {', '.join(sorted(VALID_KEYS))}")
        kind = VALID_KEYS[key]
        try:
            if kind is bool:
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                typed = value.lower() in ("true", "1", "yes")
            else:
                typed = kind(value)
        except ValueError:
            raise UsageError(f"--executor-set {key}={value}: expected {kind.__name__}") from None
        if kind in (int, float) and typed <= 0:
            raise UsageError(f"--executor-set {key}={value}: must be > 0")
        out[key] = typed
    return out


def check_executor_args(name: str, sets: dict) -> None:
    """Before anything is written: the executor exists, submitit is installed for it."""
    from harness.errors import UsageError

    if name not in EXECUTORS:
        raise UsageError(f"--executor {name}: unknown; choose one of {', '.join(EXECUTORS)}")
    if name == "local":
        if sets:
            raise UsageError(f"--executor-set {next(iter(sets))}: only for --executor slurm or submitit-local")
        return
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UsageError(f"--executor {name} needs submitit: pip install -e '.[cluster]'") from None
    missing = [tool for tool in ("sbatch", "srun", "sacct", "scancel") if shutil.which(tool) is None]
    if name == "slurm" and missing:   # submitit submits with sbatch, watches with sacct, cancels with scancel
        raise UsageError(f"--executor slurm: no SLURM here ({', '.join(missing)} not on PATH); run the sweep "
                         "on a login node, or --executor submitit-local to try it on this machine")


def make(name: str, sets: dict, runs_dir: Path):
    """The executor object for executor.execute(executor=...)."""
    from harness.executor import LocalExecutor

    if name == "local":
        return LocalExecutor()
    return SubmititExecutor("slurm" if name == "slurm" else "local", sets, runs_dir)


def _env_delta(env: dict) -> tuple[dict, list[str]]:
    """What the child's environment changes relative to this process's: only that travels
    with the job (the job's own environment comes from the scheduler, e.g. its GPUs)."""
    changed = {k: v for k, v in env.items() if os.environ.get(k) != v}
    dropped = [k for k in os.environ if k not in env]
    return changed, dropped


class SubmititExecutor:
    """One submitit job per run; `--jobs N` is how many are in flight at once."""

    def __init__(self, cluster: str, sets: dict, runs_dir: Path, poll_s: float = 1.0):
        import submitit

        self.cluster = cluster
        self.folder = Path(runs_dir) / ".submitit" / "%j"   # pickles and job logs, one folder per job
        ctor = {f"{cluster}_{k}": v for k, v in sets.items() if k in CONSTRUCTOR}
        self._executor = submitit.AutoExecutor(folder=self.folder, cluster=cluster, **ctor)
        params = {k: v for k, v in sets.items() if k in GENERIC}
        if cluster == "slurm":
            params.update({f"slurm_{k}": v for k, v in sets.items() if k in SLURM})
        params.setdefault("timeout_min", 60)
        params.setdefault("name", "harness")
        self._executor.update_parameters(**params)
        self.poll_s = poll_s
        self.array = bool(sets.get("array", False))
        self._pending: list[dict] = []         # array=true: submissions waiting for their array
        self._submit_lock = threading.Lock()    # one executor.batch() at a time
        self.jobs: set = set()
        self._guard = threading.Lock()
        self._cancelled = threading.Event()   # SIGTERM: jobs cancelled, waited for
        self._detach = threading.Event()      # Ctrl-C: jobs left running, not waited for

    def launch(self, cmd: list[str], env: dict, log, resume_cmd: list[str] | None = None) -> tuple[int, int]:
        """Submit the run as a job (or re-attach to the live job an earlier sweep submitted
        for it) and wait for it: (exit code, the run process's peak RSS)."""
        run_dir = _run_dir_of(cmd)
        record = _record_path(run_dir)
        job = self._live_job(record)
        if job is not None:
            _say(log, f"re-attached to {self.cluster} job {job.job_id}: an earlier sweep submitted it "
                      "and it is still queued or running")
        else:
            changed, dropped = _env_delta(env)
            try:
                job = self._submit(RunJob(cmd, resume_cmd or cmd, run_dir, changed, dropped, log.name))
            except Exception as exc:   # sbatch refused it (a partition that does not exist, ...)
                lines = [line for line in str(exc).splitlines() if line.strip()]
                _say(log, f"submitit could not submit the job: {lines[-1] if lines else type(exc).__name__}")
                return 1, 0
            if self.cluster == "slurm":   # for a later sweep, where file locks may not reach the job's node
                from harness import store

                store.write_json(record, {"job_id": job.job_id, "folder": str(self.folder)})
        with self._guard:
            self.jobs.add(job)
        try:
            while not job.done():
                if self._detach.wait(self.poll_s):
                    raise KeyboardInterrupt   # Ctrl-C: stop waiting; the job runs on (re-attached later)
            record.unlink(missing_ok=True)
            try:
                return job.result()
            except Exception as exc:   # the job itself failed (or was cancelled): say so in the run's log
                if self._cancelled.is_set():
                    return 143, 0      # the scheduler's SIGTERM made the run checkpoint and stop
                last = str(exc).strip().splitlines()
                _say(log, f"submitit job {job.job_id} ended without a result: "
                          f"{last[-1] if last else type(exc).__name__}")
                return 1, 0
        finally:
            with self._guard:
                self.jobs.discard(job)

    def _submit(self, run_job):
        """One job, or (array=true) one task of the array of every submission that arrives
        within ARRAY_WINDOW_S of the first: that one's thread waits, then submits them all
        in one executor.batch() and hands each thread its job."""
        if not self.array:
            return self._executor.submit(run_job)
        slot = {"run_job": run_job, "ready": threading.Event(), "job": None, "error": None}
        with self._guard:
            self._pending.append(slot)
            leader = len(self._pending) == 1
        if leader:
            time.sleep(ARRAY_WINDOW_S)
            with self._guard:
                batch, self._pending = self._pending, []
            try:
                with self._submit_lock, self._executor.batch():
                    jobs = [self._executor.submit(s["run_job"]) for s in batch]
                for s, job in zip(batch, jobs):
                    s["job"] = job
            except Exception as exc:
                for s in batch:
                    s["error"] = exc
            finally:
                for s in batch:
                    s["ready"].set()
        slot["ready"].wait()
        if slot["error"] is not None:
            raise slot["error"]
        return slot["job"]

    def has_live_job(self, run_dir) -> bool:
        return self._live_job(_record_path(str(run_dir))) is not None

    def _live_job(self, record: Path):
        """The job an earlier sweep submitted for this run, if SLURM still has it queued or
        running; None otherwise (and for submitit-local, whose jobs die with their sweep)."""
        if self.cluster != "slurm" or not record.exists():
            return None
        import submitit

        from harness import store

        try:
            rec = store.read_json(record)
            job = submitit.SlurmJob(folder=rec["folder"], job_id=str(rec["job_id"]))
            live = not job.done(force_check=True)
        except Exception:   # a damaged record or an unknown job: submit afresh
            live = False
        if not live:
            record.unlink(missing_ok=True)
            return None
        return job

    def signal_all(self, signum: int) -> None:
        """SIGTERM to the sweep: cancel the jobs in flight (the scheduler sends each run
        SIGTERM, so it checkpoints and records `interrupted`) and wait for them to end."""
        self._cancelled.set()
        with self._guard:
            jobs = list(self.jobs)
        for job in jobs:
            try:
                if self.cluster == "local":
                    # a submitit-local job id is its controller's pid; the controller passes
                    # SIGTERM to the job, whose RunJob passes it to the run (cancel() would
                    # send SIGINT, which a sweep started in the background ignores)
                    os.kill(int(job.job_id), signal.SIGTERM)
                else:
                    job.cancel(check=False)   # scancel: SLURM sends every process of the job SIGTERM
            except Exception:   # already gone
                pass

    def stop_waiting(self) -> None:
        """Ctrl-C: stop waiting for jobs; they run on, and the same sweep again re-attaches
        to them (slurm) instead of submitting the runs twice."""
        self._detach.set()


def _record_path(run_dir: str) -> Path:
    return Path(run_dir).parent / ".locks" / f"{Path(run_dir).name}.job"


def _say(log, line: str) -> None:
    with open(log.name, "a") as fh:
        fh.write(line + "\n")


def _run_dir_of(cmd: list[str]) -> str:
    """The run directory a `harness run` command writes: --resume DIR or --runs-dir/--run-id."""
    def flag(name):
        return cmd[cmd.index(name) + 1] if name in cmd else None

    return flag("--resume") or str(Path(flag("--runs-dir")) / flag("--run-id"))


def _child_signals() -> None:
    # the scheduler's warning signal is for the job process (submitit's handler); the run
    # itself stops on the SIGTERM that RunJob.checkpoint sends it. SIG_IGN survives exec.
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_DFL)   # Ctrl-C reaches the run even from a job that ignores it


try:
    from submitit.helpers import Checkpointable as _Checkpointable
except ImportError:   # submitit is optional (the cluster extra); RunJob is only built with it
    _Checkpointable = object


class RunJob(_Checkpointable):
    """What one submitit job runs: the run's `harness run` process. Re-running it (after a
    requeue) resumes the run from its checkpoint, or does nothing when the run is done."""

    def __init__(self, cmd, resume_cmd, run_dir, env_changed, env_dropped, log_path):
        self.cmd, self.resume_cmd, self.run_dir = list(cmd), list(resume_cmd), run_dir
        self.env_changed, self.env_dropped, self.log_path = dict(env_changed), list(env_dropped), log_path
        self._proc = None

    def __call__(self) -> tuple[int, int]:
        from harness.executor import state_of, wait_with_peak

        state = state_of(Path(self.run_dir))
        if state == "done":
            return 0, 0                      # finished just before a requeue
        if state == "stale" and "--resume" not in self.cmd:
            shutil.rmtree(self.run_dir)      # killed before its first checkpoint: start again
        cmd = self.resume_cmd if state == "resumable" else self.cmd
        # SIGTERM to the job (scancel, a cancelled submitit-local job): the run checkpoints and
        # stops; this job then returns its exit code (submitit's own handler would ignore it)
        signal.signal(signal.SIGTERM, self._pass_sigterm)
        env = {k: v for k, v in os.environ.items() if k not in self.env_dropped}
        env.update(self.env_changed)
        with open(self.log_path, "ab") as log:
            if cmd is not self.cmd:
                log.write(f"$ {' '.join(cmd)}   (the requeued job resumes the run)\n".encode())
                log.flush()
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                          preexec_fn=_child_signals)
            result = wait_with_peak(self._proc)   # the run's own peak RSS, as LocalExecutor
        self._proc = None
        return result

    def _pass_sigterm(self, signum, frame) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)

    def checkpoint(self, *args, **kwargs):
        """The job is being timed out or preempted: let the run checkpoint and stop, then
        requeue this job, which resumes it."""
        import submitit

        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)   # the run finishes its step, checkpoints, exits 143
            try:
                proc.wait(timeout=float(os.environ.get("HARNESS_CHECKPOINT_WAIT_S", "300")))
            except subprocess.TimeoutExpired:
                proc.kill()
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    # submitit 1.5 calls `checkpoint`; its newer documentation names the hook __submitit_checkpoint__
    def __submitit_checkpoint__(self, *args, **kwargs):
        return self.checkpoint(*args, **kwargs)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_proc"] = None   # a process handle does not travel with the requeued job
        return state
