"""CenterNet's targets, loss and decoding, and non-maximum suppression in plain torch (no torchvision).

Targets follow TTFNet (Liu et al. 2019): each box puts an elliptical Gaussian (sigma = 0.54 * side / 6)
on its class's heat map at its centre (output pixels, ``stride`` image pixels each); the size and offset
are learned at the centre pixel only. Loss: CenterNet's penalty-reduced focal loss (alpha 2, beta 4) +
0.1 * L1 on log size + L1 on offset.

Post-processing (also what an exported model leaves to its user): sigmoid heat map, 3x3 max-pool peaks,
the top ``k`` peaks over all classes, boxes (cx +- w / 2, cy +- h / 2) * stride, then per-class NMS at IoU
``iou`` (CenterNet's peaks rarely overlap, NMS removes the few that do).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SIZE_WEIGHT = 0.1
ALPHA = 0.54


def centernet_targets(boxes: list[np.ndarray], labels: list[np.ndarray], num_classes: int, out_hw: tuple[int, int],
                      stride: float) -> dict[str, torch.Tensor]:
    """Per-image boxes (n, 4) [x1, y1, x2, y2] in image pixels -> heat (B, K, h, w), size (B, 2, h, w),
    offset (B, 2, h, w), mask (B, h, w) (1 at object centres)."""
    B, (h, w) = len(boxes), out_hw
    heat = torch.zeros(B, num_classes, h, w)
    size = torch.zeros(B, 2, h, w)
    off = torch.zeros(B, 2, h, w)
    mask = torch.zeros(B, h, w)
    ys, xs = torch.arange(h, dtype=torch.float32)[:, None], torch.arange(w, dtype=torch.float32)[None, :]
    for i, (b, lab) in enumerate(zip(boxes, labels, strict=True)):
        if not len(b):
            continue
        b = torch.as_tensor(b, dtype=torch.float32) / stride
        bw, bh = (b[:, 2] - b[:, 0]).clamp(min=1e-3), (b[:, 3] - b[:, 1]).clamp(min=1e-3)
        cx, cy = ((b[:, 0] + b[:, 2]) / 2).clamp(0, w - 1e-3), ((b[:, 1] + b[:, 3]) / 2).clamp(0, h - 1e-3)
        order = torch.argsort(bw * bh, descending=True)  # small boxes written last win a shared centre
        for j in order.tolist():
            px, py = int(cx[j]), int(cy[j])
            sx, sy = max(ALPHA * float(bw[j]) / 6, 0.3), max(ALPHA * float(bh[j]) / 6, 0.3)
            g = torch.exp(-((xs - px) ** 2) / (2 * sx**2) - ((ys - py) ** 2) / (2 * sy**2))
            c = int(lab[j])
            heat[i, c] = torch.maximum(heat[i, c], g)
            heat[i, c, py, px] = 1.0
            size[i, :, py, px] = torch.stack([bw[j].log(), bh[j].log()])
            off[i, :, py, px] = torch.stack([cx[j] - px, cy[j] - py])
            mask[i, py, px] = 1.0
    return {"heat": heat, "size": size, "offset": off, "mask": mask}


def centernet_loss(heat_logits: torch.Tensor, size: torch.Tensor, offset: torch.Tensor,
                   t: dict[str, torch.Tensor]) -> torch.Tensor:
    """Penalty-reduced focal loss on the heat maps + L1 on size and offset at centres, per object."""
    p = heat_logits.float().sigmoid().clamp(1e-4, 1 - 1e-4)
    gt = t["heat"]
    pos = gt.eq(1).float()
    pos_loss = -(torch.log(p) * (1 - p) ** 2 * pos).sum()
    neg_loss = -(torch.log(1 - p) * p**2 * (1 - gt) ** 4 * (1 - pos)).sum()
    n = pos.sum().clamp(min=1.0)
    m = t["mask"].unsqueeze(1)
    reg = SIZE_WEIGHT * (F.l1_loss(size.float(), t["size"], reduction="none") * m).sum() / n
    reg = reg + (F.l1_loss(offset.float(), t["offset"], reduction="none") * m).sum() / n
    return (pos_loss + neg_loss) / n + reg


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes a (N, 4) and b (M, 4), [x1, y1, x2, y2] -> (N, M)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float = 0.5, classes: torch.Tensor | None = None
        ) -> torch.Tensor:
    """Greedy NMS: indices of kept boxes, highest score first; with ``classes`` only boxes of one class
    suppress each other (the offset trick: boxes of different classes are moved apart)."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    b = boxes.float()
    if classes is not None:
        b = b + classes.float()[:, None] * (b.max() + 1)
    order = torch.argsort(scores, descending=True)
    overlap = box_iou(b[order], b[order]) > iou
    keep = torch.ones(len(order), dtype=torch.bool)
    for i in range(len(order)):
        if keep[i]:
            keep[i + 1:] &= ~overlap[i, i + 1:]
    return order[keep]


def peaks(heat_logits: torch.Tensor, size: torch.Tensor, offset: torch.Tensor, stride: float, k: int = 100
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Network outputs -> top-``k`` peaks per image: boxes (B, k, 4) in image pixels, scores (B, k),
    classes (B, k). Pure tensor operations (exportable to ONNX)."""
    B, K, h, w = heat_logits.shape
    heat = heat_logits.sigmoid()
    keep = (F.max_pool2d(heat, 3, stride=1, padding=1) == heat).to(heat.dtype)
    scores, idx = (heat * keep).reshape(B, -1).topk(min(k, K * h * w))
    cls = idx // (h * w)
    pix = idx % (h * w)
    py, px = (pix // w).to(heat.dtype), (pix % w).to(heat.dtype)
    gather = lambda m: m.reshape(B, m.shape[1], -1).gather(2, pix[:, None, :].expand(-1, m.shape[1], -1))  # noqa: E731
    sz, of = gather(size).exp(), gather(offset)
    cx, cy = px + of[:, 0], py + of[:, 1]
    boxes = torch.stack([cx - sz[:, 0] / 2, cy - sz[:, 1] / 2, cx + sz[:, 0] / 2, cy + sz[:, 1] / 2], -1) * stride
    return boxes, scores, cls


def decode(heat_logits: torch.Tensor, size: torch.Tensor, offset: torch.Tensor, stride: float, image_size: int,
           k: int = 100, iou: float = 0.6, min_score: float = 0.01) -> list[dict[str, torch.Tensor]]:
    """Per image {"boxes" (n, 4) clipped to the image, "scores" (n,), "labels" (n,)} after NMS."""
    boxes, scores, cls = peaks(heat_logits, size, offset, stride, k)
    out = []
    for b, s, c in zip(boxes, scores, cls, strict=True):
        m = s >= min_score
        b, s, c = b[m].clamp(0, image_size), s[m], c[m]
        keep = nms(b, s, iou, c)
        out.append({"boxes": b[keep], "scores": s[keep], "labels": c[keep]})
    return out


__all__ = ["box_iou", "centernet_loss", "centernet_targets", "decode", "nms", "peaks"]
