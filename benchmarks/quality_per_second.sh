#!/usr/bin/env bash
# Issue 5's quality per second: CIFAR-10 kNN after a 30-minute CPU budget with the best recipe found,
# SimCLR on 8x8 patches (the plain MAE recipe to compare with is benchmarks/cifar10_mae_knn.sh).
# Usage: OMP_NUM_THREADS=1 benchmarks/quality_per_second.sh [BUDGET=30m] [OUT=runs/qps/simclr-p8]
set -euo pipefail
BUDGET=${1:-30m}; OUT=${2:-runs/qps/simclr-p8}
D=${SELFSUP_DATA:-../shared/data}/cifar10
S=${SELFSUP:-.venv/bin/selfsup}
$S pretrain --method simclr --data "$D/train-{000000..000004}.tar.gz" --budget "$BUDGET" --out "$OUT" \
  encoder.size=custom encoder.width=128 encoder.depth=4 encoder.heads=4 encoder.patch_size=8 encoder.pool=avg \
  data.num_workers=1 train.batch_size=256 train.lr=2e-3 train.weight_decay=1e-4
$S evaluate "$OUT" --data "$D/test-000000.tar.gz" --train-data "$D/train-{000000..000004}.tar.gz" \
  --protocol knn --label-fraction 1.0 --seeds 1 --json
