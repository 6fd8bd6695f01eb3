#!/usr/bin/env bash
# Every run behind docs/RESULTS.md, in lanes meant to run two at a time on a 2-core CPU:
#
#     bash docs/results.sh prep          # data dirs from ../shared/data (skips those that exist)
#     bash docs/results.sh lane & bash docs/results.sh lane; wait     # converged runs (§1, §2, §4)
#     bash docs/results.sh a & bash docs/results.sh b; wait           # fixed-budget runs (§3, ablations.md)
#     bash docs/results.sh fast          # the 20-minute two-core recipe (§1), on an idle machine
#     bash docs/results.sh report        # every table from the finished runs: the marked tables of
#                                        # docs/RESULTS.md rewritten in place, the rest on stdout
#
# Each lane trains with one torch thread, so two lanes share the machine evenly. frontier.py skips
# finished runs and resumes stopped ones from their checkpoints, so a lane that is interrupted
# continues where it stopped when started again; two `lane` processes share each grid's runs.
set -euo pipefail
cd "$(dirname "$0")/.."
S=${SHARED_DATA:-../shared/data}
OUT=${RESULTS_OUT:-runs/results}
# Fixed-budget runs (§3, docs/ablations.md): SASRec as in the SASRec+ reference but dropout 0.2,
# a 100-step warm-up and seen items ranked (unfiltered), each stopped by --max-train-seconds
MODEL="--dim 64 --layers 2 --heads 1 --ffn 64 --dropout 0.2 --batch-size 128 --lr 1e-3 --warmup-steps 100"
RUN="--epochs 200 --patience 10 --threads 1 --filter-seen no"
frontier() { python scripts/frontier.py "$@" $MODEL $RUN; }

# The SASRec+ reference configuration (Klenitskiy & Vasilev, RecSys 2023), trained to convergence:
# early stopping on validation NDCG@10 (seen items filtered on ml-1m, by --filter-seen auto)
SASREC="--dim 64 --layers 2 --heads 1 --ffn 64 --dropout 0.1 --batch-size 128 --lr 1e-3 --loss ce
        --epochs 300 --patience 10 --threads 1"
converged() { python scripts/frontier.py "$@" $SASREC; }

case "${1:-}" in
lane)
  # Converged runs; start two lanes (`bash docs/results.sh lane & bash docs/results.sh lane; wait`):
  # they share each grid's runs, and a stopped lane resumes its run from the checkpoint.
  # 1. ml-1m, window 200: SASRec+ (`last`) and the same model on every window of the history
  converged --data data/ml-1m --out $OUT/ml1m-sasrec --regimes last,sliding --windows 200 --strides 200 --repeats 3
  # 2. Item embeddings on amazon-beauty (12,101 items), the same model on each user's last 50 events
  #    (median history 6, so batches are grouped by length): the full table, k-shift at c = 16 plain
  #    and with learned row weights, the same-memory low-rank table, and c = 16's memory split into
  #    exact rows for the 378 most frequent items and a c = 32 hashed table for the rest, 3 seeds,
  B="--data data/beauty --regimes last --windows 50 --group-by-length --repeats 3"
  converged $B --out $OUT/beauty-emb-full
  converged $B --out $OUT/beauty-emb-kshift-c16 --item-emb kshift --kshift-compression 16
  converged $B --out $OUT/beauty-emb-lowrank-c16 --item-emb lowrank --kshift-compression 16
  converged $B --out $OUT/beauty-emb-kshift-c16-weights --item-emb kshift --kshift-compression 16 --kshift-weights
  converged $B --out $OUT/beauty-emb-kshift-c32-head378-weights --item-emb kshift --kshift-compression 32 \
      --kshift-head 378 --kshift-weights
  #    and plain k-shift with the row-wise optimizer that large catalogues need (sparse gradient), 1 seed
  converged $B --out $OUT/beauty-emb-kshift-c16-rowwise --item-emb kshift --kshift-compression 16 \
      --emb-optimizer rowwise --repeats 1
  # 3. The frontier at convergence (§2): every regime to early stopping, 3 seeds, batches grouped by
  #    length and bf16 matmuls (the fast recipe's settings that apply to every regime); the cheap
  #    grids first. Retailrocket validates on a fixed sample of 20,000 of its 126,168 sessions
  #    (ranking them all took longer than an epoch); its test metrics rank every session.
  F="--repeats 3 --group-by-length --precision bf16"
  converged --data data/ml-100k --out $OUT/ml100k-w50-conv --regimes last,sliding,session --windows 50 --strides 25 $F
  converged --data data/beauty --out $OUT/beauty-w20-conv --regimes last,sliding,mixed --windows 20 --strides 10 \
      --mixed-epochs 3 $F
  converged --data data/retailrocket --out $OUT/retailrocket-w10-conv --regimes last,sliding,mixed --windows 10 \
      --strides 5 --mixed-epochs 3 --valid-sample 20000 $F
  # 4. Item embeddings on ml-1m beside §1's full table (last, window 200): k-shift and low-rank at c = 16,
  #    3 seeds
  M="--data data/ml-1m --regimes last --windows 200 --repeats 3"
  converged $M --out $OUT/ml1m-emb-kshift-c16 --item-emb kshift --kshift-compression 16
  converged $M --out $OUT/ml1m-emb-lowrank-c16 --item-emb lowrank --kshift-compression 16
  # 5. Toward test NDCG@10 0.19 on ml-1m: section 1's best cell (sliding, window 200) with 4 blocks and
  #    2 heads instead of 2 and 1, 3 seeds
  python scripts/frontier.py --data data/ml-1m --out $OUT/ml1m-sliding-l4h2 --regimes sliding --windows 200 \
      --strides 200 --repeats 3 --group-by-length --precision bf16 $SASREC --layers 4 --heads 2
  # 6. ml-1m, window 50 (most histories are longer than the window): every regime, 3 seeds
  converged --data data/ml-1m --out $OUT/ml1m-w50-conv --regimes last,sliding,mixed,random --windows 50 \
      --strides 50,25 --mixed-epochs 3 $F
  # 7. Item embeddings at compressions 4 and 64 beside section 2's and section 4's c = 16 runs
  for c in 4 64; do
    converged $B --out $OUT/beauty-emb-kshift-c$c --item-emb kshift --kshift-compression $c
    converged $B --out $OUT/beauty-emb-lowrank-c$c --item-emb lowrank --kshift-compression $c
  done
  converged $M --out $OUT/ml1m-emb-kshift-c4 --item-emb kshift --kshift-compression 4
  converged $M --out $OUT/ml1m-emb-lowrank-c4 --item-emb lowrank --kshift-compression 4
  #    and amazon-beauty's best c = 16 variant on ml-1m: exact rows for the 106 most frequent items
  converged $M --out $OUT/ml1m-emb-kshift-c32-head106-weights --item-emb kshift --kshift-compression 32 \
      --kshift-head 106 --kshift-weights
  # 8. Data-driven item codes (RecJPQ: --item-emb codes), beside the full tables of sections 2 and 4:
  #    amazon-beauty m = 8 codes of 256 values (1/34 of the full table's training bytes) and m = 32 (1/19);
  #    ml-1m m = 8 of 128 values (1/22) and of 64 (1/38); and the paper code's own k-shift setting,
  #    P = 1.15 N rows (compression 1/1.15), k = 8
  converged $B --out $OUT/beauty-emb-codes-m8 --item-emb codes --code-subspaces 8 --code-centroids 256
  converged $B --out $OUT/beauty-emb-codes-m32 --item-emb codes --code-subspaces 32 --code-centroids 256
  converged $M --out $OUT/ml1m-emb-codes-m8-c128 --item-emb codes --code-subspaces 8 --code-centroids 128
  converged $M --out $OUT/ml1m-emb-codes-m8-c64 --item-emb codes --code-subspaces 8 --code-centroids 64
  converged $B --out $OUT/beauty-emb-kshift-paper --item-emb kshift --emb-compression 0.8696
  #    k-shift whose k = 8 rows are picked by the item's codes instead of a hash (8 x 64 rows, 1/20)
  converged $B --out $OUT/beauty-emb-kshift-codes-c64 --item-emb kshift --kshift-rows codes --code-centroids 64
  converged $M --out $OUT/ml1m-emb-kshift-paper --item-emb kshift --emb-compression 0.8696
  #    ml-1m codes on §2's every-window cell of 50 (ml1m-w50-conv, section 6), m = 8 of 128 values (1/22)
  converged --data data/ml-1m --out $OUT/ml1m-w50-codes-m8-c128 --regimes sliding --windows 50 --strides 50 $F \
      --item-emb codes --code-subspaces 8 --code-centroids 128
  #    retailrocket sessions (36,968 items; §2's protocol, last window of 10): the full table and codes
  R="--data data/retailrocket --regimes last --windows 10 --valid-sample 20000 --repeats 3 --group-by-length --precision bf16"
  converged $R --out $OUT/retailrocket-emb-full
  converged $R --out $OUT/retailrocket-emb-codes-m8 --item-emb codes --code-subspaces 8 --code-centroids 256
  #    codes by product quantisation of a 64-component SVD (1/34 on amazon-beauty), and the same with 2
  #    floats of each item's own (--code-residual 2: 62 bytes per item on amazon-beauty, 47 on retailrocket)
  P="--item-emb codes --code-subspaces 8 --code-centroids 256 --code-assignment pq"
  converged $R --out $OUT/retailrocket-emb-codes-pq-m8-r2 $P --code-residual 2
  #    and 3 floats (63 bytes per item on retailrocket, within 1/16)
  converged $R --out $OUT/retailrocket-emb-codes-pq-m8-r3 $P --code-residual 3
  converged $B --out $OUT/beauty-emb-codes-pq-m8 $P
  converged $B --out $OUT/beauty-emb-codes-pq-m8-r2 $P --code-residual 2
  # 9. History before the window (§5): ml-1m, window 50 on every window plus a summary of the 200
  #    events before each window in 4 tokens, against §2's window-50 and §1's window-200 cells; and
  #    longer inputs, windows of 400 and 800 (`last` and every window)
  W="--data data/ml-1m --regimes sliding --windows 50 --strides 50 --repeats 3 --group-by-length --precision bf16"
  converged $W --out $OUT/ml1m-w50-summary200 --summary-events 200 --summary-tokens 4
  #    the same events in 4 tokens of learned attention pooling
  converged $W --out $OUT/ml1m-w50-summary200-attention --summary-events 200 --summary-tokens 4 \
      --summary-pool attention
  #    and the same summary on amazon-beauty, whose histories fit in one window (it must not hurt)
  converged $B --out $OUT/beauty-summary200 --summary-events 200 --summary-tokens 4
  for w in 400 800; do
    converged --data data/ml-1m --out $OUT/ml1m-w$w --regimes last,sliding --windows $w --strides $w --repeats 3 \
        --group-by-length --precision bf16
  done
  #    §1's 4-block model on every window of 200 at learning rate 2e-3, and the same with a summary of the
  #    200 events before each window (4 learned attention queries)
  L4="--data data/ml-1m --regimes sliding --windows 200 --strides 200 --repeats 3 --group-by-length --precision bf16"
  python scripts/frontier.py $L4 --out $OUT/ml1m-sliding-l4h2-lr2e-3 $SASREC --layers 4 --heads 2 --lr 2e-3
  python scripts/frontier.py $L4 --out $OUT/ml1m-sliding-l4h2-lr2e-3-summary200 $SASREC --layers 4 --heads 2 \
      --lr 2e-3 --summary-events 200 --summary-tokens 4 --summary-pool attention
  #    and the same model with dropout 0.2
  python scripts/frontier.py $L4 --out $OUT/ml1m-sliding-l4h2-lr2e-3-dropout02 $SASREC --layers 4 --heads 2 \
      --lr 2e-3 --dropout 0.2
  #    and the same validated and kept as a moving average of its weights
  python scripts/frontier.py $L4 --out $OUT/ml1m-sliding-l4h2-lr2e-3-ema0995 $SASREC --layers 4 --heads 2 \
      --lr 2e-3 --ema-decay 0.995
  ;;
fast)
  # The fast recipe on ml-1m (§1): sliding windows, batches grouped by length, bf16 matmuls, both
  # cores, 20 minutes of training; time it on an otherwise idle machine
  python scripts/train.py --data data/ml-1m --out $OUT/ml1m-fast/run --regime sliding --window 200 --stride 200 \
      --group-by-length --precision bf16 $SASREC --threads 2 --max-train-seconds 1200
  python scripts/eval.py --run $OUT/ml1m-fast/run
  #    and §1's deeper model (4 blocks, 2 heads) in the same 20 minutes, with its learning curve
  python scripts/frontier.py --data data/ml-1m --out $OUT/ml1m-fast-l4h2 --regimes sliding --windows 200 \
      --strides 200 --repeats 1 --group-by-length --precision bf16 $SASREC --layers 4 --heads 2 --threads 2 \
      --max-train-seconds 1200
  #    and one change each to the 4-block model: its rate decayed to zero by epoch 42 (cosine), about where
  #    the 20 minutes end (1 seed); a learning rate of 2e-3 (3 seeds)
  L4="--data data/ml-1m --regimes sliding --windows 200 --strides 200 --group-by-length --precision bf16
      $SASREC --layers 4 --heads 2 --threads 2 --max-train-seconds 1200"
  python scripts/frontier.py $L4 --out $OUT/ml1m-fast-l4h2-cosine --repeats 1 --schedule cosine --epochs 42
  python scripts/frontier.py $L4 --out $OUT/ml1m-fast-l4h2-lr2e-3 --repeats 3 --lr 2e-3
  #    and at 2e-3 validated and kept as a moving average of the weights (3 seeds)
  python scripts/frontier.py $L4 --out $OUT/ml1m-fast-l4h2-lr2e-3-ema0995 --repeats 3 --lr 2e-3 --ema-decay 0.995
  ;;
prep)
  [ -d data/ml-1m ] || python scripts/prep.py "$S/ml-1m/ml-1m.txt.gz" --out data/ml-1m
  [ -d data/beauty ] || python scripts/prep.py "$S/amazon-beauty/Beauty.txt.gz" --out data/beauty
  [ -d data/retailrocket ] || python scripts/prep.py "$S/retailrocket-sessions/train_sessions.txt.gz" \
      --format items --out data/retailrocket
  [ -d data/ml-100k ] || python scripts/prep.py "$S/ml-100k/ml-100k.inter.gz" --out data/ml-100k
  [ -d data/ml-latest-small ] || python scripts/prep.py "$S/ml-latest-small/ratings.csv.gz" \
      --split temporal --valid-cutoff q0.8 --test-cutoff q0.9 --out data/ml-latest-small
  ;;
a)
  # 1. ml-1m, window 200: last (the SASRec+ setting) against sliding and mixed, 8 minutes each
  frontier --data data/ml-1m --out $OUT/ml1m-w200 --regimes last,sliding,mixed --windows 200 \
      --strides 200,64 --mixed-epochs 3 --max-train-seconds 480
  # 2. amazon-beauty (leave-one-out; median history 6): window 20
  frontier --data data/beauty --out $OUT/beauty-w20 --regimes last,sliding --windows 20 --strides 10 \
      --repeats 3 --max-train-seconds 120
  # 3. k-shift on amazon-beauty, beside the full table of the sliding cell above (seed 0)
  for c in 4 16 64; do
    frontier --data data/beauty --out $OUT/beauty-kshift-c$c --regimes sliding --windows 20 --strides 10 \
        --item-emb kshift --kshift-compression $c --max-train-seconds 120
  done
  frontier --data data/beauty --out $OUT/beauty-kshift-c16-signed --regimes sliding --windows 20 --strides 10 \
      --item-emb kshift --kshift-compression 16 --kshift-scheme rotate_signed --max-train-seconds 120
  # 2. retailrocket sessions (leave-one-out; median session length 4): window 10
  frontier --data data/retailrocket --out $OUT/retailrocket-w10 --regimes last,sliding --windows 10 --strides 5 \
      --repeats 3 --max-train-seconds 120
  ;;
b)
  # 1. ml-1m, window 50: last, sliding and mixed, 3 seeds, 3 minutes each
  frontier --data data/ml-1m --out $OUT/ml1m-w50 --regimes last,sliding,mixed --windows 50 --strides 50,25 \
      --mixed-epochs 3 --repeats 3 --max-train-seconds 180
  # 4. losses on ml-1m (sliding, window 50, stride 50), 3 minutes each
  for loss in ce chunked; do
    frontier --data data/ml-1m --out $OUT/ml1m-loss-$loss --regimes sliding --windows 50 --strides 50 \
        --loss $loss --max-train-seconds 180
  done
  for n in 64 256 1024; do
    frontier --data data/ml-1m --out $OUT/ml1m-loss-sampled$n --regimes sliding --windows 50 --strides 50 \
        --loss sampled --negatives $n --max-train-seconds 180
  done
  # 3. k-shift on ml-1m, beside the full table of ml1m-loss-ce
  for c in 4 16 64; do
    frontier --data data/ml-1m --out $OUT/ml1m-kshift-c$c --regimes sliding --windows 50 --strides 50 \
        --item-emb kshift --kshift-compression $c --max-train-seconds 180
  done
  frontier --data data/ml-1m --out $OUT/ml1m-kshift-c16-signed --regimes sliding --windows 50 --strides 50 \
      --item-emb kshift --kshift-compression 16 --kshift-scheme rotate_signed --max-train-seconds 180
  # 2. ml-latest-small (temporal split: valid from the 0.8 time quantile, test from 0.9)
  frontier --data data/ml-latest-small --out $OUT/mlls-w50 --regimes last,sliding --windows 50 --strides 25 \
      --repeats 3 --max-train-seconds 90
  ;;
report)
  python scripts/report.py "$OUT" docs/results
  python scripts/report.py "$OUT" --update docs/RESULTS.md
  ;;
*)
  echo "usage: bash docs/results.sh prep|lane|fast|a|b|report" >&2
  exit 2
  ;;
esac
