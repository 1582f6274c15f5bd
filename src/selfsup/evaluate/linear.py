"""Linear probe: multinomial logistic regression on frozen, standardised features.

The objective is scikit-learn's ``LogisticRegression(C=c)`` (lbfgs, multinomial, unpenalised
intercept): C * sum of cross-entropies + ||W||^2 / 2, here divided by C * N so the scale does not
depend on N. It is convex and starts at zero, so full-batch L-BFGS gives the same answer every
time, from 10 samples to 100,000, on the features' device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def linear_probe(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    num_classes: int,
    seed: int = 0,
    c: float = 1.0,
    max_iter: int = 500,
) -> torch.Tensor:
    """Class probabilities (N_test, C) of a logistic regression fitted on (train_feats, train_labels).

    Features are standardised with the training mean and std (constant features keep scale 1).
    ``c`` is the inverse L2 strength, as in scikit-learn. ``seed`` is accepted for a uniform
    protocol signature; the fit is deterministic.
    """
    del seed
    x = train_feats.float()
    y = torch.as_tensor(train_labels, device=x.device).long()
    mean, std = x.mean(0), x.std(0, unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    x = (x - mean) / std
    n, d = x.shape
    W = torch.zeros(d, num_classes, device=x.device, requires_grad=True)
    b = torch.zeros(num_classes, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=1e-6,
                            tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ W + b, y) + W.square().sum() / (2 * c * n)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        test = (test_feats.float().to(x.device) - mean) / std
        return (test @ W + b).softmax(dim=1).cpu()


__all__ = ["linear_probe"]
