"""One ResNet class for every ResNet-18 variant of the study; variants are constructor arguments.

Layer for layer this follows torchvision's ``resnet18`` (BasicBlock, 1x1 conv + BN shortcut when
the shape changes, global average pool, linear head), so with the ImageNet stem and 1000 classes
the parameter count equals torchvision's: 11,689,512.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (He et al. 2016, fig. 2 left)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


STEMS = ("imagenet", "small", "deep")


class ResNet(nn.Module):
    """ResNet with a configurable stem and stage list.

    Args:
        num_classes: size of the linear head.
        stem: ``imagenet`` (one ``stem_kernel_size`` conv, stride 2), ``small`` (one
            ``stem_kernel_size`` conv, stride 1) or ``deep`` (three 3x3 convs, stride 2 on the first).
        stem_kernel_size: kernel of the single-conv stems (7 for imagenet, 3 for small).
        maxpool: keep the 3x3 stride-2 max-pool after the stem.
        blocks: blocks per stage; its length is the number of stages.
        width: channels of the first stage; stage i has ``width * 2**i`` channels.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        stem: str = "imagenet",
        stem_kernel_size: int | None = None,
        maxpool: bool = True,
        blocks: Sequence[int] = (2, 2, 2, 2),
        width: int = 64,
    ) -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(STEMS)}; got {stem!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; got {num_classes}")
        if width < 1:
            raise ValueError(f"width must be >= 1; got {width}")
        if not blocks or any(b < 1 for b in blocks):
            raise ValueError(f"blocks must be a non-empty list of positive counts; got {list(blocks)}")
        if stem == "deep":
            # Three 3x3 convs replace the 7x7 (He et al. 2019 "bag of tricks", ResNet-C).
            layers = conv_bn_relu(3, width // 2 or 1, 3, 2)
            layers += conv_bn_relu(width // 2 or 1, width // 2 or 1, 3, 1)
            layers += conv_bn_relu(width // 2 or 1, width, 3, 1)
        else:
            k = stem_kernel_size or (7 if stem == "imagenet" else 3)
            # CIFAR: the small stem keeps stride 1 so 32x32 inputs are not shrunk at once.
            layers = conv_bn_relu(3, width, k, 2 if stem == "imagenet" else 1)
        if maxpool:
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        self.stem = nn.Sequential(*layers)

        stages = []
        c_in = width
        for i, n in enumerate(blocks):
            c_out = width * 2**i
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(c_in, c_out, stride)] + [BasicBlock(c_out, c_out) for _ in range(n - 1)]
            stages.append(nn.Sequential(*stage))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))
