"""What a data source hands the layers above: the modalities, the sample contract, the input shape.

A modality is named once, here: which sample key holds the encoder's input and whether samples
carry text. A new modality is an entry in ``MODALITIES``, a reader in ``data.sources``, an encoder
branch in ``encoders.build_encoder`` and the methods that train on it; the batch contract
(``sources.base.collate``), the engine and the API need nothing more (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

# Images travel as uint8 (B, C, H, W) and become float in [0, 1] on the training device; encoders
# see (x - IMAGE_MEAN) / IMAGE_STD. Fixed constants keep a run's weights usable without data stats.
IMAGE_MEAN = 0.5
IMAGE_STD = 0.25


@dataclass(frozen=True)
class Modality:
    """``input``: the sample (and batch) key of what the encoder reads; ``text``: samples carry
    captions (``text``, ``captions``) for a text tower."""

    input: str
    text: bool = False


MODALITIES: dict[str, Modality] = {
    "image": Modality("image"),  # uint8 (C, H, W)
    "image_text": Modality("image", text=True),
    "audio": Modality("audio"),  # float32 (T,) mono waveform
    "audio_text": Modality("audio", text=True),
}


@dataclass
class InputSpec:
    """Shape of what a source yields, enough to build an encoder for it."""

    modality: str = "image"  # a key of MODALITIES
    channels: int = 3
    image_size: int = 32
    num_classes: int | None = None
    class_names: list[str] | None = field(default=None)
    sample_rate: int | None = None

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"unknown modality {self.modality!r}; known: {', '.join(MODALITIES)}")

    @property
    def input_key(self) -> str:
        """The sample key of the encoder's input ("image", "audio", ...)."""
        return MODALITIES[self.modality].input

    def reader_options(self) -> dict:
        """``open_source`` keyword arguments that make another source yield inputs like this one's
        (images at this size and channel count; other modalities need none)."""
        return {"image_size": self.image_size, "channels": self.channels} if self.input_key == "image" else {}

    def empty_input(self) -> torch.Tensor:
        """The batch input of a batch whose every sample was skipped: (0, ...) in the input's shape."""
        if self.input_key == "image":
            return torch.zeros((0, self.channels, self.image_size, self.image_size), dtype=torch.uint8)
        return torch.zeros((0, 0))


def captions_of(item: dict) -> list[str]:
    """The captions of a sample or of its `.json` metadata: `captions` (a list or one string), else
    `text`; [] when neither. The one rule for image-text and audio-text data."""
    caps = item.get("captions") or ([item["text"]] if item.get("text") else [])
    return [str(c) for c in caps] if isinstance(caps, list) else [str(caps)]


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
