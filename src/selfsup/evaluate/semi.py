"""The ``semi`` protocol: the unlabelled pool used at evaluation, by label propagation over a kNN graph.

Zhou et al. 2004 ("Learning with Local and Global Consistency"), on frozen features as in Iscen et
al. 2019 ("Label Propagation for Deep Semi-supervised Learning"): the nodes are the draw's labelled
samples and the rest of the training pool, unlabelled (never the test set); each links to its k
most cosine-similar others with weight max(sim, 0)^3, the graph is made symmetric and normalised
(S = D^-1/2 W D^-1/2), and the class scores F solve (I - alpha S) F = Y (conjugate gradients), Y
holding each labelled node's class, weighted 1 / (labels of that class). Test samples are then
classified inductively, one at a time, from the propagated scores of their k nearest pool nodes
(same weights): no test sample is a node and none influences another.

k, alpha and whether the features are standardised first are chosen per encoder and draw on the
draw's labels only: stratified k-fold over the labels (each fold's labels hidden, so they become
unlabelled nodes, and scored), as the kNN and linear probes choose theirs. With one label in some
class there is nothing to hold out, and the defaults are kept. The same procedure serves every
encoder (ssl, raw, foundation, MiniRocket features), so the verdict stays fair. Pools over
``MAX_POOL`` samples keep a seeded random ``MAX_POOL`` of their unlabelled part.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from scipy.sparse.linalg import cg
from sklearn.model_selection import StratifiedKFold

from selfsup.evaluate.knn import standardize

K_GRID = (10, 20, 50)
ALPHA_GRID = (0.5, 0.9, 0.99)
DEFAULT_SEMI = {"k": 10, "alpha": 0.9, "standardize": False}
GAMMA = 3  # edge weight max(sim, 0) ** GAMMA (Iscen et al. 2019)
MAX_POOL = 10_000
FOLDS = 3


def neighbours(x: torch.Tensor, queries: torch.Tensor, k: int, exclude_self: bool, batch: int = 1024
               ) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights (M, k) of each query's k most cosine-similar rows of ``x`` (N, F)."""
    x = F.normalize(x.float(), dim=1)
    idx, w = [], []
    k = min(k, len(x) - int(exclude_self))
    for i in range(0, len(queries), batch):
        q = F.normalize(queries[i:i + batch].float(), dim=1)
        sim = q @ x.T
        if exclude_self:
            sim[torch.arange(len(q)), torch.arange(i, i + len(q))] = -torch.inf
        s, j = sim.topk(k, dim=1)
        idx.append(j.numpy())
        w.append(s.clamp(min=0).pow(GAMMA).numpy())
    return np.concatenate(idx), np.concatenate(w)


def propagate(nbr: np.ndarray, wts: np.ndarray, k: int, labelled: np.ndarray, y: np.ndarray, num_classes: int,
              alpha: float) -> np.ndarray:
    """Class scores (N, C) of every pool node: (I - alpha S) F = Y over the graph of each node's first k
    neighbours (``nbr`` / ``wts`` (N, >= k)), rows normalised to sum 1 (uniform where no mass arrives)."""
    n = len(nbr)
    rows = np.repeat(np.arange(n), k)
    W = sparse.csr_matrix((wts[:, :k].ravel(), (rows, nbr[:, :k].ravel())), shape=(n, n))
    W = W + W.T
    d = np.asarray(W.sum(1)).ravel()
    inv = 1.0 / np.sqrt(np.where(d > 0, d, 1.0))
    S = sparse.diags(inv) @ W @ sparse.diags(inv)
    A = sparse.identity(n, format="csr") - alpha * S
    counts = np.bincount(y, minlength=num_classes)
    out = np.zeros((n, num_classes))
    for c in range(num_classes):
        if counts[c] == 0:
            continue
        b = np.zeros(n)
        b[labelled[y == c]] = 1.0 / counts[c]
        out[:, c], _ = cg(A, b, rtol=1e-6, maxiter=200)
    out = np.clip(out, 0, None)
    mass = out.sum(1, keepdims=True)
    return np.where(mass > 0, out / np.where(mass > 0, mass, 1), 1.0 / num_classes)


def _graph(pool: torch.Tensor, kmax: int) -> tuple[np.ndarray, np.ndarray]:
    return neighbours(pool, pool, kmax, exclude_self=True)


def _score(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(accuracy, mean log-likelihood): the tuning key, ties in accuracy broken by the likelihood."""
    p = scores[np.arange(len(y)), y]
    return float((scores.argmax(1) == y).mean()), float(np.log(np.clip(p, 1e-12, None)).mean())


def choose_semi(pool: torch.Tensor, labelled: np.ndarray, y: np.ndarray, num_classes: int, seed: int,
                graphs: dict) -> dict:
    """k, alpha and standardisation by stratified k-fold over the draw's labels (``graphs``: the kNN
    graph of the pool per standardisation, from ``_graph``). Defaults with a one-label class."""
    counts = np.bincount(y)
    folds = min(FOLDS, int(counts[counts > 0].min()))
    if folds < 2:
        return {**DEFAULT_SEMI, "selection": "none (a class has one label): defaults"}
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(labelled, y))
    best = None
    for std, k, alpha in itertools.product((False, True), K_GRID, ALPHA_GRID):
        nbr, wts = graphs[std]
        if k > nbr.shape[1]:
            continue
        accs, lls = [], []
        for tr, va in splits:
            f = propagate(nbr, wts, k, labelled[tr], y[tr], num_classes, alpha)
            a, ll = _score(f[labelled[va]], y[va])
            accs.append(a)
            lls.append(ll)
        score = (float(np.mean(accs)), float(np.mean(lls)))
        if best is None or score > best[0]:
            best = (score, {"k": k, "alpha": alpha, "standardize": std})
    return {**best[1], "selection": f"{folds}-fold cross-validation on {len(y)} labels (propagated)",
            "cv_top1": best[0][0]}


def semi_probe(pool_feats: torch.Tensor, idx: np.ndarray, y: np.ndarray, test_feats: torch.Tensor, num_classes: int,
               seed: int = 0) -> tuple[torch.Tensor, dict]:
    """Class probabilities (M, C) of the test set and what was chosen.

    pool_feats (N, F): the whole training pool (labelled or not; never the test set); ``idx`` the
    draw's labelled rows of it with labels ``y``; test_feats (M, F), classified inductively."""
    pool_feats, test_feats = pool_feats.float().cpu(), test_feats.float().cpu()
    idx, y = np.asarray(idx), np.asarray(y).astype(np.int64)
    n = len(pool_feats)
    keep = np.arange(n)
    if n > MAX_POOL:
        rest = np.setdiff1d(keep, idx)
        rest = np.random.default_rng(seed).choice(rest, MAX_POOL - len(idx), replace=False)
        keep = np.sort(np.concatenate([idx, rest]))
    pos = np.full(n, -1)
    pos[keep] = np.arange(len(keep))
    pool = pool_feats[torch.from_numpy(keep)]
    labelled = pos[idx]
    kmax = min(max(K_GRID), len(pool) - 1)
    if kmax < 1 or len(np.unique(y)) == 1:
        out = torch.zeros(len(test_feats), num_classes, dtype=torch.float64)
        out[:, int(y[0])] = 1.0
        return out, {"selection": "one class" if len(np.unique(y)) == 1 else "pool of one"}
    views = {False: (pool, test_feats), True: standardize(pool, test_feats)}
    graphs = {s: _graph(v[0], kmax) for s, v in views.items()}
    chosen = choose_semi(pool, labelled, y, num_classes, seed, graphs)
    k = min(chosen["k"], kmax)
    nbr, wts = graphs[chosen["standardize"]]
    f = propagate(nbr, wts, k, labelled, y, num_classes, chosen["alpha"])
    p, train_view = views[chosen["standardize"]][1], views[chosen["standardize"]][0]
    tn, tw = neighbours(train_view, p, k, exclude_self=False)
    scores = (tw[:, :, None] * f[tn]).sum(1)
    mass = scores.sum(1, keepdims=True)
    scores = np.where(mass > 0, scores / np.where(mass > 0, mass, 1), 1.0 / num_classes)
    return torch.from_numpy(scores), {**chosen, "pool": int(len(pool))}


__all__ = ["ALPHA_GRID", "DEFAULT_SEMI", "K_GRID", "MAX_POOL", "choose_semi", "propagate", "semi_probe"]
