"""`--log tensorboard,mlflow`: live views of a run in the tools researchers already use.

The run store (metrics.jsonl, summary.json, config.json) stays the record; these
loggers copy it as it is written, on the main process only (rank 0 under torchrun),
and `report` needs neither library. A logger that fails prints one warning line and
stops; the run goes on. Both libraries are the optional extra `.[tracking]` and are
imported only when --log names them (mlflow alone costs seconds of imports).

- tensorboard: torch.utils.tensorboard event files in the run directory; every
  numeric field of each metrics.jsonl record is a scalar at its `step`; at the end the
  resolved hyperparameters and the summary's numbers go to add_hparams.
- mlflow: one MLflow run per harness run (its id is kept in the run directory's
  mlflow.json, so --resume continues it); params = the resolved hyperparameters
  (optimizer.KEY, problem.KEY), metrics per step, config.json and summary.json as
  artifacts, tags optimizer/problem/seed/commit. Tracking URI: MLFLOW_TRACKING_URI,
  else sqlite:///<runs-dir>/mlflow.db (artifacts beside it in <runs-dir>/mlartifacts);
  experiment: MLFLOW_EXPERIMENT_NAME, else "harness".
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

from harness.callbacks import Callback
from harness.errors import UsageError

BACKENDS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}   # --log name -> module it needs
INSTALL = "pip install -e '.[tracking]'   (or: pip install tensorboard mlflow)"


def parse_log(text: str | None) -> list[str]:
    """'tensorboard,mlflow' -> the backends, each installed; else one UsageError line."""
    if not text:
        return []
    names = list(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    bad = [n for n in names if n not in BACKENDS]
    if bad or not names:
        raise UsageError(f"--log {text!r}: expected a comma-separated subset of {', '.join(BACKENDS)}")
    missing = [n for n in names if importlib.util.find_spec(BACKENDS[n]) is None]
    if missing:
        raise UsageError(f"--log {','.join(missing)}: not installed; run: {INSTALL}")
    return names


def callbacks(names: list[str], runs_dir) -> list[Callback]:
    """The loggers of `names` for runs under `runs_dir`, their libraries imported now,
    before the run's clock starts (seconds for mlflow). Nothing is written before
    `connect` (call it once the run has passed validation) or, failing that, bind."""
    loggers = [{"tensorboard": TensorBoard, "mlflow": MLflow}[n](Path(runs_dir)) for n in names]
    if os.environ.get("RANK", "0") == "0":   # torchrun's other ranks never log
        for logger in loggers:
            logger.on = True
            logger._guard(logger._import)
    return loggers


def connect(loggers: list[Callback]) -> None:
    """Open the stores (the MLflow database: seconds) before the run's clock starts, so
    that a run's wall_clock_s is the same with and without --log."""
    for logger in loggers:
        logger._guard(logger._connect)
        logger.connected = True


def numeric(record: dict) -> dict[str, float]:
    """The fields of a record that are numbers (bools and None left out), step aside."""
    return {k: float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class _Logger(Callback):
    """Guards a backend: only the main process logs, and the first error of the backend
    prints one warning line and switches it off."""

    NAME = ""

    def __init__(self, runs_dir: Path):
        self.runs_dir = runs_dir
        self.on = False           # True once imported, on the main process only
        self.connected = False
        self.run_dir: Path | None = None

    def _guard(self, fn, *args) -> None:
        if not self.on:
            return
        try:
            fn(*args)
        except Exception as exc:   # a live view must never fail the run
            self.on = False
            text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300]
            print(f"warning: --log {self.NAME} stopped ({text}); the run goes on, its record is "
                  f"{self.run_dir or self.runs_dir}", file=sys.stderr, flush=True)

    def bind(self, run_dir: Path) -> None:
        from harness import distributed

        self.run_dir = Path(run_dir)
        self.on = self.on and distributed.is_main()
        self.config = json.loads((self.run_dir / "config.json").read_text())
        if not self.connected:
            connect([self])
        self._guard(self._open)

    def on_start(self, state) -> None:
        # the evaluation before the first step is written before callbacks start
        if state.step == 0:
            for record in _records(self.run_dir / "metrics.jsonl"):
                self._guard(self._step, record)

    def on_step(self, state, record: dict) -> None:
        self._guard(self._step, record)

    def on_end(self, summary: dict) -> None:
        self._guard(self._end, summary)

    def hparams(self) -> dict:
        """The resolved hyperparameters as `optimizer.KEY` / `problem.KEY`."""
        return {**{f"optimizer.{k}": v for k, v in self.config["optimizer_params"].items()},
                **{f"problem.{k}": v for k, v in self.config["problem_params"].items()}}

    def _import(self) -> None: ...
    def _connect(self) -> None: ...
    def _open(self) -> None: ...
    def _step(self, record: dict) -> None: ...
    def _end(self, summary: dict) -> None: ...


def summary_numbers(summary: dict) -> dict[str, float]:
    return {f"summary/{k}": v for k, v in numeric(summary).items() if math.isfinite(v)}


class TensorBoard(_Logger):
    NAME = "tensorboard"

    def _import(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.SummaryWriter = SummaryWriter

    def _open(self) -> None:
        self.writer = self.SummaryWriter(log_dir=str(self.run_dir))

    def _step(self, record: dict) -> None:
        for key, value in numeric(record).items():
            self.writer.add_scalar(key, value, global_step=record["step"])
        self.writer.flush()

    def _end(self, summary: dict) -> None:
        hp = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in self.hparams().items()}
        hp.update(optimizer=self.config["optimizer"], problem=self.config["problem"], seed=self.config["seed"])
        # run_name ".": the hparams session lands in the run's own directory (one TB run)
        self.writer.add_hparams(hp, summary_numbers(summary), run_name=".", global_step=summary["steps"])
        self.writer.close()


# MLflow's HTTP client retries 7 times with exponential backoff and a 120 s timeout per
# request (minutes when the server is down); a live view fails fast instead. Set the
# variables to override.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
PROBE_TIMEOUT_S = 3.0


def probe_store(uri: str) -> None:
    """Raise (one line) when the tracking store at `uri` cannot be used, in seconds: a
    SQLite file that is not a database or cannot be opened for writing (MLflow retries
    its engine 15 times over about 100 s), a server that does not answer."""
    import socket
    import sqlite3
    from urllib.parse import urlparse

    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        path = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
        if path is None or str(path) == ":memory:":
            return
        if not path.exists():
            parent = next((p for p in path.parents if p.exists()), None)
            if parent is None or not (parent.is_dir() and os.access(parent, os.W_OK)):
                raise OSError(f"cannot create the tracking database {path} (no writable directory)")
            return
        if not os.access(path, os.R_OK | os.W_OK):
            raise OSError(f"tracking database {path} is not readable and writable")
        try:
            con = sqlite3.connect(f"{path.as_uri()}?mode=rw", uri=True, timeout=PROBE_TIMEOUT_S)
            try:
                con.execute("SELECT count(*) FROM sqlite_master").fetchone()
            finally:
                con.close()
        except sqlite3.Error as exc:
            raise OSError(f"tracking database {path}: {exc}") from None
    elif parsed.scheme in ("http", "https"):
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname, port), timeout=PROBE_TIMEOUT_S).close()
        except OSError as exc:
            raise OSError(f"tracking server {parsed.hostname}:{port} does not answer "
                          f"({exc.strerror or exc})") from None


class MLflow(_Logger):
    NAME = "mlflow"
    FLUSH_EVERY_S = 5.0   # metrics are sent in batches: a database write per step is slow

    def _import(self) -> None:
        import mlflow.entities  # noqa: F401
        import mlflow.tracking  # noqa: F401

    def _connect(self) -> None:
        import logging

        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):   # "Creating initial MLflow database tables..." is not news
            logging.getLogger(name).setLevel(logging.WARNING)
        runs_dir = self.runs_dir.resolve()
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{runs_dir / 'mlflow.db'}"
        probe_store(self.uri)   # unusable: one line now, not minutes of MLflow's retries
        self.client = MlflowClient(tracking_uri=self.uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "harness"
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            # artifacts next to the local database, never in the current directory
            location = None if os.environ.get("MLFLOW_TRACKING_URI") else (runs_dir / "mlartifacts").as_uri()
            self.exp_id = self.client.create_experiment(name, artifact_location=location)
        else:
            self.exp_id = exp.experiment_id

    def _open(self) -> None:
        uri, exp_id = self.uri, self.exp_id
        kept = self.run_dir / "mlflow.json"
        if kept.exists():   # --resume: the same MLflow run goes on
            self.run_id = json.loads(kept.read_text())["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            env = json.loads((self.run_dir / "env.json").read_text())
            cfg = self.config
            tags = {"optimizer": cfg["optimizer"], "problem": cfg["problem"], "seed": str(cfg["seed"]),
                    "commit": str(env.get("git_commit")), "harness.run_dir": str(self.run_dir.resolve())}
            run = self.client.create_run(exp_id, run_name=self.run_dir.name, tags=tags)
            self.run_id = run.info.run_id
            kept.write_text(json.dumps({"tracking_uri": uri, "experiment_id": exp_id, "run_id": self.run_id}))
            from mlflow.entities import Param

            params = [Param(k, str(v)) for k, v in sorted(self.hparams().items())]
            for i in range(0, len(params), 100):   # MLflow takes at most 100 params per batch
                self.client.log_batch(self.run_id, params=params[i:i + 100])
        self.pending, self.last_flush = [], time.monotonic()

    def _step(self, record: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(k, v, now, int(record["step"])) for k, v in numeric(record).items()]
        if time.monotonic() - self.last_flush > self.FLUSH_EVERY_S:
            self._flush()

    def _flush(self) -> None:
        for i in range(0, len(self.pending), 1000):   # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=self.pending[i:i + 1000])
        self.pending, self.last_flush = [], time.monotonic()

    def _end(self, summary: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.pending += [Metric(k, v, now, int(summary["steps"])) for k, v in summary_numbers(summary).items()]
        self._flush()
        for name in ("config.json", "summary.json"):
            self.client.log_artifact(self.run_id, str(self.run_dir / name))
        status = {"ok": "FINISHED", "diverged": "FINISHED", "interrupted": "KILLED"}.get(summary["status"], "FAILED")
        self.client.set_tag(self.run_id, "status", summary["status"])
        self.client.set_terminated(self.run_id, status=status)
