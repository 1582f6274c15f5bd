#!/usr/bin/env bash
# Issue 4's label-efficiency curves on a 2-core CPU.
# Usage: benchmarks/issue4_curves.sh pneumonia [BUDGET=10m] [OUTDIR=runs/issue4]
#        benchmarks/issue4_curves.sh cifar10 RUN        (the curve at 1% and 10% over an existing CIFAR-10 run)
# pneumonia: MAE pretrained on the 3,882 PneumoniaMNIST training X-rays without their labels, then kNN,
# linear probe, fine-tune and LoRA at 1%, 10% and 100% of the training labels, 3 seeds each, beside the
# raw-pixel and from-scratch baselines; accuracy and AUROC on the 624 official test images.
set -euo pipefail
WHICH=$1
D=${SELFSUP_DATA:-../shared/data}
S=${SELFSUP:-.venv/bin/selfsup}
case $WHICH in
  pneumonia)
    BUDGET=${2:-10m}; OUTDIR=${3:-runs/issue4}; RUN=$OUTDIR/mae-pneumonia
    NPZ=$D/pneumoniamnist/pneumoniamnist.npz
    $S pretrain --method mae --data "$NPZ:train" --budget "$BUDGET" --out "$RUN" \
      encoder.size=custom encoder.width=128 encoder.depth=4 encoder.heads=4 encoder.patch_size=4 encoder.pool=avg \
      method.mask_ratio=0.75 method.decoder_width=96 method.decoder_depth=2 method.decoder_heads=4 \
      method.augment=crop_flip train.batch_size=128 train.lr=1.5e-3 data.num_workers=0
    $S evaluate "$RUN" --data "$NPZ:test" --train-data "$NPZ:train" --curve --label-fraction 0.01,0.1,1.0 \
      --seeds 3 --json ;;
  cifar10)
    RUN=$2
    $S evaluate "$RUN" --data "$D/cifar10/test-000000.tar.gz" --train-data "$D/cifar10/train-{000000..000004}.tar.gz" \
      --curve --label-fraction 0.01,0.1 --seeds 3 --json ;;
  *) echo "unknown curve $WHICH (pneumonia | cifar10)"; exit 2 ;;
esac
