#!/usr/bin/env bash
# Choose the CIFAR-10 pretraining recipe on VALIDATION data, never the test set.
#
# Each candidate pretrains on train shards 0-3 (40,000 images, no labels) for the same CPU-time
# budget, then is scored by kNN with the labels of shards 0-3 as the bank and shard 4 (10,000
# training images never seen in pretraining) as the queries. The best validation score picks the
# recipe that benchmarks/cifar10_final.sh then trains on all 50,000 and scores once on the test set.
#
#   OMP_NUM_THREADS=1 benchmarks/cifar10_recipes.sh [BUDGET=10m] [OUTDIR=runs/recipes] [NAMES...]
# Budgets count each run's own CPU time (train.clock=cpu), so runs sharing the machine get equal compute.
# Two candidates at a time, one thread each, on a 2-core machine; prints one JSON record per
# candidate (validation kNN top-1) and writes OUTDIR/summary.tsv.
set -euo pipefail
BUDGET=${1:-10m}; OUTDIR=${2:-runs/recipes}; shift $(( $# > 2 ? 2 : $# ))
D=${SELFSUP_DATA:-../shared/data}/cifar10
S=${SELFSUP:-.venv/bin/selfsup}
PRE="$D/train-{000000..000003}.tar.gz"
source "$(dirname "$0")/recipes/cifar10.sh"
NAMES=("$@"); [ ${#NAMES[@]} -gt 0 ] || NAMES=(mae-p4 mae-p8 simclr-p4 simclr-p8 simclr-resnet18 dino-p8)
mkdir -p "$OUTDIR"

run() {
  local name=$1 out="$OUTDIR/$1"
  if [ ! -f "$out/encoder.safetensors" ]; then
    # shellcheck disable=SC2086
    $S pretrain --data "$PRE" --budget "$BUDGET" --out "$out" ${RECIPE[$name]} $COMMON > "$out.log" 2>&1
  fi
  $S evaluate "$out" --data "$D/train-000004.tar.gz" --train-data "$PRE" --protocol knn --baselines "" \
    --label-fraction 1.0 --seeds 1 --json 2>> "$out.log" | tail -n 1 > "$out.val.json"
  python3 - "$name" "$out.val.json" >> "$OUTDIR/summary.tsv" <<'EOF'
import json, sys
name, path = sys.argv[1:]
r = next(r for r in json.load(open(path)) if r["protocol"] == "knn" and r["encoder"] == "ssl" and r["metric"] == "top1")
print(f"{name}\t{r['mean']:.4f}\t{r['chosen'][0]}")
EOF
}

for ((i = 0; i < ${#NAMES[@]}; i += 2)); do
  run "${NAMES[i]}" &
  [ $((i + 1)) -lt ${#NAMES[@]} ] && run "${NAMES[i + 1]}" &
  wait
done
sort -t$'\t' -k2 -nr "$OUTDIR/summary.tsv"
