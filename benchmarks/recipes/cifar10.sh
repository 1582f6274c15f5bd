# The CIFAR-10 pretraining recipes compared on validation data (benchmarks/cifar10_recipes.sh) and
# reused by the final and peer runs, so a recipe has one definition. Sourced, not run.
# shellcheck disable=SC2034
SMALL="encoder.size=custom encoder.width=128 encoder.depth=4 encoder.heads=4 encoder.pool=avg"
COMMON="data.num_workers=0 train.batch_size=256 train.clock=cpu"  # CPU-time budgets: fair on a busy machine
declare -A RECIPE=(
  [mae-p4]="--method mae $SMALL encoder.patch_size=4 method.mask_ratio=0.75 method.decoder_width=96 method.decoder_depth=2 method.decoder_heads=4 train.lr=1.5e-3"
  [mae-p8]="--method mae $SMALL encoder.patch_size=8 method.mask_ratio=0.75 method.decoder_width=96 method.decoder_depth=2 method.decoder_heads=4 train.lr=1.5e-3"
  [simclr-p4]="--method simclr $SMALL encoder.patch_size=4 train.lr=2e-3 train.weight_decay=1e-4"
  [simclr-p8]="--method simclr $SMALL encoder.patch_size=8 train.lr=2e-3 train.weight_decay=1e-4"
  [simclr-resnet18]="--method simclr encoder.name=resnet18 train.lr=2e-3 train.weight_decay=1e-4"
  [dino-p8]="--method dino $SMALL encoder.patch_size=8 train.lr=1e-3 train.weight_decay=0.04"
)
