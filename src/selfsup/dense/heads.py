"""Dense heads on any image encoder of the project: a feature pyramid, a CenterNet detector, segmenters.

``Pyramid`` splits the work into ``backbone`` (the encoder's own levels, ``forward_intermediates``:
a ViT's last block, a CNN's stride-8/16/32 stages) and ``neck`` (trainable: for a ViT the simple feature
pyramid of ViTDet (Li et al. 2022), deconvolution / identity / max-pool of the one map to strides p/2, p,
2p; then an FPN-style top-down sum into the finest level). A frozen encoder's backbone output can be
computed once and cached; only the neck and head then train.

``CenterNet`` (Zhou et al. 2019, "Objects as Points"): per-class centre heat maps, box size (log, in
output pixels) and sub-pixel offset at the finest level. ``Segmenter``: "linear" = BatchNorm + 1x1
convolution on the deepest map, upsampled (DINOv2's linear protocol), "fpn" = a light decoder on the
neck's fused map.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.encoders import to_input


def is_vit(encoder: nn.Module) -> bool:
    return hasattr(encoder, "blocks") and hasattr(encoder, "patch_size")


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, c), c)


class Pyramid(nn.Module):
    """encoder -> a fused feature map (B, width, H / s, W / s), ``s = stride`` (8 for a CNN, p / 2 for a ViT;
    2 for a ResNet with the CIFAR stem)."""

    def __init__(self, encoder: nn.Module, width: int = 96):
        super().__init__()
        self.encoder, self.width = encoder, width
        self.vit = is_vit(encoder)
        if self.vit:
            D, p = encoder.embed_dim, int(encoder.patch_size)
            self.up = nn.Sequential(nn.ConvTranspose2d(D, D // 2, 2, 2), _gn(D // 2), nn.GELU())
            chans, self.strides = [D // 2, D, D], [p / 2, p, 2 * p]
        else:
            was = encoder.training
            encoder.eval()
            with torch.no_grad():
                probe = encoder.forward_intermediates(torch.zeros(1, getattr(encoder, "in_chans", 3) or 3, 64, 64),
                                                     [1, 2, 3], intermediates_only=True)
            encoder.train(was)
            chans, self.strides = [f.shape[1] for f in probe], [64 / f.shape[-1] for f in probe]  # 8, 16, 32
            # (a ResNet with the CIFAR stem: 2, 4, 8)
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in chans)
        self.smooth = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), _gn(width), nn.ReLU())

    @property
    def stride(self) -> float:
        return self.strides[0]

    def backbone(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Float images in [0, 1] (B, C, H, W) -> the encoder's maps: [last block (B, D, H/p, W/p)] for a
        ViT, the stride-8/16/32 stages for a CNN."""
        x = to_input(self.encoder, images)
        if self.vit:
            return self.encoder.forward_intermediates(x, [-1], norm=True, intermediates_only=True)
        return self.encoder.forward_intermediates(x, [1, 2, 3], intermediates_only=True)

    def levels(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """The backbone's maps as a pyramid (finest first)."""
        if self.vit:
            f = feats[0]
            return [self.up(f), f, F.max_pool2d(f, 2, ceil_mode=True)]
        return list(feats)

    def neck(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Backbone maps -> the fused finest map (B, width, H / stride, W / stride), top-down sums."""
        lv = self.levels(feats)
        y = self.lateral[-1](lv[-1])
        for lat, f in zip(reversed(self.lateral[:-1]), reversed(lv[:-1]), strict=True):
            y = lat(f) + F.interpolate(y, size=f.shape[-2:], mode="nearest")
        return self.smooth(y)

    def deepest_width(self) -> int:
        return self.lateral[-1].in_channels


def _branch(width: int, out: int, bias: float = 0.0) -> nn.Sequential:
    last = nn.Conv2d(width, out, 1)
    nn.init.constant_(last.bias, bias)
    return nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), last)


class CenterNet(nn.Module):
    """``forward(images)`` -> (heat logits (B, K, h, w), log size (B, 2, h, w), offset (B, 2, h, w)).

    Sizes are log(box width, height in output pixels); offsets the centre's sub-pixel position in [0, 1).
    """

    def __init__(self, encoder: nn.Module, num_classes: int, width: int = 96):
        super().__init__()
        self.pyramid = Pyramid(encoder, width)
        self.num_classes = num_classes
        self.heat = _branch(width, num_classes, bias=-math.log((1 - 0.1) / 0.1))  # prior 0.1 as CenterNet
        self.size = _branch(width, 2)
        self.offset = _branch(width, 2)

    @property
    def stride(self) -> float:
        return self.pyramid.stride

    def head(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = self.pyramid.neck(feats)
        return self.heat(y), self.size(y), self.offset(y).sigmoid()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.head(self.pyramid.backbone(images))


class Segmenter(nn.Module):
    """``forward(images)`` -> class logits (B, K, H, W) at the input size.

    ``kind`` "linear": BatchNorm + 1x1 conv on the deepest map (a ViT's patch tokens, a CNN's stride-32
    stage); "fpn": 3x3 conv + GroupNorm + ReLU + 1x1 conv on the pyramid's fused map."""

    def __init__(self, encoder: nn.Module, num_classes: int, kind: str = "fpn", width: int = 96):
        super().__init__()
        if kind not in ("linear", "fpn"):
            raise ValueError(f"segmentation head must be linear or fpn, not {kind!r}")
        self.kind, self.num_classes = kind, num_classes
        self.pyramid = Pyramid(encoder, width)
        if kind == "linear":
            d = self.pyramid.deepest_width() if not self.pyramid.vit else encoder.embed_dim
            self.decode = nn.Sequential(nn.BatchNorm2d(d), nn.Conv2d(d, num_classes, 1))
        else:
            self.decode = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), _gn(width), nn.ReLU(),
                                        nn.Conv2d(width, num_classes, 1))

    def head(self, feats: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        y = feats[-1] if self.kind == "linear" else self.pyramid.neck(feats)
        return F.interpolate(self.decode(y), size=size, mode="bilinear", align_corners=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.pyramid.backbone(images), tuple(images.shape[-2:]))


__all__ = ["CenterNet", "Pyramid", "Segmenter", "is_vit"]
