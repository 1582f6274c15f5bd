"""An encoder's inputs for a whole set, whatever the modality: one tensor or a dict of tensors.

Evaluation holds a set's inputs in memory (``Source.arrays``): images uint8 (N, C, H, W), series
float32 (N, C, T) NaN-padded, waveforms (N, T), or, for a modality with several input keys, a
dict of them (a table's ``{"features": (N, F), "categories": (N, K)}``). These helpers index,
move and measure either form, so the protocols (``evaluate.fewshot``, ``adapt``) never ask which
it is; ``encoders.to_input`` then turns a batch into what the encoder reads.
"""

from __future__ import annotations

import numpy as np
import torch

from selfsup.data.spec import IMAGE_DTYPES, as_tensor

Inputs = torch.Tensor | dict[str, torch.Tensor]


def as_inputs(x: np.ndarray | torch.Tensor | dict) -> Inputs:
    """Arrays (or tensors, or a dict of either) as tensors, without a copy where the memory allows."""
    return {k: as_tensor(v) for k, v in x.items()} if isinstance(x, dict) else as_tensor(x)


def rows(x: Inputs | np.ndarray) -> int:
    """How many samples (N)."""
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def _rows_of(v, idx):
    if isinstance(idx, slice):
        return v[idx]
    if isinstance(v, np.ndarray):
        return v[idx.cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx, dtype=np.int64)]
    return v[torch.as_tensor(idx).long().to(v.device)]


def take(x: Inputs | np.ndarray | dict, idx) -> Inputs | np.ndarray | dict:
    """Rows ``idx`` (a slice, or integer indices as an array or tensor) of every input (arrays or tensors)."""
    return {k: _rows_of(v, idx) for k, v in x.items()} if isinstance(x, dict) else _rows_of(x, idx)


def to_device(x: Inputs, device: torch.device | str) -> Inputs:
    """The inputs on ``device``."""
    return {k: v.to(device) for k, v in x.items()} if isinstance(x, dict) else x.to(device)


def is_images(x: Inputs) -> bool:
    """uint8 or uint16 images (N, C, H, W): the inputs that image augmentation and pixel baselines apply to
    (series are float, tables a dict)."""
    return isinstance(x, torch.Tensor) and x.dtype in IMAGE_DTYPES and x.ndim == 4


def contiguous(x: Inputs) -> Inputs:
    """Every tensor made contiguous (for hashing or saving)."""
    return {k: v.contiguous() for k, v in x.items()} if isinstance(x, dict) else x.contiguous()


__all__ = ["Inputs", "as_inputs", "contiguous", "is_images", "rows", "take", "to_device"]
