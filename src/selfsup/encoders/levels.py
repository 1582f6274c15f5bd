"""Intermediate features by level, one rule for every encoder (``forward_intermediates``).

A ViT's levels are its blocks; a CNN's (ResNet, MobileNetV2) the ends of its stages at strides 4,
8, 16 and 32 (timm's ``feature_info`` without the stride-2 stem), so "the two levels around mid
depth" means ResNet's layer2 and layer3 as in PatchCore, and the stride-8 and -16 stages of a
MobileNetV2.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def take_indices(indices: int | Sequence[int] | None, n: int) -> list[int]:
    """Which of ``n`` levels: None = all, an int k = the last k, a sequence = those (negative from the end)."""
    if indices is None:
        take = list(range(n))
    elif isinstance(indices, int):
        take = list(range(n - indices, n))
    else:
        take = [i % n if -n <= i < n else i for i in indices]
    if not take or not all(0 <= i < n for i in take):
        raise ValueError(f"indices {indices} are not blocks (levels) of a {n}-level encoder")
    return take


def run_levels(levels: Sequence[nn.Module], x: torch.Tensor, indices: int | Sequence[int] | None = None, *,
               output_fmt: str = "NCHW", intermediates_only: bool = False):
    """Run ``levels`` in turn on ``x`` (B, C, H, W); the outputs (B, C_l, H_l, W_l) of the levels asked for.

    ``output_fmt`` "NCHW" or "NHWC". Returns the list, or (final output, list) unless
    ``intermediates_only`` (then the levels after the deepest one asked for are not run).
    """
    if output_fmt not in ("NCHW", "NHWC"):
        raise ValueError(f"output_fmt must be NCHW or NHWC for a CNN, not {output_fmt!r}")
    take = take_indices(indices, len(levels))
    last = max(take) if intermediates_only else len(levels) - 1
    out = []
    for i, level in enumerate(levels[: last + 1]):
        x = level(x)
        if i in take:
            out.append(x if output_fmt == "NCHW" else x.permute(0, 2, 3, 1))
    return out if intermediates_only else (x, out)


__all__ = ["run_levels", "take_indices"]
