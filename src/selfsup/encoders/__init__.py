"""Encoders: the networks. ``build_encoder`` turns an ``EncoderConfig`` into a module whose
``forward(x)`` gives pooled features (B, num_features) and which exposes ``num_features``.

The module also carries ``input_mean`` / ``input_std`` (per channel, images in [0, 1]; None means
selfsup's fixed 0.5 / 0.25), and ``to_input(encoder, x)`` is the one rule every caller uses to turn
[0, 1] images into what the encoder reads. Public pretrained models load through ``encoders.hub``
(``load_pretrained("hf:facebook/dinov2-small")``), which fills the same config.

Tables and series have their own tokenizers in front of the same transformer ``Block``s:
FT-Transformer feature tokens (``encoders.tabular``) and PatchTST patches of each channel
(``encoders.series``); ``build_encoder`` picks them by the data's modality. They read their inputs
as they come (standardised numbers, category indices, series values), so ``to_input`` passes them
through.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from selfsup.data.spec import InputSpec, normalize
from selfsup.encoders.audio import AudioViT
from selfsup.encoders.bounds import check_encoder
from selfsup.encoders.series import PatchTST
from selfsup.encoders.tabular import FTTransformer
from selfsup.encoders.vit import PRESETS, VisionTransformer, vit


class EncoderConfig(BaseModel):
    """Which network encodes the input. ViT sizes: tiny, small, base, large or custom.

    The fields after ``cifar_stem`` describe public models (``encoders.hub`` sets them); their
    defaults are selfsup's own networks, so configs written before them mean the same network.

    "vit" is the transformer; for tables and series its tokenizer follows the data: FT-Transformer
    feature tokens ("ft_transformer") and PatchTST patches of each channel ("patch_tst"). For them
    "tiny" is the paper's configuration (FT-T: width 192, depth 3, 8 heads; PatchTST: width 128,
    depth 3, 16 heads); the other sizes are the ViT's; width / depth / heads override either.
    """

    model_config = ConfigDict(extra="forbid")
    name: Literal["vit", "resnet18", "resnet34", "resnet50", "mobilenetv2", "ft_transformer", "patch_tst"] = "vit"
    size: str = "tiny"
    patch_size: int = 4
    width: int | None = None
    depth: int | None = None
    heads: int | None = None
    mlp_ratio: float = 4.0
    drop_path: float = 0.0
    pool: Literal["token", "avg", "token+avg", "map"] = "avg"
    cifar_stem: bool = True
    # -- shape fixed by the weights rather than the data (None: the InputSpec's)
    img_size: int | None = None  # the stored position-embedding grid is img_size / patch_size
    in_chans: int | None = None
    # -- ViT options of public models (timm's argument names)
    class_token: bool = True
    reg_tokens: int = 0
    no_embed_class: bool = False  # position embedding covers the patches only (DINOv2 + registers, timm)
    pre_norm: bool = False  # LayerNorm before the blocks (CLIP's ln_pre)
    fc_norm: bool = False  # final norm after pooling instead of on the tokens (timm avg-pool models)
    init_values: float | None = None  # layer scale (DINOv2)
    act: Literal["gelu", "quick_gelu", "gelu_tanh", "silu"] = "gelu"
    mlp_layer: Literal["mlp", "swiglu"] = "mlp"
    norm_eps: float = 1e-6
    qkv_bias: bool = True
    patch_bias: bool = True
    pos_embed: Literal["sincos", "learn"] = "sincos"  # fixed sin-cos (selfsup, MAE) or learned
    pos_antialias: bool = False  # antialiased bicubic when resizing the position grid (DINOv2 + registers)
    # -- CNN options (MobileNetV2; Keras-trained weights need bn_eps 1e-3 and tf_padding)
    width_mult: float = 1.0
    bn_eps: float | None = None  # None: PyTorch's 1e-5
    tf_padding: bool = False
    # -- input normalisation, per channel, for images in [0, 1] (None: selfsup's fixed 0.5 / 0.25)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    source: str | None = None  # where pretrained weights came from, e.g. "hf:facebook/dinov2-small"
    # -- series (PatchTST)
    series_patch: int = 12  # steps per patch (PatchTST's self-supervised setting)
    series_stride: int | None = None  # steps between patch starts; None = series_patch (no overlap)
    revin: bool = True  # per-sample instance normalisation (off keeps each window's level)
    # -- audio (a ViT on log-mel spectrograms of side img_size or the data's image_size)
    audio_seconds: float = 1.0  # the spectrogram spans this long


# "tiny" for tables and series is the paper's default model; other sizes are the ViT presets
MODALITY_PRESETS = {
    "table": {"tiny": {"width": 192, "depth": 3, "heads": 8}},  # Gorishniy et al. 2021
    "series": {"tiny": {"width": 128, "depth": 3, "heads": 16}},  # Nie et al. 2023
}
MODALITY_ENCODERS = {"table": "ft_transformer", "series": "patch_tst"}


def _size(cfg: EncoderConfig, modality: str) -> dict[str, int]:
    if cfg.size not in PRESETS and cfg.size != "custom":
        raise ValueError(f"unknown size {cfg.size!r}; choose from {', '.join(PRESETS)} or custom")
    p = dict(MODALITY_PRESETS.get(modality, {}).get(cfg.size) or PRESETS.get(cfg.size, PRESETS["tiny"]))
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
    check_encoder(cfg, spec)  # sizes from files and references: bounded before anything is allocated
    if spec.modality in MODALITY_ENCODERS:
        return _build_structured(cfg, spec)
    if cfg.name in MODALITY_ENCODERS.values():
        raise ValueError(f"encoder {cfg.name!r} needs table or series data, not {spec.modality}")
    in_chans = cfg.in_chans or spec.channels
    if cfg.name == "vit":
        options = dict(
            patch_size=cfg.patch_size, mlp_ratio=cfg.mlp_ratio,
            drop_path_rate=cfg.drop_path, pool=cfg.pool, sincos_pos=cfg.pos_embed == "sincos",
            class_token=cfg.class_token, reg_tokens=cfg.reg_tokens, no_embed_class=cfg.no_embed_class,
            pre_norm=cfg.pre_norm, fc_norm=cfg.fc_norm, init_values=cfg.init_values, act_layer=cfg.act,
            mlp_layer=cfg.mlp_layer, norm_eps=cfg.norm_eps, qkv_bias=cfg.qkv_bias, patch_bias=cfg.patch_bias,
            pos_antialias=cfg.pos_antialias,
        )
        if spec.modality.startswith("audio"):  # log-mel spectrograms of side image_size, one channel
            p = _size(cfg, "image")
            enc = AudioViT(spec.sample_rate or 16000, cfg.img_size or spec.image_size, cfg.audio_seconds,
                           embed_dim=p["width"], depth=p["depth"], num_heads=p["heads"], **options)
        else:
            enc = vit(cfg.size, img_size=cfg.img_size or spec.image_size, in_chans=in_chans, width=cfg.width,
                      depth=cfg.depth, heads=cfg.heads, **options)
    elif cfg.name == "mobilenetv2":
        from selfsup.encoders.mobilenet import MobileNetV2  # noqa: PLC0415

        enc = MobileNetV2(cfg.width_mult, in_chans=in_chans, bn_eps=cfg.bn_eps or 1e-5, tf_padding=cfg.tf_padding)
    else:
        from selfsup.encoders import resnet  # noqa: PLC0415  (optional until the ResNet lands)

        enc = resnet.build(cfg.name, in_chans=in_chans, cifar_stem=cfg.cifar_stem)
    enc.input_mean, enc.input_std = cfg.mean, cfg.std
    return enc


def input_stats(encoder: nn.Module) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """(mean, std) the encoder expects for images in [0, 1]; (None, None) = selfsup's fixed scale."""
    return getattr(encoder, "input_mean", None), getattr(encoder, "input_std", None)


def to_input(encoder: nn.Module, images: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor | dict:
    """Float images in [0, 1] (B, C, H, W) -> what ``encoder`` reads: normalised with its own statistics
    (selfsup's fixed scale for its own encoders), one grey channel repeated when it wants three.
    Table and series inputs (a dict of tensors, or the input of a table / series encoder) pass as they are."""
    if isinstance(images, dict) or getattr(encoder, "modality", "image") != "image":
        return images
    want = getattr(encoder, "in_chans", images.shape[1])
    if images.shape[1] == 1 and want == 3:
        images = images.expand(-1, 3, -1, -1)
    return normalize(images, *input_stats(encoder))


def pooled_and_patches(encoder: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder input (B, C, H, W) -> pooled features (B, num_features) and the patch map (B, D, h, w), one pass.

    A ViT's map is its normed patch tokens on the patch grid (prefix tokens left out); a CNN's (ResNet,
    MobileNetV2) its last feature map. The pooled features equal ``encoder(x)``.
    """
    feats = encoder.forward_features(x)
    pooled = encoder.forward_head(feats, pre_logits=True)
    if feats.ndim == 3:  # ViT tokens (B, P + N, D)
        gh, gw = encoder.grid_for(x)
        feats = feats[:, encoder.num_prefix_tokens:].transpose(1, 2).reshape(len(x), -1, gh, gw)
    return pooled, feats


def patch_width(encoder: nn.Module) -> int:
    """Channels of ``pooled_and_patches``'s patch map: a ViT's token width, a CNN's ``num_features``."""
    return int(getattr(encoder, "embed_dim", encoder.num_features))


class AtSize(nn.Module):
    """``encoder`` reading its input resized to ``size`` x ``size`` (bilinear, antialiased when shrinking).

    How a public model trained at one resolution reads images stored at another: resizing commutes
    with the per-channel normalisation, so ``to_input`` before or after gives the same input. Carries
    the encoder's ``num_features``, ``in_chans`` and input statistics, so every consumer (features,
    fine-tuning, ``to_input``) treats it as the encoder itself.
    """

    def __init__(self, encoder: nn.Module, size: int):
        super().__init__()
        self.encoder, self.size = encoder, int(size)
        self.num_features = encoder.num_features
        self.in_chans = getattr(encoder, "in_chans", None)
        self.input_mean, self.input_std = input_stats(encoder)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Input (B, C, H, W) at any size -> pooled features (B, num_features)."""
        return self.encoder(resize_to(x, self.size))


def resize_to(x: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size) (or (B, C, *size)): bilinear, antialiased when shrinking."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False,
                         antialias=x.shape[-1] > size[-1] or x.shape[-2] > size[-2]).to(x.dtype)


__all__ = [
    "AtSize", "EncoderConfig", "FTTransformer", "PatchTST", "VisionTransformer", "build_encoder", "input_stats",
    "patch_width", "pooled_and_patches", "resize_to", "to_input", "vit",
]
