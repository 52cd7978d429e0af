"""User model builders that tests name in params as ``tests.custom_models:<function>``."""

from __future__ import annotations

from torch import nn


def tiny_cnn(num_classes: int, width: int = 8, dropout: float = 0.0) -> nn.Module:
    """A two-conv network: the smallest thing a user would plug in."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, stride=2), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(width, num_classes),
    )


def open_builder(num_classes, **kwargs) -> nn.Module:
    """Takes any keyword (and ignores it)."""
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))


def raises(num_classes: int, depth: int = 3) -> nn.Module:
    raise ValueError(f"depth {depth} is not supported")


def not_a_module(num_classes: int) -> dict:
    return {"layers": num_classes}


NOT_CALLABLE = 3


def keyword_only(*, num_classes: int = 10) -> nn.Module:
    """Cannot take the number of classes positionally."""
    return nn.Linear(3, num_classes)
