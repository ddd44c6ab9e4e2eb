#!/usr/bin/env bash
# The prepared GPU measurement (docs/gpu.md): one command on a GPU machine that reaches no
# package index.
#
#   bash benchmarks/gpu_device.sh wheels                # here, online: wheels of what the GPU machine
#                                                       # lacks into .whl/ (git-ignored)
#   bash benchmarks/gpu_device.sh run OUT [BUDGET_S [SUITE_ARGS...]]
#                                                       # there, offline: install .whl/, check imports,
#                                                       # run benchmarks/gpu_suite.py, log to OUT/
#   bash benchmarks/gpu_device.sh check                 # here: the same run's smoke on CPU, offline and
#                                                       # with the optional libraries unimportable
#
# GPU_PYTHON (default 3.12) is the GPU machine's Python; GPU_WHEELS (default: the list in
# benchmarks/gpu_wheels.txt) names what to fetch for it as NAME==VERSION.
set -euo pipefail
cd "$(dirname "$0")/.."
verb="${1:-}"
# What the suite imports: the run path needs nothing else (the optional libraries, cma, optuna,
# nevergrad, cocoex/cocopp, datasets, submitit, mlflow, are imported only where used).
NEEDED="torch transformers numpy psutil tqdm tabulate pytest"

offline_env() {
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PIP_NO_INDEX=1 PYTHONUNBUFFERED=1
}

case "$verb" in
wheels)
    mkdir -p .whl
    wanted="${GPU_WHEELS:-$(grep -v '^#' benchmarks/gpu_wheels.txt | tr '\n' ' ')}"
    if [ -z "${wanted// /}" ]; then
        echo "gpu_device: nothing to fetch (benchmarks/gpu_wheels.txt lists no package): the GPU image has all of: $NEEDED"
        exit 0
    fi
    # shellcheck disable=SC2086
    python3 -m pip download --no-deps --only-binary=:all: --python-version "${GPU_PYTHON:-3.12}" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl $wanted
    ls -l .whl
    ;;
run)
    out="${2:?usage: gpu_device.sh run OUT [BUDGET_S [SUITE_ARGS...]]}"
    budget="${3:-330}"
    shift $(( $# < 3 ? $# : 3 ))
    mkdir -p "$out"
    offline_env
    exec > >(tee "$out/log.txt") 2>&1
    if compgen -G ".whl/*.whl" > /dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/gpu-site .whl/*.whl
        export PYTHONPATH="/tmp/gpu-site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    python3 - "$NEEDED" <<'EOF'
import importlib, sys
missing = []
for name in sys.argv[1].split():
    try:
        mod = importlib.import_module(name)
        print(f"gpu_device: {name} {getattr(mod, '__version__', '')}")
    except ImportError as exc:
        missing.append(f"{name} ({exc})")
if missing:
    sys.exit("gpu_device: missing on this machine: " + ", ".join(missing)
             + "; add them to benchmarks/gpu_wheels.txt and run `gpu_device.sh wheels` where pip works")
EOF
    python3 benchmarks/gpu_suite.py --out "$out" --budget-s "$budget" "$@"
    ;;
check)
    out="${2:-/tmp/gpu_suite_smoke}"
    offline_env
    PYTHONPATH="$PWD/benchmarks/without_optional${PYTHONPATH:+:$PYTHONPATH}" \
        python3 benchmarks/gpu_suite.py --smoke --out "$out"
    ;;
*)
    echo "usage: gpu_device.sh wheels | run OUT [BUDGET_S [SUITE_ARGS...]] | check [OUT]" >&2
    exit 2
    ;;
esac
