"""Unsupervised anomaly scores per table row or series window, and the baselines beside them.

Baselines on the raw data, ADBench's strongest unsupervised ones (Han et al. 2022, "ADBench:
Anomaly Detection Benchmark", NeurIPS): IsolationForest (Liu et al. 2008) and the distance to the
k-th nearest neighbour (Ramaswamy et al. 2000; PyOD's ``KNN`` default, k = 5). The SSL scores use
the pretrained model: its reconstruction error (a masked model that learned the normal data
rebuilds anomalies worse) and the same k-th-neighbour distance in its embedding space.
Higher = more anomalous everywhere. ``adbench_split`` is ADBench's split: 70 % to fit on,
without labels, 30 % to score, stratified (``data.splits.holdout_split``). ``detector_scores``
runs every detector on a training bank and a test set.

For long series the scores are per window; ``window_to_points`` spreads them over the time steps
(each step takes the highest score of the windows that hold it) to compare with point labels.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.data.inputs import as_inputs
from selfsup.data.splits import holdout_split


def _flat(x) -> np.ndarray:
    x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    x = x.reshape(len(x), -1).astype(np.float32)
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)  # NaN: the (standardised) mean


def adbench_split(labels: np.ndarray, test_fraction: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, score indices), stratified by label, as ADBench's ``train_test_split``."""
    return holdout_split(len(labels), labels, test_fraction, seed)


def isolation_forest_scores(train, test, seed: int = 0, n_estimators: int = 100) -> np.ndarray:
    """IsolationForest fitted on ``train`` (N, ...) rows, scores (M,) of ``test`` (higher = more anomalous).
    Missing values (NaN) count as the mean (0 after standardisation)."""
    from sklearn.ensemble import IsolationForest

    model = IsolationForest(n_estimators=n_estimators, random_state=seed).fit(_flat(train))
    return -model.score_samples(_flat(test))


@torch.no_grad()
def knn_distance_scores(train, test, k: int = 5, *, same: bool = False, cosine: bool = False,
                        batch_size: int = 1024) -> np.ndarray:
    """Distance from each ``test`` row to its k-th nearest ``train`` row (M,).

    ``same``: test and train are the same rows (transductive scoring), so each row's zero distance
    to itself is not counted. ``cosine``: rows are L2-normalised first (for embeddings). In float32
    (a 186,000 x 20,000 distance matrix of 192-wide embeddings is 10x slower in float64), which
    changes no ranking that matters: errors are ~1e-6 of a distance."""
    a, b = torch.from_numpy(_flat(train)).float(), torch.from_numpy(_flat(test)).float()
    if cosine:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    kk = min(k + int(same), len(a))
    out = []
    for i in range(0, len(b), batch_size):
        d = torch.cdist(b[i : i + batch_size], a)
        out.append(d.topk(kk, dim=1, largest=False).values[:, -1])
    return torch.cat(out).numpy() if out else np.zeros(0)


def embedding_knn_scores(train_feats, test_feats, k: int = 5, *, same: bool = False) -> np.ndarray:
    """The k-th-neighbour distance among SSL embeddings (cosine, as for a kNN probe)."""
    return knn_distance_scores(train_feats, test_feats, k, same=same, cosine=True)


def _batches(data: dict[str, np.ndarray], batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    n = len(next(iter(data.values())))
    for i in range(0, n, batch_size):
        yield {k: torch.as_tensor(v[i : i + batch_size]) for k, v in data.items()}


@torch.no_grad()
def reconstruction_scores(method, data: dict[str, np.ndarray], *, passes: int = 8, batch_size: int = 256,
                          seed: int = 0) -> np.ndarray:
    """A masked model's reconstruction error per row / window (M,), averaged over ``passes`` masks.

    ``method`` has ``reconstruction_errors(batch, passes, seed)`` giving per-token errors (``MAE``: table
    ``data`` = {"features", "categories"}, series {"series"}); it runs in eval mode on its device."""
    was = method.training
    method.eval()
    device = next(method.parameters()).device
    out = []
    try:
        for i, batch in enumerate(_batches(data, batch_size)):
            err = method.reconstruction_errors({k: v.to(device) for k, v in batch.items()}, passes, seed + i)
            out.append(err.float().cpu())
    finally:
        method.train(was)
    scores = torch.cat(out)
    if scores.ndim == 2:  # per token (cells, patches): a sample's mean over the tokens it could be scored on
        scores = torch.nanmean(scores, dim=1)
    return torch.nan_to_num(scores, nan=0.0).numpy()


@torch.no_grad()
def detector_scores(encoder: nn.Module, method: nn.Module | None, bank, test, *, bank_embeddings=None,
                    k: int = 5, passes: int = 4, seed: int = 0, ensemble: bool = True
                    ) -> dict[tuple[str, str], np.ndarray]:
    """Every detector's scores (M,) of ``test`` given the normal (or unlabelled) ``bank``, keyed by
    (encoder, detector): ("ssl", "knn") the k-th-neighbour cosine distance among the encoder's
    embeddings, ("ssl", "reconstruction") a masked ``method``'s error (when it has
    ``reconstruction_errors``), ("raw", "knn") and ("raw", "iforest") on the raw input
    (``features.raw_pair``: a table's numbers, missing flags and one-hot categories; series values).
    With ``ensemble``, ("ssl", "ensemble"): the SSL score and IsolationForest's averaged on a common
    scale (``evaluate.ensemble``).
    ``bank`` / ``test``: inputs as ``data.inputs`` holds them; ``bank_embeddings`` (N, D) if known."""
    from selfsup.evaluate.features import extract_features, raw_pair

    bank, test = as_inputs(bank), as_inputs(test)
    emb_bank = bank_embeddings if bank_embeddings is not None else extract_features(encoder, bank)
    out = {("ssl", "knn"): embedding_knn_scores(emb_bank, extract_features(encoder, test), k)}
    if method is not None and hasattr(method, "reconstruction_errors"):
        keys = method.spec.input_keys
        data = {key: v.numpy() for key, v in (test.items() if isinstance(test, dict) else [(keys[0], test)])}
        out[("ssl", "reconstruction")] = reconstruction_scores(method, data, passes=passes, seed=seed)
    raw_bank, raw_test = raw_pair(bank, test)
    out[("raw", "knn")] = knn_distance_scores(raw_bank, raw_test, k)
    out[("raw", "iforest")] = isolation_forest_scores(raw_bank, raw_test, seed=seed)
    if ensemble:
        out[("ssl", "ensemble")] = _ensemble(out, method, bank, emb_bank, raw_bank, k, passes, seed)
    return out


def _ensemble(out: dict, method, bank, emb_bank, raw_bank, k: int, passes: int, seed: int) -> np.ndarray:
    """("ssl", "ensemble") of ``evaluate.ensemble``: the SSL score (reconstruction, else embedding kNN) and
    IsolationForest, each on the percentile scale of a bank subset's scores."""
    from selfsup.data.inputs import take
    from selfsup.evaluate.ensemble import ensemble_scores, reference_rows

    ref = reference_rows(len(raw_bank), seed)
    if ("ssl", "reconstruction") in out:
        keys = method.spec.input_keys
        sub = take(bank, ref)
        data = {key: v.numpy() for key, v in (sub.items() if isinstance(sub, dict) else [(keys[0], sub)])}
        ssl = (reconstruction_scores(method, data, passes=passes, seed=seed), out[("ssl", "reconstruction")])
    else:
        ref_emb = emb_bank[torch.from_numpy(ref)] if torch.is_tensor(emb_bank) else np.asarray(emb_bank)[ref]
        ssl = (knn_distance_scores(emb_bank, ref_emb, k, same=True, cosine=True), out[("ssl", "knn")])
    iforest = (isolation_forest_scores(raw_bank, raw_bank[ref], seed=seed), out[("raw", "iforest")])
    return ensemble_scores([ssl, iforest])


def window_to_points(scores: np.ndarray, starts: np.ndarray, window: int, length: int) -> np.ndarray:
    """Window scores (N,) at ``starts`` -> point scores (length,): each step the highest score of the
    windows holding it; NaN where no window reaches."""
    out = np.full(length, -np.inf)
    for s, v in zip(np.asarray(starts), np.asarray(scores), strict=True):
        np.maximum(out[s : s + window], v, out=out[s : s + window])
    return np.where(np.isinf(out), np.nan, out)


__all__ = [
    "adbench_split", "detector_scores", "embedding_knn_scores", "isolation_forest_scores", "knn_distance_scores",
    "reconstruction_scores", "window_to_points",
]
