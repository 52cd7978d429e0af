"""Models by name from timm, torchvision or the user's own code, always randomly initialised.

``model:`` in params.yaml takes, besides the study's registered names,

* ``timm/<name>``: any architecture of ``timm.list_models()`` (e.g. ``timm/resnet10t``), built by
  ``timm.create_model(name, pretrained=False, num_classes=N, **model_args)``;
* ``torchvision/<name>``: any classification model of ``torchvision.models.list_models(module=
  torchvision.models)``, built by ``torchvision.models.get_model(name, weights=None, num_classes=N,
  **model_args)``;
* ``package.module:function``: the user's ``function(num_classes, **model_args) -> nn.Module``,
  imported like any module (installed, on PYTHONPATH, or in the folder cnnbench runs from).

No weights are downloaded: timm never sees ``pretrained=True`` nor a hub name (``hf-hub:...``), and
torchvision never sees ``weights``. ``model_args`` are checked against the names the builder
declares (:func:`accepted_names`): a timm or torchvision model takes the keyword parameters of its
model class (and of the config a timm class is built from), and its values are tried by a build on
the meta device. timm is imported only when a ``timm/`` model is named (it takes seconds).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import inspect
import json
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from ..errors import ConfigError

TIMM, TORCHVISION = "timm/", "torchvision/"
# Arguments cnnbench sets itself, or that would fetch weights: never model_args.
RESERVED = frozenset({"num_classes", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path",
                      "cache_dir", "weights", "progress", "features_only", "device", "dtype"})


def is_external(name: Any) -> bool:
    """A ``timm/``, ``torchvision/`` or ``module:function`` name (not the study's registry)."""
    return isinstance(name, str) and (name.startswith((TIMM, TORCHVISION)) or ":" in name)


@dataclass(frozen=True)
class Accepts:
    """The keyword arguments a builder takes besides the number of classes."""

    names: tuple[str, ...]
    any_name: bool = False  # a user builder with **kwargs takes every name

    def __contains__(self, arg: str) -> bool:
        return self.any_name or arg in self.names

    def listed(self) -> str:
        shown = ", ".join(self.names) or "none"
        return shown + (" (and any other: the builder takes **kwargs)" if self.any_name else "")


def _close(word: str, choices: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.7)
    return f"; did you mean {' or '.join(prefix + c for c in close)}?" if close else ""


# --- timm --------------------------------------------------------------------------------------
def _timm():
    try:
        # timm imports torch.jit.interface, which newer torch marks deprecated on every import: a
        # warning about timm's code, not the user's, in every job's log
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
            import timm
    except ImportError:
        raise ConfigError("timm is not installed; install the version in requirements.lock "
                          "(pip install -r requirements.lock) or: pip install timm") from None
    return timm


@functools.lru_cache(maxsize=1)
def timm_names() -> tuple[str, ...]:
    """Every timm architecture (no pretrained tags: the weights are never loaded)."""
    return tuple(_timm().list_models())


class _Captured(Exception):
    """Carries the class a timm entrypoint was about to build, and the config it passed."""


def _timm_model_class(arch: str) -> tuple[type, Any]:
    """The model class of timm architecture ``arch`` and its ``model_cfg`` (None for most), without
    building it: timm entrypoints take ``**kwargs`` and hand them, through ``build_model_with_cfg``,
    to the model class; that call is intercepted in every timm module that imported it."""
    timm = _timm()
    from timm.models import _builder

    real = _builder.build_model_with_cfg

    def capture(model_cls, variant, pretrained, *args, model_cfg=None, **kwargs):
        raise _Captured(model_cls, model_cfg)

    modules = [m for name, m in list(sys.modules.items())
               if name.startswith("timm.models") and getattr(m, "build_model_with_cfg", None) is real]
    for m in modules:
        m.build_model_with_cfg = capture
    try:
        timm.create_model(arch, pretrained=False)
    except _Captured as found:
        return found.args
    finally:
        for m in modules:
            m.build_model_with_cfg = real
    raise RuntimeError(f"timm built {arch!r} without build_model_with_cfg; its arguments cannot be read")


def _keyword_parameters(cls: type) -> tuple[list[str], bool]:
    """The keyword parameters of ``cls.__init__``, following ``**kwargs`` up to the base classes
    that receive them; and whether the last one still takes ``**kwargs``. Those the library's
    builder already passes (torchvision's ``block``, ``layers``) are refused by the trial build."""
    names: list[str] = []
    for klass in cls.__mro__:
        if klass is nn.Module or not issubclass(klass, nn.Module) or "__init__" not in vars(klass):
            continue
        params = list(inspect.signature(klass.__init__).parameters.values())[1:]  # not self
        names += [p.name for p in params
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names, False
    return names, True


def _timm_accepts(arch: str) -> Accepts:
    cls, model_cfg = _timm_model_class(arch)
    names, _ = _keyword_parameters(cls)
    # Config-built classes (ByobNet, RegNet, NormFreeNet, ...) fold **kwargs into their config.
    if dataclasses.is_dataclass(model_cfg):
        names += [f.name for f in dataclasses.fields(model_cfg) if f.name not in names]
    elif isinstance(model_cfg, dict):
        names += [k for k in model_cfg if k not in names]
    return Accepts(tuple(n for n in names if n not in RESERVED and n != "cfg"))


# --- torchvision -------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def torchvision_names() -> tuple[str, ...]:
    """torchvision's classification models (not detection, segmentation, video, optical flow)."""
    import torchvision.models

    return tuple(torchvision.models.list_models(module=torchvision.models))


def _torchvision_accepts(arch: str) -> Accepts:
    import typing

    import torchvision.models

    builder = torchvision.models.get_model_builder(arch)
    params = inspect.signature(builder).parameters.values()
    names = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
    cls = typing.get_type_hints(builder).get("return")  # every builder is annotated with its class
    if isinstance(cls, type) and issubclass(cls, nn.Module):
        names += [n for n in _keyword_parameters(cls)[0] if n not in names]
    return Accepts(tuple(n for n in names if n not in RESERVED))


# --- the user's own builder --------------------------------------------------------------------
def _user_builder(name: str) -> Callable[..., Any]:
    """Import ``package.module:function``; a ConfigError naming ``name`` when that fails."""
    module, _, attr = name.partition(":")
    if not module or not attr or not all(part.isidentifier() for part in module.split(".") + attr.split(".")):
        raise ConfigError(f"{name!r}: expected timm/<name>, torchvision/<name> or package.module:function")
    # The drivers run from the project folder, where a user's models.py most likely lives; a console
    # script does not put it on sys.path (appended: an installed package of the same name wins).
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        obj = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module == exc.name or module.startswith(exc.name + ".")):
            raise ConfigError(f"{name!r}: importing {module} failed: {exc}; fix the import in that module") from exc
        raise ConfigError(f"{name!r}: no module {exc.name!r}; put it in the folder cnnbench runs from, install "
                          f"it, or add its folder to PYTHONPATH") from None
    except Exception as exc:  # the user's module is broken: keep its traceback as the cause
        raise ConfigError(f"{name!r}: importing {module} raised {type(exc).__name__}: {exc}; "
                          f"fix that module") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            public = [n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n))]
            raise ConfigError(f"{name!r}: {module} has no {attr!r}{_close(attr, public, module + ':')}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{name!r}: {attr} is not a function but {obj!r} ({type(obj).__name__}); "
                          f"name a function(num_classes, **model_args) that returns an nn.Module")
    return obj


def _user_accepts(name: str) -> Accepts:
    builder = _user_builder(name)
    try:
        params = list(inspect.signature(builder).parameters.values())
    except (TypeError, ValueError):  # no signature to read (a C function): let the call decide
        return Accepts((), any_name=True)
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD,
                                            params[0].VAR_POSITIONAL):
        raise ConfigError(f"{name!r}: the builder must take the number of classes as its first argument: "
                          f"def {name.partition(':')[2]}(num_classes, **model_args)")
    rest = params[1:] if params[0].kind is not params[0].VAR_POSITIONAL else params
    names = tuple(p.name for p in rest if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    return Accepts(names, any_name=any(p.kind is p.VAR_KEYWORD for p in params))


# --- what the registry calls ------------------------------------------------------------------
def check_name(name: str, where: str) -> None:
    """Refuse an unknown timm or torchvision name (with the closest ones) or an unusable builder."""
    for prefix, names in ((TIMM, timm_names), (TORCHVISION, torchvision_names)):
        if name.startswith(prefix):
            arch = name[len(prefix):]
            if arch not in names():
                library = prefix.rstrip("/")
                raise ConfigError(f"{where}: {name!r} is not a {library} classification model"
                                  f"{_close(arch, list(names()), prefix)}; the list: "
                                  + ("timm.list_models()" if library == "timm"
                                     else "torchvision.models.list_models(module=torchvision.models)"))
            return
    try:
        _user_builder(name)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc.__cause__


@functools.lru_cache(maxsize=None)
def accepted_names(name: str) -> Accepts:
    """The keyword arguments external model ``name`` takes besides the number of classes."""
    if name.startswith(TIMM):
        return _timm_accepts(name[len(TIMM):])
    if name.startswith(TORCHVISION):
        return _torchvision_accepts(name[len(TORCHVISION):])
    return _user_accepts(name)


def check_args(name: str, args: dict, where: str) -> None:
    """Refuse a model argument the builder does not declare, and values a library model refuses
    (a trial build); ``where`` names the model_args block."""
    accepts = accepted_names(name)
    for arg in args:
        if arg not in accepts:
            raise ConfigError(f"{where}.{arg}: model {name!r} does not take {arg!r}; allowed keys: "
                              f"{accepts.listed()}{_close(str(arg), list(accepts.names))}")
    if args and name.startswith((TIMM, TORCHVISION)):
        problem = _trial_build(name, json.dumps(args, sort_keys=True))
        if problem:
            raise ConfigError(f"{where}: {problem}")


@functools.lru_cache(maxsize=None)
def _trial_build(name: str, args_json: str) -> str | None:
    """Why library model ``name`` refuses these arguments; None when it builds. Built on the meta
    device (no memory, no weights, milliseconds); a refusal there is confirmed on the CPU, since an
    operation without a meta kernel may fail where real tensors would not."""
    import torch

    args = json.loads(args_json)
    try:
        with torch.device("meta"):
            build(name, 10, args)
        return None
    except ConfigError:
        pass
    except Exception:  # nothing the meta device can tell: the real build will
        return None
    try:
        build(name, 10, args)
    except ConfigError as exc:
        return str(exc)
    return None


def build(name: str, num_classes: int, args: dict) -> nn.Module:
    """Build external model ``name`` with random weights."""
    if name.startswith(TIMM):
        model = _built(name, args, lambda: _timm().create_model(name[len(TIMM):], pretrained=False,
                                                                 num_classes=num_classes, **args))
    elif name.startswith(TORCHVISION):
        import torchvision.models

        model = _built(name, args, lambda: torchvision.models.get_model(name[len(TORCHVISION):], weights=None,
                                                                         num_classes=num_classes, **args))
    else:
        builder = _user_builder(name)
        try:
            model = builder(num_classes, **args)
        except Exception as exc:  # the user's code: its traceback is the cause
            raise ConfigError(f"model {name!r} raised {type(exc).__name__}: {exc} (called with num_classes="
                              f"{num_classes}, model_args {args}); fix the builder or its model_args") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {name!r} returned a {type(model).__name__}, not a torch.nn.Module; "
                          f"make the builder return the network")
    return model


def _built(name: str, args: dict, make: Callable[[], nn.Module]) -> nn.Module:
    """A library model; where it refuses the user's model_args, say so in one line."""
    if not args:
        return make()  # without arguments a failure is a bug, here or in the library
    try:
        return make()
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"model {name!r} refused model_args {args}: {type(exc).__name__}: {exc}; "
                          f"change or remove those model_args") from exc
