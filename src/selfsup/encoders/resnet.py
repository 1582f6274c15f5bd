"""ResNet-18/50 (He et al. 2016, "Deep Residual Learning for Image Recognition") in plain torch.

Parameter names are torchvision's and timm's (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer1.0.downsample.0``, ..., ``fc``), so state dicts move between them unchanged. ResNet-50
puts the stride in the 3x3 convolution (the "v1.5" variant both libraries ship).

``cifar_stem`` replaces the 7x7 stride-2 convolution and the max-pool by one 3x3 stride-1
convolution, the usual stem for 32-pixel images (SimCLR's CIFAR-10 recipe); the names stay.
"""

from __future__ import annotations

import torch
from torch import nn

from selfsup.encoders.levels import run_levels


class BasicBlock(nn.Module):
    """Two 3x3 convolutions (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(inplanes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4 (ResNet-50/101/152)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(inplanes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (self.downsample(x) if self.downsample is not None else x))


def _shortcut(inplanes: int, outplanes: int, stride: int) -> nn.Sequential | None:
    """Projection shortcut (1x1 conv + BN, names ``downsample.0``/``downsample.1``) where shapes change."""
    if stride == 1 and inplanes == outplanes:
        return None
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride, bias=False), nn.BatchNorm2d(outplanes))


class ResNet(nn.Module):
    """ResNet trunk; ``forward(x)`` gives globally average-pooled features (B, num_features).

    ``num_classes=0`` (the default) leaves ``fc`` an identity, as timm does for feature extraction.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        in_chans: int = 3,
        num_classes: int = 0,
        cifar_stem: bool = False,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        self.in_chans, self.cifar_stem = in_chans, cifar_stem
        if cifar_stem:
            self.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        inplanes = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(block(inplanes, planes, stride=2 if (i > 0 and j == 0) else 1))
                inplanes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = inplanes
        self.fc = nn.Linear(inplanes, num_classes) if num_classes else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:  # each residual branch starts as zero (Goyal et al. 2017)
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> last feature map (B, num_features, H / 32, W / 32) (H / 8 with the CIFAR stem)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    num_levels = 4  # layer1..layer4 (``forward_intermediates``)

    def forward_intermediates(self, x: torch.Tensor, indices=None, *, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """Feature maps after layer1..layer4 (``encoders.levels.run_levels``); the stem runs before layer1."""
        stem = nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool, self.layer1)
        levels = [stem, self.layer2, self.layer3, self.layer4]
        return run_levels(levels, x, indices, output_fmt=output_fmt, intermediates_only=intermediates_only)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.avgpool(x).flatten(1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


CONFIGS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


def build(name: str, in_chans: int = 3, cifar_stem: bool = False, num_classes: int = 0, **kwargs) -> ResNet:
    """ResNet by name: resnet18 (512 features), resnet34 (512) or resnet50 (2048)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown ResNet {name!r}; choose from {', '.join(CONFIGS)}")
    block, layers = CONFIGS[name]
    return ResNet(block, layers, in_chans=in_chans, num_classes=num_classes, cifar_stem=cifar_stem, **kwargs)


__all__ = ["ResNet", "BasicBlock", "Bottleneck", "build", "CONFIGS"]
