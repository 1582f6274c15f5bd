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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from selfsup.data.spec import InputSpec

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


@dataclass
class MVTecSet:
    """One split, all in memory.

    ``images`` uint8 (N, C, H, W); ``labels`` long (N,), 0 normal / 1 defect; ``defect`` the folder
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


def _open(path: Path, mode: str | None) -> Image.Image | None:
    """Decoded image converted to ``mode`` (or as stored when None); None when unreadable."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert(mode) if mode else im.copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _files(folder: Path, max_n: int | None) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return files[:max_n] if max_n is not None else files


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

    ``channels`` is 1 (grey) or 3 (RGB); None takes the first readable image's (grey stays 1).
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
    mode = None if channels is None else {1: "L", 3: "RGB"}[channels]
    images, masks, labels, defects, paths, skipped, missing = [], [], [], [], [], [], []
    for cls in classes:
        for path in _files(split_dir / cls, max_per_class):
            im = _open(path, mode)
            if im is None:
                skipped.append(str(path))
                continue
            if mode is None:
                mode = "L" if im.mode in GREY_MODES else "RGB"
                im = im.convert(mode)
            arr = np.asarray(im.resize(size, Image.BILINEAR), dtype=np.uint8)
            images.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
            mask = np.zeros(size, dtype=bool)
            if cls != "good":
                m = _open(mask_path(root, cls, path), "L")
                if m is None:
                    missing.append(str(path))
                else:
                    mask = np.asarray(m.resize(size, Image.NEAREST)) > 0
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
        images=torch.from_numpy(np.stack(images)),
        labels=torch.tensor(labels, dtype=torch.long),
        defect=defects,
        masks=torch.from_numpy(np.stack(masks)),
        paths=paths,
        skipped=skipped,
        missing_masks=missing,
    )


__all__ = ["MVTecSet", "load_mvtec", "mask_path"]
