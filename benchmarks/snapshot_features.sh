#!/usr/bin/env bash
# Embed CIFAR-10 train and test with each snapshot of a run, into RUN/features-SNAP.npz (train, train_labels,
# test, test_labels), the input of benchmarks/knn_from_features.py. Shared by the CPU peer comparison
# (quality_vs_lightly.sh) and the GPU time-to-accuracy run (gpu_time_to_accuracy.sh).
#   benchmarks/snapshot_features.sh RUN SNAP [SNAP ...]
set -euo pipefail
RUN=$1; shift
D=${SELFSUP_DATA:-../shared/data}/cifar10
S=${SELFSUP:-.venv/bin/selfsup}
PY=${PYTHON:-.venv/bin/python}
for snap in "$@"; do
  $S embed "$RUN/snapshots/$snap/encoder.safetensors" --data "$D/train-{000000..000004}.tar.gz" --out "$RUN/train-$snap.npz"
  $S embed "$RUN/snapshots/$snap/encoder.safetensors" --data "$D/test-000000.tar.gz" --out "$RUN/test-$snap.npz"
  $PY - "$RUN" "$snap" <<'PYEOF'
import sys, numpy as np
out, snap = sys.argv[1:]
tr, te = np.load(f"{out}/train-{snap}.npz"), np.load(f"{out}/test-{snap}.npz")
np.savez(f"{out}/features-{snap}.npz", train=tr["features"], train_labels=tr["labels"], test=te["features"],
         test_labels=te["labels"])
PYEOF
done
