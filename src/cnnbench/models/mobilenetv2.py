"""MobileNetV2 (Sandler et al. 2018), layer for layer as torchvision's, plus a CIFAR setting."""

from __future__ import annotations

import torch
from torch import nn

# t (expansion), c (channels), n (blocks), s (stride of the first block)
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without dropping more than 10% (as in the paper's code)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def conv_bn_relu6(c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6) -> 1x1 linear projection; residual when shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(c_in * expand_ratio))
        self.use_residual = stride == 1 and c_in == c_out
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_relu6(c_in, hidden, 1, 1))
        layers += [
            conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, c_out, 1, 1, 0, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 with a width multiplier.

    Args:
        num_classes: size of the linear head.
        width_mult: scales every layer's channels (rounded to multiples of 8).
        cifar: for 32x32 inputs: the first conv and the first strided block (24 channels) use
            stride 1, so the network downsamples 8x instead of 32x.
        dropout: dropout before the classifier (0.2 as in torchvision).
    """

    def __init__(self, num_classes: int, *, width_mult: float = 1.0, cifar: bool = False, dropout: float = 0.2) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; got {num_classes}")
        if width_mult <= 0:
            raise ValueError(f"width_mult must be > 0; got {width_mult}")
        c_in = make_divisible(32 * width_mult)
        self.last_channels = make_divisible(1280 * max(1.0, width_mult))
        # CIFAR: stride 1 in the first conv (32x32 images would otherwise be 16x16 at once).
        features: list[nn.Module] = [conv_bn_relu6(3, c_in, 3, 1 if cifar else 2)]
        first_strided = True
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            c_out = make_divisible(c * width_mult)
            for i in range(n):
                stride = s if i == 0 else 1
                if cifar and stride == 2 and first_strided:
                    stride = 1  # CIFAR: the first strided block (24 channels) keeps the resolution
                    first_strided = False
                features.append(InvertedResidual(c_in, c_out, stride, t))
                c_in = c_out
        features.append(conv_bn_relu6(c_in, self.last_channels, 1, 1))
        self.features = nn.Sequential(*features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channels, num_classes))
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
