"""Model zoo of the study. Use :func:`build_model`."""

import logging
import sys

from torch import nn

from .mobilenetv2 import InvertedResidual
from .registry import (
    ArgSpec,
    accepted_args,
    argument_specs,
    build_model,
    check_model,
    check_model_args,
    check_profile_model_args,
    model_arguments,
    model_names,
    register,
)
from .resnet import BasicBlock
from .resnext import ResNeXtBlock

log = logging.getLogger("cnnbench.models")

__all__ = ["ArgSpec", "accepted_args", "argument_specs", "build_model", "check_model", "check_model_args",
           "check_profile_model_args", "model_arguments", "model_names", "register", "residual_branch_norms",
           "zero_init_residual"]


def _torchvision_blocks() -> tuple[tuple[type, str], ...]:
    """torchvision's ResNet blocks and the norm ending their branch; none when that module was never
    imported (then no model holds them)."""
    resnet = sys.modules.get("torchvision.models.resnet")
    return ((resnet.BasicBlock, "bn2"), (resnet.Bottleneck, "bn3")) if resnet else ()


def residual_branch_norms(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The BatchNorm that ends each residual branch, i.e. whose output is added to the shortcut:
    of the study's blocks and of torchvision's ResNet blocks."""
    norms = []
    others = _torchvision_blocks()
    for m in model.modules():
        if isinstance(m, BasicBlock):
            norms.append(m.bn2)
        elif isinstance(m, ResNeXtBlock):
            norms.append(m.bn3)
        elif isinstance(m, InvertedResidual) and m.use_residual:
            norms.append(m.conv[-1])
        else:
            norms += [getattr(m, bn) for block, bn in others if isinstance(m, block)]
    return norms


def zero_init_residual(model: nn.Module) -> int:
    """Start every residual block as the identity (Goyal et al. 2017, "Accurate, large minibatch SGD",
    section 5.1): zero the scale of the BatchNorm that ends its branch. Returns how many were zeroed.

    Covers the study's blocks, torchvision's ResNet blocks, and timm's blocks that have a
    ``zero_init_last()`` method (timm's own convention: ResNet, RegNet, ByobNet, ...). Blocks of any
    other model are left alone, and a model without any known block is logged."""
    norms = residual_branch_norms(model)
    for bn in norms:
        nn.init.zeros_(bn.weight)
    timm_blocks = [m for m in model.modules() if m is not model and callable(getattr(m, "zero_init_last", None))]
    for block in timm_blocks:
        block.zero_init_last()
    if not norms and not timm_blocks:
        log.warning("zero_init_residual: %s has no residual block cnnbench knows; nothing was zeroed",
                    type(model).__name__)
    return len(norms) + len(timm_blocks)
