#!/usr/bin/env bash
# CIFAR-10 kNN after 10 and 30 minutes of pretraining on one GPU (issue 14), with the recipe chosen on
# validation data (benchmarks/recipes/cifar10.sh; SimCLR with 8-px patches on a CPU). One run of the full
# budget with a snapshot at 10 minutes (a point on the 30-minute schedule, as in the CPU peer comparison, not
# a separate 10-minute run); bf16 autocast is the engine's default on a GPU. Scored like the CPU peer comparison: selfsup's kNN, k chosen by
# leave-one-out on the 50,000 training labels, on the 10,000 test images. Not run yet: no GPU was lent.
#   benchmarks/gpu_time_to_accuracy.sh [RECIPE=simclr-p8] [BUDGET=30m] [OUTDIR=runs/gpu-tta]
set -euo pipefail
NAME=${1:-simclr-p8}; BUDGET=${2:-30m}; OUTDIR=${3:-runs/gpu-tta}
D=${SELFSUP_DATA:-../shared/data}/cifar10
S=${SELFSUP:-.venv/bin/selfsup}
PY=${PYTHON:-.venv/bin/python}
source "$(dirname "$0")/recipes/cifar10.sh"
RUN=$OUTDIR/$NAME
# shellcheck disable=SC2086
$S pretrain --data "$D/train-{000000..000004}.tar.gz" --budget "$BUDGET" --out "$RUN" ${RECIPE[$NAME]} \
  train.accelerator=gpu train.batch_size=512 data.num_workers=6 "train.snapshots=[10m,$BUDGET]"
bash "$(dirname "$0")/snapshot_features.sh" "$RUN" 10m "$BUDGET"
$PY benchmarks/knn_from_features.py "$RUN"/features-*.npz --json | tee "$RUN/knn.json"
