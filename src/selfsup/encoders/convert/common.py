"""What every origin shares: the result types, normalisation constants and small shape helpers."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from selfsup.data.spec import InputSpec
from selfsup.encoders import EncoderConfig
from selfsup.encoders.text import TextConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)  # inputs in [-1, 1] (Inception / SigLIP / Keras MobileNet / in21k ViT)

State = dict[str, torch.Tensor]


@dataclass
class Converted:
    """One public model in selfsup's terms (see the module docstring)."""

    config: EncoderConfig
    state: State
    spec: InputSpec
    image_projection: State | None = None  # {"weight": (E, D)[, "bias": (E,)]}: pooled features -> joint space
    text_config: TextConfig | None = None
    text_state: State | None = None
    logit_scale: float | None = None  # log of the multiplier, as the sources store it
    logit_bias: float | None = None
    mae_decoder: MAEDecoder | None = None
    folder: Path | None = None  # where the files are (tokenizer.json is looked for there)
    notes: list[str] = field(default_factory=list)


@dataclass
class MAEDecoder:
    """An MAE decoder in ``methods/mae.py`` names; ``config`` holds ``MAEConfig`` fields.

    ``mlp_ratio`` and ``norm_eps`` are the source's; ``methods/mae.py`` builds its decoder blocks
    with ratio 4 and eps 1e-6 (the original MAE's), which is what facebook/vit-mae-* use apart from
    Hugging Face's eps 1e-12 (a difference below 1e-6 on these activations).
    """

    config: dict
    state: State
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6




_HF_ACT = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh",
           "gelu_fast": "gelu_tanh", "silu": "silu", "swish": "silu"}

# timm's ViT widths -> heads (head width 64 except these); anything else: width // 64
_HEADS = {192: 3, 384: 6, 512: 8, 640: 10, 768: 12, 896: 14, 1024: 16, 1152: 16, 1280: 16, 1408: 16, 1536: 24,
          1664: 16}


def default_heads(width: int) -> int:
    """Attention heads of a ViT of this width in timm / open_clip (``heads=`` overrides it)."""
    return _HEADS.get(width, max(width // 64, 1))


def _isqrt(n: int) -> int | None:
    r = math.isqrt(n) if n > 0 else 0
    return r if r > 0 and r * r == n else None


def _depth(state: State, pattern: str) -> int:
    """Number of blocks: 1 + the largest index captured by ``pattern`` among the keys."""
    idx = [int(m.group(1)) for k in state if (m := re.match(pattern, k))]
    if not idx:
        raise ValueError(f"no transformer blocks matching {pattern!r} in the state dict")
    return max(idx) + 1


def _hf_act(name: str | None, default: str) -> str:
    name = name or default
    if name not in _HF_ACT:
        raise ValueError(f"activation {name!r} has no selfsup equivalent; supported: {', '.join(_HF_ACT)}")
    return _HF_ACT[name]


def _pair(v) -> int:
    return int(v[0] if isinstance(v, (list, tuple)) else v)


def hf_preprocess(pre: dict | None, image_size: int, mean, std) -> tuple[int, tuple, tuple]:
    """(input size, mean, std) from a Hugging Face ``preprocessor_config.json`` (defaults otherwise)."""
    if not pre:
        return image_size, tuple(mean), tuple(std)
    if pre.get("do_normalize", True):
        mean, std = pre.get("image_mean", mean), pre.get("image_std", std)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if pre.get("do_rescale", True) and abs(float(pre.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-9:
        raise ValueError(f"rescale_factor {pre['rescale_factor']} is not 1/255; selfsup feeds images in [0, 1]")
    size = pre.get("crop_size") if pre.get("do_center_crop") else pre.get("size")
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge")
    return int(size or image_size), tuple(float(v) for v in mean), tuple(float(v) for v in std)


