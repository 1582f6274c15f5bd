#!/usr/bin/env bash
# Visual anomaly detection on the magnetic tiles with the plain commands a new user types: MAE
# pretrained for 10 minutes on train/good as it is (no preprocessing script: odd sizes, exposure and
# grey channels are handled by the defaults), then PatchCore fit and score on the MVTec-layout
# folder as it is. The raw-pixel baseline uses the same defaults. Numbers: BENCHMARKS.md.
# The defaults were chosen without the test split: benchmarks/choose_anomaly_defaults.py.
#
#   benchmarks/anomaly_plain.sh            # DATA=../shared/data/magnetic_tile OUT=runs/magnetic_tile
#   CLOCK=cpu benchmarks/anomaly_plain.sh  # on a shared machine: the 10 minutes counted in the run's CPU time
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/magnetic_tile}
OUT=${OUT:-runs/magnetic_tile}
SS=${SS:-.venv/bin/selfsup}
mkdir -p "$OUT"

/usr/bin/time -v $SS pretrain --method mae --data "$DATA/train/good" --budget 10m --out "$OUT/mae" ${CLOCK:+train.clock=$CLOCK} \
  2> >(grep -E "Elapsed|User time|System time|Percent of CPU|error" >&2)
$SS anomaly fit "$OUT/mae" --data "$DATA"
$SS anomaly score "$OUT/mae/anomaly" --data "$DATA" --json > "$OUT/mae-anomaly.json"

$SS anomaly fit --raw --data "$DATA" --out "$OUT/raw"
$SS anomaly score "$OUT/raw" --data "$DATA" --json > "$OUT/raw-anomaly.json"
