"""Fault injection for the test suite, in one place: every HARNESS_TEST_* variable.

The engine calls these hooks at fixed points; with no variable set they do
nothing. They exist so tests can make a run (or one torchrun rank) fail, hang
or die hard at a chosen step, make one run of a sweep do so, or pretend the
machine has less memory, exactly as the real faults would look from outside.

  HARNESS_TEST_FAIL_AT_STEP=K    raise at the start of step K (a failed run)
  HARNESS_TEST_HANG_AT_STEP=K    sleep an hour at the start of step K (a hung rank)
  HARNESS_TEST_KILL_AT_STEP=K    os._exit(137) after step K is recorded (kill -9, OOM)
  HARNESS_TEST_TERM_AT_STEP=K    send this process SIGTERM after step K (preemption)
  HARNESS_TEST_PREEMPT_JOB_AT_STEP=K
                                 after step K send the parent (a submitit job process,
                                 harness.cluster) SIGUSR2, the scheduler's timeout or
                                 preemption warning, and wait for its SIGTERM
  HARNESS_TEST_FAIL_RANK=R       only rank R does the above (default: every rank)
  HARNESS_TEST_SWEEP_FAIL=OPT:PROBLEM:SEED[:kill]
                                 that run of a sweep fails at step 2 (or is killed)
  HARNESS_TEST_AVAILABLE_BYTES=N the preflight sees N bytes available
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

SWEEP_FAIL = "HARNESS_TEST_SWEEP_FAIL"
AVAILABLE_BYTES = "HARNESS_TEST_AVAILABLE_BYTES"


def _int(env, key: str, default: int = 0) -> int:
    return int(env.get(key, "") or default)


@dataclass(frozen=True)
class FaultHooks:
    fail_at: int = 0
    hang_at: int = 0
    kill_at: int = 0
    rank: int = -1          # -1: every rank
    term_at: int = 0
    preempt_job_at: int = 0

    @classmethod
    def from_env(cls, env=None) -> "FaultHooks":
        env = os.environ if env is None else env
        return cls(_int(env, "HARNESS_TEST_FAIL_AT_STEP"), _int(env, "HARNESS_TEST_HANG_AT_STEP"),
                   _int(env, "HARNESS_TEST_KILL_AT_STEP"), _int(env, "HARNESS_TEST_FAIL_RANK", -1),
                   _int(env, "HARNESS_TEST_TERM_AT_STEP"),
                   preempt_job_at=_int(env, "HARNESS_TEST_PREEMPT_JOB_AT_STEP"))

    def _here(self) -> bool:
        from harness import distributed

        return self.rank in (-1, distributed.rank())

    def before_step(self, step: int) -> None:
        """At the start of step `step` (0-based): fail or hang on purpose."""
        if self.fail_at and step + 1 == self.fail_at and self._here():
            raise RuntimeError(f"HARNESS_TEST_FAIL_AT_STEP={self.fail_at} reached")
        if self.hang_at and step + 1 == self.hang_at and self._here():
            time.sleep(3600)   # a rank that stops answering: its peers time out

    def after_step(self, step: int, flush) -> None:
        """After step `step` (1-based) is recorded: die as kill -9 would."""
        if self.kill_at and step == self.kill_at and self._here():
            flush()
            os._exit(137)
        if self.term_at and step == self.term_at and self._here():
            import signal

            os.kill(os.getpid(), signal.SIGTERM)   # the real signal path, as preemption sends it
        if self.preempt_job_at and step == self.preempt_job_at and self._here():
            import signal

            os.kill(os.getppid(), signal.SIGUSR2)
            deadline = time.monotonic() + 60
            # until the job's SIGTERM arrives (the runner's handler then ignores further ones),
            # so the run is stopped mid-way however short its steps are
            while signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN and time.monotonic() < deadline:
                time.sleep(0.05)


def sweep_child_env(env: dict, optimizer: str, problem: str, seed: int) -> dict:
    """The environment of one sweep child: HARNESS_TEST_SWEEP_FAIL becomes that run's
    own FAIL/KILL hook at step 2 when it names this run, and is dropped otherwise."""
    env = dict(env)
    parts = env.pop(SWEEP_FAIL, "").split(":")
    if len(parts) >= 3 and parts[:3] == [optimizer, problem, str(seed)]:
        key = "HARNESS_TEST_KILL_AT_STEP" if parts[3:] == ["kill"] else "HARNESS_TEST_FAIL_AT_STEP"
        env[key] = "2"
    return env


def available_bytes_override() -> int | None:
    value = os.environ.get(AVAILABLE_BYTES)
    return int(value) if value else None
