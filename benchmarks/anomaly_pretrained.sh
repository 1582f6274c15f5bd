#!/usr/bin/env bash
# Visual anomaly detection on the magnetic tiles (issue 4): PatchCore on the patch tokens of a ViT
# pretrained with MAE for 10 minutes on the 762 good training tiles only, beside raw-pixel and
# random-ViT baselines. Every number lands in the run folders' metrics.json; BENCHMARKS.md has them.
#
#   benchmarks/anomaly_pretrained.sh            # DATA=../shared/data/magnetic_tile OUT=runs/magnetic_tile
#
# Preprocessing, the same for pretraining, the memory bank and scoring: each tile resized as a whole
# to SIZE x SIZE (no crop: tiles range from 1:1 to 1:2.8) and standardised per image to pixel mean
# 128 / std 32 (`anomaly fit --normalize image`), which removes exposure differences between shots.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
DATA=${DATA:-../shared/data/magnetic_tile}
OUT=${OUT:-runs/magnetic_tile}
SIZE=${SIZE:-32}
PATCH=${PATCH:-4}
BUDGET=${BUDGET:-10m}
SS=".venv/bin/selfsup"
mkdir -p "$OUT"

# 1. The pretraining set: train/good only, preprocessed as above, as an .npz.
.venv/bin/python - "$DATA" "$SIZE" "$OUT/good$SIZE.npz" <<'PY'
import sys

import numpy as np

from selfsup.evaluate.anomaly import standardize_images
from selfsup.data.mvtec import load_mvtec

data, size, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
np.savez(out, images=standardize_images(load_mvtec(data, "train", size, 1).images).numpy())
PY

# 2. MAE pretraining, 10 minutes of wall clock on one thread. ENCODER is shared with the random ViT.
ENCODER="encoder.size=custom encoder.width=192 encoder.depth=6 encoder.heads=3 encoder.patch_size=$PATCH"
MAE="method.mask_ratio=0.75 method.decoder_width=128 method.decoder_depth=2 method.decoder_heads=4"
/usr/bin/time -v $SS pretrain --method mae --data "$OUT/good$SIZE.npz" --budget "$BUDGET" --out "$OUT/mae" \
  data.image_size="$SIZE" data.num_workers=0 $ENCODER $MAE train.batch_size=64 train.lr=1e-3 train.warmup=0.05 \
  2> >(grep -E "Elapsed|User time|System time|Percent of CPU" >&2)

# 3. PatchCore on its patch tokens (blocks 2 and 3 of 6, 3x3-averaged, 10% greedy coreset).
$SS anomaly fit "$OUT/mae" --data "$DATA" --normalize image
$SS anomaly score "$OUT/mae/anomaly" --data "$DATA" --json > "$OUT/mae-anomaly.json"

# 4. Baselines. A random ViT: the same command for one step at lr 1e-12, so the weights stay (to
#    1e-12) at the initialisation the pretraining started from (same seed).
$SS pretrain --method mae --data "$OUT/good$SIZE.npz" --steps 1 --out "$OUT/random" \
  data.image_size="$SIZE" data.num_workers=0 $ENCODER $MAE train.batch_size=64 train.lr=1e-12 train.weight_decay=0
$SS anomaly fit "$OUT/random" --data "$DATA" --normalize image
$SS anomaly score "$OUT/random/anomaly" --data "$DATA" --json > "$OUT/random-anomaly.json"
#    Raw pixel patches (each patch with its 3x3 neighbours): at 64 px as stored and standardised,
#    and at the encoder's resolution and grid.
for spec in "64 8 none" "64 8 image" "$SIZE $PATCH image"; do
  read -r size patch norm <<< "$spec"
  bank="$OUT/raw$size-p$patch-$norm/patchcore.safetensors"
  $SS anomaly fit --raw --data "$DATA" --image-size "$size" --patch "$patch" --normalize "$norm" --out "$bank"
  $SS anomaly score "$bank" --data "$DATA" --json > "$OUT/raw$size-p$patch-$norm-anomaly.json"
done
