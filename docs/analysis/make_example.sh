#!/usr/bin/env bash
# The example report of docs/analysis.md, exactly as it was made (from the repository root):
#   bash docs/analysis/make_example.sh [RUNS_DIR [REPORT_DIR]]
# (about 22 min on 2 cores); the report lands in REPORT_DIR, default reports/out/analysis-example
# (generated output, not committed: docs/analysis.md quotes what it shows).
# qwen3-tiny: es, mezo and adam at an equal budget of 600 forward-pass equivalents
# (es: 20 steps of population 30; mezo: 300 steps of 2; adam: 200 steps of 3), the metric
# evaluated every 60 forwards for each; functions: cma, tpe, nevergrad and random on three
# 5-D functions at 200 evaluations. 5 seeds each.
set -euo pipefail
RUNS=${1:-runs/analysis-example}
OUT=${2:-reports/out/analysis-example}
SEEDS=0,1,2,3,4
export OMP_NUM_THREADS=1
python -m harness sweep --optimizers es   --problems qwen3-tiny --seeds $SEEDS --forwards 600 --eval-every 2  --runs-dir "$RUNS" --jobs 2
python -m harness sweep --optimizers mezo --problems qwen3-tiny --seeds $SEEDS --forwards 600 --eval-every 30 --runs-dir "$RUNS" --jobs 2
python -m harness sweep --optimizers adam --problems qwen3-tiny --seeds $SEEDS --forwards 600 --eval-every 20 --runs-dir "$RUNS" --jobs 2
python -m harness sweep --optimizers cma,tpe,nevergrad,random --problems bbob-f1-d5,bbob-f3-d5,bbob-f8-d5 \
    --seeds $SEEDS --evals 200 --runs-dir "$RUNS" --jobs 2
python -m harness report "$RUNS" --out "$OUT"
