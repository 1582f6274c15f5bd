"""Sane bounds on an encoder's shape, checked before anything is allocated.

Shapes come from files someone else may have written: ``encoder.safetensors`` metadata, a
reference's ``?image_size=``, a sidecar ``weights.json``, ``config.yaml``. A width of 4,000,000 or
an image side of 1e9 must be a one-line refusal, not an attempt to allocate hundreds of TB.
``check_encoder`` refuses, in one line naming the field and where it came from:

- fields outside their bounds (below), a patch larger than the image, heads not dividing the width;
- a network whose weights (float32), plus one input at the requested batch, do not fit in the
  machine's memory (``hardware.memory_bytes``).
"""

from __future__ import annotations

from typing import Any

from selfsup.data.spec import InputSpec
from selfsup.hardware import memory_bytes

MAX_SIDE = 8192  # pixels per image side
MAX_IMAGE_CHANNELS = 64  # as data.formats: more is a volume, not an image
MAX_SERIES_CHANNELS = 100_000
MAX_FEATURES = 1_000_000  # table columns
MAX_WIDTH = 16_384
MAX_DEPTH = 512
MAX_TOKENS = 1_000_000  # extra tokens, series lengths


def _bad(what: str, value: Any, lo: float, hi: float, where: str) -> ValueError:
    return ValueError(f"{where}{what}={value!r} is out of bounds ({lo}..{hi}); refusing to build this encoder")


def _int_in(what: str, value: Any, lo: int, hi: int, where: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _bad(what, value, lo, hi, where)


def check_spec(spec: InputSpec, where: str = "") -> None:
    """Bounds of an input spec's sizes (``where``: "FILE: " to name the source in the message)."""
    image = spec.input_key == "image"
    _int_in("channels", spec.channels, 1, MAX_IMAGE_CHANNELS if image else MAX_SERIES_CHANNELS, where)
    if image:
        _int_in("image_size", spec.image_size, 1, MAX_SIDE, where)
    _int_in("num_features", spec.num_features, 0, MAX_FEATURES, where)
    _int_in("series_length", spec.series_length, 0, MAX_TOKENS, where)
    _int_in("num_classes", spec.num_classes, 0, MAX_FEATURES, where)
    _int_in("sample_rate", spec.sample_rate, 1, 10_000_000, where)
    if spec.cardinalities is not None:
        if not isinstance(spec.cardinalities, list) or len(spec.cardinalities) > MAX_FEATURES:
            raise ValueError(f"{where}cardinalities should be a list of at most {MAX_FEATURES} counts")
        for c in spec.cardinalities:
            _int_in("cardinalities[i]", c, 1, 100_000_000, where)


def check_encoder(cfg, spec: InputSpec, where: str = "", batch_size: int = 1) -> None:
    """Bounds of ``cfg`` (an ``EncoderConfig``) for ``spec``, then the memory rule (module docstring)."""
    check_spec(spec, where)
    _int_in("width", cfg.width, 1, MAX_WIDTH, where)
    _int_in("depth", cfg.depth, 1, MAX_DEPTH, where)
    _int_in("heads", cfg.heads, 1, MAX_WIDTH, where)
    _int_in("img_size", cfg.img_size, 1, MAX_SIDE, where)
    _int_in("in_chans", cfg.in_chans, 1, MAX_IMAGE_CHANNELS if spec.input_key == "image" else MAX_SERIES_CHANNELS,
            where)
    _int_in("reg_tokens", cfg.reg_tokens, 0, 1024, where)
    _int_in("series_patch", cfg.series_patch, 1, MAX_TOKENS, where)
    _int_in("series_stride", cfg.series_stride, 1, MAX_TOKENS, where)
    if not 0 < cfg.mlp_ratio <= 64:
        raise _bad("mlp_ratio", cfg.mlp_ratio, 0, 64, where)
    if not 0 < cfg.width_mult <= 16:
        raise _bad("width_mult", cfg.width_mult, 0, 16, where)
    if spec.input_key == "image" and cfg.name == "vit":
        side = cfg.img_size or spec.image_size
        _int_in("patch_size", cfg.patch_size, 1, side, where)
    if cfg.width and cfg.heads and cfg.width % cfg.heads:
        raise ValueError(f"{where}width={cfg.width} is not a multiple of heads={cfg.heads}")
    need = estimate_bytes(cfg, spec, batch_size)
    have = memory_bytes()
    if have and need > have:
        raise ValueError(f"{where}this encoder needs about {need / 2**30:.1f} GiB (weights and a batch of "
                         f"{batch_size} input(s)) and the machine has {have / 2**30:.1f} GiB available; refusing")


def estimate_bytes(cfg, spec: InputSpec, batch_size: int = 1) -> float:
    """Float32 bytes of the transformer's weights (12 width^2 per block, patch and position
    embeddings) plus ``batch_size`` inputs and their tokens; an order of magnitude, not an exact count."""
    from selfsup.encoders.vit import PRESETS  # noqa: PLC0415

    preset = PRESETS.get(cfg.size, PRESETS["tiny"])
    width = float(cfg.width or preset["width"])
    depth = float(cfg.depth or preset["depth"])
    params = depth * (4 + 2 * cfg.mlp_ratio) * width**2
    if spec.input_key == "image":
        side, chans = float(cfg.img_size or spec.image_size), float(cfg.in_chans or spec.channels)
        patch = float(max(cfg.patch_size, 1))
        tokens = (side / patch) ** 2 + cfg.reg_tokens + 1
        params += chans * patch**2 * width + tokens * width
        inputs = batch_size * (chans * side**2 + tokens * width)
    elif spec.modality == "table":
        tokens = float((spec.num_features or 0) + len(spec.cardinalities or []) + 1)
        params += tokens * width + sum(float(c) for c in spec.cardinalities or []) * width
        inputs = batch_size * tokens * width
    else:
        length = float(spec.series_length or 0)
        inputs = batch_size * float(spec.channels) * (length + length / max(cfg.series_patch, 1) * width)
    return 4.0 * (params + inputs)


__all__ = ["MAX_DEPTH", "MAX_SIDE", "MAX_WIDTH", "check_encoder", "check_spec", "estimate_bytes"]
