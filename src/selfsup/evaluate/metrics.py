"""Scores of class probabilities: accuracy that gives ties no free credit, and AUROC.

A classifier whose top score is shared by m classes (a collapsed encoder gives every class the
same score) is right with probability 1/m if the true class is among them, as if the tie were
broken at random; counting it as a hit (``argmax`` picks the first) would reward collapse.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score


def expected_top1(probs: torch.Tensor | np.ndarray, labels: np.ndarray, tol: float = 1e-7) -> float:
    """Mean over rows of 1/m when the true class is one of the m classes with the top score, else 0."""
    p = torch.as_tensor(probs).double()
    y = torch.as_tensor(np.asarray(labels)).long()
    top = p.max(dim=1, keepdim=True).values
    at_top = p >= top - tol * top.abs().clamp(min=1.0)
    hit = at_top[torch.arange(len(y)), y].double()
    return float((hit / at_top.sum(1)).mean()) if len(y) else float("nan")


def scores_metrics(probs: torch.Tensor, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """top1 (``expected_top1``) of class probabilities (M, C); for 2 classes also AUROC of P(class 1)."""
    out = {"top1": expected_top1(probs, labels)}
    if num_classes == 2 and len(np.unique(labels)) == 2:
        out["auroc"] = float(roc_auc_score(labels, torch.as_tensor(probs).float().numpy()[:, 1]))
    return out


__all__ = ["expected_top1", "scores_metrics"]
