"""Frozen features: what the kNN and linear protocols see.

``extract_features`` runs an encoder over uint8 images in eval mode; ``sharded_features`` does the
same with each distributed rank encoding one block; ``cached_features`` keeps the result on disk
keyed by a hash of the encoder weights and the images, so re-evaluating a run (``RUN/cache/``)
costs nothing; ``raw_features`` is the pixel baseline and ``raw_pair`` the raw-input baseline of
any modality (pixels, a table's numbers with missing flags and one-hot categories, series values).
Inputs of every modality are accepted (``data.inputs``: a tensor, or a dict of them for a table).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from selfsup import distributed
from selfsup.data.inputs import as_inputs, is_images, rows
from selfsup.data.spec import as_tensor, to_float
from selfsup.encoders.inference import encode_images, module_device


def extract_features(
    encoder: nn.Module,
    images: np.ndarray | torch.Tensor,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    precision: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> torch.Tensor:
    """uint8 images (N, C, H, W) (or any modality's inputs, ``data.inputs``) -> pooled features (N, F),
    float32 on the CPU.

    Runs through ``encoders.inference.encode_images`` (eval mode, restored afterwards; no
    gradients; autocast of ``precision``); ``device`` defaults to the encoder's.
    """
    return encode_images(encoder, images, batch_size=batch_size, device=device,
                         empty=(0, getattr(encoder, "num_features", 0)), precision=precision, progress=progress)


def sharded_features(encoder: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int = 256,
                     device: str | torch.device | None = None) -> torch.Tensor:
    """uint8 images (N, C, H, W) -> pooled features (N, F) float32 on the CPU, every rank encoding
    only its contiguous block (``distributed.shard_range``) and the blocks gathered back in order;
    equal to a single process's ``extract_features`` up to float rounding."""
    images = as_tensor(images)
    block = distributed.shard_range(len(images), distributed.global_rank(), distributed.world_size())
    device = torch.device(device) if device is not None else module_device(encoder)
    local = extract_features(encoder, images[block.start : block.stop], batch_size, device)
    # all_gather wants the backend's device: CUDA for NCCL, the CPU for gloo
    return distributed.gather_in_order(local.to(device), len(images)).cpu()


def fingerprint(encoder: nn.Module, images: np.ndarray | torch.Tensor | dict) -> str:
    """sha256 over the encoder's class, state dict (names, shapes, dtypes, bytes) and the inputs."""
    h = hashlib.sha256(type(encoder).__qualname__.encode())
    for name, t in encoder.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    inputs = as_inputs(images)
    for key, x in (sorted(inputs.items()) if isinstance(inputs, dict) else [("images", inputs)]):
        x = x.cpu().contiguous()
        h.update(f"{key}:{tuple(x.shape)}:{x.dtype}".encode())
        if x.numel():
            h.update(memoryview(x.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()[:24]


def cached_features(
    encoder: nn.Module,
    images: np.ndarray | torch.Tensor,
    cache_dir: str | Path | None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: Callable[[str], None] | None = None,
    devices: int = 1,
) -> torch.Tensor:
    """``extract_features`` memoised in ``cache_dir/features-<hash>.pt``; no caching when None. The key
    covers the weights and the inputs at their size, so each model and image size has its own entry.
    ``devices`` > 1 encodes images with that many processes (``evaluate.spread.spread_features``)."""

    def extract() -> torch.Tensor:
        if devices > 1 and is_images(as_inputs(images)):
            from selfsup.evaluate.spread import spread_features  # noqa: PLC0415 (it builds on this module)

            return spread_features(encoder, images, devices, batch_size, device)
        return extract_features(encoder, images, batch_size, device, progress=progress)

    if cache_dir is None:
        return extract()
    path = Path(cache_dir) / f"features-{fingerprint(encoder, images)}.pt"
    if path.exists():
        return torch.load(path, map_location="cpu", weights_only=True)
    feats = extract()
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


def table_design(train: dict, test: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """A table's raw inputs as a linear model or kNN reads them: standardised numbers (missing -> 0, the
    training mean), a 0/1 "was missing" column for each numeric column with a missing value in the
    training rows, and one-hot categories (index 0, missing or unseen, included; as wide as the
    largest index seen). ``train`` / ``test``: ``{"features" (N, F), "categories" (N, K)}``."""
    num = [as_tensor(t["features"]).float() for t in (train, test)]
    cat = [as_tensor(t["categories"]).long() for t in (train, test)]
    flagged = torch.isnan(num[0]).any(0)
    widths = [int(max(c[:, k].max(initial=0) if len(c) else 0 for c in (cat[0].numpy(), cat[1].numpy()))) + 1
              for k in range(cat[0].shape[1])]
    out = []
    for x, c in zip(num, cat, strict=True):
        parts = [torch.nan_to_num(x, nan=0.0), torch.isnan(x[:, flagged]).float()]
        parts += [F.one_hot(c[:, k].clamp(min=0), w).float() for k, w in enumerate(widths)]
        out.append(torch.cat(parts, dim=1))
    return out[0], out[1]


def raw_pair(train, test, max_side: int | None = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw-input baseline's features of a labelled pool and a test set, (N, D) and (M, D):
    pixels (``raw_features``), a table's ``table_design``, or series values (N, C, T) with gaps
    interpolated and a shorter series' end held at its last value (``minirocket.fill_series``),
    both sets at the longer one's length, flattened."""
    train, test = as_inputs(train), as_inputs(test)
    if isinstance(train, dict):
        return table_design(train, test)
    if is_images(train):
        return raw_features(train, max_side), raw_features(test, max_side)
    from selfsup.evaluate.minirocket import fill_series  # noqa: PLC0415

    length = max(train.shape[-1], test.shape[-1])
    out = []
    for x in (train, test):
        x = x.float()
        if x.shape[-1] < length:
            x = F.pad(x, (0, length - x.shape[-1]), value=float("nan"))
        out.append(torch.from_numpy(fill_series(x.numpy())).reshape(rows(x), -1))
    return out[0], out[1]


__all__ = [
    "cached_features", "extract_features", "fingerprint", "raw_features", "raw_pair", "sharded_features",
    "table_design",
]
