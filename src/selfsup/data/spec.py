"""What a data source hands the layers above: the sample contract and the input shape."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Images travel as uint8 (B, C, H, W) and become float in [0, 1] on the training device; encoders
# see (x - IMAGE_MEAN) / IMAGE_STD. Fixed constants keep a run's weights usable without data stats;
# a pretrained public encoder carries its own per-channel mean / std (``normalize(x, mean, std)``).
IMAGE_MEAN = 0.5
IMAGE_STD = 0.25


@dataclass
class InputSpec:
    """Shape of what a source yields, enough to build an encoder for it."""

    modality: str = "image"  # image | image_text | audio | audio_text
    channels: int = 3
    image_size: int = 32
    num_classes: int | None = None
    class_names: list[str] | None = field(default=None)
    sample_rate: int | None = None


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 in [0, 1]; float input passes through."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def _stat(value, default: float, images: torch.Tensor) -> torch.Tensor | float:
    """A scalar, or a per-channel sequence as a tensor that broadcasts over (..., C, H, W)."""
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return float(value)
    return torch.as_tensor(value, dtype=images.dtype, device=images.device).view(-1, 1, 1)


def normalize(images: torch.Tensor, mean=None, std=None) -> torch.Tensor:
    """Float images in [0, 1] -> the encoder's input scale: (x - mean) / std.

    ``mean`` / ``std``: None (selfsup's fixed IMAGE_MEAN / IMAGE_STD, what its own runs use), a
    float, or one value per channel: what a pretrained encoder carries as ``input_mean`` /
    ``input_std`` (e.g. ImageNet's, or 0.5 / 0.5 for inputs in [-1, 1]).
    """
    if mean is None and std is None:
        return (images - IMAGE_MEAN) / IMAGE_STD
    return (images - _stat(mean, IMAGE_MEAN, images)) / _stat(std, IMAGE_STD, images)


def denormalize(x: torch.Tensor, mean=None, std=None) -> torch.Tensor:
    """Inverse of ``normalize`` (same ``mean`` / ``std``), clamped to [0, 1]."""
    if mean is None and std is None:
        return (x * IMAGE_STD + IMAGE_MEAN).clamp(0.0, 1.0)
    return (x * _stat(std, IMAGE_STD, x) + _stat(mean, IMAGE_MEAN, x)).clamp(0.0, 1.0)
