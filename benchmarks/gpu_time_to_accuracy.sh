#!/usr/bin/env bash
# Issue 5's GPU time-to-accuracy: CIFAR-10 kNN accuracy after 10 and 30 minutes of pretraining on one
# GPU (bf16 autocast is the engine's default there). Not run yet: no GPU was lent to the sessions so far.
# Usage: benchmarks/gpu_time_to_accuracy.sh [METHOD=simclr] [OUTDIR=runs/gpu-tta]
set -euo pipefail
METHOD=${1:-simclr}; OUTDIR=${2:-runs/gpu-tta}
D=${SELFSUP_DATA:-../shared/data}/cifar10
S=${SELFSUP:-.venv/bin/selfsup}
case $METHOD in
  simclr) ARGS="encoder.name=resnet18 encoder.cifar_stem=true train.batch_size=512 train.lr=2e-3" ;;
  mae) ARGS="encoder.size=small encoder.patch_size=4 encoder.pool=avg method.mask_ratio=0.75 method.augment=crop_flip \
    train.batch_size=512 train.lr=1.5e-3" ;;
  *) echo "unknown method $METHOD (simclr | mae)"; exit 2 ;;
esac
for BUDGET in 10m 30m; do
  RUN=$OUTDIR/$METHOD-$BUDGET
  # shellcheck disable=SC2086
  $S pretrain --method "$METHOD" --data "$D/train-{000000..000004}.tar.gz" --budget $BUDGET --out "$RUN" \
    $ARGS data.num_workers=6 train.weight_decay=1e-4
  $S evaluate "$RUN" --data "$D/test-000000.tar.gz" --train-data "$D/train-{000000..000004}.tar.gz" \
    --protocol knn --label-fraction 1.0 --seeds 1 --json
done
