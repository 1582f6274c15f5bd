#!/usr/bin/env bash
# Issue 12's benchmarks on a 2-core CPU: a public model (MobileNetV2 0.35, supervised on ImageNet,
# ../shared/weights, Keras conventions) frozen, continued on the domain's unlabelled images (--init,
# with the --monitor guard), distilled into a ViT-Tiny (--method distill --teacher), and the same
# networks from scratch, under the same few-label protocols and tuning (evaluate --foundation);
# magnetic-tile anomaly AUROC with those backbones; Flickr8k retrieval of a public CLIP before and
# after continuing on the training captions (needs the Hub: not runnable offline).
#
#   benchmarks/foundation.sh WHICH [BUDGET=10m] [OUTDIR=runs/foundation]
#     WHICH: pneumonia | cifar10 | anomaly | flickr8k | smoke (every offline pipeline, seconds each)
#
# Knobs (environment): SIZE (image side, default 64: the images are upsampled for the ImageNet
# model), METHOD (continued pretraining objective for the CNN: dino or simclr; default dino, whose
# EMA teacher starts as the public model), PROTOCOLS (knn,linear,finetune), FRACTIONS (label
# fractions), SEEDS (3), MAX (cap on samples read per set), BATCH (64), CLIP (the public CLIP).
# Every pretraining run is at most BUDGET of its own CPU time (train.clock=cpu: a busy machine gives the same
# compute); records land in each run's metrics.json and
# benchmarks/foundation_table.py prints one table per data set.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
WHICH=${1:?usage: benchmarks/foundation.sh pneumonia|cifar10|anomaly|flickr8k|smoke [BUDGET] [OUTDIR]}
BUDGET=${2:-10m}
OUT=${3:-runs/foundation}
D=${SELFSUP_DATA:-../shared/data}
S=${SELFSUP:-.venv/bin/selfsup}
PY=${PYTHON:-.venv/bin/python}
W=${SELFSUP_WEIGHTS:-../shared/weights}/mobilenetv2_035_imagenet.pt
SIZE=${SIZE:-64}
METHOD=${METHOD:-dino}
PROTOCOLS=${PROTOCOLS:-knn,linear,finetune}
SEEDS=${SEEDS:-3}
BATCH=${BATCH:-64}
MAXARG=()
if [ -n "${MAX:-}" ]; then MAXARG=(--max-samples "$MAX"); fi
MNV2="torchvision:$W?origin=keras&image_size=$SIZE"
# continuing the CNN: a small DINO head and 2 local crops fit a 2-core CPU; the schedule is sized by the budget
CONTINUE=(data.image_size="$SIZE" data.num_workers=1 train.batch_size="$BATCH" train.monitor_every=25 train.clock=cpu)
if [ "$METHOD" = dino ]; then
  CONTINUE+=(method.out_dim=4096 method.hidden_dim=512 method.bottleneck_dim=128 method.n_local=2)
else
  CONTINUE+=(method.proj_hidden=512)
fi
# the student: ViT-Tiny (width 192, depth 12, 3 heads), 8x8 patches
STUDENT=(encoder.size=tiny encoder.patch_size=8 encoder.pool=avg data.image_size="$SIZE" data.num_workers=1
         train.batch_size="$BATCH" train.lr=1e-3 train.warmup=0.05 train.monitor_every=25 train.clock=cpu)
mkdir -p "$OUT"

# few-label comparison on one data set: continued and distilled runs, each evaluated beside the foundation
compare() {  # NAME TRAIN_DATA TEST_DATA MONITOR_DATA FRACTIONS
  local name=$1 train=$2 test=$3 monitor=$4 fractions=$5
  # a finished pretraining run is reused, so an interrupted benchmark only re-runs the evaluations
  [ -f "$OUT/continued-$name/encoder.safetensors" ] || \
    $S pretrain --method "$METHOD" --init "$MNV2" --data "$train" --monitor "$monitor" --budget "$BUDGET" \
      --out "$OUT/continued-$name" "${CONTINUE[@]}"
  [ -f "$OUT/distilled-$name/encoder.safetensors" ] || \
    $S pretrain --method distill --teacher "$MNV2" --data "$train" --monitor "$monitor" --budget "$BUDGET" \
      --out "$OUT/distilled-$name" "${STUDENT[@]}"
  for run in continued distilled; do
    $S evaluate "$OUT/$run-$name" --data "$test" --train-data "$train" --foundation "$MNV2" \
      --protocol "$PROTOCOLS" --label-fraction "$fractions" --seeds "$SEEDS" --finetune-seeds "$SEEDS" \
      "${MAXARG[@]}" --json > "$OUT/$run-$name.json"
  done
  $PY benchmarks/foundation_table.py "continued=$OUT/continued-$name" "distilled=$OUT/distilled-$name" \
    | tee "$OUT/$name-table.txt"
}

case $WHICH in
  pneumonia)  # 3,882 training X-rays without labels; the 524 validation X-rays guard; 624 official test
    NPZ=$D/pneumoniamnist/pneumoniamnist.npz
    compare pneumonia "$NPZ:train" "$NPZ:test" "$NPZ:val" "${FRACTIONS:-0.01,0.1,1.0}" ;;
  cifar10)  # 50,000 training images without labels; the guard reads 1,000 labelled images of one training
            # shard (part of the labelled pool, never of the test shard)
    compare cifar10 "$D/cifar10/train-{000000..000004}.tar.gz" "$D/cifar10/test-000000.tar.gz" \
      "$D/cifar10/train-000004.tar.gz" "${FRACTIONS:-0.01,0.1}" ;;
  anomaly)  # PatchCore on the magnetic tiles: fitted on train/good, scored on test/ against the masks
    DATA=$D/magnetic_tile
    A=$OUT/anomaly
    mkdir -p "$A"
    # the pretraining set: train/good only, each tile resized whole and standardised per image (as scoring does)
    $PY - "$DATA" "$SIZE" "$A/good$SIZE.npz" <<'PY'
import sys

import numpy as np

from selfsup.data.mvtec import load_mvtec
from selfsup.evaluate.anomaly import standardize_images

data, size, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
np.savez(out, images=standardize_images(load_mvtec(data, "train", size, 1).images).numpy())
PY
    $S anomaly fit "$MNV2" --data "$DATA" --normalize image --out "$A/frozen/patchcore.safetensors"
    $S anomaly score "$A/frozen" --data "$DATA" --json > "$A/frozen.json"
    $S pretrain --method "$METHOD" --init "$MNV2" --data "$A/good$SIZE.npz" --budget "$BUDGET" --out "$A/continued" \
      "${CONTINUE[@]}"
    $S pretrain --method distill --teacher "$MNV2" --data "$A/good$SIZE.npz" --budget "$BUDGET" \
      --out "$A/distilled" "${STUDENT[@]}"
    for run in continued distilled; do
      $S anomaly fit "$A/$run" --data "$DATA" --normalize image
      $S anomaly score "$A/$run/anomaly" --data "$DATA" --json > "$A/$run.json"
    done
    $PY - "$A" <<'PY'
import json
import sys
from pathlib import Path

root = Path(sys.argv[1])
print("backbone    image AUROC  pixel AUROC")
for name in ("frozen", "continued", "distilled"):
    recs = {r["metric"]: r["mean"] for r in json.loads((root / f"{name}.json").read_text().splitlines()[-1])
            if r.get("defect") == "all"}
    print(f"{name:10s}  {recs['image_auroc']:11.4f}  {recs['pixel_auroc']:11.4f}")
PY
    ;;
  flickr8k)  # a public CLIP, zero training, then continued on the 6,000 training images' captions
    CLIP=${CLIP:-hf:openai/clip-vit-base-patch32}
    TEST=$D/flickr8k/test-000000.tar.gz
    $S retrieve "$CLIP" --data "$TEST" --json > "$OUT/clip-before.json"
    $S pretrain --method clip --init "$CLIP" --data "$D/flickr8k/train-{000000..000002}.tar.gz" --budget "$BUDGET" \
      --out "$OUT/clip-flickr8k" train.batch_size="$BATCH" train.lr=1e-5 train.weight_decay=0.1 data.num_workers=1
    $S retrieve "$OUT/clip-flickr8k" --data "$TEST" --json > "$OUT/clip-after.json" ;;
  smoke)  # every offline pipeline above at toy scale, to check the commands (numbers mean nothing)
    export SIZE=32 PROTOCOLS=knn,linear SEEDS=2 MAX=300 BATCH=32
    "$0" pneumonia 10s "$OUT/smoke"
    "$0" anomaly 10s "$OUT/smoke" ;;
  *) echo "unknown benchmark $WHICH (pneumonia | cifar10 | anomaly | flickr8k | smoke)"; exit 2 ;;
esac
