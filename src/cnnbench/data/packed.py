"""The packed store that `preprocess` writes and `train`/`evaluate` read.

One directory per data set (e.g. ``data/prepared/cifar10``)::

    train_images.npy   uint8, N x H x W x 3 (NHWC, RGB)
    train_labels.npy   int64, N, values in 0..K-1 (index into classes.json)
    val_images.npy / val_labels.npy
    test_images.npy / test_labels.npy
    classes.json       list of class names, in label order
    manifest.json      provenance, counts, exclusions, notes (see `write_prepared`)
    excluded.csv       split,file,reason for every image that was left out
    <name>.json        optional extra reports of one data set (e.g. duplicates.json, the leak audit;
                       see `clean_mask`)

Every class is stored; dropping classes (e.g. the noisy butterfly classes) is a
per-variant decision made at load time with ``load_split(..., exclude_classes=...)``,
so filtered and unfiltered variants share one preprocess output.

The directory is built under a hidden sibling name and renamed into place when
complete, so a killed run never leaves something that looks finished.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cnnbench.atomic import csv_text, replace_dir, temp_dir
from cnnbench.errors import ConfigError, DataError

__all__ = [
    "SPLITS",
    "FORMAT",
    "write_prepared",
    "load_split",
    "clean_mask",
    "read_manifest",
    "read_classes",
    "channel_stats",
    "train_normalization",
    "staging_dir",
    "replace_dir",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")
FORMAT = "cnnbench-packed-v1"

log = logging.getLogger("cnnbench.data")

_MANIFEST = "manifest.json"
_CLASSES = "classes.json"
_EXCLUDED = "excluded.csv"
_DUPLICATES = "duplicates.json"


staging_dir = temp_dir  # the store's staging folder follows cnnbench.atomic's convention; old name kept


# --------------------------------------------------------------------------- writing
def _per_class(labels: np.ndarray, classes: list[str]) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(classes)) if labels.size else np.zeros(len(classes), int)
    return {name: int(n) for name, n in zip(classes, counts)}


def _validate(
    splits: Mapping[str, tuple[np.ndarray, np.ndarray]], classes: list[str]
) -> tuple[int, int]:
    """Check shapes, dtypes and label ranges; return the common (H, W)."""
    if not isinstance(classes, list) or not classes:
        raise ValueError(f"classes must be a non-empty list of names, got {classes!r}")
    for name in classes:
        if not isinstance(name, str) or not name:
            raise DataError(f"class names must be non-empty strings, got {name!r} in classes")
    dupes = sorted({c for c in classes if classes.count(c) > 1})
    if dupes:
        raise DataError(f"duplicate class names {dupes} in classes")
    unknown = sorted(set(splits) - set(SPLITS))
    missing = [s for s in SPLITS if s not in splits]
    if unknown or missing:
        raise ValueError(
            f"splits must have exactly the keys {list(SPLITS)}; unknown {unknown}, missing {missing} "
            "(pass an empty N=0 array pair for a split that has no images)"
        )
    hw: tuple[int, int] | None = None
    for split in SPLITS:
        images, labels = splits[split]
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
            raise ValueError(
                f"{split} images must be a uint8 numpy array, got "
                f"{type(images).__name__} of dtype {getattr(images, 'dtype', None)}"
            )
        if images.ndim != 4 or images.shape[3] != 3:
            raise ValueError(f"{split} images must have shape N x H x W x 3 (NHWC, RGB), got {images.shape}")
        if not isinstance(labels, np.ndarray) or labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"{split} labels must be a 1-D integer numpy array, got "
                f"{type(labels).__name__} {getattr(labels, 'shape', '')} {getattr(labels, 'dtype', '')}"
            )
        if len(labels) != len(images):
            raise ValueError(f"{split}: {len(images)} images but {len(labels)} labels")
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(
                f"{split} labels must lie in 0..{len(classes) - 1} (there are {len(classes)} classes), "
                f"got range {int(labels.min())}..{int(labels.max())}"
            )
        if hw is None:
            hw = (int(images.shape[1]), int(images.shape[2]))
        elif (images.shape[1], images.shape[2]) != hw:
            raise ValueError(
                f"all splits must share one image size; {split} has {images.shape[1]}x{images.shape[2]}, "
                f"expected {hw[0]}x{hw[1]}"
            )
    assert hw is not None
    return hw


def _check_extra_names(what: str, files: Mapping[str, Any], suffix: str, reserved: set[str]) -> None:
    """Extra files are plain ``*<suffix>`` names that do not clash with the store's own files."""
    for name in files:
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(suffix) or name in reserved:
            raise ValueError(f"{what} file name {name!r} must be a plain '*{suffix}' file name other than {sorted(reserved)}")


def write_prepared(
    out_dir: Path,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    classes: list[str],
    manifest: dict[str, Any],
    extra_json: Mapping[str, Any] | None = None,
    extra_arrays: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write a packed data set to `out_dir` atomically (replacing an existing one).

    Args:
        out_dir: destination directory, e.g. ``data/prepared/cifar10``.
        splits: ``{"train": (images, labels), "val": ..., "test": ...}``; all three keys
            are required (a split may hold 0 images). Images are uint8 N x H x W x 3,
            labels integers in ``0..len(classes)-1`` (stored as int64).
        classes: class names in label order.
        manifest: provenance and notes; written to ``manifest.json``. The keys
            ``format``, ``classes``, ``image_size`` and, per split, ``splits[s]["count"]``
            and ``splits[s]["per_class"]`` are computed here from the arrays (a caller
            value that disagrees is an error); other keys, including extra keys inside
            ``splits[s]``, are kept. ``manifest["excluded"]`` (list of
            ``{"split", "file", "reason"}``) is also written to ``excluded.csv``.
        extra_json: optional ``{file name: JSON-serialisable object}`` written beside the
            manifest in the same atomic rename (e.g. ``{"duplicates.json": {...}}``).
        extra_arrays: optional ``{file name: array}`` written as ``.npy`` beside it, likewise
            (e.g. the leak audit's ``duplicate_thumbs.npy``).

    Raises:
        DataError: class names that are empty, not strings or repeated (they come from the data).
        ValueError: on wrong shapes/dtypes, labels out of range, an inconsistent manifest, or
            an extra file name that is not a plain ``*.json`` name or clashes with the store's files
            (the caller's mistakes).
    """
    out_dir = Path(out_dir)
    hw = _validate(splits, classes)
    extra = dict(extra_json or {})
    _check_extra_names("extra_json", extra, ".json", {_MANIFEST, _CLASSES})
    arrays = dict(extra_arrays or {})
    _check_extra_names("extra_arrays", arrays, ".npy", {f"{s}_{kind}.npy" for s in SPLITS for kind in ("images", "labels")})
    if not isinstance(manifest, dict):
        raise ValueError(f"manifest must be a dict, got {type(manifest).__name__}")
    manifest = json.loads(json.dumps(manifest))  # deep copy; also proves it is JSON-serialisable

    def _set(key: str, value: Any, where: dict[str, Any], label: str) -> None:
        if key in where and where[key] != value:
            raise ValueError(f"manifest {label} is {where[key]!r} but the arrays give {value!r}")
        where[key] = value

    _set("classes", list(classes), manifest, "'classes'")
    manifest["train_stats"] = channel_stats(splits["train"][0])
    _set("image_size", [hw[0], hw[1]], manifest, "'image_size'")
    manifest["format"] = FORMAT
    split_info = manifest.setdefault("splits", {})
    for split in SPLITS:
        images, labels = splits[split]
        entry = split_info.setdefault(split, {})
        _set("count", int(len(labels)), entry, f"splits.{split}.count")
        _set("per_class", _per_class(np.asarray(labels, dtype=np.int64), classes), entry, f"splits.{split}.per_class")
    excluded = manifest.setdefault("excluded", [])
    for i, row in enumerate(excluded):
        if not isinstance(row, dict) or not {"split", "file", "reason"} <= set(row):
            raise ValueError(f"manifest excluded[{i}] must be a dict with keys split, file, reason; got {row!r}")

    tmp = temp_dir(out_dir)
    try:
        for split in SPLITS:
            images, labels = splits[split]
            np.save(tmp / f"{split}_images.npy", np.ascontiguousarray(images), allow_pickle=False)
            np.save(tmp / f"{split}_labels.npy", np.asarray(labels, dtype=np.int64), allow_pickle=False)
        (tmp / _CLASSES).write_text(json.dumps(list(classes), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        for name, obj in extra.items():
            (tmp / name).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        for name, array in arrays.items():
            np.save(tmp / name, np.ascontiguousarray(array), allow_pickle=False)
        (tmp / _EXCLUDED).write_text(csv_text(excluded, ["split", "file", "reason"]), encoding="utf-8")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def channel_stats(images: np.ndarray, chunk: int = 4096) -> dict[str, Any]:
    """Per-channel mean and standard deviation of uint8 N x H x W x 3 images, scaled to [0, 1]
    (what a run normalises with when it sets no ``normalize``), over every pixel; in chunks, so a
    large split never becomes one float array."""
    n = len(images)
    if n == 0:
        return {"mean": None, "std": None, "images": 0}
    total = np.zeros(3, dtype=np.float64)
    squares = np.zeros(3, dtype=np.float64)
    for start in range(0, n, chunk):
        block = np.asarray(images[start:start + chunk], dtype=np.float64).reshape(-1, 3) / 255.0
        total += block.sum(0)
        squares += (block * block).sum(0)
    pixels = n * images.shape[1] * images.shape[2]
    mean = total / pixels
    std = np.sqrt(np.maximum(squares / pixels - mean * mean, 0.0))
    return {"mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std], "images": int(n)}


# --------------------------------------------------------------------------- reading
def train_normalization(prepared_dir: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel (mean, std) of the training split that `write_prepared` recorded."""
    stats = read_manifest(prepared_dir).get("train_stats") or {}
    mean, std = stats.get("mean"), stats.get("std")
    if mean is None or std is None:
        raise DataError(
            f"{Path(prepared_dir) / _MANIFEST} has no train_stats (written by an older cnnbench, or an empty "
            f"training split), which a run without train.normalize needs; re-run `cnnbench preprocess "
            f"--dataset {_dataset_hint(Path(prepared_dir))}` or set train.normalize"
        )
    if min(std) <= 0:
        raise DataError(f"{Path(prepared_dir) / _MANIFEST}: a channel of the training images is constant "
                        f"(std {std}); set train.normalize for this data set")
    return tuple(mean), tuple(std)

def _dataset_hint(prepared_dir: Path) -> str:
    try:
        name = json.loads((prepared_dir / _MANIFEST).read_text(encoding="utf-8")).get("dataset")
        if isinstance(name, str) and name:
            return name
    except (OSError, ValueError, AttributeError):
        pass
    return prepared_dir.name or "<dataset>"


def _require(prepared_dir: Path, filename: str) -> Path:
    path = Path(prepared_dir) / filename
    if not path.is_file():
        dataset = _dataset_hint(Path(prepared_dir))
        raise DataError(
            f"{path} not found: the prepared data set in {prepared_dir} is missing or incomplete. "
            f"Run `cnnbench preprocess --dataset {dataset}` first."
        )
    return path


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise DataError(f"{path} is not valid JSON ({e}); the store is corrupt, re-run `cnnbench preprocess`") from e


def read_manifest(prepared_dir: Path) -> dict[str, Any]:
    """Return the parsed ``manifest.json`` of a packed data set."""
    path = _require(Path(prepared_dir), _MANIFEST)
    manifest = _read_json(path)
    if not isinstance(manifest, dict):
        raise DataError(f"{path} must hold a JSON object; re-run `cnnbench preprocess`")
    return manifest


def read_classes(prepared_dir: Path) -> list[str]:
    """Return the class names of a packed data set, in label order."""
    path = _require(Path(prepared_dir), _CLASSES)
    classes = _read_json(path)
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{path} must hold a JSON list of class names; re-run `cnnbench preprocess`")
    return classes


def load_split(
    prepared_dir: Path, split: str, exclude_classes: Iterable[str] = ()
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load one split, optionally without some classes.

    Args:
        prepared_dir: a directory written by `write_prepared`.
        split: one of `SPLITS`.
        exclude_classes: class names to drop (e.g. the noisy butterfly classes).

    Returns:
        ``(images, labels, classes)``: images uint8 N x H x W x 3, labels int64 remapped
        to ``0..K-1`` over the kept classes (their stored order preserved), and the K
        kept class names. With no exclusions the images are a read-only memory map;
        copy (``np.array(images)``) before writing into them.

    Raises:
        ConfigError: an unknown class name to exclude, or every class excluded.
        DataError: the store is missing, incomplete or corrupt.
        ValueError: an unknown split, or ``exclude_classes`` given as one string.
    """
    prepared_dir = Path(prepared_dir)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    if isinstance(exclude_classes, str):  # before the store is read: the caller's mistake comes first
        raise ValueError(
            f"exclude_classes must be a list of class names, not the string {exclude_classes!r}"
        )
    classes = read_classes(prepared_dir)
    excluded = _exclusions(prepared_dir, classes, exclude_classes)
    images_path = _require(prepared_dir, f"{split}_images.npy")
    labels_path = _require(prepared_dir, f"{split}_labels.npy")
    try:
        images = np.load(images_path, mmap_mode="r", allow_pickle=False)
        labels = np.load(labels_path, allow_pickle=False).astype(np.int64, copy=False)
    except (OSError, ValueError, EOFError) as e:  # truncated, not .npy, or an object array
        raise DataError(f"{images_path} or {labels_path} is not readable ({e}); the store is corrupt, "
                        "re-run `cnnbench preprocess`") from e
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8 or len(images) != len(labels):
        raise DataError(
            f"{images_path} ({images.shape}, {images.dtype}) does not match {labels_path} "
            f"({labels.shape}); the store is corrupt, re-run `cnnbench preprocess`"
        )
    if not excluded:
        return images, labels, classes
    new_labels, kept = _remap(prepared_dir, classes, excluded, labels)
    mask = new_labels >= 0
    return np.asarray(images[mask]), new_labels[mask], kept


def _exclusions(prepared_dir: Path, classes: list[str], exclude_classes: Iterable[str]) -> list[str]:
    """``exclude_classes`` checked against the stored classes, repeats removed."""
    if isinstance(exclude_classes, str):
        raise ValueError(f"exclude_classes must be a list of class names, not the string {exclude_classes!r}")
    excluded = list(dict.fromkeys(exclude_classes))
    unknown = [c for c in excluded if c not in classes]
    if unknown:
        raise ConfigError(
            f"cannot exclude unknown class(es) {unknown} from {prepared_dir}: they are not among its "
            f"{len(classes)} classes (see {prepared_dir / _CLASSES}); check the spelling"
        )
    return excluded


def _remap(
    prepared_dir: Path, classes: list[str], excluded: list[str], labels: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """Labels renumbered over the kept classes (-1 for an excluded class's image) and the kept names."""
    kept = [c for c in classes if c not in excluded]
    if not kept:
        raise ConfigError(f"exclude_classes {excluded} removes every class of {prepared_dir}")
    remap = np.full(len(classes), -1, dtype=np.int64)
    for new, name in enumerate(kept):
        remap[classes.index(name)] = new
    return remap[labels], kept


def clean_mask(prepared_dir: Path, split: str = "test", exclude_classes: Iterable[str] = ()) -> np.ndarray | None:
    """Which images of ``split`` have no duplicate among the training images, per the leak audit.

    preprocess writes ``duplicates.json`` (format ``cnnbench-duplicates-v2``) whose ``test_leaked``
    lists the positions, in the stored split (all classes), of the test images with an exact,
    mirrored or near duplicate among the train images that were kept. Accuracy on the other
    ("clean") images is what a model scores without having seen the answer, as ciFAIR reports it.

    Args:
        prepared_dir: a directory written by `write_prepared`.
        split: one of `SPLITS`; the audit lists ``<split>_leaked`` (today ``test_leaked`` only).
        exclude_classes: the classes the variant drops, as given to `load_split`.

    Returns:
        A bool array aligned element for element with the images ``load_split(prepared_dir,
        split, exclude_classes)`` returns, True for a clean image; None when there is no
        ``duplicates.json`` or it has no ``<split>_leaked`` (an audit of the old v1 format, or none):
        clean accuracy is then unknown, which is not an error.

    Raises:
        DataError: ``duplicates.json`` is not valid JSON, its list is not a list of integers, a
            position is outside the stored split, or its ``<split>_clean_count`` disagrees with it.
        ConfigError, ValueError: as `load_split`, for the split name and the excluded classes.
    """
    prepared_dir = Path(prepared_dir)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    path = prepared_dir / _DUPLICATES
    if not path.is_file():
        return None
    audit = _read_json(path)
    key = f"{split}_leaked"
    if not isinstance(audit, dict) or audit.get(key) is None:
        return None
    classes = read_classes(prepared_dir)
    excluded = _exclusions(prepared_dir, classes, exclude_classes)
    labels_path = _require(prepared_dir, f"{split}_labels.npy")
    try:
        labels = np.load(labels_path, allow_pickle=False).astype(np.int64, copy=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{labels_path} is not readable ({e}); the store is corrupt, re-run `cnnbench preprocess`") from e
    leaked = audit[key]
    redo = f"re-run `cnnbench preprocess --dataset {_dataset_hint(prepared_dir)}`"
    if not isinstance(leaked, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in leaked):
        raise DataError(f"{path}: {key} must be a list of integer positions in the {split} split; {redo}")
    outside = sorted({i for i in leaked if not 0 <= i < len(labels)})
    if outside:
        raise DataError(
            f"{path}: {key} holds position(s) {outside[:5]}{' …' if len(outside) > 5 else ''} outside the "
            f"{len(labels)} images of {labels_path.name}: the audit is not of this store; {redo}"
        )
    mask = np.ones(len(labels), dtype=bool)
    mask[np.asarray(leaked, dtype=np.int64)] = False
    count = audit.get(f"{split}_clean_count")
    if count is not None and count != int(mask.sum()):
        raise DataError(
            f"{path}: {split}_clean_count is {count!r} but {key} leaves {int(mask.sum())} of the "
            f"{len(labels)} stored {split} images clean; {redo}"
        )
    if excluded:
        mask = mask[_remap(prepared_dir, classes, excluded, labels)[0] >= 0]
    return mask
