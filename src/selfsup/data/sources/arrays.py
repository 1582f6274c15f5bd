"""Image arrays: in memory, memory-mapped from an `.npz`, or handed over by a built-in data set."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np
import torch

from selfsup.data.decode import DecodeError, fit_tensor
from selfsup.data.sources.base import SourceError, skip
from selfsup.data.sources.npz import check_npz
from selfsup.data.sources.split import IndexedSource
from selfsup.data.spec import InputSpec


def array_layout(shape: tuple[int, ...]) -> tuple[str, int, int, int]:
    """(layout, C, H, W) of an image array (N, H, W), (N, H, W, C) or (N, C, H, W), any C.

    Images are taken to be square when one reading says so ((N, 32, 32, 5) is HWC, (N, 5, 64, 64)
    CHW); otherwise the smaller of the two outer axes holds the channels.
    """
    if len(shape) == 3:
        return "hw", 1, shape[1], shape[2]
    a, b, c = shape[1:]
    if a == b:
        return "hwc", c, a, b
    if b == c or a < c:
        return "chw", a, b, c
    return "hwc", c, a, b


class ArraySource(IndexedSource):
    """In-memory or memory-mapped image arrays: (N, H, W), (N, H, W, C) or (N, C, H, W), any dtype,
    any number of channels (all kept: multispectral arrays stay multispectral).

    Depth and scale are decided once, from the dtype and the first 256 images: uint8 stays uint8,
    other integers in 0..255 become uint8, uint16 and integers in 0..65535 uint16; floats in [0, 1]
    become uint16 (x 65535), floats in [0, 255] uint16 (x 257, the same scale); anything else is
    stretched from the first images' min..max to uint16.
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
        self.layout, c, h, w = array_layout(images.shape)
        head = np.asarray(images[:256])
        lo, hi = (float(np.nanmin(head)), float(np.nanmax(head))) if head.size else (0.0, 0.0)
        kind = images.dtype.kind
        if images.dtype == np.uint8 or kind == "b" or (kind in "ui" and lo >= 0 and hi <= 255):
            self.bits, self.scale, self.offset = 8, 255.0 if kind == "b" else 1.0, 0.0
        elif kind in "ui" and lo >= 0 and hi <= 65535:
            self.bits, self.scale, self.offset = 16, 1.0, 0.0
        elif kind == "f" and lo >= 0 and hi <= 1:
            self.bits, self.scale, self.offset = 16, 65535.0, 0.0
        elif kind == "f" and lo >= 0 and hi <= 255:
            self.bits, self.scale, self.offset = 16, 257.0, 0.0
        else:
            self.bits, self.scale, self.offset = 16, 65535.0 / max(hi - lo, 1e-12), lo
        known = self.labels[self.labels >= 0]
        num_classes = len(class_names) if class_names else (int(known.max()) + 1 if len(known) else None)
        self.spec = InputSpec(
            modality="image",
            channels=channels or c,
            image_size=image_size or (h if h == w else min(h, w)),
            num_classes=num_classes,
            class_names=class_names,
        )

    def sample_id(self, key: str) -> str | None:
        return f"{self.origin}::{key}" if self.origin else None

    def get(self, i: int) -> dict:
        x = np.asarray(self.images[i])
        dtype = np.uint8 if self.bits == 8 else np.uint16
        if x.dtype != dtype:
            x = np.nan_to_num(x.astype(np.float64), nan=self.offset)
            x = np.clip(np.rint((x - self.offset) * self.scale), 0, np.iinfo(dtype).max).astype(dtype)
        t = torch.from_numpy(np.ascontiguousarray(x))
        t = t[None] if self.layout == "hw" else t.permute(2, 0, 1) if self.layout == "hwc" else t
        n = i if self.ids is None else int(self.ids[i])
        key = f"{self.key_prefix}{n}"
        try:
            image = fit_tensor(t, self.spec.channels, self.spec.image_size)
        except DecodeError as e:
            return skip(key, str(e))
        return {"image": image, "label": int(self.labels[i]), "key": key}


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
    keys = list(check_npz(path))  # every member's declared size, before any is read
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


