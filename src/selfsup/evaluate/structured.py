"""Frozen features of table rows and series: what kNN / linear probes and embedding-space anomaly
scores see for the "table" and "series" modalities (``features.extract_features`` is the image one).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from selfsup.evaluate.features import module_device


@torch.no_grad()
def _run(encoder: nn.Module, batches, device) -> torch.Tensor:
    was = encoder.training
    encoder.eval()
    try:
        out = [encoder({k: v.to(device) for k, v in b.items()}).float().cpu() for b in batches]
    finally:
        encoder.train(was)
    return torch.cat(out) if out else torch.empty(0, getattr(encoder, "num_features", 0))


def table_features(encoder: nn.Module, features: np.ndarray, categories: np.ndarray, batch_size: int = 1024,
                   device: str | torch.device | None = None) -> torch.Tensor:
    """Table rows (features (N, F) float, NaN = missing; categories (N, K)) -> pooled (N, num_features)."""
    device = torch.device(device) if device is not None else module_device(encoder)
    batches = ({"features": torch.as_tensor(features[i : i + batch_size], dtype=torch.float32),
                "categories": torch.as_tensor(categories[i : i + batch_size], dtype=torch.long)}
               for i in range(0, len(features), batch_size))
    return _run(encoder, batches, device)


def series_features(encoder: nn.Module, series: np.ndarray, batch_size: int = 256,
                    device: str | torch.device | None = None) -> torch.Tensor:
    """Series (N, C, T), NaN-padded -> pooled (N, num_features)."""
    device = torch.device(device) if device is not None else module_device(encoder)
    batches = ({"series": torch.as_tensor(series[i : i + batch_size], dtype=torch.float32)}
               for i in range(0, len(series), batch_size))
    return _run(encoder, batches, device)


__all__ = ["series_features", "table_features"]
