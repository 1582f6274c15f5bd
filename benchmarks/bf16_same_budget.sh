#!/usr/bin/env bash
# Does bf16 autocast pay on this CPU? (issue 14: "auto" may pick bf16 only if a same-budget run loses no
# quality.) The validated CIFAR-10 recipe (benchmarks/recipes/cifar10.sh) trained for the same CPU-time
# budget in fp32 and in bf16, side by side, one thread each, and scored the way recipes are chosen: kNN with
# the labels of train shards 0-3, queries from shard 4 (never the test set). selfsup.hardware.CPU_BF16_IN_AUTO
# follows the result.
#   benchmarks/bf16_same_budget.sh RECIPE [BUDGET=10m] [OUTDIR=runs/bf16]
set -euo pipefail
NAME=$1; BUDGET=${2:-10m}; OUTDIR=${3:-runs/bf16}
D=${SELFSUP_DATA:-../shared/data}/cifar10
S=${SELFSUP:-.venv/bin/selfsup}
source "$(dirname "$0")/recipes/cifar10.sh"
PRE="$D/train-{000000..000003}.tar.gz"
mkdir -p "$OUTDIR"
export OMP_NUM_THREADS=1
for p in fp32 bf16; do
  # shellcheck disable=SC2086
  ( [ -f "$OUTDIR/$p/encoder.safetensors" ] || $S pretrain --data "$PRE" --budget "$BUDGET" --out "$OUTDIR/$p" \
      ${RECIPE[$NAME]} $COMMON train.precision=$p > "$OUTDIR/$p.log" 2>&1 ) &
done
wait
for p in fp32 bf16; do
  $S evaluate "$OUTDIR/$p" --data "$D/train-000004.tar.gz" --train-data "$PRE" --protocol knn,linear \
    --baselines "" --label-fraction 1.0 --seeds 1 --json 2>> "$OUTDIR/$p.log" | tail -n 1 > "$OUTDIR/$p.val.json"
  python3 - "$p" "$OUTDIR/$p" <<'PY'
import json, sys
p, run = sys.argv[1:]
recs = json.load(open(f"{run}.val.json"))
pre = {r["metric"]: r["mean"] for r in json.load(open(f"{run}/metrics.json")) if r["protocol"] == "pretrain"}
val = {r["protocol"]: r["mean"] for r in recs if r["encoder"] == "ssl" and r["metric"] == "top1"}
print(f"{p}\tsteps {pre['steps']:.0f}\timages/CPU-s {pre['images_per_s']:.1f}\tval kNN {val['knn']:.4f}\tval linear {val['linear']:.4f}")
PY
done
