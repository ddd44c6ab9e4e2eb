#!/usr/bin/env bash
# The issue-29 example: es, mezo, adam x qwen3-tiny x 3 seeds at 600 forward-pass equivalents,
# held-out metric at log-spaced steps, then the report. Run from the repository root:
#   bash docs/analysis/compute_multiplier/make.sh [RUNS_DIR] [OUT]
# The committed files beside this script (index.md, equivalence*, final_*, significance.csv,
# memory_quality.png) are copied from OUT.
set -euo pipefail
RUNS=${1:-/tmp/r29final}
OUT=${2:-/tmp/r29final-report}
OMP_NUM_THREADS=1 python -m harness sweep --optimizers es,mezo,adam --problems qwen3-tiny --seeds 0,1,2 \
    --forwards 600 --eval-schedule log --runs-dir "$RUNS"
python -m harness report "$RUNS" --out "$OUT"
