"""Encoders: the networks. ``build_encoder`` turns an ``EncoderConfig`` into a module whose
``forward(x)`` gives pooled features (B, num_features) and which exposes ``num_features``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict
from torch import nn

from selfsup.data.spec import InputSpec
from selfsup.encoders.series import PatchTST
from selfsup.encoders.tabular import FTTransformer
from selfsup.encoders.vit import PRESETS, VisionTransformer, vit


class EncoderConfig(BaseModel):
    """Which network encodes the input. ViT sizes: tiny, small, base, large or custom.

    "vit" is the transformer; its tokenizer follows the data: patches of images (and spectrograms),
    FT-Transformer feature tokens for tables ("ft_transformer"), PatchTST patches of each channel
    for series ("patch_tst"). For tables and series "tiny" is the paper's configuration (FT-T:
    width 192, depth 3, 8 heads; PatchTST: width 128, depth 3, 16 heads); the other sizes are
    the ViT's; width / depth / heads override either.
    """

    model_config = ConfigDict(extra="forbid")
    name: Literal["vit", "resnet18", "resnet50", "ft_transformer", "patch_tst"] = "vit"
    size: str = "tiny"
    patch_size: int = 4
    width: int | None = None
    depth: int | None = None
    heads: int | None = None
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    pool: Literal["token", "avg", "token+avg"] = "avg"
    cifar_stem: bool = True
    series_patch: int = 12  # series: steps per patch (PatchTST's self-supervised setting)
    series_stride: int | None = None  # series: steps between patch starts; None = series_patch (no overlap)
    revin: bool = True  # series: per-sample instance normalisation (off keeps each window's level)


# "tiny" for tables and series is the paper's default model; other sizes are the ViT presets
MODALITY_PRESETS = {
    "table": {"tiny": {"width": 192, "depth": 3, "heads": 8}},  # Gorishniy et al. 2021
    "series": {"tiny": {"width": 128, "depth": 3, "heads": 16}},  # Nie et al. 2023
}
MODALITY_ENCODERS = {"table": "ft_transformer", "series": "patch_tst"}


def _size(cfg: EncoderConfig, modality: str) -> dict[str, int]:
    if cfg.size not in PRESETS and cfg.size != "custom":
        raise ValueError(f"unknown size {cfg.size!r}; choose from {', '.join(PRESETS)} or custom")
    p = dict(MODALITY_PRESETS[modality].get(cfg.size) or PRESETS.get(cfg.size, PRESETS["tiny"]))
    p.update({k: v for k, v in {"width": cfg.width, "depth": cfg.depth, "heads": cfg.heads}.items() if v is not None})
    return p


def _build_structured(cfg: EncoderConfig, spec: InputSpec) -> nn.Module:
    """The FT-Transformer (tables) or PatchTST (series) for ``spec``."""
    modality = spec.modality
    want = MODALITY_ENCODERS[modality]
    if cfg.name not in ("vit", want):
        raise ValueError(f"encoder {cfg.name!r} cannot encode {modality} data; use vit or {want}")
    p = _size(cfg, modality)
    if modality == "table":
        return FTTransformer(
            spec.num_features or 0, spec.cardinalities or [], embed_dim=p["width"], depth=p["depth"],
            num_heads=p["heads"], mlp_ratio=cfg.mlp_ratio, drop_path_rate=cfg.drop_path, pool=cfg.pool,
        )
    return PatchTST(
        spec.channels, patch_size=cfg.series_patch, stride=cfg.series_stride, embed_dim=p["width"],
        depth=p["depth"], num_heads=p["heads"], mlp_ratio=cfg.mlp_ratio, drop_path_rate=cfg.drop_path,
        revin=cfg.revin,
    )


def build_encoder(cfg: EncoderConfig, spec: InputSpec) -> nn.Module:
    """The encoder named by ``cfg`` for inputs shaped like ``spec`` (tables and series: see ``EncoderConfig``)."""
    if spec.modality in MODALITY_ENCODERS:
        return _build_structured(cfg, spec)
    if cfg.name in MODALITY_ENCODERS.values():
        raise ValueError(f"encoder {cfg.name!r} needs table or series data, not {spec.modality}")
    if cfg.name == "vit":
        return vit(
            cfg.size, img_size=spec.image_size, patch_size=cfg.patch_size, in_chans=spec.channels,
            width=cfg.width, depth=cfg.depth, heads=cfg.heads, mlp_ratio=cfg.mlp_ratio,
            drop_path_rate=cfg.drop_path, pool=cfg.pool,
        )
    from selfsup.encoders import resnet  # noqa: PLC0415  (optional until the ResNet lands)

    return resnet.build(cfg.name, in_chans=spec.channels, cifar_stem=cfg.cifar_stem)


__all__ = ["EncoderConfig", "FTTransformer", "PatchTST", "build_encoder", "VisionTransformer", "vit"]
