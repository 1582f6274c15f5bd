"""How fast the training data pipeline delivers decoded uint8 batches, with no model: the question
is whether decoding on the fly can keep up with training, or a decoded cache would pay.

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/decode_rate.py [DATA] [--images N] [--batch B]
Reports images/s of CPU time of the one process (num_workers=0: decoding runs here, so CPU time is
exactly the cost a loader worker adds to training).
"""

from __future__ import annotations

import argparse
import time

import _passive_omp  # noqa: F401  (before torch)

from selfsup.data import open_source


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="?", default="../shared/data/cifar10/train-{000000..000004}.tar.gz")
    p.add_argument("--images", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=256)
    a = p.parse_args()
    src = open_source(a.data)
    n, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
    for batch in src.loader(a.batch, shuffle=True, num_workers=0):
        n += len(batch["image"])
        if n >= a.images:
            break
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(f"{src.name}: {n} images, {n / cpu:.0f} images per CPU-s ({n / wall:.0f}/s wall), "
          f"batch {tuple(batch['image'].shape)} {batch['image'].dtype}")


if __name__ == "__main__":
    main()
