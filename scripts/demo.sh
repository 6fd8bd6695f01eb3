#!/usr/bin/env bash
# The demo (`make demo`): a synthetic log whose users have long, drifting histories, then
#   prep -> train (last: one window per user) -> train (sliding: every window) -> eval both,
# and a side-by-side table of accuracy (95% bootstrap CIs, paired test) and training cost.
# Every stage prints one path on stdout, so the lines below are exactly what you would type
# (or pipe) yourself. `last` is cheap per epoch, so it gets many epochs with early stopping;
# `sliding` reads every training event once per epoch (stride = window).
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export PYTHONUNBUFFERED=1

OUT=${OUT:-runs/demo}
MODEL=(--window 20 --dim 64 --batch-size 128 --seed 0)
rm -rf "$OUT"

data=$(python scripts/prep.py --synthetic --users 2000 --items 3000 --seed 0 --out data/demo --force)
last=$(python scripts/train.py --data "$data" --regime last --epochs 40 --patience 5 "${MODEL[@]}" --out "$OUT/last")
sliding=$(python scripts/train.py --data "$data" --regime sliding --stride 20 --epochs 8 --patience 3 "${MODEL[@]}" --out "$OUT/sliding")
python scripts/eval.py --run "$last" >/dev/null
python scripts/eval.py --run "$sliding" --compare "$last"
