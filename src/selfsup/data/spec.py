"""What a data source hands the layers above: the sample contract and the input shape.

Modalities (docs/architecture.md has the full sample contract):

- ``image``, ``image_text``, ``audio``, ``audio_text``: see ``data/sources.py``.
- ``table``: a sample is ``{"features": float32 (F,), "categories": int64 (K,), "label", "key"}``;
  numeric values are standardised with training statistics, NaN marks a missing value (the
  encoder has a learned embedding for it), category index 0 is missing or unseen.
- ``series``: a sample is ``{"series": float32 (C, T), "label", "key"}``; series of unequal length
  keep their own T and ``collate`` pads a batch to its longest with NaN (``series_length`` gives
  each one's T). NaN inside a series is a missing value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Images travel as uint8 (B, C, H, W) and become float in [0, 1] on the training device; encoders
# see (x - IMAGE_MEAN) / IMAGE_STD. Fixed constants keep a run's weights usable without data stats.
IMAGE_MEAN = 0.5
IMAGE_STD = 0.25


@dataclass
class InputSpec:
    """Shape of what a source yields, enough to build an encoder for it."""

    modality: str = "image"  # image | image_text | audio | audio_text | table | series
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


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 in [0, 1]; float input passes through."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def normalize(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> the encoder's input scale."""
    return (images - IMAGE_MEAN) / IMAGE_STD


def denormalize(x: torch.Tensor) -> torch.Tensor:
    return (x * IMAGE_STD + IMAGE_MEAN).clamp(0.0, 1.0)


def pad_series(series: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Series (C, T_i) -> NaN-padded float32 (B, C, max T_i) and their lengths long (B,).

    NaN rather than zeros: a pad must not read as a value, and NaN already means "not observed"
    to the series encoders, which drop patches that hold no observed value.
    """
    lengths = [int(s.shape[-1]) for s in series]
    if len(set(lengths)) == 1:
        out = torch.stack(series).float()
    else:
        out = torch.full((len(series), series[0].shape[0], max(lengths)), float("nan"))
        for i, s in enumerate(series):
            out[i, :, : lengths[i]] = s
    return out, torch.tensor(lengths, dtype=torch.long)


def structured_batch(samples: list[dict], spec: InputSpec | None = None) -> dict:
    """The table / series fields of a batch (``collate`` adds them); {} for other samples.

    Tables: ``features`` float32 (B, F), ``categories`` long (B, K). Series: ``series`` float32
    (B, C, T) NaN-padded to the longest, ``series_length`` long (B,). With no samples (all skipped)
    and a ``spec``, the fields keep their trailing shape with B = 0.
    """
    if samples and "features" in samples[0]:
        return {"features": torch.stack([s["features"] for s in samples]).float(),
                "categories": torch.stack([s["categories"] for s in samples]).long()}
    if samples and "series" in samples[0]:
        series, lengths = pad_series([s["series"] for s in samples])
        return {"series": series, "series_length": lengths}
    if not samples and spec is not None and spec.modality == "table":
        return {"features": torch.zeros(0, spec.num_features or 0),
                "categories": torch.zeros(0, len(spec.cardinalities or []), dtype=torch.long)}
    if not samples and spec is not None and spec.modality == "series":
        return {"series": torch.zeros(0, spec.channels, spec.series_length or 0),
                "series_length": torch.zeros(0, dtype=torch.long)}
    return {}
