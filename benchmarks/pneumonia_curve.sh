#!/usr/bin/env bash
# PneumoniaMNIST label efficiency under the fair protocol (issue 11): MAE pretrained on the 3,882 training
# X-rays without labels for a CPU-time budget, then every encoder (MAE, raw pixels, the same ViT from
# scratch) tuned on held-out labels only, at FRACTIONS of the training labels (default 1 % and 10 %; add 1.0
# for all 3,882, which costs most of the run), scored on the 624 official test images, with the paired
# verdict. Protocols kNN, linear probe and fine-tuning (PROTOCOLS; lora can be added).
# The recipe is the one of benchmarks/recipes (ViT width 128, depth 4, patch 4), not tuned on this set.
#   OMP_NUM_THREADS=1 benchmarks/pneumonia_curve.sh [BUDGET=10m] [OUT=runs/pneumonia-mae]
set -euo pipefail
BUDGET=${1:-10m}; RUN=${2:-runs/pneumonia-mae}
FRACTIONS=${FRACTIONS:-0.01,0.1}; PROTOCOLS=${PROTOCOLS:-knn,linear,finetune}
NPZ=${SELFSUP_DATA:-../shared/data}/pneumoniamnist/pneumoniamnist.npz
S=${SELFSUP:-.venv/bin/selfsup}
if [ ! -f "$RUN/encoder.safetensors" ]; then
  $S pretrain --method mae --data "$NPZ:train" --budget "$BUDGET" --out "$RUN" \
    encoder.size=custom encoder.width=128 encoder.depth=4 encoder.heads=4 encoder.patch_size=4 encoder.pool=avg \
    method.mask_ratio=0.75 method.decoder_width=96 method.decoder_depth=2 method.decoder_heads=4 \
    method.augment=crop_flip train.batch_size=128 train.lr=1.5e-3 train.clock=cpu data.num_workers=0
fi
$S evaluate "$RUN" --data "$NPZ:test" --train-data "$NPZ:train" --curve --label-fraction "$FRACTIONS" \
  --protocol "$PROTOCOLS" --json \
  | tail -n 1 > "$RUN/curve.json"
