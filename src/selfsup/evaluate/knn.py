"""Weighted k-nearest-neighbour classifier on frozen features.

As in Wu et al. 2018 ("Unsupervised Feature Learning via Non-Parametric Instance
Discrimination") and Caron et al. 2021 (DINO), also lightly's kNN monitor: features are L2
normalised, each test point takes its k most cosine-similar labelled points, and every neighbour
votes for its class with weight exp(sim / T).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Class scores (N_test, C): each row is the share of the weighted vote, summing to 1.

    train_feats (N, F), train_labels (N,) in [0, C), test_feats (M, F). k is capped at N. Test rows
    go in batches of ``batch_size`` so memory stays O(batch_size * N).
    """
    train = F.normalize(train_feats.float(), dim=1)
    labels = torch.as_tensor(train_labels, device=train.device).long()
    k = min(k, len(train))
    out = []
    for i in range(0, len(test_feats), batch_size):
        test = F.normalize(test_feats[i : i + batch_size].float().to(train.device), dim=1)
        sim, idx = (test @ train.T).topk(k, dim=1)
        # Shifting by the row maximum leaves the normalised vote unchanged and avoids overflow.
        w = ((sim - sim[:, :1]) / temperature).exp()
        votes = torch.zeros(len(test), num_classes, device=train.device).scatter_add_(1, labels[idx], w)
        out.append(votes / votes.sum(dim=1, keepdim=True))
    return torch.cat(out).cpu() if out else torch.empty(0, num_classes)


__all__ = ["knn_predict"]
