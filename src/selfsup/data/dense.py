"""Dense-prediction sets read whole into memory: boxes (COCO JSON, Pascal-VOC XML, YOLO txt) and masks
(``images/`` + ``masks/`` with ``train.txt`` / ``test.txt``, MVTec's ``ground_truth/``).

Every image is resized (squashed, aspect not kept) to ``image_size`` x ``image_size``; boxes are scaled with
it and masks resized by nearest neighbour, so a model sees one square size. The original size of each image
is kept (``DenseSet.sizes``) so predictions go back to its pixels for scoring. An image that cannot be
decoded, an annotation file that cannot be parsed and a mask of the wrong kind are skipped and counted
(``DenseSet.skipped``); boxes outside the image are clipped, empty ones dropped (counted in ``bad_boxes``).
Nothing read is ever executed (XML through ``xml.etree`` without entities resolved beyond the standard).
"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from selfsup.data.decode import IMAGE_SUFFIXES, DecodeError, decode_image
from selfsup.data.splits import sample_few

IGNORE = 255  # mask value of pixels that count for no class (void)
VOID_NAMES = ("void", "unlabelled", "unlabeled", "ignore")


@dataclass
class DenseSet:
    """A dense set in memory.

    ``images`` uint8 (N, C, S, S); ``sizes`` the original (H, W) per image; ``keys`` file names;
    ``class_names`` K names (class c of a box or mask pixel = index c). Detection: ``boxes`` per image
    float32 (n, 4) [x1, y1, x2, y2] in the resized S x S pixels and ``labels`` int64 (n,). Segmentation:
    ``masks`` int64 (N, S, S) of class ids, ``IGNORE`` for void.
    """

    task: str
    images: torch.Tensor
    sizes: list[tuple[int, int]]
    keys: list[str]
    class_names: list[str]
    boxes: list[np.ndarray] | None = None
    labels: list[np.ndarray] | None = None
    masks: torch.Tensor | None = None
    skipped: int = 0
    bad_boxes: int = 0
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, idx: np.ndarray | list[int]) -> DenseSet:
        """The images at ``idx`` (same classes)."""
        idx = [int(i) for i in idx]
        return DenseSet(self.task, self.images[idx], [self.sizes[i] for i in idx], [self.keys[i] for i in idx],
                        self.class_names,
                        None if self.boxes is None else [self.boxes[i] for i in idx],
                        None if self.labels is None else [self.labels[i] for i in idx],
                        None if self.masks is None else self.masks[idx])

    def strata(self) -> np.ndarray:
        """One class per image for stratified draws: its most frequent box class or mask class (-1: none).

        An image without objects gets the extra stratum K, so background images are drawn too."""
        K = self.num_classes
        out = np.full(len(self), K, dtype=np.int64)
        for i in range(len(self)):
            if self.labels is not None and len(self.labels[i]):
                out[i] = np.bincount(self.labels[i], minlength=K).argmax()
            elif self.masks is not None:
                m = self.masks[i]
                counts = torch.bincount(m[m != IGNORE].flatten(), minlength=K)[:K]
                if self.task == "segment" and K == 2:  # binary defects: defect present or not
                    out[i] = int(counts[1] > 0)
                elif counts.sum():
                    out[i] = int(counts.argmax())
        return out


def draw_labels(ds: DenseSet, *, shots: int | None = None, fraction: float | None = None, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded few-label subset: ``shots`` images per class or a stratified ``fraction``."""
    return sample_few(ds.strata(), shots=shots, fraction=fraction, seed=seed)


def read_image(path: Path, channels: int, image_size: int) -> tuple[torch.Tensor, tuple[int, int]] | None:
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:  # the header only
            w, h = im.size
        return decode_image(data, channels, image_size, fit="squash", bits=8), (h, w)
    except (OSError, DecodeError, ValueError):
        return None


def _find_image(root: Path, name: str) -> Path | None:
    for folder in (root, root / "images"):
        p = folder / name
        if p.is_file():
            return p
        p = folder / Path(name).name
        if p.is_file():
            return p
    return None


def _clip_boxes(boxes: np.ndarray, h: int, w: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    """[x1, y1, x2, y2] in the original pixels -> the resized square's; keep mask of non-empty ones."""
    b = boxes.astype(np.float32).reshape(-1, 4).copy()
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w) * (s / w)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h) * (s / h)
    keep = (b[:, 2] - b[:, 0] > 0.5) & (b[:, 3] - b[:, 1] > 0.5)
    return b, keep


def _build(task: str, items: list[tuple[Path, np.ndarray, np.ndarray]], class_names: list[str], channels: int,
           image_size: int, skipped: int, max_samples: int | None) -> DenseSet:
    images, sizes, keys, boxes, labels, bad = [], [], [], [], [], 0
    for path, b, lab in items:
        if max_samples is not None and len(images) >= max_samples:
            break
        got = read_image(path, channels, image_size)
        if got is None:
            skipped += 1
            continue
        img, (h, w) = got
        b, keep = _clip_boxes(b, h, w, image_size)
        bad += int((~keep).sum())
        images.append(img)
        sizes.append((h, w))
        keys.append(path.name)
        boxes.append(b[keep])
        labels.append(np.asarray(lab, dtype=np.int64)[keep])
    if not images:
        raise ValueError(f"no readable images with annotations ({skipped} skipped)")
    return DenseSet(task, torch.stack(images), sizes, keys, class_names, boxes, labels, skipped=skipped, bad_boxes=bad)


def read_coco(path: str | Path, *, channels: int = 3, image_size: int = 192, max_samples: int | None = None,
              class_names: list[str] | None = None) -> DenseSet:
    """A COCO instances JSON; images looked up in the JSON's folder, then its ``images/``.

    Category ids map to classes in id order; ``class_names`` (e.g. the training set's) fixes that order."""
    path = Path(path)
    try:
        coco = json.loads(path.read_text())
        cats = sorted(coco["categories"], key=lambda c: c["id"])
        imgs = coco["images"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a readable COCO instances file ({e})") from None
    names = [str(c["name"]) for c in cats]
    order = class_names or names
    missing = [n for n in names if n not in order]
    if missing:
        raise ValueError(f"{path}: categories {missing} are not among the classes {order}")
    cat_to_class = {c["id"]: order.index(str(c["name"])) for c in cats}
    anns: dict = {}
    for a in coco.get("annotations", []):
        try:
            x, y, w, h = (float(v) for v in a["bbox"])
            anns.setdefault(a["image_id"], []).append(([x, y, x + w, y + h], cat_to_class[a["category_id"]]))
        except (KeyError, TypeError, ValueError):
            continue
    items, skipped = [], 0
    for im in imgs:
        p = _find_image(path.parent, str(im.get("file_name", "")))
        if p is None:
            skipped += 1
            continue
        got = anns.get(im.get("id"), [])
        items.append((p, np.array([g[0] for g in got], dtype=np.float32).reshape(-1, 4),
                      np.array([g[1] for g in got], dtype=np.int64)))
    return _build("detect", items, list(order), channels, image_size, skipped, max_samples)


def _voc_file(xml: Path) -> tuple[str, list[tuple[str, list[float]]]]:
    root = ET.parse(xml).getroot()
    name = root.findtext("filename") or xml.stem
    objs = []
    for o in root.iter("object"):
        bb = o.find("bndbox")
        objs.append((str(o.findtext("name")).strip(),
                     [float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]))
    return name, objs


def read_voc(folder: str | Path, *, channels: int = 3, image_size: int = 192, max_samples: int | None = None,
             class_names: list[str] | None = None) -> DenseSet:
    """A Pascal-VOC folder: ``*.xml`` (here or in ``Annotations/``) and images beside them or in
    ``images/`` / ``JPEGImages/``; classes sorted by name unless ``class_names``."""
    folder = Path(folder)
    xmls = sorted(folder.glob("*.xml")) or sorted((folder / "Annotations").glob("*.xml"))
    parsed, skipped = [], 0
    for x in xmls:
        try:
            parsed.append(_voc_file(x))
        except (ET.ParseError, AttributeError, TypeError, ValueError, OSError):
            skipped += 1
    names = class_names or sorted({n for _, objs in parsed for n, _ in objs})
    items = []
    for fname, objs in parsed:
        p = _find_image(folder, fname) or _find_image(folder / "JPEGImages", fname)
        if p is None or any(n not in names for n, _ in objs):
            skipped += 1
            continue
        items.append((p, np.array([b for _, b in objs], dtype=np.float32).reshape(-1, 4),
                      np.array([names.index(n) for n, _ in objs], dtype=np.int64)))
    return _build("detect", items, list(names), channels, image_size, skipped, max_samples)


def read_yolo(folder: str | Path, *, channels: int = 3, image_size: int = 192, max_samples: int | None = None,
              class_names: list[str] | None = None) -> DenseSet:
    """YOLO txt: ``images/<stem>.<ext>`` + ``labels/<stem>.txt`` (class cx cy w h, normalised) and the class
    names in ``classes.txt`` (or ``obj.names``; else "0", "1", ...)."""
    folder = Path(folder)
    names = class_names
    for f in ("classes.txt", "obj.names"):
        if names is None and (folder / f).is_file():
            names = [s.strip() for s in (folder / f).read_text().splitlines() if s.strip()]
    rows, skipped = [], 0
    for img in sorted((folder / "images").iterdir()):
        if img.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        lab = folder / "labels" / f"{img.stem}.txt"
        try:
            vals = np.loadtxt(lab, ndmin=2) if lab.is_file() and lab.stat().st_size else np.zeros((0, 5))
            if vals.shape[1] != 5:
                raise ValueError
        except (ValueError, OSError):
            skipped += 1
            continue
        rows.append((img, vals))
    if names is None:
        k = int(max((r[1][:, 0].max() for r in rows if len(r[1])), default=0)) + 1
        names = [str(i) for i in range(k)]
    items = []
    for img, vals in rows:
        if ((vals[:, 0] < 0) | (vals[:, 0] >= len(names))).any():
            skipped += 1
            continue
        try:
            w, h = Image.open(img).size  # header only
        except OSError:
            skipped += 1
            continue
        cx, cy, bw, bh = vals[:, 1] * w, vals[:, 2] * h, vals[:, 3] * w, vals[:, 4] * h
        b = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        items.append((img, b.astype(np.float32), vals[:, 0].astype(np.int64)))
    return _build("detect", items, list(names), channels, image_size, skipped, max_samples)


def _mask(path: Path, image_size: int) -> np.ndarray | None:
    try:
        with Image.open(path) as m:
            if m.mode not in ("L", "P", "1", "I", "I;16"):
                return None
            m = m.convert("L") if m.mode == "1" else m  # a palette image keeps its indices
            return np.asarray(m.resize((image_size, image_size), Image.NEAREST)).astype(np.int64)
    except OSError:
        return None


def _seg_classes(root: Path) -> tuple[list[str] | None, list[int]]:
    """Class names by id from ``classes.txt`` or ``pack_report.json``; the ids whose name says void."""
    names = None
    if (root / "classes.txt").is_file():
        names = [s.strip() for s in (root / "classes.txt").read_text().splitlines() if s.strip()]
    elif (root / "pack_report.json").is_file():
        try:
            cl = json.loads((root / "pack_report.json").read_text()).get("classes", {})
            names = [str(cl[str(i)]) for i in range(len(cl))]
        except (ValueError, KeyError, AttributeError):
            names = None
    void = [i for i, n in enumerate(names or []) if n.lower().startswith(VOID_NAMES)]
    return names, void


def read_masks(root: str | Path, split: str = "train", *, channels: int = 3, image_size: int = 192,
               max_samples: int | None = None) -> DenseSet:
    """``images/`` + ``masks/<stem>.png`` (integer class ids) listed by ``<split>.txt`` (all stems without it).

    Class names come from ``classes.txt`` or ``pack_report.json`` (id -> name); an id named void /
    unlabelled is ignored (like 255), the others are renumbered 0..K-1 in id order. Without names the
    ids 0..max seen are the classes."""
    root = Path(root)
    lst = root / f"{split}.txt"
    if lst.is_file():
        stems = [s.strip() for s in lst.read_text().splitlines() if s.strip()]
    else:
        stems = sorted(p.stem for p in (root / "masks").glob("*.png"))
    names, void = _seg_classes(root)
    images, sizes, keys, masks, skipped = [], [], [], [], 0
    for stem in stems:
        if max_samples is not None and len(images) >= max_samples:
            break
        img = next((p for p in (root / "images").glob(f"{stem}.*") if p.suffix.lower() in IMAGE_SUFFIXES), None)
        got = None if img is None else read_image(img, channels, image_size)
        m = _mask(root / "masks" / f"{stem}.png", image_size)
        if got is None or m is None:
            skipped += 1
            continue
        images.append(got[0])
        sizes.append(got[1])
        keys.append(stem)
        masks.append(m)
    if not images:
        raise ValueError(f"{root}: no readable image + mask pairs for {split} ({skipped} skipped)")
    raw = np.stack(masks)
    if names is None:
        names = [str(i) for i in range(int(raw[raw != IGNORE].max(initial=0)) + 1)]
    keep = [i for i in range(len(names)) if i not in void]
    lut = np.full(256 if raw.max() < 256 else int(raw.max()) + 1, IGNORE, dtype=np.int64)
    lut[keep] = np.arange(len(keep))
    out = torch.from_numpy(lut[np.clip(raw, 0, len(lut) - 1)])
    return DenseSet("segment", torch.stack(images), sizes, keys, [names[i] for i in keep], masks=out,
                    skipped=skipped)


def read_mvtec_masks(root: str | Path, *, channels: int = 3, image_size: int = 192,
                     max_samples: int | None = None) -> DenseSet:
    """The MVTec layout's ``test/<defect>/`` images with ``ground_truth/<defect>/<stem>_mask.png`` as a
    binary segmentation set (0 background, 1 defect; "good" images all background)."""
    root = Path(root)
    images, sizes, keys, masks, skipped = [], [], [], [], 0
    for d in sorted(p for p in (root / "test").iterdir() if p.is_dir()):
        for img in sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            if max_samples is not None and len(images) >= max_samples:
                break
            got = read_image(img, channels, image_size)
            if d.name == "good":
                m = np.zeros((image_size, image_size), dtype=np.int64)
            else:
                m = _mask(root / "ground_truth" / d.name / f"{img.stem}_mask.png", image_size)
            if got is None or m is None:
                skipped += 1
                continue
            images.append(got[0])
            sizes.append(got[1])
            keys.append(f"{d.name}/{img.name}")
            masks.append((m > 0).astype(np.int64))
    if not images:
        raise ValueError(f"{root}: no readable test images with masks ({skipped} skipped)")
    return DenseSet("segment", torch.stack(images), sizes, keys, ["background", "defect"],
                    masks=torch.from_numpy(np.stack(masks)), skipped=skipped)


def dense_kind(path: str | Path) -> str:
    """Which reader a path needs: "coco", "voc", "yolo", "masks" or "mvtec"; one-line error otherwise."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".json":
        return "coco"
    if p.is_dir():
        if (p / "ground_truth").is_dir() and (p / "test").is_dir():
            return "mvtec"
        if (p / "masks").is_dir() and (p / "images").is_dir():
            return "masks"
        if (p / "labels").is_dir() and (p / "images").is_dir():
            return "yolo"
        if any(p.glob("*.xml")) or (p / "Annotations").is_dir():
            return "voc"
    raise ValueError(f"{path}: not a dense set (a COCO .json, a Pascal-VOC folder of .xml, a YOLO folder with "
                     "images/ + labels/, a segmentation folder with images/ + masks/, or MVTec with ground_truth/)")


def read_dense(path: str | Path, *, split: str = "train", channels: int = 3, image_size: int = 192,
               max_samples: int | None = None, class_names: list[str] | None = None) -> DenseSet:
    """Any of the layouts above (``dense_kind``); ``split`` picks a segmentation folder's list file."""
    kind = dense_kind(path)
    opts = dict(channels=channels, image_size=image_size, max_samples=max_samples)
    if kind == "coco":
        return read_coco(path, class_names=class_names, **opts)
    if kind == "voc":
        return read_voc(path, class_names=class_names, **opts)
    if kind == "yolo":
        return read_yolo(path, class_names=class_names, **opts)
    if kind == "masks":
        return read_masks(path, split, **opts)
    return read_mvtec_masks(path, **opts)


__all__ = ["IGNORE", "DenseSet", "dense_kind", "draw_labels", "read_coco", "read_dense", "read_masks",
           "read_mvtec_masks", "read_voc", "read_yolo"]
