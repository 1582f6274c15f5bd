"""Images, labels and pixel masks in the MVTec-AD layout (Bergmann et al. 2019).

    root/train/good/*.png                      normal images to fit on
    root/test/good/*.png                       normal test images
    root/test/<defect>/<name>.png              defective test images
    root/ground_truth/<defect>/<name>_mask.png pixel masks, 255 (non-zero) = defect

Every image is resized to a square ``image_size`` x ``image_size`` as a whole (bilinear, with
PIL's antialiasing when shrinking), without cropping or padding: the magnetic tiles vary in
aspect (about 1:1 to 1:2.8), and a centre crop would cut defects at the tile's ends while padding
would add edges that are no part of the surface. Masks take the same resize with nearest
neighbour, so they stay aligned pixel for pixel. Unreadable files are skipped and listed.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from selfsup.data.decode import IMAGE_SUFFIXES, DecodeError, decode_image, image_info
from selfsup.data.sources.folder import images_under
from selfsup.data.spec import InputSpec, bits_of


@dataclass
class MVTecSet:
    """One split, all in memory.

    ``images`` uint8 or uint16 (N, C, H, W); ``labels`` long (N,), 0 normal / 1 defect; ``defect`` the folder
    name per image ("good" for normal ones); ``masks`` bool (N, H, W), all False for good images;
    ``paths`` the image files; ``skipped`` unreadable images; ``missing_masks`` defective images
    without a readable mask (their mask is all False).
    """

    images: torch.Tensor
    labels: torch.Tensor
    defect: list[str]
    masks: torch.Tensor
    paths: list[str]
    skipped: list[str] = field(default_factory=list)
    missing_masks: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def defect_types(self) -> list[str]:
        """Defect folder names present, sorted, without "good"."""
        return sorted({d for d in self.defect if d != "good"})

    @property
    def spec(self) -> InputSpec:
        return InputSpec(modality="image", channels=self.images.shape[1], image_size=self.images.shape[-1])


def read_square(path: Path, image_size: int, channels: int | None, bits: int | None = None) -> torch.Tensor | None:
    """An image file resized as a whole to (C, image_size, image_size), uint8 or uint16, the same
    decoding as training (``decode.decode_image``: modes, 16-bit, DICOM, n-channel TIFF, alpha);
    ``channels`` / ``bits`` None keep the file's. None when unreadable."""
    try:
        data = path.read_bytes()
        channels = channels or image_info(data)[0]
        return decode_image(data, channels, image_size, fit="squash", bits=bits)
    except (OSError, DecodeError):
        return None


def _mask(path: Path, size: tuple[int, int]) -> np.ndarray | None:
    """A ground-truth mask resized with nearest neighbour, as bool (H, W); None when unreadable."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L").resize(size, Image.NEAREST)) > 0
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _files(folder: Path, max_n: int | None) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    return files[:max_n] if max_n is not None else files


def is_mvtec(root: str | Path) -> bool:
    """An MVTec-AD layout root: ``train/good`` or ``test/`` below it."""
    p = Path(root)
    return (p / "train" / "good").is_dir() or (p / "test").is_dir()


def read_folder_square(folder: Path, image_size: int, channels: int | None, max_samples: int | None = None,
                       log: Callable[[str], None] | None = None) -> tuple[torch.Tensor, list[str]]:
    """Every image below ``folder`` (recursive, sorted) as ``read_square`` reads MVTec splits, so a
    plain folder and an MVTec split see the same pixels: uint8 (N, C, S, S) and the file paths.

    ``channels`` None takes the first readable image's, and so does the depth; unreadable files
    are skipped and counted (one ``log`` line).
    """
    from selfsup.data.sources.base import SkipCounter

    images, paths, skips, bits = [], [], SkipCounter(), None
    for path in images_under(folder)[:max_samples]:
        image = read_square(path, image_size, channels, bits)
        if image is None:
            skips.add([f"{path.name}: unreadable"])
            continue
        channels, bits = channels or image.shape[0], bits or bits_of(image)
        images.append(image)
        paths.append(str(path))
    if not images:
        raise FileNotFoundError(f"no readable images under {folder}" + (f" ({skips.summary()})" if skips.total else ""))
    if skips.total and log is not None:
        log(f"{folder}: {skips.summary()}")
    return torch.stack(images), paths


def mask_path(root: Path, defect: str, image: Path) -> Path:
    """``root/ground_truth/<defect>/<stem>_mask.png`` for ``root/test/<defect>/<stem>.<ext>``."""
    return root / "ground_truth" / defect / f"{image.stem}_mask.png"


def load_mvtec(
    root: str | Path,
    split: str = "train",
    image_size: int = 64,
    channels: int | None = None,
    max_per_class: int | None = None,
) -> MVTecSet:
    """Read ``split`` ("train" or "test") of the MVTec-AD folder ``root``, resized to a square.

    ``channels`` is the count to read (``decode.convert_channels``); None takes the first readable
    image's (grey stays 1, 5 bands stay 5), and the first image's depth (8 or 16 bits) is kept for all.
    ``max_per_class`` keeps the first n files (sorted by name) of each class folder.
    """
    root = Path(root)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    split_dir = root / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"no {split}/ folder in {root} (expected the MVTec-AD layout)")
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    classes = ["good"] + [c for c in classes if c != "good"] if "good" in classes else classes
    if split == "train":
        classes = [c for c in classes if c == "good"]
    if not classes:
        raise FileNotFoundError(f"no class folders in {split_dir}")

    size = (image_size, image_size)
    images, masks, labels, defects, paths, skipped, missing = [], [], [], [], [], [], []
    bits = None
    for cls in classes:
        for path in _files(split_dir / cls, max_per_class):
            image = read_square(path, image_size, channels, bits)
            if image is None:
                skipped.append(str(path))
                continue
            channels, bits = channels or image.shape[0], bits or bits_of(image)  # the first decides for the rest
            images.append(image)
            mask = np.zeros(size, dtype=bool)
            if cls != "good":
                m = _mask(mask_path(root, cls, path), size)
                if m is None:
                    missing.append(str(path))
                else:
                    mask = m
            masks.append(mask)
            labels.append(int(cls != "good"))
            defects.append(cls)
            paths.append(str(path))
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s) in {split_dir}", stacklevel=2)
    if missing:
        warnings.warn(f"{len(missing)} defective image(s) have no readable mask", stacklevel=2)
    if not images:
        raise FileNotFoundError(f"no readable images under {split_dir}")
    return MVTecSet(
        images=torch.stack(images),
        labels=torch.tensor(labels, dtype=torch.long),
        defect=defects,
        masks=torch.from_numpy(np.stack(masks)),
        paths=paths,
        skipped=skipped,
        missing_masks=missing,
    )


__all__ = ["MVTecSet", "is_mvtec", "load_mvtec", "mask_path", "read_folder_square", "read_square"]
