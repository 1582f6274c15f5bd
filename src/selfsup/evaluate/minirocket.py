"""MiniRocket (Dempster, Schmidt & Webb 2021, "MINIROCKET: A Very Fast (Almost) Deterministic
Transform for Time Series Classification", KDD), in torch.

Written from the paper and its reference code (github.com/angus924/minirocket) rather than taken
from aeon / sktime: both need numba, whose wheels pin an older numpy than this project uses. The
transform is the same:

- 84 fixed kernels of length 9: weights -1 at six positions and 2 at three (all C(9, 3) choices);
- dilations 2^x for x spread evenly over [0, log2((T - 1) / 8)] (rounded down, repeats merged),
  at most 32, with ~10,000 / 84 features per kernel shared among them;
- for each (dilation, kernel) the biases are quantiles, at the low-discrepancy points
  frac(k * golden ratio), of that kernel's output on one random training series;
- each feature is the proportion of positive values (PPV) of output - bias; kernel/dilation
  pairs alternate between "same" zero padding and no padding (the valid outputs only).

Several channels (MiniRocket's multivariate variant): each (dilation, kernel) sums the outputs of
a random subset of 1 to min(C, 9) channels (sizes 2^U(0, log2(min(C, 9) + 1)), rounded down).
The classifier is the paper's: ridge regression with the penalty chosen by leave-one-out
cross-validation over 10 values in [1e-3, 1e3] (``RidgeClassifierCV``) on standardised features.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

KERNEL_LENGTH = 9
INDICES = np.array(list(itertools.combinations(range(KERNEL_LENGTH), 3)), dtype=np.int64)  # (84, 3): weight 2
NUM_KERNELS = len(INDICES)


def kernel_weights() -> torch.Tensor:
    """The 84 kernels (84, 1, 9): -1 everywhere, 2 at the three positions of ``INDICES``."""
    w = -torch.ones(NUM_KERNELS, 1, KERNEL_LENGTH)
    for k, idx in enumerate(INDICES):
        w[k, 0, idx] = 2.0
    return w


def fit_dilations(length: int, num_features: int = 10_000, max_dilations_per_kernel: int = 32):
    """(dilations, features per dilation) as in the reference ``_fit_dilations``."""
    if length < KERNEL_LENGTH:
        raise ValueError(f"MiniRocket needs series of at least {KERNEL_LENGTH} steps, not {length}")
    per_kernel = num_features // NUM_KERNELS
    true_max = min(per_kernel, max_dilations_per_kernel)
    multiplier = per_kernel / true_max
    max_exponent = np.log2((length - 1) / (KERNEL_LENGTH - 1))
    dilations, counts = np.unique(np.logspace(0, max_exponent, true_max, base=2).astype(np.int32), return_counts=True)
    counts = (counts * multiplier).astype(np.int32)
    remainder, i = per_kernel - counts.sum(), 0
    while remainder > 0:
        counts[i] += 1
        remainder -= 1
        i = (i + 1) % len(counts)
    return dilations.astype(np.int64), counts.astype(np.int64)


def quantiles(n: int) -> np.ndarray:
    """The first n points of the golden-ratio low-discrepancy sequence frac(k * phi), k = 1..n."""
    return np.array([(k * ((np.sqrt(5) + 1) / 2)) % 1 for k in range(1, n + 1)], dtype=np.float32)


def fill_series(x: np.ndarray) -> np.ndarray:
    """(N, C, T) with NaN -> finite: inner gaps linearly interpolated, the ends (a shorter series'
    padding) carry the nearest observed value, an unobserved channel is 0. For raw-series baselines."""
    x = np.array(x, dtype=np.float32, copy=True)
    if not np.isnan(x).any():
        return x
    t = np.arange(x.shape[-1])
    for row in x.reshape(-1, x.shape[-1]):
        nan = np.isnan(row)
        if nan.all():
            row[:] = 0.0
        elif nan.any():
            row[nan] = np.interp(t[nan], t[~nan], row[~nan])
    return x


@dataclass
class MiniRocket:
    """``fit(X)`` on training series (N, C, T), then ``transform(X)`` -> features float32 (N, ~10,000)."""

    num_features: int = 10_000
    max_dilations_per_kernel: int = 32
    seed: int = 0
    batch_size: int = 64
    dilations: np.ndarray = field(default=None, init=False)  # type: ignore[assignment]
    features_per_dilation: np.ndarray = field(default=None, init=False)  # type: ignore[assignment]
    biases: list[np.ndarray] = field(default_factory=list, init=False)  # per dilation (84, f_d)
    channels: list[np.ndarray] = field(default_factory=list, init=False)  # per dilation (84, C) 0/1

    def _outputs(self, x: torch.Tensor, dilation: int, combos: torch.Tensor) -> torch.Tensor:
        """Series (N, C, T) -> each kernel's output summed over its channels, (N, 84, T), "same" padding."""
        N, C, T = x.shape
        out = F.conv1d(x.reshape(N * C, 1, T), kernel_weights().to(x), dilation=dilation,
                       padding=(KERNEL_LENGTH - 1) * dilation // 2)
        return torch.einsum("nckt,kc->nkt", out.reshape(N, C, NUM_KERNELS, T), combos.to(x))

    def fit(self, X: np.ndarray) -> MiniRocket:
        X = fill_series(np.asarray(X, np.float32))
        N, C, T = X.shape
        rng = np.random.default_rng(self.seed)
        self.dilations, self.features_per_dilation = fit_dilations(T, self.num_features, self.max_dilations_per_kernel)
        q = quantiles(NUM_KERNELS * int(self.features_per_dilation.sum()))
        self.biases, self.channels = [], []
        start = 0
        x = torch.from_numpy(X)
        for d, f in zip(self.dilations.tolist(), self.features_per_dilation.tolist(), strict=True):
            combos = np.zeros((NUM_KERNELS, C), np.float32)
            if C == 1:
                combos[:] = 1.0
            else:
                top = min(C, 9)
                sizes = (2 ** rng.uniform(0, np.log2(top + 1), NUM_KERNELS)).astype(np.int64)
                for k, s in enumerate(sizes):
                    combos[k, rng.choice(C, min(max(int(s), 1), C), replace=False)] = 1.0
            examples = rng.integers(0, N, NUM_KERNELS)
            out = self._outputs(x[examples], d, torch.from_numpy(combos))  # (84, 84, T)
            b = np.empty((NUM_KERNELS, f), np.float32)
            for k in range(NUM_KERNELS):
                b[k] = np.quantile(out[k, k].numpy(), q[start + k * f : start + (k + 1) * f])
            start += NUM_KERNELS * f
            self.biases.append(b)
            self.channels.append(combos)
        return self

    @torch.no_grad()
    def transform(self, X: np.ndarray) -> np.ndarray:
        if self.dilations is None:
            raise RuntimeError("call fit first")
        X = fill_series(np.asarray(X, np.float32))
        x = torch.from_numpy(X)
        parts = []
        for i in range(0, len(x), self.batch_size):
            xb, feats = x[i : i + self.batch_size], []
            for j, (d, b, combos) in enumerate(zip(self.dilations.tolist(), self.biases, self.channels, strict=True)):
                out = self._outputs(xb, d, torch.from_numpy(combos))  # (n, 84, T)
                pad = (KERNEL_LENGTH - 1) * d // 2
                above = out.unsqueeze(2) > torch.from_numpy(b)[None, :, :, None]  # (n, 84, f, T)
                ppv_full = above.float().mean(-1)
                ppv_valid = above[..., pad : out.shape[-1] - pad].float().mean(-1) if pad else ppv_full
                unpadded = (torch.arange(NUM_KERNELS) + j) % 2 == 1  # the reference alternates padding
                feats.append(torch.where(unpadded[None, :, None], ppv_valid, ppv_full).flatten(1))
            parts.append(torch.cat(feats, dim=1))
        return torch.cat(parts).numpy()

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        return self.fit(X).transform(X)


def ridge_classifier(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, num_classes: int):
    """The paper's classifier: standardise, ``RidgeClassifierCV(alphas=logspace(-3, 3, 10))``; returns
    decision scores (M, num_classes) (argmax = prediction; a class absent from training scores -inf)."""
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classes = np.unique(train_y)
    scores = np.full((len(test_x), num_classes), -np.inf, dtype=np.float64)
    if len(classes) == 1:
        scores[:, classes[0]] = 0.0
        return scores
    model = make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=np.logspace(-3, 3, 10)))
    model.fit(train_x, train_y)
    d = model.decision_function(test_x)
    if d.ndim == 1:  # two classes: one score for the second
        d = np.stack([-d, d], axis=1)
    scores[:, classes] = d
    return scores


def minirocket_scores(train_x, train_y, test_x, num_classes: int, seed: int = 0) -> np.ndarray:
    """MiniRocket features fitted on the training series + ridge classifier: scores (M, num_classes)."""
    mr = MiniRocket(seed=seed).fit(train_x)
    return ridge_classifier(mr.transform(train_x), np.asarray(train_y), mr.transform(test_x), num_classes)


__all__ = ["MiniRocket", "fill_series", "fit_dilations", "minirocket_scores", "quantiles", "ridge_classifier"]
