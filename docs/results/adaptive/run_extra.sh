#!/usr/bin/env bash
# Ouro with a 10x stronger entropy regulariser (beta 0.5), same sizes as run.sh.
set -euo pipefail
RUNS=${1:-runs/adaptive}
SEED=${2:-0}                       # seed 0 writes RUNS/TASK-MODE, seed S > 0 RUNS/seedS/TASK-MODE
[ "$SEED" = 0 ] || RUNS=$RUNS/seed$SEED
COMMON="--model algoformer --dim 5 --n-points 11 --width 32 --heads 2 --T 6 --delta-T 6 --batch-size 64
        --lr 2e-3 --warmup 50 --schedule cosine --lr-min 1e-4 --init-scale fan_in --curriculum false
        --steps 2000 --eval-every 500 --log-every 50 --threads 1 --quiet --seed $SEED"
for task in linear representation; do
  nice -n 10 python -m algoformer.train --task $task $COMMON --adaptive ouro --exit-beta 0.5 --out $RUNS/$task-ouro-b05
done
