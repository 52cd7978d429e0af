"""The ResNeXt block of the lab report (the ResNeXt variant of d2l.ai's ResNet chapter)."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from .resnet import projection


class ResNeXtBlock(nn.Module):
    """1x1 conv to ``bot_mul * c_out``, 3x3 grouped conv (stride here), 1x1 conv back; BN after each.

    ``groups = bottleneck_channels // group_width`` (group width 32 in the report). Where that count
    does not divide the bottleneck channels (odd widths from ``width_mult`` or ``bot_mul``), the
    largest count below it that does is used, so groups are never narrower than ``group_width``
    (unless the bottleneck itself is), and never fewer than one. A 1x1 conv + BN shortcut is used
    where the shape changes: the first block of every stage but the first.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, *, bot_mul: float = 1.0, group_width: int = 32) -> None:
        super().__init__()
        bot = max(1, int(round(c_out * bot_mul)))
        # Narrow smoke-test widths would give 0 groups; never fewer than one. Every width of the
        # study divides evenly; other widths (e.g. 100 channels: 3 groups of 32 do not fit) take
        # the largest group count that divides them instead of failing.
        groups = max(1, bot // group_width)
        while bot % groups:
            groups -= 1
        self.groups = groups
        self.conv1 = nn.Conv2d(c_in, bot, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(bot)
        self.conv2 = nn.Conv2d(bot, bot, 3, stride=stride, padding=1, groups=self.groups, bias=False)
        self.bn2 = nn.BatchNorm2d(bot)
        self.conv3 = nn.Conv2d(bot, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = projection(c_in, c_out, stride) if stride != 1 or c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def resnext_block(bot_mul: float, group_width: int):
    return partial(ResNeXtBlock, bot_mul=bot_mul, group_width=group_width)
