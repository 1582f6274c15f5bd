"""Images (uint8 or uint16 (B, C, H, W), any channel count): SimCLR's crops, flips and colour."""

from __future__ import annotations

import torch
from torch import nn

from selfsup.data.augment import simclr_views
from selfsup.data.spec import to_float
from selfsup.modalities import DataType, register


class Image(DataType):
    name = "image"
    images = True  # SimCLR / DINO apply their own configured crops (multi-crop for DINO)

    def views(self, x: torch.Tensor, count: int, encoder: nn.Module) -> list[torch.Tensor]:
        """Pairs of SimCLR views (random resized crop, flip, colour jitter, grey) in [0, 1]."""
        out: list[torch.Tensor] = []
        while len(out) < count:
            out += list(simclr_views(to_float(x)))
        return out[:count]


register(Image())
