"""Which labelled samples go where: stratified splits and few-label draws, one rule for all.

Evaluation splits a labelled set into a pool and a test part and draws K shots per class from the
pool; adaptation holds a part of its labels out for early stopping. Both are stratified by class
and seeded, and samples with label < 0 (unknown) are never drawn.
"""

from __future__ import annotations

import hashlib
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


HOLDOUT_FRACTION = 0.3  # ADBench's test share (Han et al. 2022)


def holdout_split(n: int, strata: np.ndarray | None = None, test_fraction: float = HOLDOUT_FRACTION,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) positions of ``n`` rows of one file that holds both, as ADBench splits its
    data sets: scikit-learn's ``train_test_split(test_size=0.3, stratify=labels, random_state=seed)``.

    ``strata`` (n,) (labels, or label text; any values) stratify the split; without them, or when a
    stratum has a single row, the split is a plain random one. The same inputs give the same split,
    so a training read (``split="train"``) and a test read (``split="test"``) never share a row.
    """
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    if n < 2:
        return idx, idx[:0]
    try:
        train, test = train_test_split(idx, test_size=test_fraction, random_state=seed,
                                       stratify=None if strata is None else np.asarray(strata))
    except ValueError:  # a stratum of one row
        train, test = train_test_split(idx, test_size=test_fraction, random_state=seed)
    return np.sort(train), np.sort(test)


def content_hashes(inputs: np.ndarray | dict[str, np.ndarray]) -> list[str]:
    """A digest of each row's bytes (decoded pixels at the evaluation size; for inputs of several
    arrays, a table's, all of a row's arrays): equal rows, equal digests."""
    parts = [inputs[k] for k in sorted(inputs)] if isinstance(inputs, dict) else [inputs]
    out = []
    for i in range(len(parts[0])):
        h = hashlib.blake2b(digest_size=16)
        for p in parts:
            h.update(np.ascontiguousarray(np.asarray(p[i])).tobytes())
        out.append(h.hexdigest())
    return out


def first_occurrences(inputs: np.ndarray) -> np.ndarray:
    """Sorted indices of the first of each group of identical rows (duplicates left out)."""
    seen: dict[str, int] = {}
    for i, h in enumerate(content_hashes(inputs)):
        seen.setdefault(h, i)
    return np.sort(np.fromiter(seen.values(), dtype=np.int64, count=len(seen)))


def check_disjoint(pool, pool_ids: list[str | None], test, test_ids: list[str | None],
                   pool_name: str, test_name: str, content: bool = True) -> None:
    """Raise ValueError (one line) when the labelled pool and the test set share a sample: the same
    origin (``Source.sample_id``) or, with ``content``, identical inputs (``Modality.dedupe``: not for
    tables, where equal rows are common). Scores on such a test set are not held out."""
    same = {i for i in pool_ids if i is not None} & {i for i in test_ids if i is not None}
    if same:
        raise ValueError(f"{test_name} and the labelled pool {pool_name} share {len(same)} samples "
                         f"(e.g. {sorted(same)[0]}); evaluate on data the labels do not come from")
    if not content:
        return
    pool_hashes = set(content_hashes(pool))
    shared = sum(h in pool_hashes for h in content_hashes(test))
    if shared:
        raise ValueError(f"{shared} of {len(test)} samples of {test_name} are identical to samples of the labelled "
                         f"pool {pool_name}; remove them from one of the two")


__all__ = [
    "HOLDOUT_FRACTION", "check_disjoint", "content_hashes", "first_occurrences", "holdout_split", "sample_few",
    "stratified_split",
]
