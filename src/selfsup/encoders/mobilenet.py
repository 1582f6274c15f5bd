"""MobileNetV2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks").

Parameter names are torchvision's ``mobilenet_v2(width_mult=...)``: ``features.0.{0,1}`` (stem
conv + BN), ``features.{1..17}.conv.*`` (inverted residual blocks), ``features.18.{0,1}`` (the
final 1x1 conv to 1280 * max(1, width) channels), ``classifier.1`` when ``num_classes``; so a
torchvision state dict loads unchanged. Channel counts follow torchvision's rounding to multiples
of 8, which gives the same shapes as Keras Applications for the published widths.

Two settings reproduce networks trained elsewhere (Keras / TensorFlow):
``bn_eps`` (Keras uses 1e-3, torchvision 1e-5) and ``tf_padding``: TensorFlow's "same" padding,
which for a stride-2 convolution on an even input pads only the bottom and right (PyTorch's
symmetric padding shifts every stride-2 feature map by one pixel and the outputs drift apart).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from selfsup.encoders.levels import run_levels

# (expansion t, channels c, repeats n, first stride s), the paper's Table 2
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor``, never more than 10% down (torchvision / TF rule)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow's "same" padding: total pad max((ceil(H/s) - 1) s + k - H, 0),
    split with the extra pixel at the bottom/right. Same parameters as ``nn.Conv2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride, strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def conv_bn_act(cin: int, cout: int, k: int, stride: int, groups: int, eps: float, tf: bool, act: bool = True):
    """conv (no bias) + BN [+ ReLU6] as ``nn.Sequential`` (names ``.0``, ``.1``), torchvision's Conv2dNormActivation."""
    conv = (Conv2dSame if tf else nn.Conv2d)(cin, cout, k, stride, 0 if tf else (k - 1) // 2, groups=groups, bias=False)
    layers = [conv, nn.BatchNorm2d(cout, eps=eps)]
    return nn.Sequential(*layers, nn.ReLU6(inplace=True)) if act else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """[1x1 expand + BN + ReLU6] -> 3x3 depthwise + BN + ReLU6 -> 1x1 project + BN (linear), residual
    when the shape is kept. Names: ``conv.0`` ... as torchvision."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, eps: float, tf: bool):
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_act(cin, hidden, 1, 1, 1, eps, tf))
        layers += [
            conv_bn_act(hidden, hidden, 3, stride, hidden, eps, tf),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout, eps=eps),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 trunk; ``forward(x)`` gives globally average-pooled features (B, num_features).

    ``width_mult`` scales every layer (0.35 ... 1.4); ``bn_eps`` and ``tf_padding`` as in the module
    docstring. ``num_classes=0`` (default) leaves no classifier.
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        in_chans: int = 3,
        num_classes: int = 0,
        bn_eps: float = 1e-5,
        tf_padding: bool = False,
    ):
        super().__init__()
        self.width_mult, self.in_chans, self.bn_eps, self.tf_padding = width_mult, in_chans, bn_eps, tf_padding
        cin = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [conv_bn_act(in_chans, cin, 3, 2, 1, bn_eps, tf_padding)]
        for t, c, n, s in SETTINGS:
            cout = make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t, bn_eps, tf_padding))
                cin = cout
        features.append(conv_bn_act(cin, last, 1, 1, 1, bn_eps, tf_padding))
        self.features = nn.Sequential(*features)
        strides = [2]  # cumulative stride after each of features
        for _, _, n, s in SETTINGS:
            for i in range(n):
                strides.append(strides[-1] * (s if i == 0 else 1))
        strides.append(strides[-1])
        ends = [i for i in range(len(strides)) if (i + 1 == len(strides) or strides[i + 1] != strides[i])
                and strides[i] >= 4]
        self.level_ends = ends  # features indices where the stride-4, 8, 16, 32 stages end
        self.num_levels = len(ends)
        self.num_features = last
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes)) if num_classes else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> last feature map (B, num_features, H / 32, W / 32)."""
        return self.features(x)

    def forward_intermediates(self, x: torch.Tensor, indices=None, *, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """Feature maps at the ends of the stride-4, 8, 16 and 32 stages (``encoders.levels.run_levels``)."""
        starts = [0, *(e + 1 for e in self.level_ends[:-1])]
        levels = [self.features[a : b + 1] for a, b in zip(starts, self.level_ends, strict=True)]
        return run_levels(levels, x, indices, output_fmt=output_fmt, intermediates_only=intermediates_only)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def width_from_state_dict(state: dict[str, torch.Tensor]) -> float:
    """The ``width_mult`` of a torchvision-named MobileNetV2 state dict: block 17 has 320 * width channels."""
    keys = [k for k in state if k.startswith("features.17.conv.") and k.endswith(".weight") and state[k].ndim == 4]
    if not keys:
        raise ValueError("not a MobileNetV2 state dict in torchvision names (no features.17.conv.*)")
    cout = state[sorted(keys)[-1]].shape[0]  # the last conv of the block: the projection
    return round(cout / 320, 4)


__all__ = ["MobileNetV2", "InvertedResidual", "Conv2dSame", "make_divisible", "width_from_state_dict"]
