"""Maps of the feature space: PCA and t-SNE in 2-D, and cosine nearest neighbours.

PCA is linear and keeps global distances (how far apart the classes are); t-SNE (van der Maaten
& Hinton 2008) keeps local neighbourhoods (whether each class forms its own clusters) but its
distances between clusters mean little. Showing both avoids over-reading either.
"""

from __future__ import annotations

import inspect
import os

import numpy as np
import torch


def _np(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def pca(features: np.ndarray | torch.Tensor, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, D) -> (coordinates (N, k), explained variance ratio (k,)).

    Centres the features and projects them on the top-k right singular vectors; component signs
    are fixed so the largest-magnitude loading is positive (deterministic plots).
    """
    x = _np(features).astype(np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    vt = vt[:k]
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
    vt = vt * np.where(signs == 0, 1.0, signs)[:, None]
    var = s**2
    ratio = var[:k] / max(var.sum(), 1e-300)
    coords = x @ vt.T
    if coords.shape[1] < k:  # fewer samples or dimensions than k: pad with zeros
        coords = np.pad(coords, ((0, 0), (0, k - coords.shape[1])))
        ratio = np.pad(ratio, (0, k - len(ratio)))
    return coords.astype(np.float32), ratio.astype(np.float32)


def tsne(
    features: np.ndarray | torch.Tensor, perplexity: float = 30.0, seed: int = 0, iterations: int = 500,
    threads: int | None = None,
) -> np.ndarray:
    """Features (N, D) -> t-SNE coordinates (N, 2) (scikit-learn, PCA init, on L2-normalised rows).

    Perplexity is capped at (N - 1) / 3 so small sets work; keep N to about 1000. 500 iterations
    (250 of them early exaggeration) settle a map of that size. ``threads`` caps OpenMP (default:
    half the cores, at most 4): on a busy 2-core machine two spinning threads run 4x slower than one.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = _np(features).astype(np.float32)
    n = len(x)
    if n < 4:
        return pca(x, 2)[0]
    perp = float(min(perplexity, max((n - 1) / 3.0, 1.0)))
    x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)  # cosine geometry, as for kNN
    steps = "max_iter" if "max_iter" in inspect.signature(TSNE).parameters else "n_iter"  # sklearn < 1.5
    model = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed, **{steps: max(iterations, 250)})
    threads = threads or max(1, min(4, (os.cpu_count() or 2) // 2))
    with threadpool_limits(limits=threads, user_api="openmp"):
        return model.fit_transform(x).astype(np.float32)


def nearest_neighbours(
    features: np.ndarray | torch.Tensor, queries: np.ndarray | list[int], k: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k neighbours of the rows ``queries`` among all rows of ``features`` (N, D).

    The query itself is excluded. Returns (indices (Q, k), similarities (Q, k)), most similar first.
    """
    f = torch.as_tensor(_np(features), dtype=torch.float32)
    f = torch.nn.functional.normalize(f, dim=1)
    q = torch.as_tensor(np.asarray(queries), dtype=torch.long)
    sim = f[q] @ f.T
    sim[torch.arange(len(q)), q] = -float("inf")
    k = min(k, len(f) - 1)
    top = sim.topk(k, dim=1)
    return top.indices.numpy(), top.values.numpy()


def pick_queries(labels: np.ndarray | None, n: int, seed: int = 0, total: int | None = None) -> np.ndarray:
    """``n`` query indices: round-robin over classes when labels exist, else evenly spaced."""
    if labels is None:
        total = int(total or 0)
        return np.linspace(0, max(total - 1, 0), num=min(n, total)).round().astype(int)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    pools = [rng.permutation(np.flatnonzero(labels == c)).tolist() for c in np.unique(labels)]
    out: list[int] = []
    while len(out) < min(n, len(labels)):
        for pool in pools:
            if pool and len(out) < n:
                out.append(pool.pop())
    return np.asarray(out, dtype=int)


__all__ = ["pca", "tsne", "nearest_neighbours", "pick_queries"]
