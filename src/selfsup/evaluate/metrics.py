"""Scores of predictions: accuracy that gives ties no free credit, AUROC and AUPRC.

A classifier whose top score is shared by m classes (a collapsed encoder gives every class the
same score) is right with probability 1/m if the true class is among them, as if the tie were
broken at random; counting it as a hit (``argmax`` picks the first) would reward collapse.

AUPRC is average precision (scikit-learn's ``average_precision_score``: the precision at each
threshold weighted by the recall gained there), the usual summary for rare positives such as
fraud or anomalies, where AUROC looks good even for a useless ranking. Scores follow "higher =
more positive / more anomalous". A metric that is undefined for the labels given (one class
only) is NaN rather than an exception, so a tiny few-shot split cannot stop a protocol.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

# a binary task is imbalanced (fraud, anomalies) when its rarer class is at most this share of the
# test labels; it then also gets the AUPRC of that class, the number that matters there
IMBALANCED = 0.25


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def expected_top1(probs: torch.Tensor | np.ndarray, labels: np.ndarray, tol: float = 1e-7) -> float:
    """Mean over rows of 1/m when the true class is one of the m classes with the top score, else 0."""
    p = torch.as_tensor(probs).double()
    y = torch.as_tensor(np.asarray(labels)).long()
    top = p.max(dim=1, keepdim=True).values
    at_top = p >= top - tol * top.abs().clamp(min=1.0)
    hit = at_top[torch.arange(len(y)), y].double()
    return float((hit / at_top.sum(1)).mean()) if len(y) else float("nan")


def accuracy(labels, predictions) -> float:
    """Share of correct predictions; ``predictions`` are class indices (N,) or class scores (N, C)."""
    y, p = _np(labels), _np(predictions)
    if p.ndim == 2:
        p = p.argmax(1)
    return float((p == y).mean()) if len(y) else float("nan")


def auroc(labels, scores) -> float:
    """Area under the ROC curve of binary ``labels`` (1 = positive) ranked by ``scores``; NaN with one class."""
    y, s = _np(labels).astype(int), _np(scores).astype(np.float64)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, s))


def auprc(labels, scores) -> float:
    """Average precision of binary ``labels`` ranked by ``scores``; NaN without a positive."""
    y, s = _np(labels).astype(int), _np(scores).astype(np.float64)
    if y.sum() == 0:
        return float("nan")
    return float(average_precision_score(y, s))


def rare_class(labels: np.ndarray, num_classes: int) -> int | None:
    """The rarer class of a binary task whose rarer class is at most ``IMBALANCED`` of ``labels``; else None."""
    y = np.asarray(labels)
    if num_classes != 2 or len(np.unique(y)) != 2:
        return None
    counts = np.bincount(y, minlength=2)
    c = int(counts.argmin())
    return c if counts[c] <= IMBALANCED * len(y) else None


def scores_metrics(probs: torch.Tensor, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """top1 (``expected_top1``) of class probabilities (M, C); for 2 classes also AUROC of P(class 1),
    and for an imbalanced binary task (``rare_class``) the AUPRC of the rarer class."""
    out = {"top1": expected_top1(probs, labels)}
    if num_classes == 2 and len(np.unique(labels)) == 2:
        p = torch.as_tensor(probs).float().numpy()
        out["auroc"] = float(roc_auc_score(labels, p[:, 1]))
        rare = rare_class(labels, num_classes)
        if rare is not None:
            out["auprc"] = auprc(np.asarray(labels) == rare, p[:, rare])
    return out


def classification_metrics(labels, probs) -> dict[str, float]:
    """``top1`` of class scores (N, C) (argmax); for two classes also ``auroc`` and ``auprc`` of class 1."""
    p = _np(probs)
    out = {"top1": accuracy(labels, p)}
    if p.shape[1] == 2:
        out["auroc"], out["auprc"] = auroc(labels, p[:, 1]), auprc(labels, p[:, 1])
    return out


def anomaly_metrics(labels, scores) -> dict[str, float]:
    """``auroc`` and ``auprc`` of anomaly ``scores`` (higher = more anomalous) against labels (1 = anomaly)."""
    return {"auroc": auroc(labels, scores), "auprc": auprc(labels, scores)}


__all__ = [
    "IMBALANCED", "accuracy", "anomaly_metrics", "auprc", "auroc", "classification_metrics", "expected_top1",
    "rare_class", "scores_metrics",
]
