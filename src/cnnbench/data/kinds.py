"""The data-set kinds: what a data set of each kind is and how it is prepared.

A data set in params.yaml has a name of the user's choosing and a ``kind``
(``datasets.<name>.kind``). The rest of cnnbench asks this registry about it, never the name:

- :func:`describe` gives what is known before any data is read (image side after preprocess,
  number of classes or None when only the data can tell, a title for the report);
- :func:`default_train` gives the kind's normalisation and augmentation, which
  ``datasets.<name>.train`` overrides (a missing ``normalize`` means the training split's own
  per-channel mean and std, recorded by preprocess in the manifest);
- :func:`prepare` runs the kind's preprocess: raw download -> packed store + manifest.

A kind is one module (or one object of a module) exposing ``prepare(raw_dir, out_dir, settings)``,
``describe(settings)`` and ``DEFAULT_TRAIN``; ``settings`` is the data set block without ``train``,
its ``source`` keys flattened in, plus ``name`` and ``kind`` (``Config.preprocess_settings``).
The imports below stay inside functions so that reading params.yaml loads no image library; the
pipeline's code deps still see them (it follows imports inside functions too).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnbench.errors import ConfigError

__all__ = ["SUBSET", "Description", "describe", "default_train", "prepare", "kind_names"]


def _cifar10() -> Any:
    from cnnbench.data.cifar import CIFAR10
    return CIFAR10


def _cifar100() -> Any:
    from cnnbench.data.cifar import CIFAR100
    return CIFAR100


def _butterflies() -> Any:
    from cnnbench.data import butterflies
    return butterflies


def _imagefolder() -> Any:
    from cnnbench.data import imagefolder
    return imagefolder


def _csv() -> Any:
    from cnnbench.data import imagecsv
    return imagecsv


def _subset() -> Any:
    from cnnbench.data import subset
    return subset


SUBSET = "subset"  # a data set made from another's prepared store (cnnbench.data.subset)

# kind name -> a function returning the module (or object) that implements it
_KINDS: dict[str, Callable[[], Any]] = {
    "cifar10": _cifar10,
    "cifar100": _cifar100,
    "butterflies": _butterflies,
    "imagefolder": _imagefolder,
    "csv": _csv,
    SUBSET: _subset,
}


def kind_names() -> list[str]:
    return list(_KINDS)


@dataclass(frozen=True)
class Description:
    """What is known of a data set before its data is read."""

    image_size: int          # side in pixels of the packed images (square)
    num_classes: int | None  # before any class filtering; None when only the data can tell
    title: str               # shown in the report and plots
    planning: Mapping[str, Any] | None = None  # `cnnbench plan`'s guesses before preprocess: official
    # split sizes {"train", "val", "test"}, preprocess_seconds_per_image, archive_bytes_per_image


def _implementation(kind: str, where: str) -> Any:
    if kind not in _KINDS:
        raise ConfigError(f"{where}.kind: {kind!r} is not a data-set kind; allowed values: {', '.join(_KINDS)}")
    return _KINDS[kind]()


def describe(settings: Mapping[str, Any]) -> Description:
    """What ``settings`` (``Config.preprocess_settings(name)``) describes, asked of its kind."""
    where = f"datasets.{settings.get('name', '?')}"
    impl = _implementation(settings["kind"], where)
    info = impl.describe(settings)
    return Description(image_size=int(info["image_size"]), num_classes=info.get("num_classes"),
                       title=str(info.get("title") or settings.get("name")), planning=info.get("planning"))


def default_train(kind: str, where: str = "datasets") -> dict[str, Any]:
    """The kind's default ``normalize``/``augment`` (a copy: callers merge into it)."""
    return copy.deepcopy(dict(_implementation(kind, where).DEFAULT_TRAIN))


def prepare(raw_dir: Path, out_dir: Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Run the kind's preprocess; returns the manifest it wrote."""
    impl = _implementation(settings["kind"], f"datasets.{settings.get('name', '?')}")
    return impl.prepare(Path(raw_dir), Path(out_dir), settings)
