"""Which labelled samples go where: stratified splits and few-label draws, one rule for all.

Evaluation splits a labelled set into a pool and a test part and draws K shots per class from the
pool; adaptation holds a part of its labels out for early stopping. Both are stratified by class
and seeded, and samples with label < 0 (unknown) are never drawn.
"""

from __future__ import annotations

import warnings

import numpy as np


def _classes(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels[labels >= 0])


def stratified_split(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (kept indices, held-out indices): each class puts round(fraction * n_c) samples aside.

    A class with 2 or more samples holds out at least one and keeps at least one; a singleton is
    kept (it is all that class has to learn from). ``fraction`` <= 0 holds out nothing.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for c in _classes(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n_held = 0 if len(members) < 2 or fraction <= 0 else min(max(1, round(fraction * len(members))),
                                                                     len(members) - 1)
        held.append(members[:n_held])
        kept.append(members[n_held:])
    empty = np.empty(0, dtype=np.int64)
    return (np.sort(np.concatenate(kept)) if kept else empty, np.sort(np.concatenate(held)) if held else empty)


def sample_few(
    labels: np.ndarray, *, shots: int | None = None, fraction: float | None = None, seed: int
) -> np.ndarray:
    """Sorted indices of a labelled subset: ``shots`` per class, or a stratified ``fraction``.

    A class with fewer than ``shots`` samples gives all it has (with a warning); a fraction takes
    round(fraction * n_c), at least 1, per class. For one seed the subsets are nested: the 5-shot
    draw is part of the 10-shot draw.
    """
    if (shots is None) == (fraction is None):
        raise ValueError("give exactly one of shots or fraction")
    if shots is not None and shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    if fraction is not None and not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picked, short = [], 0
    for c in _classes(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        n = shots if shots is not None else max(1, round(fraction * len(members)))
        short += len(members) < n
        picked.append(members[:n])
    if short:
        warnings.warn(f"{short} class(es) have fewer than {shots} labelled samples; took all of them",
                      stacklevel=2)
    return np.sort(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)


__all__ = ["sample_few", "stratified_split"]
