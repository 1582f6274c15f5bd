"""Weighted k-nearest-neighbour classifier on frozen features, with k chosen on the labels.

As in Wu et al. 2018 ("Unsupervised Feature Learning via Non-Parametric Instance
Discrimination") and Caron et al. 2021 (DINO), also lightly's kNN monitor: features are L2
normalised, each test point takes its k most cosine-similar labelled points, and every neighbour
votes for its class with weight exp(sim / T). Neighbours tied with the k-th share its slot, so a
collapsed encoder (all similarities equal) votes with the class frequencies instead of with
whichever points come first. ``choose_knn`` picks k and whether to standardise the features
first by leave-one-out accuracy on the labelled set, the same way for every encoder.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.evaluate.features import sharded_features
from selfsup.evaluate.metrics import expected_top1

K_GRID = (20, 10, 50, 5, 1)  # in order of preference when scores tie; 20 is the usual default
DEFAULT_KNN = {"k": 20, "standardize": False}


def standardize(train: torch.Tensor, *others: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Z-score every column with the mean and std of ``train`` (constant columns keep scale 1)."""
    mean, std = train.mean(0), train.std(0, unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return tuple((t - mean) / std for t in (train, *others))


@torch.no_grad()
def knn_predict(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    batch_size: int = 256,
    exclude_self: bool = False,
) -> torch.Tensor:
    """Class scores (N_test, C): each row is the share of the weighted vote, summing to 1.

    train_feats (N, F), train_labels (N,) in [0, C), test_feats (M, F). k is capped at N (N - 1
    with ``exclude_self``, for leave-one-out when the test rows are the training rows). Test rows
    go in batches of ``batch_size`` so memory stays O(batch_size * N).
    """
    train = F.normalize(train_feats.float(), dim=1)
    onehot = F.one_hot(torch.as_tensor(train_labels, device=train.device).long(), num_classes).float()
    k = max(1, min(k, len(train) - int(exclude_self)))
    out = []
    for i in range(0, len(test_feats), batch_size):
        test = F.normalize(test_feats[i : i + batch_size].float().to(train.device), dim=1)
        sim = test @ train.T
        if exclude_self:
            sim[torch.arange(len(test)), torch.arange(i, i + len(test))] = -torch.inf
        kth = sim.topk(k, dim=1).values[:, -1:]
        tol = 1e-6
        strict, tied = sim > kth + tol, (sim - kth).abs() <= tol
        share = ((k - strict.sum(1, keepdim=True)) / tied.sum(1, keepdim=True).clamp(min=1)).clamp(max=1.0)
        # Shifting by the row maximum leaves the normalised vote unchanged and avoids overflow.
        w = ((sim - sim.max(1, keepdim=True).values) / temperature).exp() * (strict + tied * share)
        votes = w @ onehot
        out.append(votes / votes.sum(dim=1, keepdim=True))
    return torch.cat(out).cpu() if out else torch.empty(0, num_classes)


def choose_knn(feats: torch.Tensor, labels: np.ndarray, num_classes: int, batch_size: int = 256) -> dict:
    """k (``K_GRID``) and standardisation by leave-one-out accuracy on the labelled ``feats`` (N, F).

    One similarity pass per standardisation serves every k: each point's ``max(K_GRID)`` nearest
    others (itself left out) vote as in ``knn_predict``, ties at the k-th sharing its slot among the
    listed neighbours. Returns {"k", "standardize", "selection", "loo_top1"}; with a single label
    in some class leave-one-out cannot see that class, so the defaults are kept.
    """
    counts = np.bincount(np.asarray(labels))
    if counts[counts > 0].min() < 2:
        return {**DEFAULT_KNN, "selection": "none (a class has one label): defaults", "loo_top1": None}
    y = torch.as_tensor(np.asarray(labels)).long()
    m = min(max(K_GRID), len(y) - 1)
    best = None
    for std in (False, True):
        f = F.normalize((standardize(feats.float())[0] if std else feats).float(), dim=1)
        hits = dict.fromkeys(K_GRID, 0.0)
        for i in range(0, len(f), batch_size):
            sim = f[i : i + batch_size] @ f.T
            sim[torch.arange(len(sim)), torch.arange(i, i + len(sim))] = -torch.inf
            top, idx = sim.topk(m, dim=1)
            for k in K_GRID:
                votes = _vote(top, y[idx], min(k, m), num_classes)
                hits[k] += expected_top1(votes, labels[i : i + batch_size]) * len(sim)
        for k in K_GRID:  # K_GRID order breaks ties: the usual default first
            if best is None or hits[k] / len(y) > best[0] + 1e-12:
                best = (hits[k] / len(y), k, std)
    return {"k": best[1], "standardize": best[2], "selection": f"leave-one-out on {len(y)} labels",
            "loo_top1": best[0]}


def _vote(top: torch.Tensor, top_labels: torch.Tensor, k: int, num_classes: int, temperature: float = 0.07,
          tol: float = 1e-6) -> torch.Tensor:
    """Class votes (B, C) of sorted neighbour lists ``top`` (B, m) with labels (B, m), as ``knn_predict``."""
    kth = top[:, k - 1 : k]
    strict, tied = top > kth + tol, (top - kth).abs() <= tol
    share = ((k - strict.sum(1, keepdim=True)) / tied.sum(1, keepdim=True).clamp(min=1)).clamp(max=1.0)
    w = ((top - top[:, :1]) / temperature).exp() * (strict + tied * share)
    return torch.zeros(len(top), num_classes).scatter_add_(1, top_labels, w)


def knn_probe(train_feats: torch.Tensor, train_labels: np.ndarray, test_feats: torch.Tensor,
              num_classes: int) -> tuple[torch.Tensor, dict]:
    """The kNN protocol: ``choose_knn`` on the labelled features, then test scores (M, C) and the choice."""
    chosen = choose_knn(train_feats, train_labels, num_classes)
    train, test = standardize(train_feats.float(), test_feats.float()) if chosen["standardize"] else (
        train_feats, test_feats)
    y = torch.as_tensor(np.asarray(train_labels)).long()
    return knn_predict(train, y, test, num_classes, k=chosen["k"]), chosen


def knn_monitor(images: np.ndarray | torch.Tensor, labels: np.ndarray, num_classes: int | None = None,
                k: int = DEFAULT_KNN["k"], batch_size: int = 256) -> Callable[[nn.Module], float]:
    """The score of pretraining's regression guard (``train.monitor``): encoder -> leave-one-out kNN top-1.

    ``images`` uint8 (N, C, H, W) with ``labels`` (N,): every image is classified by the vote of its
    ``k`` nearest other images (``knn_predict`` with ``exclude_self``) on frozen features
    (``features.sharded_features``: eval mode, sharded over ranks). k is fixed rather than chosen,
    so scores at different steps compare; ties earn no free credit (``metrics.expected_top1``).
    """
    labels = np.asarray(labels).astype(np.int64)
    y = torch.as_tensor(labels)
    classes = num_classes or int(labels.max()) + 1

    def score(encoder: nn.Module) -> float:
        feats = sharded_features(encoder, images, batch_size=batch_size)
        return expected_top1(knn_predict(feats, y, feats, classes, k=k, exclude_self=True), labels)

    return score


__all__ = ["choose_knn", "knn_monitor", "knn_predict", "knn_probe", "standardize", "K_GRID"]
