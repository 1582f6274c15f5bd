"""Series ((B, C, T), NaN = not observed): noise and a hidden span as the view.

The encoder normalises each series (RevIN), so scaling and shifting would be invisible; a view
adds Gaussian noise of ``NOISE`` times each channel's standard deviation and hides one random
contiguous span of up to ``SPAN`` of the steps (NaN, which the encoder reads as "not observed"),
in the spirit of the jitter and masking views of TS-TCC / TS2Vec (``methods.ts2vec`` keeps its
own contextual-consistency recipe).
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup.modalities import DataType, register

NOISE = 0.1
SPAN = 0.25


def jitter_and_hide(x: torch.Tensor, noise: float = NOISE, span: float = SPAN) -> torch.Tensor:
    """(B, C, T) -> the same with noise and one hidden span per series (all channels)."""
    x = x.float()
    mean = torch.nanmean(x, -1, keepdim=True)
    std = torch.nan_to_num(torch.nanmean((x - mean) ** 2, -1, keepdim=True), nan=1.0).sqrt().clamp(min=1e-6)
    out = x + noise * std * torch.randn_like(x)
    B, _, T = x.shape
    width = (torch.rand(B, device=x.device) * span * T).long()
    start = (torch.rand(B, device=x.device) * (T - width + 1)).long()
    steps = torch.arange(T, device=x.device)
    hidden = (steps[None] >= start[:, None]) & (steps[None] < (start + width)[:, None])  # (B, T)
    return out.masked_fill(hidden[:, None, :], float("nan"))


class Series(DataType):
    name = "series"

    def views(self, x: torch.Tensor, count: int, encoder: nn.Module) -> list[torch.Tensor]:
        return [jitter_and_hide(x) for _ in range(count)]


register(Series())
