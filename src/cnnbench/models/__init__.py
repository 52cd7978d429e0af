"""Model zoo of the study. Use :func:`build_model`."""

from torch import nn

from .mobilenetv2 import InvertedResidual
from .registry import (
    ArgSpec,
    argument_specs,
    build_model,
    check_model,
    check_model_args,
    model_arguments,
    model_names,
    register,
)
from .resnet import BasicBlock
from .resnext import ResNeXtBlock

__all__ = ["ArgSpec", "argument_specs", "build_model", "check_model", "check_model_args", "model_arguments",
           "model_names", "register", "residual_branch_norms", "zero_init_residual"]


def residual_branch_norms(model: nn.Module) -> list[nn.BatchNorm2d]:
    """The BatchNorm that ends each residual branch, i.e. whose output is added to the shortcut."""
    norms = []
    for m in model.modules():
        if isinstance(m, BasicBlock):
            norms.append(m.bn2)
        elif isinstance(m, ResNeXtBlock):
            norms.append(m.bn3)
        elif isinstance(m, InvertedResidual) and m.use_residual:
            norms.append(m.conv[-1])
    return norms


def zero_init_residual(model: nn.Module) -> int:
    """Start every residual block as the identity (Goyal et al. 2017, "Accurate, large minibatch SGD",
    section 5.1): zero the scale of the BatchNorm that ends its branch. Returns how many were zeroed."""
    norms = residual_branch_norms(model)
    for bn in norms:
        nn.init.zeros_(bn.weight)
    return len(norms)
