"""The ensemble anomaly detector: the SSL score and IsolationForest's, averaged after each is put on a
common scale, as PyOD's score combination does (Zhao et al. 2019, "PyOD"; Aggarwal and Sathe 2015,
"Theoretical Foundations and Algorithms for Outlier Ensembles").

Each detector's test score becomes its percentile among the scores of reference rows of the normal
(or unlabelled) training bank (the empirical CDF of the bank's scores: fitted without labels and
without the test set, so each test row is scored on its own), and the ensemble is the mean of the
percentiles; ties (rows beyond every reference score) are broken by the mean of the scores
standardised with the reference's mean and std. Components: the masked model's reconstruction
error when the run has one (else the k-th-neighbour distance among the embeddings) and
IsolationForest on the raw input.
"""

from __future__ import annotations

import numpy as np

REFERENCE_ROWS = 2000  # bank rows whose scores define each detector's scale (seeded subset)
TIE_BREAK = 1e-3


def reference_rows(n: int, seed: int = 0, limit: int = REFERENCE_ROWS) -> np.ndarray:
    """Indices of at most ``limit`` bank rows (sorted, seeded)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def percentile(reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Share (M,) of ``reference`` scores at or below each of ``scores``: the bank's empirical CDF."""
    ref = np.sort(np.asarray(reference, np.float64))
    return np.searchsorted(ref, np.asarray(scores, np.float64), side="right") / max(1, len(ref))


def ensemble_scores(parts: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The mean percentile (M,) over ``parts``, each (reference scores (R,), test scores (M,)), plus a
    small tie-break: the mean standardised score."""
    pct = np.mean([percentile(r, s) for r, s in parts], axis=0)
    z = np.mean([(np.asarray(s, np.float64) - np.mean(r)) / (np.std(r) + 1e-12) for r, s in parts], axis=0)
    return pct + TIE_BREAK * np.tanh(z / 10)


__all__ = ["REFERENCE_ROWS", "ensemble_scores", "percentile", "reference_rows"]
