"""Data sources: everything `--data` accepts, opened as a `Source` that yields contract samples.

`open_source(spec)` understands one string:

- an image folder (class subfolders -> labels, or flat images -> label -1),
- WebDataset shards: a `.tar`/`.tar.gz` file, a brace list, a glob, a folder of shards or an
  `http(s)://` URL (streamed, split by rank and worker, never loaded whole),
- an `.npz` file (`file.npz`, `file.npz:train` -> `train_images`/`train_labels`),
- a built-in name: `digits[:train|:test]` (embedded, no download), `cifar10[:train|:test]`,
  `mnist[:train|:test]` (downloaded once into ~/.cache/selfsup).

Samples follow docs/architecture.md. A sample that cannot be decoded is yielded as a marker
`{"__skip__": "KEY: REASON"}` rather than a bare `None` (which could not say which sample failed);
`collate` drops both markers and `None` (recorded as "?: undecodable") and lists them in the
batch's `skipped`, so `SkipCounter` can count skips in the main process even with workers.

Endless and streamed datasets tag every item with its position, (reader, readers, epoch, count
read this epoch); `collate` puts the last one in the batch's `position`, the engine keeps the
newest per reader in its checkpoint, and `dataset.resume(positions)` restarts each reader exactly
there, so a resumed run sees the same batches as one never stopped.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import random
import re
import struct
import sys
import tarfile
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path, PurePath, PurePosixPath
from urllib.parse import urlparse

import numpy as np
import torch
from braceexpand import braceexpand
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from selfsup.data.decode import (
    IMAGE_EXTS,
    DecodeError,
    decode_image,
    decode_wav,
    fit_tensor,
    image_channels,
    open_image,
)
from selfsup.data.spec import InputSpec, structured_batch

CACHE_DIR = Path(os.environ.get("SELFSUP_CACHE", "~/.cache/selfsup")).expanduser()
SPLIT_NAMES = {"train", "test", "val", "valid", "validation", "dev", "eval"}
MAX_DEFAULT_SIZE = 224  # image_size inferred from the first sample is capped here (photos are large)
SHUFFLE_BUFFER = 1000
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
MAX_MEMBER_BYTES = 256 * 2**20  # a tar member above this is skipped unread (a shard is never trusted)


class SourceError(ValueError):
    """A `--data` spec that cannot be opened (missing path, nothing found, unknown name)."""


def skip(key: str, reason: str) -> dict:
    """The marker a dataset yields for an undecodable sample."""
    return {"__skip__": f"{key}: {reason}"}


def collate(samples: list[dict | None], spec: InputSpec | None = None) -> dict:
    """Samples -> batch: `image` uint8 (B, C, H, W), `label` long (B,), `key`, `skipped` lists.

    Skip markers and `None` are dropped and listed in `skipped` as "KEY: REASON". Caption sources
    add `text` list[str] and `captions` list[list[str]]; audio sources add `audio` float32 (B, T)
    zero-padded to the longest clip, `audio_length` long (B,) and `text`. If every sample was
    skipped the batch has B = 0 (with `spec`, `image` keeps its (0, C, S, S) shape).
    """
    good, skipped, position = [], [], None
    for s in samples:
        if s is not None and "__pos__" in s:
            position = s["__pos__"]
        if s is None:
            skipped.append("?: undecodable")
        elif "__skip__" in s:
            skipped.append(s["__skip__"])
        else:
            good.append(s)
    batch: dict = {
        "label": torch.tensor([s["label"] for s in good], dtype=torch.long),
        "key": [s["key"] for s in good],
        "skipped": skipped,
    }
    if position is not None:
        batch["position"] = position
    if good and "image" in good[0]:
        batch["image"] = torch.stack([s["image"] for s in good])
    elif not good and (spec is None or spec.modality.startswith("image")):
        c, size = (spec.channels, spec.image_size) if spec else (0, 0)
        batch["image"] = torch.zeros((0, c, size, size), dtype=torch.uint8)
    if good and "audio" in good[0]:
        lengths = [len(s["audio"]) for s in good]
        audio = torch.zeros(len(good), max(lengths))
        for i, s in enumerate(good):
            audio[i, : lengths[i]] = s["audio"]
        batch["audio"], batch["audio_length"] = audio, torch.tensor(lengths, dtype=torch.long)
    if good and "text" in good[0]:
        batch["text"] = [s["text"] for s in good]
    if good and "captions" in good[0]:
        batch["captions"] = [s["captions"] for s in good]
    batch.update(structured_batch(good, spec))  # tables and series (data/spec.py)
    return batch


class SkipCounter:
    """Counts skipped samples from batches' `skipped` lists, by reason ("corrupt", "truncated"...)."""

    def __init__(self) -> None:
        self.by_reason: Counter[str] = Counter()
        self.examples: list[str] = []  # the first few entries, for a log line

    def add(self, batch: dict | list[str]) -> None:
        entries = batch.get("skipped", []) if isinstance(batch, dict) else batch
        for entry in entries:
            _, _, reason = entry.partition(": ")
            self.by_reason[reason.split(":")[0].strip() or "unknown"] += 1
            if len(self.examples) < 10:
                self.examples.append(entry)

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def summary(self) -> str:
        """E.g. "skipped 3 samples (2 corrupt, 1 truncated)"."""
        n = self.total
        if n == 0:
            return "skipped 0 samples"
        parts = ", ".join(f"{c} {r}" for r, c in self.by_reason.most_common())
        return f"skipped {n} sample{'s' if n != 1 else ''} ({parts})"


def _split(by_rank: bool = True, ranks: tuple[int, int] | None = None, batches: int = 0) -> tuple[int, int]:
    """(this reader's index, number of readers) over distributed ranks x DataLoader workers.

    `ranks` = (rank, world size) given explicitly; else from torch.distributed or RANK/WORLD_SIZE.
    `batches` already drawn: a DataLoader takes batch b from worker b % workers, and a new one
    starts again at worker 0, so after a resume worker w plays reader (w + batches) % workers.
    """
    if not by_rank:
        rank, world = 0, 1
    elif ranks is not None:
        rank, world = ranks
    elif torch.distributed.is_available() and torch.distributed.is_initialized():
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    else:  # worker processes started with spawn, or before the process group exists
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    info = get_worker_info()
    wid, nworkers = ((info.id + batches) % info.num_workers, info.num_workers) if info is not None else (0, 1)
    return rank * nworkers + wid, world * nworkers


Positions = dict[int, tuple[int, int, int]]  # reader -> (readers, epoch, items read in that epoch)


def _start(positions: Positions | None, split: int, nsplit: int, epoch: int) -> tuple[int, int]:
    """(epoch, items to pass over) where reader `split` of `nsplit` resumes; (epoch, 0) when new.

    Saved with another number of readers (world size or workers changed), every reader restarts
    at the beginning of the oldest saved epoch: nothing is lost, some samples are seen again.
    """
    if not positions:
        return epoch, 0
    if any(n != nsplit for n, _, _ in positions.values()):
        return min(e for _, e, _ in positions.values()), 0
    _, e, count = positions.get(split, (nsplit, epoch, 0))
    return e, count


class Source:
    """An opened `--data` spec. Subclasses set `name`, `spec`, `num_samples` and `dataset()`."""

    name: str
    spec: InputSpec
    location: str
    num_samples: int | None = None

    def dataset(self, *, shuffle: bool = False, seed: int = 0, epoch_repeat: bool = False) -> Dataset:
        """Map-style (finite, indexable) or IterableDataset of samples / skip markers."""
        raise NotImplementedError

    def loader(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        num_workers: int = 0,
        drop_last: bool = False,
        infinite: bool = False,
    ) -> DataLoader:
        """Batches per `collate`. `infinite` loops over epochs (reshuffled each) and never ends.

        Finite map-style sources use a plain shuffling DataLoader, so Lightning can insert its
        DistributedSampler; infinite and streamed ones split themselves by rank and worker.
        """
        ds = self.dataset(shuffle=shuffle, seed=seed, epoch_repeat=infinite)
        mapped = not isinstance(ds, IterableDataset)
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=shuffle and mapped,
            generator=torch.Generator().manual_seed(seed) if shuffle and mapped else None,
            num_workers=num_workers,
            drop_last=drop_last,
            collate_fn=partial(collate, spec=self.spec),
            persistent_workers=num_workers > 0 and not infinite,
        )

    def arrays(
        self, max_samples: int | None = None, *, batch_size: int = 256, skips: SkipCounter | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """`max_samples` (default all) images uint8 (N, C, H, W) and labels int64 (N,), for
        evaluation sets that fit in memory.

        Indexed sources give a fixed random subset (seed 0, in index order), since folders are
        sorted by class; streams give their first samples. Read batch by batch; skipped samples
        are left out (and counted into `skips` when given).
        """
        if not self.spec.modality.startswith("image"):
            raise TypeError(f"{self.name}: arrays() needs an image source, this one is {self.spec.modality}")
        ds = self.dataset()
        if isinstance(ds, ShardStream):
            ds.by_rank = False  # every rank evaluates on the whole set
        elif max_samples is not None and max_samples < len(ds):
            pick = np.random.default_rng(0).choice(len(ds), max_samples, replace=False)
            ds = torch.utils.data.Subset(ds, np.sort(pick).tolist())
        xs, ys, n = [], [], 0
        for batch in DataLoader(ds, batch_size=batch_size, collate_fn=partial(collate, spec=self.spec)):
            if skips is not None:
                skips.add(batch)
            xs.append(batch["image"].numpy())
            ys.append(batch["label"].numpy())
            n += len(ys[-1])
            if max_samples is not None and n >= max_samples:
                break
        s = self.spec
        x = np.concatenate(xs) if xs else np.zeros((0, s.channels, s.image_size, s.image_size), np.uint8)
        y = np.concatenate(ys) if ys else np.zeros((0,), np.int64)
        return x[:max_samples], y[:max_samples].astype(np.int64)

    def __len__(self) -> int:
        if self.num_samples is None:
            raise TypeError(f"{self.name}: streamed shards have no known length")
        return self.num_samples

    def __bool__(self) -> bool:  # keep `if source:` working when __len__ cannot answer
        return True

    def __repr__(self) -> str:
        n = "?" if self.num_samples is None else self.num_samples
        return f"{type(self).__name__}({self.name!r}, {self.location!r}, {n} samples, {self.spec})"


# --- map-style sources: one `get(i)` per sample ------------------------------------------------


class IndexedSource(Source):
    """A source of `num_samples` samples addressed by index (folder, npz, built-ins)."""

    def get(self, i: int) -> dict:
        raise NotImplementedError

    def dataset(self, *, shuffle: bool = False, seed: int = 0, epoch_repeat: bool = False) -> Dataset:
        """Finite: map-style (the DataLoader shuffles). `epoch_repeat`: endless iterable over
        per-epoch permutations (seed + epoch), split by rank and worker."""
        return _Repeat(self, shuffle, seed) if epoch_repeat else _Indexed(self)


class _Indexed(Dataset):
    def __init__(self, source: IndexedSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return self.source.num_samples or 0

    def __getitem__(self, i: int) -> dict:
        return self.source.get(i)


class _Repeat(IterableDataset):
    """Endless passes, each a permutation seeded by (seed + epoch): the order is a function of the
    position, so `resume` jumps straight there without reading what came before."""

    def __init__(self, source: IndexedSource, shuffle: bool, seed: int) -> None:
        self.source, self.shuffle, self.seed = source, shuffle, seed
        self.ranks: tuple[int, int] | None = None
        self.positions: Positions | None = None
        self.batches = 0

    def resume(self, positions: Positions, batches: int = 0) -> None:
        """Start each reader where `positions` left it, `batches` having been drawn before."""
        self.positions, self.batches = dict(positions), batches

    def __iter__(self) -> Iterator[dict]:
        split, nsplit = _split(ranks=self.ranks, batches=self.batches)
        n = self.source.num_samples or 0
        first, offset = _start(self.positions, split, nsplit, 0)
        for epoch in range(first, sys.maxsize):
            g = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
            mine = order[split::nsplit] if n >= nsplit else order  # fewer samples than readers: all read all
            start = offset if epoch == first else 0
            good = 0
            for count, i in enumerate(mine[start:].tolist(), start + 1):
                sample = self.source.get(i)
                good += "__skip__" not in sample
                sample["__pos__"] = (split, nsplit, epoch, count)
                yield sample
            if good == 0 and start == 0:
                raise SourceError(f"{self.source.name}: no decodable sample in a whole pass over {n}")


IMAGE_SUFFIXES = tuple("." + e for e in IMAGE_EXTS)


def _images_under(root: Path) -> list[Path]:
    """Image files below `root`, recursive, sorted, hidden files and folders left out."""
    found = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        found += [Path(d) / f for f in files if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith(".")]
    return sorted(found)


def _task_name(folder: PurePath) -> str:
    """Folder name, or its parent's when it is a split name: magnetic_tile/train -> magnetic_tile."""
    return folder.parent.name if folder.name.lower() in SPLIT_NAMES and folder.parent.name else folder.name


def _default_size(w: int, h: int) -> int:
    return min(w, h, MAX_DEFAULT_SIZE)


class FolderSource(IndexedSource):
    """Images in class subfolders (sorted names = labels) or flat (recursive, label -1)."""

    def __init__(self, root: Path, *, image_size: int | None, channels: int | None) -> None:
        self.root, self.location, self.name = root, str(root), _task_name(root.resolve())
        top = [f for f in root.iterdir() if f.is_file() and f.name.lower().endswith(IMAGE_SUFFIXES)]
        subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        # every subfolder is a class, even an empty one, so a test folder missing a class keeps the indices
        per_class = {d.name: _images_under(d) for d in subdirs} if subdirs and not top else {}
        if any(per_class.values()):
            class_names = sorted(per_class)
            self.files = [f for c in class_names for f in per_class[c]]
            self.labels = [i for i, c in enumerate(class_names) for _ in per_class[c]]
        else:
            class_names = None
            self.files = _images_under(root)
            self.labels = [-1] * len(self.files)
        if not self.files:
            raise SourceError(f"{root}: no images ({', '.join(IMAGE_EXTS)}) found")
        self.num_samples = len(self.files)
        ch, size = _probe(self.files[:16], lambda f: f.read_bytes(), str(root))
        self.spec = InputSpec(
            modality="image",
            channels=channels or ch,
            image_size=image_size or size,
            num_classes=len(class_names) if class_names else None,
            class_names=class_names,
        )

    def get(self, i: int) -> dict:
        path = self.files[i]
        key = path.relative_to(self.root).as_posix()
        try:
            data = path.read_bytes()
        except OSError as e:
            return skip(key, f"unreadable: {e.strerror}")
        try:
            image = decode_image(data, self.spec.channels, self.spec.image_size)
        except DecodeError as e:
            return skip(key, str(e))
        return {"image": image, "label": self.labels[i], "key": key}


def _probe(items: list, read: Callable, where: str) -> tuple[int, int]:
    """(channels, default image size) from the first decodable of `items`.

    Raises SourceError when none decodes: data that is all damaged (or not images) is refused
    when opened, not found out after a whole pass of training.
    """
    reasons: Counter[str] = Counter()
    for item in items:
        try:
            img = open_image(read(item))
        except (DecodeError, OSError) as e:
            reasons[str(e).split(":")[0] or type(e).__name__] += 1
            continue
        return image_channels(img), _default_size(*img.size)
    why = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
    raise SourceError(f"{where}: none of the first {len(items)} images decodes ({why})")


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
    ) -> None:
        self.name, self.location, self.images, self.key_prefix = name, location, images, key_prefix
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
        key_prefix=f"{split or images_key}/",
    )


# --- WebDataset shards: streamed ---------------------------------------------------------------


def _is_url(spec: str) -> bool:
    return "://" in spec or spec.startswith("pipe:")


def _open_stream(url: str):
    """Local path -> file; http(s) -> urllib (no curl needed); other schemes -> webdataset's gopen."""
    if url.startswith(("http://", "https://")):
        return urllib.request.urlopen(url, timeout=60)
    if _is_url(url):
        from webdataset.gopen import gopen

        return gopen(url, "rb")
    return open(url, "rb")


def _unsafe_name(name: str) -> bool:
    """An absolute path or one with a `..` part: never a sample key (nothing is extracted to disk)."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or (len(parts[0]) > 1 and parts[0][1] == ":")


class _Deferred:
    """A stream whose read error ends the data instead of failing that read: tarfile reads ahead
    in 10 KB records, so the members before the damage are still yielded; `_check_end` raises it."""

    def __init__(self, stream) -> None:
        self.error = None
        self.read_some = getattr(stream, "read1", stream.read)  # read1: what is there, not all or nothing

    def read(self, size: int = -1) -> bytes:
        if self.error is not None:
            return b""
        try:
            return self.read_some(size)
        except Exception as e:  # noqa: BLE001 - gzip CRC/length, zlib, a dropped connection...
            self.error = e
            return b""


def _check_end(tar: tarfile.TarFile, data: _Deferred) -> None:
    """Raise unless the stream ends cleanly: only zeros after the last header tarfile read, no read
    error, and for gzip a CRC and length that hold.

    tarfile ends an archive quietly at the first invalid header, so a shard damaged halfway would
    pass for a shorter one; reading to the end of the stream makes that damage an error.
    """
    while chunk := tar.fileobj.read(1 << 16):
        if chunk.count(0) != len(chunk):
            raise tarfile.ReadError("damaged: data after the last readable member")
    if data.error is not None:
        raise data.error


def tar_samples(url: str) -> Iterator[tuple[str, dict[str, bytes]] | dict]:
    """(KEY, {ext: bytes}) for each sample of a (gzipped) tar stream; members grouped by KEY.EXT.

    Read in memory, never extracted. A member with an unsafe name (absolute, `..`) or above
    `MAX_MEMBER_BYTES` is not read: a skip marker stands in for it. Damage anywhere in the shard
    (bad header, gzip CRC or length) raises once the samples before it have been yielded.
    """
    path = urlparse(url).path if _is_url(url) else url
    gz, plain = path.endswith((".gz", ".tgz")), path.endswith(".tar")
    with _open_stream(url) as stream:
        data = _Deferred(gzip.GzipFile(fileobj=stream, mode="rb") if gz else stream)  # GzipFile checks the CRC
        with tarfile.open(fileobj=data, mode="r|" if gz or plain else "r|*") as tar:
            key, group = None, {}
            for m in tar:
                folder, _, base = m.name.rpartition("/")
                if _unsafe_name(m.name):
                    yield skip(m.name, "unsafe path")
                    continue
                if m.isfile() and m.size > MAX_MEMBER_BYTES:
                    yield skip(m.name, f"too large: {m.size} bytes")
                    continue
                if not m.isfile() or base.startswith(".") or "." not in base:
                    continue
                stem, _, ext = base.partition(".")
                k = f"{folder}/{stem}" if folder else stem
                if k != key:
                    if group:
                        yield key, group
                    key, group = k, {}
                group[ext.lower()] = tar.extractfile(m).read()
            _check_end(tar, data)
            if group:
                yield key, group


def _expand_shards(spec: str) -> list[str]:
    """Brace lists, globs, a folder of `*.tar*` files, single files and URLs -> shard list."""
    if _is_url(spec):
        return list(braceexpand(spec))
    path = Path(spec).expanduser()
    if path.is_dir():
        shards = sorted(str(f) for f in path.iterdir() if f.is_file() and f.name.endswith(SHARD_SUFFIXES))
        if not shards:
            raise SourceError(f"{path}: no shards (*.tar, *.tar.gz) in this folder")
        return shards
    shards = []
    for s in braceexpand(str(path)):
        if glob.has_magic(s):
            matches = sorted(glob.glob(s))
            if not matches:
                raise SourceError(f"{s}: no files match")
            shards += matches
        elif not Path(s).is_file():
            raise SourceError(f"{s}: no such file")
        else:
            shards.append(s)
    return shards


def _class_names(first_shard: str) -> list[str] | None:
    """`classes.txt` (one name per line, in index order) next to the shards, when there is one."""
    try:
        if first_shard.startswith(("http://", "https://")):
            with urllib.request.urlopen(first_shard.rsplit("/", 1)[0] + "/classes.txt", timeout=10) as r:
                text = r.read().decode()
        elif _is_url(first_shard):
            return None
        else:
            text = (Path(first_shard).parent / "classes.txt").read_text()
    except Exception:
        return None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    return names or None


def _label(data: bytes | None, num_classes: int | None = None) -> int:
    """A `.cls` member -> class index; -1 when absent. Raises DecodeError("bad label") for text,
    a negative number, or one out of range of `num_classes` (when the class names are known)."""
    if data is None:
        return -1
    try:
        label = int(data.decode().strip())
    except (ValueError, UnicodeDecodeError):
        raise DecodeError(f"bad label: {data[:20]!r}") from None
    if label < 0 or (num_classes is not None and label >= num_classes):
        raise DecodeError(f"bad label: {label} out of range" + (f" 0..{num_classes - 1}" if num_classes else ""))
    return label


def _meta(data: bytes | None, strict: bool = False) -> dict:
    """A `.json` member -> dict ({} when absent). `strict`: DecodeError("bad json") unless an object."""
    try:
        meta = json.loads(data) if data else {}
    except (ValueError, UnicodeDecodeError):
        if strict:
            raise DecodeError("bad json: does not parse") from None
        return {}
    if not isinstance(meta, dict):
        if strict:
            raise DecodeError(f"bad json: a {type(meta).__name__}, not an object")
        return {}
    return meta


class ShardSource(Source):
    """WebDataset shards: `KEY.jpg|png|...` images or `KEY.wav` audio, `.cls` label, `.json` metadata.

    The modality comes from the first sample of the first shard: an image with a json holding
    `captions` -> "image_text"; a wav -> "audio_text" when its json has `text`, else "audio".
    """

    def __init__(self, spec: str, *, image_size: int | None, channels: int | None) -> None:
        self.location = spec
        self.shards = _expand_shards(spec)
        if not self.shards:
            raise SourceError(f"{spec}: no shards found")
        first = self.shards[0]
        url = _is_url(first)
        folder = PurePosixPath(urlparse(first).path).parent if url else Path(first).resolve().parent
        self.name = _task_name(folder) or Path(first).name.split(".")[0]
        head: list[tuple[str, dict]] = []  # the first samples tell modality, channels and size
        try:
            for sample in tar_samples(first):
                if isinstance(sample, tuple):  # skip markers (unsafe names) say nothing of the data
                    head.append(sample)
                if len(head) == 16:
                    break
        except Exception as e:
            if not head:  # damage further in is skipped while streaming
                raise SourceError(f"{first}: not a readable tar shard ({type(e).__name__}: {e})") from e
        if not head:
            raise SourceError(f"{first}: empty shard")
        key, members = head[0]
        meta = _meta(members.get("json"))
        class_names = _class_names(first)
        if "wav" in members:
            self.image_ext = None
            modality = "audio_text" if "text" in meta else "audio"
            try:
                sample_rate = decode_wav(members["wav"])[1]
            except DecodeError:
                sample_rate = None
            self.spec = InputSpec(modality=modality, channels=1, sample_rate=sample_rate)
        else:
            self.image_ext = next((e for e in IMAGE_EXTS if e in members), None)
            if self.image_ext is None:
                raise SourceError(f"{first}: first sample {key!r} has no image ({'|'.join(IMAGE_EXTS)})/wav")
            ch, size = _probe([m for _, m in head], lambda m: m.get(self.image_ext, b""), first)
            modality = "image_text" if isinstance(meta.get("captions"), list) else "image"
            self.spec = InputSpec(modality=modality, channels=channels or ch, image_size=image_size or size)
        self.spec.class_names = class_names
        self.spec.num_classes = len(class_names) if class_names else None

    def dataset(self, *, shuffle: bool = False, seed: int = 0, epoch_repeat: bool = False) -> Dataset:
        return ShardStream(self, shuffle=shuffle, seed=seed, epoch_repeat=epoch_repeat)

    def decode(self, key: str, members: dict[str, bytes], rng: random.Random | None) -> dict:
        """One grouped sample -> contract sample or skip marker. `rng` picks a caption (else the first).

        Skipped, with the reason: an undecodable image/audio, a `.cls` that is not a class index
        in range ("bad label"), a `.json` that is not a JSON object ("bad json").
        """
        try:
            meta = _meta(members.get("json"), strict=True)
            sample = {"key": key, "label": _label(members.get("cls"), self.spec.num_classes)}
            if self.spec.modality.startswith("audio"):
                if "wav" not in members:
                    return skip(key, "no audio")
                sample["audio"] = decode_wav(members["wav"])[0]
                sample["text"] = str(meta.get("text", ""))
                return sample
            ext = next((e for e in (self.image_ext, *IMAGE_EXTS) if e in members), None)
            if ext is None:
                return skip(key, "no image")
            sample["image"] = decode_image(members[ext], self.spec.channels, self.spec.image_size)
        except DecodeError as e:
            return skip(key, str(e))
        if self.spec.modality == "image_text":
            captions = meta.get("captions") or ([meta["text"]] if "text" in meta else [])
            captions = [str(c) for c in captions] if isinstance(captions, list) else [str(captions)]
            captions = captions or [""]
            sample["captions"] = captions
            sample["text"] = rng.choice(captions) if rng is not None else captions[0]
        return sample


class ShardStream(IterableDataset):
    """Streams a ShardSource: shard order shuffled per epoch, then a buffer of raw samples.

    Readers (ranks x workers) each take every n-th shard; with fewer shards than readers they all
    read every shard and keep every n-th sample instead, so no sample is lost or duplicated.
    Call `set_epoch` between finite passes when workers are used (in-process passes count alone).
    """

    def __init__(self, source: ShardSource, *, shuffle: bool, seed: int, epoch_repeat: bool) -> None:
        self.source, self.shuffle, self.seed, self.epoch_repeat = source, shuffle, seed, epoch_repeat
        self.buffer_size, self.epoch, self.by_rank = SHUFFLE_BUFFER, 0, True
        self.ranks: tuple[int, int] | None = None  # (rank, world size) when not from the environment
        self.positions: Positions | None = None
        self.batches = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, positions: Positions, batches: int = 0) -> None:
        """Start each reader where `positions` (from batches' `position`) left it, mid-epoch,
        `batches` having been drawn before.

        The shards of that epoch are read again up to the position (to rebuild the shuffle
        buffer) but the passed-over samples are not decoded; earlier epochs are not read.
        """
        self.positions, self.batches = dict(positions), batches

    def _raw(self, shards: list[str], split: int, every: int) -> Iterator[tuple[str, dict] | dict]:
        i = 0
        for url in shards:
            try:
                for sample in tar_samples(url):
                    i += 1
                    if (i - 1) % every == split:
                        yield sample
            except Exception as e:  # a bad or vanished shard is skipped, not fatal
                if every == 1 or split == 0:
                    yield skip(url, f"unreadable shard: {type(e).__name__}")

    def __iter__(self) -> Iterator[dict]:
        split, nsplit = _split(self.by_rank, self.ranks, self.batches)
        self.epoch, offset = _start(self.positions, split, nsplit, self.epoch)
        self.positions = None  # a resume applies to the first pass only
        while True:
            shards = list(self.source.shards)
            if self.shuffle:
                random.Random(f"{self.seed}-{self.epoch}").shuffle(shards)  # same order on every reader
            if len(shards) >= nsplit:
                raw = self._raw(shards[split::nsplit], 0, 1)
            else:
                raw = self._raw(shards, split, nsplit)
            rng = random.Random(f"{self.seed}-{self.epoch}-{split}") if self.shuffle else None
            if rng is not None:
                raw = _shuffled(raw, self.buffer_size, rng)
            good = count = 0
            for item in raw:
                count += 1
                if count <= offset:
                    continue
                if isinstance(item, dict):
                    sample = item
                else:  # the caption pick has its own seed: passing over samples must not shift the buffer's
                    pick = random.Random(f"{self.seed}-{self.epoch}-{item[0]}") if self.shuffle else None
                    sample = self.source.decode(*item, pick)
                good += "__skip__" not in sample
                sample["__pos__"] = (split, nsplit, self.epoch, count)
                yield sample
            whole_pass, offset = offset == 0, 0
            self.epoch += 1
            if not self.epoch_repeat:
                return
            if good == 0 and whole_pass:
                raise SourceError(f"{self.source.name}: no decodable sample in a whole pass")


def _shuffled(items: Iterator, size: int, rng: random.Random) -> Iterator:
    """Shuffle buffer: hold `size` items, emit a random one as each new one arrives."""
    buf: list = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        j = rng.randrange(size)
        yield buf[j]
        buf[j] = item
    rng.shuffle(buf)
    yield from buf


# --- built-ins ---------------------------------------------------------------------------------


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


def _open_builtin(spec: str, *, image_size: int | None, channels: int | None) -> ArraySource:
    name, _, split = spec.partition(":")
    load, splits, default, _ = BUILTINS[name]
    if split and split not in splits:
        raise SourceError(f"{spec}: unknown split; {name} has {', '.join(splits)}")
    images, labels, classes, ids = load(split or default)
    return ArraySource(
        name, images, labels, location=spec, image_size=image_size, channels=channels, class_names=classes,
        key_prefix=f"{name}/" if ids is not None else f"{name}-{split or default}/", ids=ids,
    )


# --- entry points ------------------------------------------------------------------------------


def open_source(
    spec: str,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    images_key: str | None = None,
    labels_key: str | None = None,
    **options,
) -> Source:
    """Open a `--data` string (see `describe_sources()`); raises SourceError with a one-line reason.

    `image_size` / `channels` default to the first sample's (short side capped at 224 for files;
    grey -> 1, else 3); every image is converted and resized (short side, centre crop) to them.
    `images_key` / `labels_key` pick the arrays of an .npz. Tables and time series are opened by
    `data/structured.py` (`options`: target, columns, drop, window, stride, schema, kind, ...).
    """
    spec = str(spec).strip()
    from selfsup.data.structured import open_structured  # noqa: PLC0415 (it imports this module)

    if (structured := open_structured(spec, **options)) is not None:
        return structured
    opts = {"image_size": image_size, "channels": channels}
    if spec.partition(":")[0] in BUILTINS and not Path(spec).exists():
        return _open_builtin(spec, **opts)
    if re.fullmatch(r".+\.npz(:\w+)?", spec) and not _is_url(spec):
        return open_npz(spec, images_key=images_key, labels_key=labels_key, **opts)
    if _is_url(spec) or glob.has_magic(spec) or "{" in spec or spec.endswith(SHARD_SUFFIXES):
        return ShardSource(spec, **opts)
    path = Path(spec).expanduser()
    if path.is_dir():
        if any(f.is_file() and f.name.endswith(SHARD_SUFFIXES) for f in path.iterdir()):
            return ShardSource(spec, **opts)
        return FolderSource(path, **opts)
    if path.exists():
        raise SourceError(f"{spec}: not a folder, shard (.tar, .tar.gz) or .npz")
    if "/" not in spec and os.sep not in spec:
        raise SourceError(f"{spec}: no such file or folder, nor a built-in data set ({', '.join(BUILTINS)})")
    raise SourceError(f"{spec}: no such file or folder")


def describe_sources() -> str:
    """What `--data` accepts, with examples, and the built-in data sets (for `selfsup datasets`)."""
    lines = [
        "--data accepts:",
        "  image folder       photos/                   class subfolders -> labels (sorted names);",
        f"                                               flat images -> unlabeled ({', '.join(IMAGE_EXTS)})",
        "  WebDataset shards  data/train-{000000..000004}.tar.gz   a brace list",
        "                     'data/train-*.tar.gz'     a glob (quote it)",
        "                     data/shards/              every *.tar / *.tar.gz in a folder; one shard",
        "                     https://host/x/train-{0000..0009}.tar   streamed over http(s)",
        "                     members: KEY.jpg|png|webp image, KEY.cls label, KEY.json metadata",
        "                     ('captions' -> image-text), KEY.wav audio (json 'text' -> audio-text);",
        "                     classes.txt next to the shards names the classes",
        "  npz arrays         xray.npz:train            arrays train_images / train_labels",
        "                     xray.npz                  arrays images / labels (or images_key / labels_key)",
        "built-in data sets (NAME or NAME:SPLIT):",
    ]
    for name, (_, splits, default, desc) in BUILTINS.items():
        lines.append(f"  {name:<19} {desc}; splits {', '.join(splits)}; plain = {default or 'all'}")
    lines.append(f"downloads are cached in {CACHE_DIR} (set SELFSUP_CACHE to move it)")
    return "\n".join(lines)
