#!/usr/bin/env bash
# The README's figure and the report-index screenshot, exactly as they were made (repository root):
#   bash docs/readme/make.sh [RUNS_DIR]
# es, mezo and adam on qwen3-tiny, default configurations, seeds 0-2, 600 forward-pass
# equivalents each, the held-out metric every 2 steps; then `report`, whose curves figure is
# copied here, and a screenshot of its index.html by headless Chromium (Debian's
# chromium-headless-shell package; skipped, and said, where it is not installed).
# About 10 minutes on the shared 2-core machine.
set -euo pipefail
RUNS=${1:-runs/readme}
OUT="$RUNS-report"
HERE=docs/readme
export OMP_NUM_THREADS=1
python -m harness sweep --optimizers es,mezo,adam --problems qwen3-tiny --seeds 0,1,2 \
    --forwards 600 --eval-every 2 --jobs 2 --runs-dir "$RUNS"
python -m harness report "$RUNS" --out "$OUT"
# both PNGs committed as palettes (a third of the size, the same to the eye): 64 colours for the
# figure, 256 for the screenshot (fewer shift its colours)
small() { python -c "import sys; from PIL import Image; Image.open(sys.argv[1]).convert('RGB').quantize(
    colors=int(sys.argv[3]), method=Image.Quantize.MEDIANCUT).save(sys.argv[2], optimize=True)" "$1" "$2" "$3"; }
small "$OUT/curves_qwen3-tiny.png" "$HERE/curves_qwen3-tiny.png" 64
if command -v chromium-headless-shell > /dev/null; then
    # the first 2400 pixels of the page at 1280 wide, as Chromium 150 lays it out
    chromium-headless-shell --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,2400 \
        --screenshot="$OUT/index.png" "file://$(realpath "$OUT")/index.html"
    small "$OUT/index.png" "$HERE/report_index.png" 256
else
    echo "make.sh: no chromium-headless-shell (apt-get install chromium-headless-shell): no screenshot"
fi
