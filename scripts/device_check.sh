#!/usr/bin/env bash
# The device check (issue 22): one command, at most ~8 minutes on one GPU, run whenever the device tool
# lends a machine. It records, under OUTDIR (default runs/device-check):
#   env.json         the device, torch / CUDA / cuDNN versions, bf16 support, CPU count, git commit
#   mae.json         MAE ViT-B/16 at 224 px, bf16 autocast, training images/s and MFU, beside Hugging Face
#                    ViTMAE (the `bench` extra: transformers) in the same process (benchmarks/bench_mae.py)
#   knn-<m>.json     SimCLR and DINO pretrained on CIFAR-10 for a short budget each (KNN_BUDGET, default
#                    100 s of wall time on the GPU), then kNN on the 10,000 test images with the 50,000
#                    training labels (k by leave-one-out on them); the 5 / 10-minute points are
#                    benchmarks/gpu_time_to_accuracy.sh
#   embed.json       `selfsup embed` throughput on the GPU and on the CPU, same run, same images
#   fsdp.json        FSDP on one GPU: a few MAE steps with train.strategy=fsdp (a smoke test: it runs,
#                    the loss is finite, the run folder loads)
#   summary.txt      one line per measurement
# --dry runs every step on the CPU at tiny sizes (digits, a few steps): what CI runs, in about a minute;
# its numbers mean nothing. FSDP is skipped there (it needs a GPU: docs/distributed.md).
#   scripts/device_check.sh [--dry] [OUTDIR]
set -euo pipefail
DRY=0
if [[ "${1:-}" == "--dry" ]]; then DRY=1; shift; fi
OUT=${1:-runs/device-check}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
[[ -x "$PY" ]] || PY=python3
S=("$PY" -m selfsup.cli)
D=${SELFSUP_DATA:-$ROOT/../shared/data}
KNN_BUDGET=${KNN_BUDGET:-100s}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
: > "$OUT/summary.txt"
say() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/summary.txt"; }
now() { date +%s.%N; }
dt() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
if [[ $DRY == 1 ]]; then DEV=cpu; else DEV=cuda; fi

# 1. the machine
"$PY" - "$OUT/env.json" "$DRY" <<'EOF'
import json, os, platform, subprocess, sys, time
import torch
cuda = torch.cuda.is_available()
if sys.argv[2] == "0" and not cuda:
    sys.exit("device_check: no CUDA GPU visible to torch; use --dry for the CPU run")
env = {"date": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()), "dry": sys.argv[2] == "1",
       "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
       "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine(),
       "capability": list(torch.cuda.get_device_capability(0)) if cuda else None,
       "gpu_memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
       "bf16": bool(cuda and torch.cuda.is_bf16_supported()), "cpu_count": os.cpu_count(), "python": platform.python_version()}
try:
    env["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    pass
open(sys.argv[1], "w").write(json.dumps(env, indent=1) + "\n")
print(json.dumps(env))
EOF
say "env: $(tr -d '\n' < "$OUT/env.json")"

# 2. MAE training throughput and MFU beside Hugging Face ViTMAE
if [[ $DRY == 1 ]]; then
  MAE=(--config tiny32 --device cpu --steps 1 --warmup 1 --batch 2 --no-memory --quick-peak 512)
else
  MAE=(--config base224 --device cuda --steps 10 --warmup 3)
fi
(cd "$ROOT/benchmarks" && "$PY" bench_mae.py "${MAE[@]}" --json) > "$OUT/mae.log" 2>&1
tail -n 1 "$OUT/mae.log" > "$OUT/mae.json"
say "mae: $(grep -v '^\[' "$OUT/mae.log" | head -n 6 | tr '\n' ' ')"

# 3. SSL kNN after a short budget (CIFAR-10 on the GPU; digits and a few steps when dry)
if [[ $DRY == 1 ]]; then
  TRAIN=digits:train; TEST=digits:test; LEN=(--steps 3)
  SMALL="encoder.size=custom encoder.width=32 encoder.depth=1 encoder.heads=2 encoder.patch_size=4 data.image_size=16 train.batch_size=32"
  EVAL=(--max-samples 120)
else
  TRAIN="$D/cifar10/train-{000000..000004}.tar.gz"; TEST="$D/cifar10/test-000000.tar.gz"; LEN=(--budget "$KNN_BUDGET")
  SMALL="encoder.size=custom encoder.width=128 encoder.depth=4 encoder.heads=4 encoder.pool=avg encoder.patch_size=8 train.batch_size=512 data.num_workers=6"
  EVAL=()
fi
for M in simclr dino; do
  RUN="$OUT/$M"
  rm -rf "$RUN"
  t0=$(now)
  # shellcheck disable=SC2086
  "${S[@]}" pretrain --method "$M" --data "$TRAIN" --out "$RUN" "${LEN[@]}" --device "$DEV" $SMALL > "$OUT/$M.log" 2>&1
  t1=$(now)
  "${S[@]}" evaluate "$RUN" --data "$TEST" --train-data "$TRAIN" --protocol knn --label-fraction 1 --seeds 1 \
    --baselines "" --device "$DEV" "${EVAL[@]}" --json 2>> "$OUT/$M.log" | tail -n 1 > "$OUT/knn-$M.json"
  t2=$(now)
  TOP1=$("$PY" -c "import json,sys; r=[x for x in json.load(open(sys.argv[1])) if x.get('metric')=='top1']; print(r[0]['mean'] if r else 'n/a')" "$OUT/knn-$M.json")
  say "knn $M: top-1 $TOP1 (pretrain $(dt "$t0" "$t1") s, evaluate $(dt "$t1" "$t2") s; $(grep -o 'done: .*' "$OUT/$M.log" | tail -n 1))"
done

# 4. embedding throughput: the accelerator and the CPU, same run and images
N=${EMBED_N:-10000}
[[ $DRY == 1 ]] && N=200
echo "{}" > "$OUT/embed.json"
for DV in $([[ $DRY == 1 ]] && echo cpu || echo "cuda cpu"); do
  t0=$(now)
  "${S[@]}" embed "$OUT/simclr" --data "$TEST" --out "$OUT/embed-$DV.npz" --max-samples "$N" --device "$DV" > /dev/null 2>&1
  t1=$(now)
  "$PY" - "$OUT/embed.json" "$DV" "$N" "$t0" "$t1" <<'EOF'
import json, sys
path, dev, n, t0, t1 = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
rec = json.load(open(path))
rec[dev] = {"images": n, "seconds": round(t1 - t0, 2), "images_per_s": round(n / (t1 - t0), 1),
            "note": "whole command: start-up, decoding and encoding"}
open(path, "w").write(json.dumps(rec, indent=1) + "\n")
EOF
  say "embed on $DV: $N images in $(dt "$t0" "$t1") s"
done

# 5. FSDP on one GPU (smoke test)
if [[ $DRY == 1 ]]; then
  echo '{"fsdp": "skipped: needs a GPU"}' > "$OUT/fsdp.json"
  say "fsdp: skipped in --dry (FSDP needs a GPU)"
else
  rm -rf "$OUT/fsdp"
  if "${S[@]}" pretrain --method mae --data digits:train --steps 20 --out "$OUT/fsdp" data.image_size=32 \
      encoder.size=custom encoder.width=128 encoder.depth=4 encoder.heads=4 encoder.patch_size=4 \
      train.strategy=fsdp train.accelerator=gpu train.devices=1 > "$OUT/fsdp.log" 2>&1 \
      && "$PY" -c "import sys; from selfsup import runs; runs.load_encoder(sys.argv[1])" "$OUT/fsdp"; then
    echo "{\"fsdp\": \"ok\", \"log\": \"$(grep -o 'done: .*' "$OUT/fsdp.log" | tail -n 1)\"}" > "$OUT/fsdp.json"
    say "fsdp: ok ($(grep -o 'done: .*' "$OUT/fsdp.log" | tail -n 1))"
  else
    echo '{"fsdp": "failed: see fsdp.log"}' > "$OUT/fsdp.json"
    say "fsdp: FAILED (see $OUT/fsdp.log)"
  fi
fi
say "device check written to $OUT"
