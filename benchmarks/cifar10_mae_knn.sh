#!/usr/bin/env bash
# CIFAR-10 kNN accuracy of MAE after a CPU wall-clock budget (issue 2's BENCHMARKS.md row).
# Usage: benchmarks/cifar10_mae_knn.sh [BUDGET=30m] [OUT=runs/cifar10-mae]
set -euo pipefail
BUDGET=${1:-30m}
OUT=${2:-runs/cifar10-mae}
DATA=${SELFSUP_DATA:-../shared/data}/cifar10
SELFSUP=${SELFSUP:-.venv/bin/selfsup}
$SELFSUP pretrain --method mae --data "$DATA/train-{000000..000004}.tar.gz" --budget "$BUDGET" --out "$OUT" \
  encoder.size=custom encoder.width=128 encoder.depth=4 encoder.heads=4 encoder.patch_size=4 encoder.pool=avg \
  method.mask_ratio=0.75 method.decoder_width=96 method.decoder_depth=2 method.decoder_heads=4 \
  method.augment=crop_flip train.batch_size=256 train.lr=1.5e-3 data.num_workers=1
# kNN (k=20, T=0.07) with all 50,000 training labels, scored on the 10,000 test images.
$SELFSUP evaluate "$OUT" --data "$DATA/test-000000.tar.gz" --train-data "$DATA/train-{000000..000004}.tar.gz" \
  --protocol knn --label-fraction 1.0 --seeds 1 --json
