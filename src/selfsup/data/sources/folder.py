"""Image folders: class subfolders (sorted names = labels) or flat images (unlabelled)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path, PurePath

from selfsup.data.decode import IMAGE_EXTS, IMAGE_SUFFIXES, DecodeError, decode_image, image_info
from selfsup.data.sources.base import SourceError, skip
from selfsup.data.sources.split import IndexedSource
from selfsup.data.spec import InputSpec

SPLIT_NAMES = {"train", "test", "val", "valid", "validation", "dev", "eval"}
MAX_DEFAULT_SIZE = 224  # image_size inferred from the first sample is capped here (photos are large)


def images_under(root: Path) -> list[Path]:
    """Image files below `root`, recursive, sorted, hidden files and folders left out."""
    found = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        found += [Path(d) / f for f in files if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith(".")]
    return sorted(found)


def task_name(folder: PurePath) -> str:
    """Folder name, or its parent's when it is a split name: magnetic_tile/train -> magnetic_tile."""
    return folder.parent.name if folder.name.lower() in SPLIT_NAMES and folder.parent.name else folder.name


def default_size(w: int, h: int) -> int:
    return min(w, h, MAX_DEFAULT_SIZE)


class FolderSource(IndexedSource):
    """Images in class subfolders (sorted names = labels) or flat (recursive, label -1).

    Any format of ``decode.IMAGE_EXTS`` (DICOM and deep TIFF included); images are uint16 when the
    first decodable one holds more than 8 bits (``bits``), else uint8; channels are the first's.
    """

    def __init__(self, root: Path, *, image_size: int | None, channels: int | None) -> None:
        self.root, self.location, self.name = root, str(root), task_name(root.resolve())
        top = [f for f in root.iterdir() if f.is_file() and f.name.lower().endswith(IMAGE_SUFFIXES)]
        subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        # every subfolder is a class, even an empty one, so a test folder missing a class keeps the indices
        per_class = {d.name: images_under(d) for d in subdirs} if subdirs and not top else {}
        if any(per_class.values()):
            class_names = sorted(per_class)
            self.files = [f for c in class_names for f in per_class[c]]
            self.labels = [i for i, c in enumerate(class_names) for _ in per_class[c]]
        else:
            class_names = None
            self.files = images_under(root)
            self.labels = [-1] * len(self.files)
        if not self.files:
            raise SourceError(f"{root}: no images ({', '.join(IMAGE_EXTS)}) found")
        self.num_samples = len(self.files)
        ch, size, self.bits = probe_images(self.files[:16], lambda f: f.read_bytes(), str(root))
        self.spec = InputSpec(
            modality="image",
            channels=channels or ch,
            image_size=image_size or size,
            num_classes=len(class_names) if class_names else None,
            class_names=class_names,
        )

    def sample_id(self, key: str) -> str:
        return str((self.root / key).resolve())

    def get(self, i: int) -> dict:
        path = self.files[i]
        key = path.relative_to(self.root).as_posix()
        try:
            data = path.read_bytes()
        except OSError as e:
            return skip(key, f"unreadable: {e.strerror}")
        try:
            image = decode_image(data, self.spec.channels, self.spec.image_size, bits=self.bits)
        except DecodeError as e:
            return skip(key, str(e))
        return {"image": image, "label": self.labels[i], "key": key}


def probe_images(items: list, read: Callable, where: str) -> tuple[int, int, int]:
    """(channels, default image size, bits) of the first decodable of `items`. Its depth is the
    source's: with a first image of 8 bits, deeper ones later are read at 8 bits too.

    Raises SourceError when none decodes: data that is all damaged (or not images) is refused
    when opened, not found out after a whole pass of training.
    """
    reasons: Counter[str] = Counter()
    for item in items:
        try:
            channels, w, h, bits = image_info(read(item))
        except (DecodeError, OSError) as e:
            reasons[str(e).split(":")[0] or type(e).__name__] += 1
            continue
        return channels, default_size(w, h), bits
    why = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
    raise SourceError(f"{where}: none of the first {len(items)} images decodes ({why})")


