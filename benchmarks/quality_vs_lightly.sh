#!/usr/bin/env bash
# Quality per second against a peer (issue 14): CIFAR-10 kNN after 5, 10 and 30 minutes of one CPU core,
# lightly's own SimCLR recipe (benchmarks/peers/lightly_simclr_cifar10.py, in the peer environment) beside
# selfsup's recipe chosen on validation data (benchmarks/cifar10_recipes.sh), run side by side, one thread
# each, budgets in each process's CPU time, and one kNN evaluation for both (benchmarks/knn_from_features.py:
# selfsup's kNN, k chosen by leave-one-out on the 50,000 training labels, scored on the 10,000 test images).
#
#   benchmarks/quality_vs_lightly.sh RECIPE [BUDGET=30m] [OUTDIR=runs/qps]
set -euo pipefail
NAME=$1; BUDGET=${2:-30m}; OUTDIR=${3:-runs/qps}
D=${SELFSUP_DATA:-../shared/data}/cifar10
S=${SELFSUP:-.venv/bin/selfsup}
PY=${PYTHON:-.venv/bin/python}
PEER_PY=${PEER_PY:-$(bash ../shared/peers/setup.sh)}
source "$(dirname "$0")/recipes/cifar10.sh"
mkdir -p "$OUTDIR"
export OMP_NUM_THREADS=1
OURS="$OUTDIR/selfsup-$NAME"
# shellcheck disable=SC2086
( $S pretrain --data "$D/train-{000000..000004}.tar.gz" --budget "$BUDGET" --out "$OURS" ${RECIPE[$NAME]} $COMMON \
    "train.snapshots=[5m,10m,$BUDGET]" > "$OURS.log" 2>&1 ) &
( $PEER_PY benchmarks/peers/lightly_simclr_cifar10.py --data "$D" --budget "$BUDGET" --snapshots "5m,10m,$BUDGET" \
    --out "$OUTDIR/lightly" > "$OUTDIR/lightly.log" 2>&1 ) &
wait
bash "$(dirname "$0")/snapshot_features.sh" "$OURS" 5m 10m "$BUDGET"
$PY benchmarks/knn_from_features.py "$OURS"/features-*.npz "$OUTDIR"/lightly/features-*.npz --json \
  | tee "$OUTDIR/knn.json"
