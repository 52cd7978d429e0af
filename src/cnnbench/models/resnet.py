"""One ResNet class for every ResNet-18 and ResNeXt-18 variant; variants are constructor arguments.

Layer for layer the defaults follow torchvision's ``resnet18`` (BasicBlock, 1x1 conv + BN shortcut
when the shape changes, global average pool, linear head), so with the ImageNet stem and 1000
classes the parameter count equals torchvision's: 11,689,512.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn


def conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


def projection(c_in: int, c_out: int, stride: int) -> nn.Module:
    """The 1x1 conv + BN shortcut used wherever the block changes shape."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (He et al. 2016, fig. 2 left)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = projection(c_in, c_out, stride) if stride != 1 or c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


BlockFactory = Callable[[int, int, int], nn.Module]  # (c_in, c_out, stride) -> block
STEMS = ("imagenet", "small", "deep")


class ResNet(nn.Module):
    """ResNet/ResNeXt with a configurable stem, stage list, block type and dropout.

    Args:
        num_classes: size of the linear head.
        stem: ``imagenet`` (one ``stem_kernel_size`` conv), ``small`` (one ``stem_kernel_size`` conv)
            or ``deep`` (three 3x3 convs, BN + ReLU after each).
        stem_kernel_size: kernel of the single-conv stems (default 7 for imagenet, 3 for small).
        stem_stride: stride of the (first) stem conv (default 2 for imagenet, 1 for small and deep).
        maxpool: keep the 3x3 stride-2 max-pool after the stem.
        stages: ``(blocks, channels)`` per stage; the first block of every stage but the first has stride 2.
        block: builds one block from ``(c_in, c_out, stride)``; default :class:`BasicBlock`.
        dropout: ``(p_a, p_b)``: dropout after the second-to-last and the last block of every stage
            (the ResNeXt lab report's placement); empty = no dropout layers.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        stem: str = "imagenet",
        stem_kernel_size: int | None = None,
        stem_stride: int | None = None,
        maxpool: bool = True,
        stages: Sequence[tuple[int, int]] = ((2, 64), (2, 128), (2, 256), (2, 512)),
        block: BlockFactory = BasicBlock,
        dropout: Sequence[float] = (),
    ) -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(STEMS)}; got {stem!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; got {num_classes}")
        if not stages or any(n < 1 or c < 1 for n, c in stages):
            raise ValueError(f"stages must be a non-empty list of (blocks >= 1, channels >= 1); got {list(stages)}")
        if dropout and (len(dropout) != 2 or not all(0 <= p < 1 for p in dropout)):
            raise ValueError(f"dropout must be two probabilities in [0, 1) or empty; got {list(dropout)}")
        width = stages[0][1]
        if stem == "deep":
            # Three 3x3 convs replace the 7x7 (ResNet-C of He et al. 2019); stride on the first only.
            s = 1 if stem_stride is None else stem_stride
            half = max(1, width // 2)
            layers = conv_bn_relu(3, half, 3, s) + conv_bn_relu(half, half, 3, 1) + conv_bn_relu(half, width, 3, 1)
        else:
            k = stem_kernel_size or (7 if stem == "imagenet" else 3)
            # CIFAR: the small stem keeps stride 1 so 32x32 inputs are not shrunk at once.
            s = stem_stride if stem_stride is not None else (2 if stem == "imagenet" else 1)
            layers = conv_bn_relu(3, width, k, s)
        if maxpool:
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        self.stem = nn.Sequential(*layers)

        body = []
        c_in = width
        for i, (n, c_out) in enumerate(stages):
            layers = []
            for j in range(n):
                layers.append(block(c_in if j == 0 else c_out, c_out, 2 if (j == 0 and i > 0) else 1))
                if dropout and j >= n - 2:
                    # Lab report (ResNeXt): a dropout layer after each of the last two blocks of a stage.
                    layers.append(nn.Dropout(dropout[0] if j == n - 2 else dropout[1]))
            body.append(nn.Sequential(*layers))
            c_in = c_out
        self.stages = nn.Sequential(*body)
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
