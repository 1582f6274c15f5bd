"""What a data source hands the layers above: the sample contract and the input shape."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

# Images travel as uint8 (B, C, H, W) and become float in [0, 1] on the training device; encoders
# see (x - IMAGE_MEAN) / IMAGE_STD. Fixed constants keep a run's weights usable without data stats.
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


def as_tensor(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A NumPy array (or tensor) as a torch tensor, without a copy where the memory allows."""
    return array if isinstance(array, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(array))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 in [0, 1]; float input passes through."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> the encoder's input scale."""
    return (images - IMAGE_MEAN) / IMAGE_STD


def denormalize(x: torch.Tensor) -> torch.Tensor:
    return (x * IMAGE_STD + IMAGE_MEAN).clamp(0.0, 1.0)
