#!/usr/bin/env bash
# The demo (`make demo`): a synthetic log with long histories, then
#   prep -> train (last: one window per user) -> train (sliding: every window) -> eval both,
# and a side-by-side table of accuracy (with 95% bootstrap CIs and a paired test) and cost.
# About 5 minutes on a 2-core laptop CPU. Every stage prints one path on stdout, so the
# steps below are exactly what you would type (or pipe) yourself.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export PYTHONUNBUFFERED=1

OUT=${OUT:-runs/demo}
TRAIN_FLAGS=(--window 50 --epochs ${EPOCHS:-8} --patience 0 --dim 64 --batch-size 128 --seed 0)
rm -rf "$OUT"

data=$(python scripts/prep.py --synthetic --users 2000 --items 1000 --seed 0 --out data/demo --force)
last=$(python scripts/train.py --data "$data" --regime last "${TRAIN_FLAGS[@]}" --out "$OUT/last")
sliding=$(python scripts/train.py --data "$data" --regime sliding --stride 8 "${TRAIN_FLAGS[@]}" --out "$OUT/sliding")
python scripts/eval.py --run "$last" >/dev/null
python scripts/eval.py --run "$sliding" --compare "$last"
