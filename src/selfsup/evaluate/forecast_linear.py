"""Linear forecasting heads solved in closed form, for several horizons in one pass.

Both linear models of the forecasting protocol are least-squares problems: the DLinear-style
baseline (the lookback window -> the horizon; Zeng et al. 2023) and the linear head on a frozen
encoder's flattened patch tokens (PatchTST's linear probing, Nie et al. 2023, which trains it by
gradient descent towards the same optimum). Solved exactly, with the ridge penalty chosen on the
validation windows, they need one pass over each split and no learning rate or epochs, so neither
side of the comparison depends on a training schedule.

A featurizer maps windows (b, C, L) to one row per (window, channel): features (b * C, P) and the
shift / scale the targets are regressed in, ``(y - shift) / scale`` (RevIN for the encoder: its
per-window mean and std, undone afterwards; none for raw windows). Windows of a split are taken
in time order, and a window starting at s is usable for horizon H when s + L + H <= end: those
of a longer horizon are a prefix of a shorter one's, so one pass accumulates every horizon's
normal equations (the Gram matrix of the prefix, snapshotted where each horizon's windows end).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from selfsup.encoders.inference import module_device
from selfsup.hardware import autocast

RIDGES = (1e-6, 1e-4, 1e-2, 1e-1, 1.0)  # x the mean diagonal of the Gram matrix, chosen on validation
Featurize = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def raw_windows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DLinear-style features: each channel's lookback window as it is (b * C, L)."""
    rows = x.reshape(-1, x.shape[-1]).float()
    return rows, torch.zeros(len(rows), 1), torch.ones(len(rows), 1)


def frozen_tokens(encoder: nn.Module) -> Featurize:
    """The features of a frozen PatchTST encoder: flattened patch tokens (b * C, n * D), RevIN shift / scale."""

    @torch.no_grad()
    def featurize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        was = encoder.training
        encoder.eval()
        device = module_device(encoder)
        with autocast(device):
            patches, mean, std = encoder.patches(x.float().to(device))
            tokens = encoder.forward_tokens(encoder.embed_patches(patches))
        encoder.train(was)
        return tokens.flatten(1).float().cpu(), mean.reshape(-1, 1).float().cpu(), std.reshape(-1, 1).float().cpu()

    return featurize


def _segments(values: np.ndarray, start: int, lookback: int, counts: list[int],
              batch_size: int) -> Iterator[tuple[int, int, torch.Tensor, np.ndarray]]:
    """Windows 0 .. max(counts) - 1 (window i starts at ``start + i``) in batches that never straddle one
    of ``counts``: (first, last + 1, inputs (b, C, L) float32, their start rows)."""
    edges = sorted({0, *counts, *range(0, max(counts), batch_size)})
    for i, j in zip(edges[:-1], edges[1:], strict=True):
        starts = start + np.arange(i, j)
        yield i, j, torch.from_numpy(np.stack([values[:, s : s + lookback] for s in starts]).astype(np.float32)), starts


def _targets(values: np.ndarray, starts: np.ndarray, lookback: int, horizon: int) -> torch.Tensor:
    y = np.stack([values[:, s + lookback : s + lookback + horizon] for s in starts])
    return torch.from_numpy(y.astype(np.float32))


def _with_bias(f: torch.Tensor) -> torch.Tensor:
    return torch.cat([f, torch.ones(len(f), 1)], dim=1)


@torch.no_grad()
def fit_linear_heads(featurize: Featurize, values: np.ndarray, borders: dict[str, tuple[int, int]], lookback: int,
                     horizons: list[int], batch_size: int = 64, ridges: tuple[float, ...] = RIDGES,
                     examples: int = 3) -> dict[int, dict]:
    """Fit one linear head per horizon on the "train" windows, choose its ridge on "val", score "test".

    ``values`` (C, T) standardised; ``borders`` as ``data.sources.windows.forecast_borders``. Returns
    per horizon {"mse", "mae" (test), "ridge", "val_mse", "n_train", "n_test", "examples": (inputs
    (k, C, L), truth (k, C, H), predictions (k, C, H)) of ``examples`` evenly spaced test windows}.
    """
    hs = sorted(set(horizons))
    count = {h: borders["train"][1] - borders["train"][0] - lookback - h + 1 for h in hs}
    if min(count.values()) < 1:
        raise ValueError(f"the training rows are too few for lookback {lookback} and horizon {max(hs)}")
    gram: torch.Tensor | float = 0.0
    grams: dict[int, torch.Tensor] = {}
    cross: dict[int, torch.Tensor] = {}
    for _, j, x, starts in _segments(values, borders["train"][0], lookback, list(count.values()), batch_size):
        f, shift, scale = featurize(x)
        f = _with_bias(f)
        gram = gram + (f.T @ f).double()
        for h in hs:
            if j <= count[h]:
                y = (_targets(values, starts, lookback, h).reshape(len(f), h) - shift) / scale
                cross[h] = cross.get(h, 0.0) + (f.T @ y).double()
            if j == count[h]:
                grams[h] = gram.clone()
    for h in hs:
        grams.setdefault(h, gram)
    weights = {}
    for h in hs:
        g = grams[h]
        eye = torch.eye(len(g), dtype=g.dtype)
        eye[-1, -1] = 0.0  # no penalty on the bias
        scale = torch.diagonal(g).mean()
        weights[h] = [torch.linalg.solve(g + r * scale * eye, cross[h]).float() for r in ridges]

    def score(split: str, chosen: dict[int, int] | None) -> dict[int, dict]:
        a, b = borders[split]
        n = {h: b - a - lookback - h + 1 for h in hs}
        se = {h: np.zeros(len(ridges)) for h in hs}
        ae = {h: np.zeros(len(ridges)) for h in hs}
        keep = {h: set(np.linspace(0, n[h] - 1, examples).round().astype(int).tolist()) for h in hs}
        shown: dict[int, list] = {h: [] for h in hs}
        for i, j, x, starts in _segments(values, a, lookback, list(n.values()), batch_size):
            f, shift, scale = featurize(x)
            f = _with_bias(f)
            C = x.shape[1]
            for h in (h for h in hs if j <= n[h]):
                y = _targets(values, starts, lookback, h).reshape(len(f), h)
                for r in range(len(ridges)) if chosen is None else [chosen[h]]:
                    p = (f @ weights[h][r]) * scale + shift
                    se[h][r] += float(((p - y) ** 2).sum())
                    ae[h][r] += float((p - y).abs().sum())
                    for w in (w for w in range(i, j) if chosen is not None and w in keep[h]):
                        k = w - i
                        shown[h].append((x[k].numpy(), y.reshape(-1, C, h)[k].numpy(), p.reshape(-1, C, h)[k].numpy()))
        out = {}
        for h in hs:
            total = n[h] * len(values) * h
            out[h] = {"mse": se[h] / total, "mae": ae[h] / total, "n": n[h],
                      "shown": [np.stack(parts) for parts in zip(*shown[h], strict=True)] if shown[h] else None}
        return out

    val = score("val", None)
    chosen = {h: int(np.argmin(val[h]["mse"])) for h in hs}
    test = score("test", chosen)
    return {h: {"mse": float(test[h]["mse"][chosen[h]]), "mae": float(test[h]["mae"][chosen[h]]),
                "ridge": ridges[chosen[h]], "val_mse": float(val[h]["mse"][chosen[h]]), "n_train": count[h],
                "n_test": test[h]["n"], "examples": test[h]["shown"]} for h in hs}


__all__ = ["RIDGES", "fit_linear_heads", "frozen_tokens", "raw_windows"]
