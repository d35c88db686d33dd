#!/usr/bin/env bash
# The six training runs of docs/adaptive-depth.md, one after another (2-core shared CPU, nice 10).
# Usage: bash docs/results/adaptive/run.sh RUNS_DIR [SEED]    (from the repository root, PYTHONPATH=$PWD)
set -euo pipefail
RUNS=${1:-runs/adaptive}
SEED=${2:-0}                       # seed 0 writes RUNS/TASK-MODE, seed S > 0 RUNS/seedS/TASK-MODE
[ "$SEED" = 0 ] || RUNS=$RUNS/seed$SEED
COMMON="--model algoformer --dim 5 --n-points 11 --width 32 --heads 2 --T 6 --delta-T 6 --batch-size 64
        --lr 2e-3 --warmup 50 --schedule cosine --lr-min 1e-4 --init-scale fan_in --curriculum false
        --steps 2000 --eval-every 500 --log-every 50 --threads 1 --quiet --seed $SEED"
for task in linear representation; do
  for mode in none ouro loopformer; do
    nice -n 10 python -m algoformer.train --task $task $COMMON --adaptive $mode --out $RUNS/$task-$mode
  done
done
