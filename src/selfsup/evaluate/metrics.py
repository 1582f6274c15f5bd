"""Scores of predictions: accuracy, AUROC and AUPRC, as plain functions of arrays.

AUPRC is average precision (scikit-learn's ``average_precision_score``: the precision at each
threshold weighted by the recall gained there), the usual summary for rare positives such as
fraud or anomalies, where AUROC looks good even for a useless ranking. Scores follow "higher =
more positive / more anomalous". A metric that is undefined for the labels given (one class
only) is NaN rather than an exception, so a tiny few-shot split cannot stop a protocol.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


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


def classification_metrics(labels, probs) -> dict[str, float]:
    """``top1`` of class scores (N, C); for two classes also ``auroc`` and ``auprc`` of class 1."""
    p = _np(probs)
    out = {"top1": accuracy(labels, p)}
    if p.shape[1] == 2:
        out["auroc"], out["auprc"] = auroc(labels, p[:, 1]), auprc(labels, p[:, 1])
    return out


def anomaly_metrics(labels, scores) -> dict[str, float]:
    """``auroc`` and ``auprc`` of anomaly ``scores`` (higher = more anomalous) against labels (1 = anomaly)."""
    return {"auroc": auroc(labels, scores), "auprc": auprc(labels, scores)}


__all__ = ["accuracy", "anomaly_metrics", "auprc", "auroc", "classification_metrics"]
