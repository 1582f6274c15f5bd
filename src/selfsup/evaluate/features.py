"""Frozen features: what the kNN and linear protocols see.

``extract_features`` runs an encoder over uint8 images in eval mode; ``cached_features`` keeps
the result on disk keyed by a hash of the encoder weights and the images, so re-evaluating a run
(``RUN/cache/``) costs nothing; ``raw_features`` is the pixel baseline.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfsup.data.spec import normalize, to_float


def as_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """numpy or torch images (N, C, H, W) -> a torch tensor (no copy where possible)."""
    return images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))


def module_device(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    images: np.ndarray | torch.Tensor,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> pooled features (N, F), float32 on the CPU.

    Runs in eval mode without gradients on ``to_float`` then ``normalize``d batches; ``device``
    defaults to the encoder's. The encoder's train/eval mode is restored afterwards.
    """
    images = as_tensor(images)
    device = torch.device(device) if device is not None else module_device(encoder)
    was_training = encoder.training
    encoder.eval()
    try:
        out = [
            encoder(normalize(to_float(images[i : i + batch_size].to(device)))).float().cpu()
            for i in range(0, len(images), batch_size)
        ]
    finally:
        encoder.train(was_training)
    return torch.cat(out) if out else torch.empty(0, getattr(encoder, "num_features", 0))


def fingerprint(encoder: nn.Module, images: np.ndarray | torch.Tensor) -> str:
    """sha256 over the encoder's class, state dict (names, shapes, dtypes, bytes) and the images."""
    h = hashlib.sha256(type(encoder).__qualname__.encode())
    for name, t in encoder.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    x = as_tensor(images).cpu().contiguous()
    h.update(f"images:{tuple(x.shape)}:{x.dtype}".encode())
    h.update(memoryview(x.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()[:24]


def cached_features(
    encoder: nn.Module,
    images: np.ndarray | torch.Tensor,
    cache_dir: str | Path | None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """``extract_features`` memoised in ``cache_dir/features-<hash>.pt``; no caching when None."""
    if cache_dir is None:
        return extract_features(encoder, images, batch_size, device)
    path = Path(cache_dir) / f"features-{fingerprint(encoder, images)}.pt"
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    feats = extract_features(encoder, images, batch_size, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(feats, tmp)
    tmp.replace(path)
    return feats


def raw_features(images: np.ndarray | torch.Tensor, max_side: int | None = None) -> torch.Tensor:
    """The pixel baseline: uint8 (N, C, H, W) -> flattened float pixels in [0, 1], (N, C * h * w).

    With ``max_side``, larger images are first area-averaged down to at most that side, which keeps
    the baseline's memory bounded for large images (224 px RGB would be 150k numbers per image).
    """
    images = as_tensor(images)
    H, W = images.shape[-2:]
    if max_side is None or max(H, W) <= max_side:
        return to_float(images).reshape(len(images), -1)
    size = (min(H, max_side), min(W, max_side))
    return torch.cat([
        F.adaptive_avg_pool2d(to_float(images[i : i + 1024]), size).flatten(1) for i in range(0, len(images), 1024)
    ])


__all__ = ["extract_features", "cached_features", "raw_features", "fingerprint"]
