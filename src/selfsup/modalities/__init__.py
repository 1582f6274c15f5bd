"""Data types, one file each: what is specific to one kind of input, asked for by the methods.

A data type (``DataType``) says how a batch's encoder input is augmented into the views that
joint-embedding methods (SimCLR, DINO) compare: crops and colour for images (``image.py``), SCARF's
feature corruption for tables (``table.py``), jitter and hidden spans for series (``series.py``),
SpecAugment on log-mel spectrograms for audio (``audio.py``). The methods ask ``data_type(spec)``;
the tokenizers live with the encoders (``encoders.trunk.Maskable``) and the readers in
``data.sources``. Adding a data type = a file here that subclasses ``DataType`` and calls
``register``, plus its reader and its ``data.spec.MODALITIES`` entry.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from selfsup.data.spec import MODALITIES, InputSpec


class DataType(ABC):
    """What one data type adds to the generic machinery. ``name``: its ``InputSpec.modality`` (the
    ``_text`` variants share it); ``images``: its inputs are pixels, so methods use their own image
    recipes (multi-crop, colour jitter options) instead of ``views``."""

    name: str
    images: bool = False

    @abstractmethod
    def views(self, x: Any, count: int, encoder: nn.Module) -> list[Any]:
        """``count`` random augmentations of the batch input ``x`` (``InputSpec.batch_input``), each
        ready for ``encoders.to_input`` and the encoder; positives are the same row across views."""


REGISTRY: dict[str, DataType] = {}


def register(data_type: DataType) -> DataType:
    """Make ``data_type`` known under its ``name`` (a key of ``data.spec.MODALITIES``)."""
    if data_type.name not in MODALITIES:
        raise ValueError(f"data type {data_type.name!r} has no data.spec.MODALITIES entry")
    REGISTRY[data_type.name] = data_type
    return data_type


def data_type(spec: InputSpec | str) -> DataType:
    """The registered data type of ``spec`` (or a modality name); ``image_text`` is ``image``, etc."""
    name = spec if isinstance(spec, str) else spec.modality
    found = REGISTRY.get(name) or REGISTRY.get(name.removesuffix("_text"))
    if found is None:
        raise ValueError(f"no data type registered for {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return found


def cat_inputs(parts: list[Any]) -> Any:
    """Encoder inputs (tensors, or dicts of tensors) -> one batch, rows of ``parts[0]`` first."""
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts)


from selfsup.modalities import audio, image, series, table  # noqa: E402,F401  (each registers itself)

__all__ = ["REGISTRY", "DataType", "cat_inputs", "data_type", "register"]
