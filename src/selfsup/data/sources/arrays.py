"""Image arrays: in memory, memory-mapped from an `.npz`, or handed over by a built-in data set."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import torch

from selfsup.data.decode import fit_tensor
from selfsup.data.sources.base import SourceError
from selfsup.data.sources.split import IndexedSource
from selfsup.data.spec import InputSpec


class ArraySource(IndexedSource):
    """In-memory or memory-mapped image arrays: (N, H, W), (N, H, W, C) or (N, C, H, W), any dtype.

    Floats with peak <= 1 are scaled by 255, 16-bit integers by 255/65535; a 4th channel (alpha)
    is dropped. Layout and scale are decided once, from the shape and the first 256 images.
    """

    def __init__(
        self,
        name: str,
        images: np.ndarray,
        labels: np.ndarray | None,
        *,
        location: str,
        image_size: int | None = None,
        channels: int | None = None,
        class_names: list[str] | None = None,
        key_prefix: str = "",
        ids: np.ndarray | None = None,
        origin: str | None = None,
    ) -> None:
        self.name, self.location, self.images, self.key_prefix = name, location, images, key_prefix
        self.origin = origin  # the file or data set the rows come from, for `sample_id`
        self.ids = ids  # sample numbers for keys (an index into the full set for a split), default 0..N-1
        if images.ndim not in (3, 4) or len(images) == 0:
            raise SourceError(f"{location}: need images (N, H, W[, C]) or (N, C, H, W), not {images.shape}")
        self.num_samples = len(images)
        self.labels = np.full(len(images), -1, np.int64) if labels is None else np.asarray(labels).reshape(-1)
        if len(self.labels) != len(images):
            raise SourceError(f"{location}: {len(images)} images but {len(self.labels)} labels")
        self.labels = self.labels.astype(np.int64)
        if images.ndim == 3:
            self.layout, c, h, w = "hw", 1, *images.shape[1:]
        elif images.shape[1] in (1, 3, 4) and images.shape[-1] not in (1, 3, 4):
            self.layout, (c, h, w) = "chw", images.shape[1:]
        else:
            self.layout, (h, w, c) = "hwc", images.shape[1:]
        peak = float(np.asarray(images[:256]).max())
        if images.dtype.kind == "f":
            self.scale = 255.0 if peak <= 1.0 else 1.0
        else:
            self.scale = 255.0 / 65535.0 if peak > 255 else 1.0
        known = self.labels[self.labels >= 0]
        num_classes = len(class_names) if class_names else (int(known.max()) + 1 if len(known) else None)
        self.spec = InputSpec(
            modality="image",
            channels=channels or (1 if c == 1 else 3),
            image_size=image_size or (h if h == w else min(h, w)),
            num_classes=num_classes,
            class_names=class_names,
        )

    def sample_id(self, key: str) -> str | None:
        return f"{self.origin}::{key}" if self.origin else None

    def get(self, i: int) -> dict:
        x = np.asarray(self.images[i])
        if x.dtype != np.uint8:
            x = np.clip(np.rint(x.astype(np.float32) * self.scale), 0, 255).astype(np.uint8)
        t = torch.from_numpy(np.ascontiguousarray(x))
        t = t[None] if self.layout == "hw" else t.permute(2, 0, 1) if self.layout == "hwc" else t
        image = fit_tensor(t[:3], self.spec.channels, self.spec.image_size)
        n = i if self.ids is None else int(self.ids[i])
        return {"image": image, "label": int(self.labels[i]), "key": f"{self.key_prefix}{n}"}


def _npz_array(path: Path, key: str) -> np.ndarray:
    """One array of an .npz; memory-mapped when stored uncompressed, else read (that array only)."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(key + ".npy")
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            name_len, extra_len = struct.unpack("<HH", f.read(30)[26:30])  # zip local file header
            f.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(f)
            fmt = np.lib.format
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read(f)
            offset = f.tell()
        if not dtype.hasobject:
            order = "F" if fortran else "C"
            return np.memmap(path, dtype=dtype, mode="r", shape=shape, order=order, offset=offset)
    with np.load(path, allow_pickle=False) as npz:
        return npz[key]


def open_npz(
    spec: str, *, image_size: int | None, channels: int | None, images_key: str | None, labels_key: str | None
) -> ArraySource:
    """`file.npz` (keys `images`/`labels`, `x`/`y`, or as given) or `file.npz:SPLIT` (`SPLIT_images`)."""
    file, _, split = spec.rpartition(".npz")
    path, split = Path(file + ".npz").expanduser(), split.lstrip(":")
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    with zipfile.ZipFile(path) as z:
        keys = [n[:-4] for n in z.namelist() if n.endswith(".npy")]
    if images_key is None:
        choices = [f"{split}_images", f"{split}_x", f"x_{split}"] if split else ["images", "x", "X", "data"]
        images_key = next((k for k in choices if k in keys), None)
        if images_key is None:
            splits = sorted(k[: -len("_images")] for k in keys if k.endswith("_images"))
            hint = f"use {path}:SPLIT ({', '.join(splits)})" if splits and not split else "pass images_key"
            raise SourceError(f"{spec}: no images array; {hint}; arrays: {', '.join(keys)}")
    if labels_key is None:
        choices = [f"{split}_labels", f"{split}_y", f"y_{split}"] if split else ["labels", "y", "Y"]
        labels_key = next((k for k in choices if k in keys), None)
    for k in (images_key, labels_key):
        if k is not None and k not in keys:
            raise SourceError(f"{path}: no array {k!r}; arrays: {', '.join(keys)}")
    images = _npz_array(path, images_key)
    labels = _npz_array(path, labels_key) if labels_key else None
    return ArraySource(
        path.stem, images, labels, location=spec, image_size=image_size, channels=channels,
        key_prefix=f"{split or images_key}/", origin=str(path.resolve()),
    )


