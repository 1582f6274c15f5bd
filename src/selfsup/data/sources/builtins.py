"""Built-in data sets: `digits` (inside scikit-learn, no download), `cifar10` and `mnist`
(downloaded once from their authors' servers into the cache)."""

from __future__ import annotations

import gzip
import os
import struct
import sys
import tarfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

from selfsup.data.sources.arrays import ArraySource
from selfsup.data.sources.base import SourceError

CACHE_DIR = Path(os.environ.get("SELFSUP_CACHE", "~/.cache/selfsup")).expanduser()

def _digits(split: str) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray | None]:
    """sklearn's 8x8 digits (0..16 -> 0..255); train/test: fixed stratified 50/50 split, seed 0.

    Keys number the samples in the full set, so the splits' keys are disjoint.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)
    labels = d.target.astype(np.int64)
    idx = np.arange(len(labels))
    if split:
        train, test = train_test_split(idx, test_size=0.5, random_state=0, stratify=labels)
        idx = np.sort(train if split == "train" else test)
    return images[idx], labels[idx], [str(i) for i in range(10)], idx


def _download(urls: list[str], dest: Path) -> Path:
    """Fetch the first URL that answers into `dest` (atomic rename); kept for later runs."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        print(f"selfsup: downloading {url} -> {dest}", file=sys.stderr)
        try:
            tmp = dest.with_suffix(dest.suffix + ".part")
            with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
            tmp.rename(dest)
            return dest
        except OSError as e:
            errors.append(f"{url}: {e}")
    raise SourceError(f"could not download {dest.name}: {'; '.join(errors)}")


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _cifar10(split: str) -> tuple[np.ndarray, np.ndarray, list[str], None]:
    """CIFAR-10 from the authors' binary tarball (no pickles): 1 label byte + 3072 CHW bytes per row."""
    cache = CACHE_DIR / "cifar10" / f"{split}.npz"
    if not cache.exists():
        url = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
        tgz = _download([url], CACHE_DIR / "cifar-10-binary.tar.gz")
        names = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
        with tarfile.open(tgz) as tar:
            rows = np.concatenate(
                [np.frombuffer(tar.extractfile(f"cifar-10-batches-bin/{n}").read(), np.uint8) for n in names]
            ).reshape(-1, 3073)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, images=rows[:, 1:].reshape(-1, 3, 32, 32), labels=rows[:, 0].astype(np.int64))
    with np.load(cache) as z:
        return z["images"], z["labels"], CIFAR10_CLASSES, None


def _idx(path: Path) -> np.ndarray:
    """An MNIST idx file (gzipped, big-endian header: magic, dims)."""
    data = gzip.decompress(path.read_bytes())
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _mnist(split: str) -> tuple[np.ndarray, np.ndarray, list[str], None]:
    mirrors = ["https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"]
    prefix = "train" if split == "train" else "t10k"
    arrays = []
    for part in ("images-idx3-ubyte.gz", "labels-idx1-ubyte.gz"):
        name = f"{prefix}-{part}"
        arrays.append(_idx(_download([m + name for m in mirrors], CACHE_DIR / "mnist" / name)))
    return arrays[0], arrays[1].astype(np.int64), [str(i) for i in range(10)], None


# name -> (load(split) -> (images, labels, class names, ids), splits, default split, description)
BUILTINS: dict[str, tuple[Callable, tuple[str, ...], str, str]] = {
    "digits": (_digits, ("train", "test"), "", "8x8 grey digits, 1,797 images, 10 classes (inside sklearn)"),
    "cifar10": (_cifar10, ("train", "test"), "train", "32x32 RGB, 50,000 train / 10,000 test (download)"),
    "mnist": (_mnist, ("train", "test"), "train", "28x28 grey digits, 60,000 train / 10,000 test (download)"),
}


def open_builtin(spec: str, *, image_size: int | None, channels: int | None) -> ArraySource:
    name, _, split = spec.partition(":")
    load, splits, default, _ = BUILTINS[name]
    if split and split not in splits:
        raise SourceError(f"{spec}: unknown split; {name} has {', '.join(splits)}")
    images, labels, classes, ids = load(split or default)
    return ArraySource(
        name, images, labels, location=spec, image_size=image_size, channels=channels, class_names=classes,
        key_prefix=f"{name}/" if ids is not None else f"{name}-{split or default}/", ids=ids, origin="builtin",
    )
