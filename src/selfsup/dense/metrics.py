"""Dense metrics: COCO box mAP through pycocotools, mIoU / per-class IoU / Dice for masks.

Boxes are scored in each image's original pixels (predictions made on the resized square are scaled
back), with pycocotools' ``COCOeval`` (mAP@[.5:.95] = ``map``, mAP@.5 = ``map50``, per-class AP@[.5:.95]
and AP@.5). Segmentation: a confusion matrix over all test pixels that are not void (``IGNORE``);
IoU_c = TP / (TP + FP + FN), Dice_c = 2 TP / (2 TP + FP + FN); ``miou`` and ``dice`` average the
classes present in the ground truth or the prediction.
"""

from __future__ import annotations

import contextlib
import io

import torch

from selfsup.data.dense import IGNORE, DenseSet


def coco_results(ds: DenseSet, preds: list[dict[str, torch.Tensor]], category_ids: list[int] | None = None
                 ) -> list[dict]:
    """Predictions on ``ds``'s resized images -> a COCO results list in the original pixels
    (image_id = index in ``ds`` + 1 unless the set's keys say otherwise; category_id = class + 1)."""
    S = ds.images.shape[-1]
    out = []
    for i, p in enumerate(preds):
        h, w = ds.sizes[i]
        b = p["boxes"].detach().cpu().double().numpy().copy()
        b[:, [0, 2]] *= w / S
        b[:, [1, 3]] *= h / S
        for box, s, c in zip(b, p["scores"].tolist(), p["labels"].tolist(), strict=True):
            cid = category_ids[c] if category_ids else c + 1
            out.append({"image_id": i + 1, "category_id": int(cid),
                        "bbox": [round(float(box[0]), 2), round(float(box[1]), 2),
                                 round(float(box[2] - box[0]), 2), round(float(box[3] - box[1]), 2)],
                        "score": round(float(s), 5)})
    return out


def _coco_gt(ds: DenseSet):
    from pycocotools.coco import COCO

    S = ds.images.shape[-1]
    images, anns = [], []
    for i, (b, lab) in enumerate(zip(ds.boxes, ds.labels, strict=True)):
        h, w = ds.sizes[i]
        images.append({"id": i + 1, "width": w, "height": h, "file_name": ds.keys[i]})
        for box, c in zip(b, lab, strict=True):
            x1, y1, x2, y2 = box[0] * w / S, box[1] * h / S, box[2] * w / S, box[3] * h / S
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c) + 1, "iscrowd": 0,
                         "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                         "area": float((x2 - x1) * (y2 - y1))})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": k + 1, "name": n} for k, n in enumerate(ds.class_names)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def box_map(ds: DenseSet, preds: list[dict[str, torch.Tensor]]) -> dict:
    """{"map", "map50", "per_class": {name: {"ap", "ap50"}}} of ``preds`` (one dict per image of ``ds``)."""
    from pycocotools.cocoeval import COCOeval

    gt = _coco_gt(ds)
    res = coco_results(ds, preds)
    names = ds.class_names
    if not res:
        return {"map": 0.0, "map50": 0.0, "per_class": {n: {"ap": 0.0, "ap50": 0.0} for n in names}}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(res)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"][:, :, :, 0, -1]  # (T iou thresholds, R recalls, K classes), area all, 100 dets
    per = {}
    for k, n in enumerate(names):
        p = prec[:, :, k]
        p50 = prec[0, :, k]
        per[n] = {"ap": float(p[p > -1].mean()) if (p > -1).any() else float("nan"),
                  "ap50": float(p50[p50 > -1].mean()) if (p50 > -1).any() else float("nan")}
    return {"map": max(float(ev.stats[0]), 0.0), "map50": max(float(ev.stats[1]), 0.0), "per_class": per}


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, H, W) predicted and true class ids -> (K, K) counts [true, predicted], void pixels left out."""
    valid = target != IGNORE
    t, p = target[valid].long(), pred[valid].long().clamp(0, num_classes - 1)
    return torch.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def mask_scores(cm: torch.Tensor, names: list[str]) -> dict:
    """{"miou", "dice", "pixel_accuracy", "per_class": {name: {"iou", "dice"}}} from a confusion matrix."""
    cm = cm.double()
    tp = cm.diag()
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    present = (tp + fp + fn) > 0
    iou = tp / (tp + fp + fn).clamp(min=1)
    dice = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
    per = {n: {"iou": float(iou[k]) if present[k] else float("nan"),
               "dice": float(dice[k]) if present[k] else float("nan")} for k, n in enumerate(names)}
    return {"miou": float(iou[present].mean()) if present.any() else 0.0,
            "dice": float(dice[present].mean()) if present.any() else 0.0,
            "pixel_accuracy": float(tp.sum() / cm.sum().clamp(min=1)), "per_class": per}


def seg_metrics(ds: DenseSet, pred: torch.Tensor) -> dict:
    """Scores of predicted class maps (N, S, S) against ``ds.masks``."""
    return mask_scores(confusion(pred.cpu(), ds.masks, ds.num_classes), ds.class_names)


__all__ = ["box_map", "coco_results", "confusion", "mask_scores", "seg_metrics"]
