"""Encoders: the networks. ``build_encoder`` turns an ``EncoderConfig`` into a module whose
``forward(x)`` gives pooled features (B, num_features) and which exposes ``num_features``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict
from torch import nn

from selfsup.data.spec import InputSpec
from selfsup.encoders.vit import VisionTransformer, vit


class EncoderConfig(BaseModel):
    """Which network encodes the input. ViT sizes: tiny, small, base, large or custom."""

    model_config = ConfigDict(extra="forbid")
    name: Literal["vit", "resnet18", "resnet50"] = "vit"
    size: str = "tiny"
    patch_size: int = 4
    width: int | None = None
    depth: int | None = None
    heads: int | None = None
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    pool: Literal["token", "avg", "token+avg"] = "avg"
    cifar_stem: bool = True


def build_encoder(cfg: EncoderConfig, spec: InputSpec) -> nn.Module:
    """The encoder named by ``cfg`` for inputs shaped like ``spec``."""
    if cfg.name == "vit":
        return vit(
            cfg.size, img_size=spec.image_size, patch_size=cfg.patch_size, in_chans=spec.channels,
            width=cfg.width, depth=cfg.depth, heads=cfg.heads, mlp_ratio=cfg.mlp_ratio,
            drop_path_rate=cfg.drop_path, pool=cfg.pool,
        )
    from selfsup.encoders import resnet  # noqa: PLC0415  (optional until the ResNet lands)

    return resnet.build(cfg.name, in_chans=spec.channels, cifar_stem=cfg.cifar_stem)


__all__ = ["EncoderConfig", "build_encoder", "VisionTransformer", "vit"]
