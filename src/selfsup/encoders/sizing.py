"""Defaults sized to the data and the machine: the image side, the ViT patch size and the network's
size a run gets when the user does not set them.

The one home of these rules. Pretraining sizes a new run with ``resolve_geometry`` (and writes the
result into its ``config.yaml``); ``anomaly fit --raw`` sizes its pixel patches with it; evaluation
and anomaly detection on a run read the run's own size. The rule, sized to the machine:

- the side is a multiple of the patch size, never above the data's short side (at most MAX_SIDE):
  a 213-px tile is never refused for not dividing by 4;
- a CPU gets at most CPU_GRID x CPU_GRID patches per image (64 tokens; attention costs grow with
  their square and a 213-px tile at 4-px patches would be 2,800), a GPU GPU_GRID x GPU_GRID
  (ViT-B/16 at 224 px);
- when the patch size is not set, the largest side within those limits wins, among patches from
  PATCH_SIZES whose pixels (p * p * channels) fit the width of the network, or ViT-Tiny's 192 for
  a narrower one (the patch embedding is then not a bottleneck). On a GPU the smallest such patch
  reaching that side wins (more tokens); on a CPU the largest that still leaves CPU_MIN_GRID x
  CPU_MIN_GRID patches, because at CPU budgets tokens per image are the lever for quality per
  second: on CIFAR-10 8-px patches (16 tokens) beat 4-px ones (64) for MAE and SimCLR alike after
  10 CPU-minutes, on validation data (BENCHMARKS.md, "the recipe, chosen on validation data"). A
  grey 213-px tile on a CPU gets 64 px at 8-px patches, CIFAR's 32 px gets 8-px patches (4x4),
  28-px images 4-px patches (7x7), and ViT-B/16 at 224 px on a GPU.

An explicit size that the patch does not divide is an error naming the nearest valid sizes.

A table is one token per column (``table_batch_size``): the default batch of 256 rows is kept up to
127 columns and shrinks as the square of wider ones (attention maps are batch x tokens^2), to 8 rows
at the least: 256 rows of ADBench's 1,555-column ``17_InternetAds`` took 20 GB and were killed.

The network (``default_vit``): on a CPU a ViT of width 128, depth 4 and 4 heads (0.8 M parameters),
the size every CPU recipe in BENCHMARKS.md uses: a step of a 64-token batch of 256 is a fraction of
a second, so a 10-minute budget buys thousands of steps (a ViT-Tiny buys about 300, too few to
learn from); on a GPU ViT-Base (width 768, depth 12), the size public models come in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from selfsup.encoders.vit import PRESETS

MAX_SIDE = 224  # no default side above this
TABLE_TOKEN_PAIRS = 256 * 128**2  # attention pairs per batch a table run keeps to by default (256 rows x 127 columns)
MIN_TABLE_BATCH = 8
CPU_GRID, GPU_GRID = 8, 14  # patches per side by default: at most 64 tokens on a CPU, 196 on a GPU
CPU_MIN_GRID = 4  # a CPU default takes the largest patch that keeps at least 4x4 of them
PATCH_SIZES = (4, 8, 16, 32)


@dataclass(frozen=True)
class Geometry:
    """``image_size`` and ``patch_size`` (None for CNNs) with ``why``: one line saying what was chosen."""

    image_size: int
    patch_size: int | None
    why: str


def valid_size(side: int, patch: int) -> int:
    """The largest multiple of ``patch`` not above ``side`` (at least one patch)."""
    return max(patch, side // patch * patch)


def on_gpu(accelerator: str = "auto") -> bool:
    """Whether a run with this ``train.accelerator`` trains on a GPU."""
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def check_size(image_size: int, patch: int, what: str = "data.image_size") -> None:
    """ValueError naming the nearest valid sides unless ``patch`` divides ``image_size``."""
    if image_size % patch:
        lo, hi = valid_size(image_size, patch), valid_size(image_size, patch) + patch
        raise ValueError(f"{what}={image_size} is not a multiple of the patch size {patch}: use {lo} or {hi} "
                         "(or leave it unset to have one chosen)")


def resolve_geometry(
    native: int,
    channels: int,
    *,
    image_size: int | None = None,
    patch_size: int | None = None,
    width: int | None = None,
    vit: bool = True,
    gpu: bool = False,
) -> Geometry:
    """The side (and patch) images are read at. ``native``: the data's short side; ``image_size`` /
    ``patch_size``: the user's, when set (None: choose); ``width``: the ViT's (for the patch rule);
    ``vit`` False: a CNN, any side up to MAX_SIDE."""
    side = min(native, MAX_SIDE)
    if not vit:
        size = image_size or side
        return Geometry(size, None, f"image size {size} px" + ("" if image_size else f" (data {native} px)"))
    grid = GPU_GRID if gpu else CPU_GRID
    where = f"{'GPU' if gpu else 'CPU'} default of at most {grid}x{grid} patches"
    if image_size is not None:
        patch = patch_size or next((p for p in PATCH_SIZES if image_size % p == 0), PATCH_SIZES[0])
        check_size(image_size, patch)
        return Geometry(image_size, patch, f"image size {image_size} px, patch {patch} (as set)")
    if patch_size is not None:
        size = valid_size(min(side, patch_size * grid), patch_size)
        n = size // patch_size
        return Geometry(size, patch_size, f"image size {size} px for patch {patch_size}: {n}x{n} patches, the {where}"
                        f" (data {native} px; set data.image_size to choose)")
    fits = [p for p in PATCH_SIZES if p * p * channels <= max(width or 192, 192)] or [PATCH_SIZES[0]]
    if not gpu:  # fewer tokens per image where a patch grid of CPU_MIN_GRID still covers the side
        fits = [p for p in fits if valid_size(side, p) // p >= CPU_MIN_GRID] or fits[:1]
    best = max(fits, key=lambda p: (valid_size(min(side, p * grid), p), p if not gpu else -p))
    size = valid_size(min(side, best * grid), best)
    n = size // best
    return Geometry(size, best, f"image size {size} px, patch {best}: {n}x{n} patches, the {where} (data {native} "
                    f"px; set data.image_size and encoder.patch_size to choose)")


CPU_VIT = {"size": "custom", "width": 128, "depth": 4, "heads": 4}
GPU_VIT = {"size": "base"}


def default_vit(gpu: bool) -> tuple[dict, str]:
    """The ``EncoderConfig`` fields of the default ViT on this machine, and one line saying why."""
    if gpu:
        return dict(GPU_VIT), "encoder ViT-Base (width 768, depth 12): the GPU default"
    return dict(CPU_VIT), ("encoder ViT width 128, depth 4, 4 heads (0.8 M parameters): the CPU default, so a "
                           "budget of minutes buys thousands of steps (set encoder.size or encoder.width to choose)")


def encoder_width(cfg) -> int | None:
    """The ViT width of an ``EncoderConfig`` (its preset's when not given)."""
    return cfg.width or PRESETS.get(cfg.size, {}).get("width")


def table_batch_size(tokens: int, batch_size: int) -> int:
    """The default batch for a table of ``tokens`` tokens (columns + CLS): ``batch_size`` while
    batch x tokens^2 fits ``TABLE_TOKEN_PAIRS``, else the largest that does, at least ``MIN_TABLE_BATCH``."""
    return max(MIN_TABLE_BATCH, min(batch_size, TABLE_TOKEN_PAIRS // tokens**2))


__all__ = ["CPU_GRID", "CPU_MIN_GRID", "CPU_VIT", "GPU_GRID", "GPU_VIT", "Geometry", "MAX_SIDE", "PATCH_SIZES",
           "TABLE_TOKEN_PAIRS", "check_size", "default_vit", "encoder_width", "on_gpu", "resolve_geometry",
           "table_batch_size", "valid_size"]
