"""Named model builders: ``build_model(name, num_classes, **overrides)``.

Every builder takes ``width_mult`` (scales all channels; the smoke profile uses it to make tiny
networks) plus the arguments that distinguish its variants. Each argument describes itself in the
builder's signature (timm's ``register_model`` plus a typed annotation): its type, the values that
build a working network, its default and one line of help, e.g.
``width_mult: WidthMult = 1.0`` with ``WidthMult = Annotated[float, ArgSpec("...", gt=0, le=4)]``.
That description is the only list of model arguments: the params check (:func:`check_model_args`),
``cnnbench models --arguments`` and the tests read it.

Names of the form ``timm/<name>``, ``torchvision/<name>`` and ``package.module:function`` are
built by :mod:`cnnbench.models.external` (randomly initialised); every function here takes them too.
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import typing
from dataclasses import dataclass, replace
from typing import Annotated, Any, Callable, Sequence

from torch import nn

from ..config import ConfigError
from . import external
from .mobilenetv2 import MobileNetV2
from .resnet import ResNet
from .resnext import resnext_block


@dataclass(frozen=True)
class ArgSpec:
    """One keyword argument of a model builder and the values it accepts.

    Written as the metadata of the builder's annotation with the help and the bounds;
    :func:`register` fills in ``name``, ``kind``, ``length`` and ``default`` from the signature.
    Bounds apply to the value, or to every item of a list (``length`` set).
    """

    help: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    name: str = ""
    kind: type | None = None  # bool, int or float: of the value, or of each item when ``length`` is set
    length: int | None = None  # the value is a list of exactly this many items
    default: Any = None

    def bounds(self) -> str:
        """``> 0 and <= 4``; empty when unbounded."""
        parts = [f"{sym} {bound}" for sym, bound in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
                 if bound is not None]
        return " and ".join(parts)

    def allowed(self) -> str:
        """What the argument accepts, in words: ``a number > 0 and <= 4``."""
        noun = {bool: "true or false", int: "an integer", float: "a number"}[self.kind]
        if self.length is not None:
            plural = {bool: "booleans", int: "integers", float: "numbers"}[self.kind]
            each = f", each {self.bounds()}" if self.bounds() else ""
            return f"a list of {self.length} {plural}{each}"
        return f"{noun} {self.bounds()}".rstrip()

    def _item_problem(self, value: Any) -> str | None:
        """Why one scalar is refused: 'type' or 'range'; None when accepted."""
        if self.kind is bool:
            return None if isinstance(value, bool) else "type"
        if isinstance(value, bool) or not isinstance(value, (int, float) if self.kind is float else int):
            return "type"
        if not math.isfinite(value):
            return "range"
        ok = ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
              and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))
        return None if ok else "range"

    def problem(self, value: Any) -> str | None:
        """Why ``value`` would not build a working network (one phrase); None when it would."""
        if self.length is None:
            shape_ok, items = True, [value]
        else:
            shape_ok = isinstance(value, (list, tuple)) and len(value) == self.length
            items = list(value) if shape_ok else []
        whys = [self._item_problem(v) for v in items]
        if not shape_ok or "type" in whys:
            return f"expected {self.allowed()}, got {value!r} ({type(value).__name__})"
        if "range" in whys:
            return f"{value!r} is out of range; allowed: {self.allowed() if self.length else self.bounds()}"
        return None

    def describe(self) -> str:
        """The help with the default: ``probability of the dropout before the classifier (default 0.2)``."""
        return f"{self.help} (default {json.dumps(self.default)})"


# The arguments of the study's builders. A builder parameter's annotation says what it accepts;
# the bounds are the values for which every builder that takes it builds and runs
# (tests/test_models.py builds each registered model at the edges of each range).
WidthMult = Annotated[float, ArgSpec("scales every layer's channels (the quick and smoke profiles shrink the nets)",
                                     gt=0, le=4)]
StemKernelSize = Annotated[int, ArgSpec("kernel size of the single stem conv", ge=1, le=11)]
StemStride = Annotated[int, ArgSpec("stride of the (first) stem conv", ge=1, le=4)]
DropoutPair = Annotated[tuple[float, float], ArgSpec(
    "probabilities [p_a, p_b] of the dropout after the second-to-last and the last block of every stage", ge=0, lt=1)]
BotMul = Annotated[float, ArgSpec("bottleneck channels of a ResNeXt block per output channel", gt=0, le=8)]
GroupWidth = Annotated[int, ArgSpec("channels per group of the 3x3 grouped conv", ge=1, le=4096)]
ClassifierDropout = Annotated[float, ArgSpec("probability of the dropout before the classifier", ge=0, lt=1)]
Cifar = Annotated[bool, ArgSpec("for 32x32 inputs: stride 1 in the first conv and the first strided block")]


@dataclass(frozen=True)
class ModelEntry:
    builder: Callable[..., nn.Module]
    args: dict[str, ArgSpec]  # in signature order


_REGISTRY: dict[str, ModelEntry] = {}

RESNET18_STAGES = ((2, 64), (2, 128), (2, 256), (2, 512))


def _argument_specs(name: str, fn: Callable[..., nn.Module]) -> dict[str, ArgSpec]:
    """The builder's own description of its arguments, read from its signature and annotations."""
    hints = typing.get_type_hints(fn, include_extras=True)
    specs = {}
    for p in inspect.signature(fn).parameters.values():
        if p.name == "num_classes":
            continue
        hint = hints.get(p.name)
        meta = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, ArgSpec)]
        if not meta or p.default is inspect.Parameter.empty:
            raise TypeError(f"model {name!r}: argument {p.name!r} needs a default and an "
                            f"Annotated[<type>, ArgSpec(...)] annotation")
        base = typing.get_args(hint)[0]
        items = typing.get_args(base) if typing.get_origin(base) is tuple else ()
        if items and len(set(items)) == 1 and items[0] in (bool, int, float):
            spec = replace(meta[0], name=p.name, kind=items[0], length=len(items), default=p.default)
        elif base in (bool, int, float):
            spec = replace(meta[0], name=p.name, kind=base, default=p.default)
        else:
            raise TypeError(f"model {name!r}: argument {p.name!r} has type {base}; "
                            "allowed: bool, int, float, or a fixed-length tuple[T, T] of one of them")
        if spec.problem(p.default) is not None:
            raise TypeError(f"model {name!r}: the default of {p.name!r}: {spec.problem(p.default)}")
        specs[p.name] = spec
    return specs


def register(name: str):
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(fn, _argument_specs(name, fn))
        return fn

    return deco


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def _entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(model_names())}")
    return _REGISTRY[name]


def argument_specs(name: str) -> dict[str, ArgSpec]:
    """Every keyword argument model ``name`` takes (besides num_classes): name -> :class:`ArgSpec`."""
    return dict(_entry(name).args)


def model_arguments(name: str) -> list[str]:
    """The keyword arguments model ``name`` accepts (besides num_classes)."""
    return list(_entry(name).args)


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3)
    return f"; did you mean {' or '.join(close)}?" if close else ""


EXTERNAL_FORMS = "timm/<name>, torchvision/<name>, package.module:function"


def check_model(name: Any, where: str) -> None:
    """Refuse a model name that is neither registered nor a usable timm, torchvision or user
    builder. ``where`` names the key (``variants.cifar10.x.model``)."""
    if external.is_external(name):
        external.check_name(name, where)
    elif not isinstance(name, str) or name not in _REGISTRY:
        hint = _did_you_mean(name, model_names()) if isinstance(name, str) else ""
        raise ConfigError(f"{where}: {name!r} is not allowed; allowed values: {', '.join(model_names())}, "
                          f"or {EXTERNAL_FORMS}{hint}")


def check_model_args(model: str, args: Any, where: str) -> None:
    """Refuse model arguments that model ``model`` does not take or that would not build a network.

    ``where`` names the ``model_args`` block (``variants.cifar10.x.model_args``,
    ``profiles.quick.model_args``); the :class:`~cnnbench.config.ConfigError` names the key in it
    and what the builder allows.
    """
    if model not in _REGISTRY and not external.is_external(model):
        raise ConfigError(f"{where}: cannot check the arguments of unknown model {model!r}; "
                          f"registered models: {', '.join(model_names())}")
    if not isinstance(args, dict):
        raise ConfigError(f"{where}: expected a mapping of argument: value, got {args!r} ({type(args).__name__})")
    if external.is_external(model):
        external.check_args(model, args, where)  # names only: the library checks the values when it builds
        return
    specs = _REGISTRY[model].args
    for arg, value in args.items():
        if arg not in specs:
            raise ConfigError(f"{where}.{arg}: model {model!r} does not take {arg!r}; "
                              f"allowed keys: {', '.join(specs)}{_did_you_mean(str(arg), list(specs))}")
        problem = specs[arg].problem(value)
        if problem:
            raise ConfigError(f"{where}.{arg}: {problem}; model {model!r}: {arg} = {specs[arg].describe()}")


def accepted_args(model: str, args: dict) -> dict:
    """The part of ``args`` that model ``model``'s builder takes: how a profile's ``model_args``
    (``width_mult: 0.25``) apply to every variant whose builder has that argument and skip the others."""
    if external.is_external(model):  # names it declares: a builder's **kwargs is no promise to use width_mult
        declared = external.accepted_names(model).names
        return {k: v for k, v in args.items() if k in declared}
    return {k: v for k, v in args.items() if k in _entry(model).args}


def check_profile_model_args(models: Sequence[str], args: Any, where: str) -> None:
    """Check a profile's ``model_args`` against every variant's model (``models``) that takes them;
    an argument that none of them takes is a typo."""
    if not isinstance(args, dict):
        raise ConfigError(f"{where}: expected a mapping of argument: value, got {args!r} ({type(args).__name__})")
    taken: set[str] = set()
    for model in dict.fromkeys(models):
        applied = accepted_args(model, args)
        check_model_args(model, applied, where)
        taken.update(applied)
    for arg in args:
        if arg not in taken:
            known = sorted({a for m in models for a in (external.accepted_names(m).names if external.is_external(m)
                                                         else _entry(m).args)})
            raise ConfigError(f"{where}.{arg}: no variant's model takes {arg!r}{_did_you_mean(str(arg), known)}; "
                              f"the arguments of the variants' models: {', '.join(known)}")


def build_model(name: str, num_classes: int, **overrides) -> nn.Module:
    """Build a registered model, or a ``timm/``, ``torchvision/`` or ``module:function`` one (random
    weights); ``overrides`` are keyword arguments of its builder."""
    if external.is_external(name):
        return external.build(name, num_classes, overrides)
    specs = _entry(name).args
    unknown = sorted(set(overrides) - set(specs))
    if unknown:
        raise ValueError(f"model {name!r} does not take {', '.join(unknown)}; its arguments: {', '.join(specs)}")
    for arg, value in overrides.items():
        problem = specs[arg].problem(value)
        if problem:
            raise ValueError(f"model {name!r}, argument {arg}: {problem}")
    return _REGISTRY[name].builder(num_classes=num_classes, **overrides)


def scaled(stages: Sequence[tuple[int, int]], width_mult: float) -> list[tuple[int, int]]:
    if width_mult <= 0:
        raise ValueError(f"width_mult must be > 0; got {width_mult}")
    return [(n, max(1, int(round(c * width_mult)))) for n, c in stages]


# --- ResNet-18 family ------------------------------------------------------------------------
@register("resnet18")
def resnet18(num_classes: int, width_mult: WidthMult = 1.0, stem_kernel_size: StemKernelSize = 7) -> nn.Module:
    """ResNet-18 with the ImageNet stem: 7x7 conv stride 2, BN, ReLU, 3x3 max-pool stride 2."""
    return ResNet(num_classes, stem="imagenet", stem_kernel_size=stem_kernel_size,
                  stages=scaled(RESNET18_STAGES, width_mult))


@register("resnet18_small_stem")
def resnet18_small_stem(num_classes: int, width_mult: WidthMult = 1.0,
                        stem_kernel_size: StemKernelSize = 3) -> nn.Module:
    """A single 3x3 stride-1 stem conv; the max-pool is kept."""
    # Lab report: the report wrote kernel size 2; stem_kernel_size=2 reproduces it literally.
    return ResNet(num_classes, stem="small", stem_kernel_size=stem_kernel_size,
                  stages=scaled(RESNET18_STAGES, width_mult))


@register("resnet18_small_stem_nomaxpool")
def resnet18_small_stem_nomaxpool(num_classes: int, width_mult: WidthMult = 1.0,
                                  stem_kernel_size: StemKernelSize = 3) -> nn.Module:
    """As resnet18_small_stem without the max-pool (the usual CIFAR ResNet-18)."""
    return ResNet(num_classes, stem="small", stem_kernel_size=stem_kernel_size, maxpool=False,
                  stages=scaled(RESNET18_STAGES, width_mult))


@register("resnet18_deep_stem")
def resnet18_deep_stem(num_classes: int, width_mult: WidthMult = 1.0, stem_stride: StemStride = 1) -> nn.Module:
    """The 7x7 conv replaced by three 3x3 convs (BN + ReLU after each); the max-pool is kept."""
    # Lab report: 186 s/epoch against 40 s for the 7x7 stem (4.6x) means the deep stem did not
    # downsample: stride 1 reproduces that compute; stem_stride=2 is the ResNet-C reading.
    return ResNet(num_classes, stem="deep", stem_stride=stem_stride, stages=scaled(RESNET18_STAGES, width_mult))


@register("resnet18_deep_stem_3stage")
def resnet18_deep_stem_3stage(num_classes: int, width_mult: WidthMult = 1.0, stem_stride: StemStride = 2) -> nn.Module:
    """As resnet18_deep_stem without the last stage (512 channels)."""
    # Lab report: 48 s/epoch (1.2x the 7x7 stem's 40 s) fits a stride-2 deep stem (0.9x the FLOPs);
    # stride 1 would be 3.6x. `cnnbench models` shows the FLOPs of either reading.
    return ResNet(num_classes, stem="deep", stem_stride=stem_stride, stages=scaled(RESNET18_STAGES[:3], width_mult))


@register("resnet18_small_stem_3stage")
def resnet18_small_stem_3stage(num_classes: int, width_mult: WidthMult = 1.0, stem_kernel_size: StemKernelSize = 3,
                               stem_stride: StemStride = 2) -> nn.Module:
    """As resnet18_deep_stem_3stage with a single 3x3 stem conv; the max-pool is kept."""
    # Lab report: 39 s/epoch (about the 7x7 stem's 40 s) fits stride 2 (0.7x the FLOPs); stride 1 is 2.9x.
    return ResNet(num_classes, stem="small", stem_kernel_size=stem_kernel_size, stem_stride=stem_stride,
                  stages=scaled(RESNET18_STAGES[:3], width_mult))


# --- ResNeXt-18 family -------------------------------------------------------------------------
def _resnext(num_classes, stages, width_mult, dropout, bot_mul, group_width) -> nn.Module:
    return ResNet(num_classes, stem="imagenet", stages=scaled(stages, width_mult),
                  block=resnext_block(bot_mul, group_width), dropout=tuple(dropout))


@register("resnext18_3stage")
def resnext18_3stage(num_classes: int, width_mult: WidthMult = 1.0, dropout: DropoutPair = (0.2, 0.4),
                     bot_mul: BotMul = 1.0, group_width: GroupWidth = 32) -> nn.Module:
    """ResNeXt-18 with stages (2,64), (2,128), (2,256) and dropout 0.2/0.4: the report's final model."""
    # Lab report: bot_mul is not stated; 1 (bottleneck as wide as the stage) is the d2l default it follows.
    return _resnext(num_classes, RESNET18_STAGES[:3], width_mult, dropout, bot_mul, group_width)


@register("resnext18_4stage")
def resnext18_4stage(num_classes: int, width_mult: WidthMult = 1.0, dropout: DropoutPair = (0.2, 0.4),
                     bot_mul: BotMul = 1.0, group_width: GroupWidth = 32) -> nn.Module:
    """resnext18_3stage plus a (2, 512) stage."""
    return _resnext(num_classes, RESNET18_STAGES, width_mult, dropout, bot_mul, group_width)


@register("resnext18_5stage")
def resnext18_5stage(num_classes: int, width_mult: WidthMult = 1.0, dropout: DropoutPair = (0.2, 0.4),
                     bot_mul: BotMul = 1.0, group_width: GroupWidth = 32) -> nn.Module:
    """resnext18_4stage plus another (2, 512) stage."""
    return _resnext(num_classes, RESNET18_STAGES + ((2, 512),), width_mult, dropout, bot_mul, group_width)


# --- MobileNetV2 -----------------------------------------------------------------------------------
@register("mobilenet_v2")
def mobilenet_v2(num_classes: int, width_mult: WidthMult = 1.0, cifar: Cifar = False,
                 dropout: ClassifierDropout = 0.2) -> nn.Module:
    """Standard MobileNetV2; ``cifar=True`` keeps stride 1 in the first conv and first strided block."""
    return MobileNetV2(num_classes, width_mult=width_mult, cifar=cifar, dropout=dropout)
