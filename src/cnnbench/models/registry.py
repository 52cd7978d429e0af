"""Named model builders: ``build_model(name, num_classes, **overrides)``."""

from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from .resnet import ResNet

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def build_model(name: str, num_classes: int, **overrides) -> nn.Module:
    """Build a registered model; ``overrides`` are keyword arguments of its builder."""
    try:
        builder = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(model_names())}") from None
    allowed = [p for p in inspect.signature(builder).parameters if p != "num_classes"]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(
            f"model {name!r} does not take {', '.join(unknown)}; its arguments: {', '.join(allowed)}"
        )
    return builder(num_classes=num_classes, **overrides)


@register("resnet18")
def resnet18(num_classes: int, width: int = 64, stem_kernel_size: int = 7) -> nn.Module:
    """ResNet-18 with the ImageNet stem: 7x7 conv stride 2, BN, ReLU, 3x3 max-pool stride 2."""
    return ResNet(num_classes, stem="imagenet", stem_kernel_size=stem_kernel_size, maxpool=True, width=width)


@register("resnet18_small_stem")
def resnet18_small_stem(num_classes: int, width: int = 64, stem_kernel_size: int = 3) -> nn.Module:
    """ResNet-18 with a 3x3 stride-1 stem conv; the max-pool is kept.

    # Lab report: the report wrote kernel size 2; pass stem_kernel_size=2 to reproduce it literally.
    """
    return ResNet(num_classes, stem="small", stem_kernel_size=stem_kernel_size, maxpool=True, width=width)
