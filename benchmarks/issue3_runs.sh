#!/usr/bin/env bash
# Issue 3's CPU benchmark runs: each pretrains under a wall-clock budget, then evaluates on the
# held-out split. Usage: benchmarks/issue3_runs.sh WHICH [BUDGET=30m] [OUTDIR=runs/issue3]
#   WHICH: clip | siglip | fsdd | simclr | dino
set -euo pipefail
WHICH=$1; BUDGET=${2:-30m}; OUTDIR=${3:-runs/issue3}
D=${SELFSUP_DATA:-../shared/data}
S=${SELFSUP:-.venv/bin/selfsup}
VIT="encoder.size=custom encoder.width=192 encoder.depth=6 encoder.heads=3"
TEXT="method.text_width=192 method.text_depth=3 method.text_heads=3 method.embed_dim=256 method.vocab_size=2048"
case $WHICH in
  clip|siglip)
    $S pretrain --method $WHICH --data "$D/flickr8k/train-{000000..000002}.tar.gz" --budget "$BUDGET" \
      --out "$OUTDIR/$WHICH-flickr8k" $VIT encoder.patch_size=8 encoder.pool=avg $TEXT \
      data.image_size=64 data.num_workers=1 train.batch_size=128 train.lr=1e-3 train.weight_decay=0.1
    $S retrieve "$OUTDIR/$WHICH-flickr8k" --data "$D/flickr8k/test-000000.tar.gz" --json ;;
  fsdd)
    $S pretrain --method clip --data "$D/fsdd/train-*.tar.gz" --budget "$BUDGET" --out "$OUTDIR/clip-fsdd" \
      $VIT encoder.patch_size=8 encoder.pool=avg $TEXT data.image_size=64 data.num_workers=1 \
      train.batch_size=64 train.lr=1e-3 train.weight_decay=0.1
    $S zero-shot "$OUTDIR/clip-fsdd" --data "$D/fsdd/test-*.tar.gz" \
      --classes zero,one,two,three,four,five,six,seven,eight,nine --json ;;
  simclr|dino)
    $S pretrain --method $WHICH --data "$D/cifar10/train-{000000..000004}.tar.gz" --budget "$BUDGET" \
      --out "$OUTDIR/$WHICH-cifar10" encoder.size=custom encoder.width=128 encoder.depth=4 encoder.heads=4 \
      encoder.patch_size=4 encoder.pool=avg data.num_workers=1 train.batch_size=256 \
      train.lr=2e-3 train.weight_decay=1e-4
    $S evaluate "$OUTDIR/$WHICH-cifar10" --data "$D/cifar10/test-000000.tar.gz" \
      --train-data "$D/cifar10/train-{000000..000004}.tar.gz" --protocol knn --label-fraction 1.0 --seeds 1 --json ;;
  *) echo "unknown run $WHICH"; exit 2 ;;
esac
