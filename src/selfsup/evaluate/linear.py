"""Linear probe: multinomial logistic regression on frozen, standardised features, with its
regularisation chosen by cross-validation on the labels.

The objective is scikit-learn's ``LogisticRegression(C=c)`` (lbfgs, multinomial, unpenalised
intercept): C * sum of cross-entropies + ||W||^2 / 2, here divided by C * N so the scale does not
depend on N. It is convex and starts at zero, so full-batch L-BFGS gives the same answer every
time, from 10 samples to 100,000, on the features' device. ``choose_c`` picks C from ``C_GRID``
by stratified k-fold accuracy (then log-loss) on the labelled features only, for every encoder the
same way: an untuned probe is too weak on some features and overfits others. The grid is scanned
from strong to weak regularisation and the scan ends once the score has fallen on two values in a
row: past the peak, weakly regularised fits on wide features run to the iteration cap without
converging (on 4,000 x 3,072 raw CIFAR-10 pixels the three weakest took twice as long as the other
three together, and scored worst).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import StratifiedKFold

from selfsup.evaluate.knn import standardize
from selfsup.evaluate.metrics import expected_top1

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
STOP_AFTER_FALLS = 2  # the scan from strong to weak regularisation ends once the CV score has fallen twice running
DEFAULT_C = 1.0


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
    x, test = standardize(train_feats.float(), test_feats.float().to(train_feats.device))
    y = torch.as_tensor(train_labels, device=x.device).long()
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
        return (test @ W + b).softmax(dim=1).cpu()


def choose_c(feats: torch.Tensor, labels: np.ndarray, num_classes: int, folds: int = 5, seed: int = 0) -> dict:
    """C from ``C_GRID`` by stratified k-fold (k = min(folds, smallest class)) on labelled ``feats``,
    scanning C upwards until the score has fallen ``STOP_AFTER_FALLS`` times in a row.

    Returns {"C", "selection", "cv_top1"}; with a single label in some class no fold can hold it
    out, so ``DEFAULT_C`` is kept.
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels)
    k = min(folds, int(counts[counts > 0].min()))
    if k < 2:
        return {"C": DEFAULT_C, "selection": "none (a class has one label): default", "cv_top1": None}
    splits = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels))
    y = torch.as_tensor(labels).long()
    best, last, falls = None, None, 0
    for c in C_GRID:
        accs, losses = [], []
        for tr, va in splits:
            p = linear_probe(feats[tr], y[tr], feats[va], num_classes, c=c)
            accs.append(expected_top1(p, labels[va]))
            losses.append(float(F.nll_loss(p.clamp_min(1e-12).log(), y[va])))
        score = (float(np.mean(accs)), -float(np.mean(losses)))
        if best is None or score > best[0]:
            best = (score, c)
        falls = falls + 1 if last is not None and score < last else 0
        last = score
        if falls == STOP_AFTER_FALLS:
            break
    return {"C": best[1], "selection": f"{k}-fold cross-validation on {len(labels)} labels", "cv_top1": best[0][0]}


def linear_classifier(train_feats: torch.Tensor, train_labels: np.ndarray, test_feats: torch.Tensor,
                      num_classes: int, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """The linear protocol: ``choose_c`` on the labelled features, then test probabilities (M, C) and the choice."""
    chosen = choose_c(train_feats, train_labels, num_classes, seed=seed)
    y = torch.as_tensor(np.asarray(train_labels)).long()
    return linear_probe(train_feats, y, test_feats, num_classes, c=chosen["C"]), chosen


__all__ = ["choose_c", "linear_classifier", "linear_probe", "C_GRID", "STOP_AFTER_FALLS"]
