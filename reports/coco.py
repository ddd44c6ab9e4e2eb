"""COCO's own post-processing (`cocopp`) of the bbob runs of a runs directory.

Every bbob run leaves cocoex Observer data in `<run>/coco/` (problems/bbob.py).
cocopp reads one folder per algorithm, so the runs' COCO folders are linked
under `<report>/coco/data/<optimizer label>/` and cocopp writes its HTML and
figures to `<report>/coco/` (entry page `coco/index.html`).

Offline: cocopp is given local folders only, runs in its own process with
network access cut (urllib's download function replaced before cocopp is
imported) and a fresh cache directory, so no reference archive is downloaded;
its reference ("best 2009") ships inside the cocopp package.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

COCO_DIR = "coco"       # the report's cocopp folder (and each run's COCO data folder)
TIMEOUT_S = 1800

# Run in a child process: cut the network, then hand the arguments to cocopp.main.
_OFFLINE_MAIN = """
import sys, urllib.request
def _offline(*args, **kwargs):
    raise OSError("offline: the harness runs cocopp on local data only")
urllib.request.urlretrieve = urllib.request.urlopen = _offline
import matplotlib
matplotlib.use("Agg")
import cocopp
cocopp.genericsettings.figure_file_formats = ["svg", "png"]   # svg for its HTML, png to copy
cocopp.main(sys.argv[1:])
"""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_") or "run"


def bbob_runs(runs: pd.DataFrame, runs_dir: Path) -> dict[str, list[Path]]:
    """{optimizer label: [COCO data folders of its bbob runs]} (runs with COCO data only)."""
    out: dict[str, list[Path]] = {}
    for row in runs[runs["family"] == "bbob"].itertuples():
        folder = Path(runs_dir) / row.run_id / COCO_DIR
        if any(folder.glob("*.info")):
            out.setdefault(row.label, []).append(folder)
    return out


def build(runs: pd.DataFrame, runs_dir: Path, out: Path) -> dict | None:
    """Run cocopp on the bbob runs; None when there are none. Returns {"index": path
    relative to out, or None} and {"note": one line saying what happened}."""
    folders = bbob_runs(runs, runs_dir)
    if not folders:
        return None
    target = Path(out) / COCO_DIR
    if target.exists():
        shutil.rmtree(target)
    data = target / "data"
    algs = []
    for label, runs_ in sorted(folders.items()):
        alg = data / _slug(label)
        alg.mkdir(parents=True)
        for folder in runs_:   # one sub-folder per run: cocopp reads every .info below alg
            shutil.copytree(folder, alg / _slug(folder.parent.name))
        algs.append(str(alg))
    log = target / "cocopp.log"
    with tempfile.TemporaryDirectory(prefix="cocopp-cache-") as cache:
        env = {**os.environ, "XDG_CACHE_HOME": cache, "MPLBACKEND": "Agg"}
        try:
            proc = subprocess.run([sys.executable, "-c", _OFFLINE_MAIN, "-o", str(target), *algs],
                                  capture_output=True, text=True, env=env, timeout=TIMEOUT_S,
                                  cwd=str(target))
            log.write_text(proc.stdout + proc.stderr)
            ok = proc.returncode == 0 and (target / "index.html").exists()
            why = "" if ok else _last_error(proc.stdout + proc.stderr, proc.returncode)
        except (OSError, subprocess.TimeoutExpired) as exc:
            ok, why = False, f"{type(exc).__name__}: {exc}"
    n = sum(len(v) for v in folders.values())
    if ok:
        return {"index": f"{COCO_DIR}/index.html",
                "note": f"cocopp {_cocopp_version()} on {n} bbob runs of {len(folders)} optimizers "
                        f"(offline, reference: best 2009 shipped with cocopp)"}
    return {"index": None, "note": f"cocopp could not post-process the {n} bbob runs ({why}); "
                                   f"its output is in {COCO_DIR}/cocopp.log"}


def _last_error(text: str, rc) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return ((errors or lines or [f"exit status {rc}"])[-1])[:200]


def _cocopp_version() -> str:
    try:
        from importlib.metadata import version

        return version("cocopp")
    except Exception:
        return "?"
