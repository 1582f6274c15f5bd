"""What a data source hands the layers above: the modalities, the sample contract, the input shape.

A modality is named once, here: which sample keys hold the encoder's input, whether samples
carry text, what ragged inputs are padded with. A new modality is an entry in ``MODALITIES``, a
reader in ``data.sources``, an encoder branch in ``encoders.build_encoder`` and the methods that
train on it; the batch contract (``sources.base.collate``), the engine and the API need nothing
more (docs/architecture.md).

- ``table``: a sample is ``{"features": float32 (F,), "categories": int64 (K,), "label", "key"}``;
  numeric values are standardised with training statistics, NaN marks a missing value (the
  encoder has a learned embedding for it), category index 0 is missing or unseen.
- ``series``: a sample is ``{"series": float32 (C, T), "label", "key"}``; series of unequal length
  keep their own T and ``collate`` pads a batch to its longest with NaN (``series_length`` gives
  each one's T). NaN inside a series is a missing value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

import numpy as np
import torch

# Images travel as uint8 (B, C, H, W), or uint16 for 16-bit data, and become float in [0, 1] on
# the training device (``to_float``, scaled by the dtype's range); encoders
# see (x - IMAGE_MEAN) / IMAGE_STD. Fixed constants keep a run's weights usable without data stats;
# a pretrained public encoder carries its own per-channel mean / std (``normalize(x, mean, std)``).
IMAGE_MEAN = 0.5
IMAGE_STD = 0.25


@dataclass(frozen=True)
class Modality:
    """``input``: the sample (and batch) key of what the encoder reads, ``also`` further keys it
    reads with it (a table's categories); ``text``: samples carry captions (``text``, ``captions``)
    for a text tower; ``pad``: what a batch of inputs of unequal length is padded with (NaN means
    "not observed" to the series encoders); ``dedupe``: identical inputs are one sample (an image
    seen twice is a leak between a labelled pool and a test set; equal table rows are common);
    ``padded``: evaluation arrays may hold inputs of unequal length padded with ``pad`` (series with
    NaN; audio with zeros, which is what the log-mel front end does to a short clip itself)."""

    input: str
    text: bool = False
    also: tuple[str, ...] = ()
    pad: float = 0.0
    dedupe: bool = True
    padded: bool = False


MODALITIES: dict[str, Modality] = {
    "image": Modality("image"),  # uint8 or uint16 (C, H, W), any C
    "image_text": Modality("image", text=True),
    "audio": Modality("audio", padded=True),  # float32 (T,) mono waveform
    "audio_text": Modality("audio", text=True, padded=True),
    "table": Modality("features", also=("categories",), dedupe=False),  # float32 (F,), int64 (K,)
    "series": Modality("series", pad=float("nan"), dedupe=False, padded=True),  # float32 (C, T)
}
PAD = {m.input: m.pad for m in MODALITIES.values()}  # batch key -> pad value of ragged inputs
PADDED = {m.input for m in MODALITIES.values() if m.padded}  # batch keys whose arrays may be padded


@dataclass
class InputSpec:
    """Shape of what a source yields, enough to build an encoder for it."""

    modality: str = "image"  # a key of MODALITIES
    channels: int = 3  # series: channels (variables) C
    image_size: int = 32
    num_classes: int | None = None
    class_names: list[str] | None = field(default=None)
    sample_rate: int | None = None
    num_features: int | None = None  # table: numeric features F
    cardinalities: list[int] | None = None  # table: per categorical column, categories + 1 (index 0 = missing)
    series_length: int | None = None  # series: the longest T seen when the source was opened
    # table / series: how raw files become samples, fitted on the training data and saved with the
    # encoder so test data is read the same way (column kinds, vocabularies, means and stds)
    schema: dict | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.modality, str) or self.modality not in MODALITIES:
            raise ValueError(f"unknown modality {self.modality!r}; known: {', '.join(MODALITIES)}")

    @classmethod
    def from_json(cls, text: str, where: str = "") -> InputSpec:
        """The spec stored in a weights file's metadata; ValueError in one line for unknown keys or
        values of the wrong type (sizes are bounded where the encoder is built, ``encoders.bounds``)."""
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ValueError(f"{where}input_spec is not JSON ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{where}input_spec should be a JSON object")
        names = {f.name: f for f in fields(cls)}
        unknown = [k for k in data if k not in names]
        if unknown:
            raise ValueError(f"{where}unknown key(s) in input_spec: {', '.join(map(str, unknown))[:120]}; "
                             f"known: {', '.join(names)}")
        for k in ("channels", "image_size", "num_classes", "sample_rate", "num_features", "series_length"):
            v = data.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise ValueError(f"{where}input_spec {k}={v!r} is not a whole number")
        return cls(**data)

    @property
    def input_key(self) -> str:
        """The sample key of the encoder's input ("image", "audio", "features", "series")."""
        return MODALITIES[self.modality].input

    @property
    def input_keys(self) -> tuple[str, ...]:
        """Every sample key the encoder reads: ``input_key`` first (a table adds "categories")."""
        m = MODALITIES[self.modality]
        return (m.input, *m.also)

    def batch_input(self, batch: dict):
        """What the encoder reads from a batch: the input tensor, or a dict of them when the modality
        has several keys (a table's ``{"features", "categories"}``)."""
        keys = self.input_keys
        return batch[keys[0]] if len(keys) == 1 else {k: batch[k] for k in keys}

    def reader_options(self) -> dict:
        """``open_source`` keyword arguments that make another source yield inputs like this one's:
        images at this size and channel count; tables and series read with the training data's
        ``schema`` (columns, statistics, vocabularies); other modalities need none."""
        if self.input_key == "image":
            return {"image_size": self.image_size, "channels": self.channels}
        return {"schema": self.schema} if self.schema is not None else {}

    def empty_inputs(self) -> dict[str, torch.Tensor]:
        """The inputs of a batch whose every sample was skipped: (0, ...) in each input's shape."""
        if self.input_key == "image":
            return {"image": torch.zeros((0, self.channels, self.image_size, self.image_size), dtype=torch.uint8)}
        if self.modality == "table":
            return {"features": torch.zeros((0, self.num_features or 0)),
                    "categories": torch.zeros((0, len(self.cardinalities or [])), dtype=torch.long)}
        if self.modality == "series":
            return {"series": torch.zeros((0, self.channels, self.series_length or 0))}
        return {self.input_key: torch.zeros((0, 0))}

    def empty_input(self) -> torch.Tensor:
        """The batch input (``input_key``) of a batch whose every sample was skipped."""
        return self.empty_inputs()[self.input_key]

    def describe(self) -> str:
        """The input's shape in words, for a log line: "3x32x32", "6 numeric + 8 categorical columns"."""
        if self.modality == "table":
            return f"{self.num_features or 0} numeric + {len(self.cardinalities or [])} categorical columns"
        if self.modality == "series":
            return f"{self.channels} channel(s) x {self.series_length} steps"
        if self.input_key == "audio":
            return f"audio at {self.sample_rate} Hz"
        return f"{self.channels}x{self.image_size}x{self.image_size}"


def captions_of(item: dict) -> list[str]:
    """The captions of a sample or of its `.json` metadata: `captions` (a list or one string), else
    `text`; [] when neither. The one rule for image-text and audio-text data."""
    caps = item.get("captions") or ([item["text"]] if item.get("text") else [])
    return [str(c) for c in caps] if isinstance(caps, list) else [str(caps)]


def as_tensor(array: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A NumPy array (or tensor) as a torch tensor, without a copy where the memory allows."""
    return array if isinstance(array, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(array))


IMAGE_DTYPES = (torch.uint8, torch.uint16)  # images travel as 8 or 16 bits per channel until to_float


def bits_of(images: torch.Tensor | np.ndarray) -> int:
    """8 for uint8 images, 16 for uint16."""
    return 16 if str(images.dtype).endswith("uint16") else 8


def to_bits(images: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 <-> uint16 images at the same scale (x 257, or rounded / 257); other dtypes pass."""
    if bits == 16 and images.dtype == torch.uint8:
        return images.to(torch.int32).mul_(257).to(torch.uint16)
    if bits == 8 and images.dtype == torch.uint16:
        return images.to(torch.int32).add_(128).div_(257, rounding_mode="floor").to(torch.uint8)
    return images


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 or uint16 (B, C, H, W) -> float32 in [0, 1], scaled by the dtype's range (255, 65535):
    16-bit data keeps its precision up to here. Float input passes through."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if images.dtype == torch.uint16:
        return images.float().div_(65535.0)
    return images


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
