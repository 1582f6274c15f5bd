"""Pictures and tables of a detector or segmenter on test images: predictions beside the ground truth.

``plot_detections`` draws ground-truth boxes (left) and predicted boxes with class and score (right) for a
few images; ``plot_masks`` the image, the true and the predicted class map. ``per_class_table`` is the
plain-text per-class AP / IoU table. PNG bytes, through ``interpret.figures`` (no pyplot state).
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from selfsup.data.dense import IGNORE, DenseSet
from selfsup.interpret.figures import as_hwc, bare, rgb, to_png

COLORS = ["tab:red", "tab:green", "tab:blue", "tab:orange", "tab:purple", "tab:cyan", "tab:pink", "tab:olive",
          "tab:brown", "tab:gray"]


def _boxes(ax, boxes: np.ndarray, labels: np.ndarray, names: list[str], scores: np.ndarray | None = None) -> None:
    for j, (b, c) in enumerate(zip(boxes, labels, strict=True)):
        color = COLORS[int(c) % len(COLORS)]
        ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, edgecolor=color, linewidth=1.5))
        text = names[int(c)] + ("" if scores is None else f" {scores[j]:.2f}")
        ax.text(b[0], b[1], text, color="white", fontsize=6, va="bottom",
                bbox={"facecolor": color, "alpha": 0.7, "pad": 1, "edgecolor": "none"})


def plot_detections(ds: DenseSet, preds: list[dict[str, torch.Tensor]], n: int = 4, min_score: float = 0.3) -> bytes:
    """The first ``n`` images of ``ds``: true boxes | predicted boxes with score >= ``min_score``."""
    n = min(n, len(ds))
    fig = Figure(figsize=(5, 2.5 * n))
    imgs = as_hwc(ds.images[:n])
    for i in range(n):
        for k, title in enumerate(("ground truth", "predicted")):
            ax = fig.add_subplot(n, 2, 2 * i + k + 1)
            ax.imshow(rgb(imgs[i]), cmap="gray")
            bare(ax)
            if i == 0:
                ax.set_title(title, fontsize=9)
            if k == 0:
                _boxes(ax, ds.boxes[i], ds.labels[i], ds.class_names)
            else:
                p = preds[i]
                keep = (p["scores"] >= min_score).cpu().numpy()
                _boxes(ax, p["boxes"].cpu().numpy()[keep], p["labels"].cpu().numpy()[keep], ds.class_names,
                       p["scores"].cpu().numpy()[keep])
    return to_png(fig)


def plot_masks(ds: DenseSet, pred: torch.Tensor, n: int = 4) -> bytes:
    """The first ``n`` images of ``ds``: image | true class map | predicted class map (void black)."""
    n = min(n, len(ds))
    fig = Figure(figsize=(7.5, 2.5 * n))
    imgs = as_hwc(ds.images[:n])
    K = ds.num_classes
    for i in range(n):
        true = ds.masks[i].numpy().astype(float)
        true[true == IGNORE] = np.nan
        for k, (title, a) in enumerate((("image", None), ("ground truth", true),
                                        ("predicted", pred[i].cpu().numpy().astype(float)))):
            ax = fig.add_subplot(n, 3, 3 * i + k + 1)
            if a is None:
                ax.imshow(rgb(imgs[i]), cmap="gray")
            else:
                ax.set_facecolor("black")
                ax.imshow(a, cmap="tab20", vmin=0, vmax=max(K - 1, 1), interpolation="nearest")
            bare(ax)
            if i == 0:
                ax.set_title(title, fontsize=9)
    return to_png(fig)


def per_class_table(per_class: dict[str, dict[str, float]]) -> str:
    """Plain-text table: class, then each score (AP, AP50 or IoU, Dice)."""
    if not per_class:
        return ""
    cols = list(next(iter(per_class.values())))
    width = max(len("class"), *(len(c) for c in per_class))
    lines = ["class".ljust(width) + "  " + "  ".join(c.rjust(6) for c in cols)]
    for name, s in per_class.items():
        lines.append(name.ljust(width) + "  " + "  ".join(f"{s[c]:6.3f}" for c in cols))
    return "\n".join(lines)


__all__ = ["per_class_table", "plot_detections", "plot_masks"]
