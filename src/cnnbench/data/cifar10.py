"""CIFAR-10: read the python-pickle archive safely and pack train/val/test.

The archive (``cifar-10-python.tar.gz``) holds ``cifar-10-batches-py/`` with
``data_batch_1..5``, ``test_batch`` and ``batches.meta``. Those are pickles, and
unpickling runs code named by the file, so `RestrictedUnpickler` only admits the
few callables that rebuild a numpy array; anything else is refused before it is
even imported. The tar is read in memory (nothing is extracted to disk).

``val`` is a seeded, stratified hold-out of the official train batches (size
``val_fraction``); the official ``test_batch`` is ``test`` and is never used for
model selection.

The leak audit (`cnnbench.data.duplicates`) then looks for exact, mirrored and near-duplicate
images within and across the splits (Barz & Denzler found a near-duplicate in the training
set for 3.3 % of the official test images). Images are named ``<batch>[<row>]`` in
``duplicates.json``; with ``drop_train_duplicates_of_eval`` the train copies of val or test
images are left out.
"""

from __future__ import annotations

import io
import logging
import pickle
import re
import tarfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from cnnbench.data import duplicates, packed
from cnnbench.errors import ConfigError, DataError
from cnnbench.data.fetch import locate_archive, read_source

__all__ = ["RestrictedUnpickler", "load_pickle", "prepare", "TRAIN_BATCHES", "TEST_BATCH", "META"]

log = logging.getLogger("cnnbench.cifar10")

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
_MAX_MEMBER_BYTES = 256 * 1024 * 1024  # an official batch is ~31 MB; refuse absurd members
_OFFICIAL = {"train": 50000, "test": 10000}
_KEY = "datasets.cifar10"
_DROP_KEY = "drop_train_duplicates_of_eval"


def _numpy_reconstruct() -> Any:
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


def _numpy_scalar() -> Any:
    try:
        from numpy._core.multiarray import scalar
    except ImportError:
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    return scalar


def _codecs_encode() -> Any:
    import _codecs

    return _codecs.encode


# (module, name) -> zero-argument factory of the object. The factories resolve the
# object in whichever numpy is installed, so `numpy.core` is never imported on numpy 2
# (where it is a deprecated alias) and the pickle's module name is never imported.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): _codecs_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays and nothing else.

    `find_class` admits only numpy's array reconstruction helpers
    (``numpy[._]core.multiarray._reconstruct`` / ``scalar``, ``numpy.ndarray``,
    ``numpy.dtype``) and ``_codecs.encode`` (used by protocol-2 pickles of bytes
    written by Python 3). Any other global raises `pickle.UnpicklingError` naming
    ``module.name``; it is neither imported nor called.

    Use ``encoding="bytes"`` (see `load_pickle`) to read Python-2 pickles such as the
    official CIFAR batches.
    """

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102 - documented on the class
        factory = _ALLOWED.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name} from a CIFAR-10 pickle: only numpy array "
                "reconstruction is allowed. The archive is not a genuine CIFAR-10 python archive; "
                "delete it and download it again"
            )
        return factory()


def _str(value: Any) -> Any:
    return value.decode("latin1") if isinstance(value, bytes) else value


def load_pickle(data: bytes, what: str = "pickle") -> dict[str, Any]:
    """Unpickle a CIFAR batch/meta dict with `RestrictedUnpickler`; keys become str.

    Reads both Python-2 pickles (byte-string keys) and Python-3 protocol-2 pickles
    (str keys). `what` names the source in error messages.
    """
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DataError(f"{what}: {e}") from e
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise DataError(f"{what} is not a readable CIFAR-10 pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{what} holds a {type(obj).__name__}, expected a dict")
    return {_str(k): v for k, v in obj.items()}


# --------------------------------------------------------------------------- archive
def _check_member_name(name: str, archive: Path) -> None:
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in re.split(r"[\\/]", name):
        raise DataError(
            f"unsafe member path {name!r} in {archive}: absolute paths and '..' components are refused. "
            "The archive is not a genuine CIFAR-10 archive; delete it and download it again"
        )


def _read_tar(tar: tarfile.TarFile, archive: Path, wanted: set[str], found: dict[str, bytes]) -> None:
    """Check every member of `tar`; put the bytes of the `wanted` ones into `found`."""
    for member in tar:
        _check_member_name(member.name, archive)
        if not (member.isfile() or member.isdir()):
            # The genuine archive holds only folders and regular files; a link (whatever its name)
            # or device means the archive was tampered with.
            kind = "symbolic link" if member.issym() else "hard link" if member.islnk() else "device or fifo"
            target = f" -> {member.linkname!r}" if member.issym() or member.islnk() else ""
            raise DataError(
                f"unsafe member {member.name!r}{target} in {archive}: {kind}, not a regular file; refusing "
                "the archive. It is not a genuine CIFAR-10 archive; delete it and download it again"
            )
        base = PurePosixPath(member.name).name
        if base not in wanted or member.isdir():
            continue
        if member.size > _MAX_MEMBER_BYTES:
            raise DataError(f"{archive}: member {member.name!r} is {member.size} bytes, larger than any CIFAR-10 batch")
        if base in found:
            raise DataError(f"{archive}: {base} appears more than once (second copy {member.name!r})")
        f = tar.extractfile(member)
        assert f is not None
        found[base] = f.read()


def _read_members(archive: Path) -> dict[str, bytes]:
    """Return ``{basename: bytes}`` of the batch/meta files, read in memory."""
    wanted = set(TRAIN_BATCHES) | {TEST_BATCH, META}
    found: dict[str, bytes] = {}
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{archive} is not a readable tar archive ({e}); delete it and run `cnnbench download --dataset cifar10`") from e
    try:
        with tar:
            _read_tar(tar, archive, wanted, found)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:  # truncated or corrupt after the header
        raise DataError(f"{archive} is not a readable tar archive ({type(e).__name__}: {e}); delete it and run "
                        "`cnnbench download --dataset cifar10`") from e
    missing = sorted(wanted - set(found))
    if missing:
        raise DataError(
            f"{archive} lacks {missing}; expected cifar-10-batches-py/ with data_batch_1..5, test_batch "
            "and batches.meta. Delete it and run `cnnbench download --dataset cifar10`"
        )
    return found


def _batch_arrays(batch: dict[str, Any], what: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate a batch dict; return (N x 32 x 32 x 3 uint8 images, int64 labels)."""
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{what} lacks 'data' or 'labels' (keys: {sorted(map(str, batch))})")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(
            f"{what}: 'data' must be a uint8 array of shape (N, 3072), got "
            f"{type(data).__name__} {getattr(data, 'shape', '')} {getattr(data, 'dtype', '')}"
        )
    try:
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{what}: 'labels' must be a list of integers ({e})") from e
    if labels.ndim != 1 or len(labels) != len(data):
        raise DataError(f"{what}: {len(data)} images but labels of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{what}: labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}")
    # CIFAR stores each image as 1024 R, 1024 G, 1024 B values (row-major): NCHW -> NHWC.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (keep, holdout), taking round(fraction * n_c) of each class c.

    Deterministic for a given seed; both index arrays are sorted ascending.
    """
    rng = np.random.default_rng(seed)
    holdout: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = int(round(fraction * len(idx)))
        holdout.append(rng.permutation(idx)[:n])
    held = np.sort(np.concatenate(holdout)) if holdout else np.empty(0, np.int64)
    mask = np.ones(len(labels), bool)
    mask[held] = False
    return np.flatnonzero(mask), held


def prepare(raw_dir: Path, out_dir: Path, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Pack CIFAR-10 from ``raw_dir/cfg["filename"]`` into `out_dir`; return the manifest.

    Args:
        raw_dir: the download stage's output (archive + ``source.json``).
        out_dir: the packed store to write (see `cnnbench.data.packed`).
        cfg: ``datasets.cifar10`` params; reads ``filename``, ``val_fraction`` (0 <= f < 1),
            ``split_seed``, ``near_duplicate_threshold`` and ``drop_train_duplicates_of_eval``
            (default false: the official split as published).
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    archive = locate_archive(raw_dir, cfg, "cifar10")
    val_fraction = float(cfg.get("val_fraction", 0.1))
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"datasets.cifar10.val_fraction must be in [0, 1), got {val_fraction}")
    seed = int(cfg.get("split_seed", 0))
    threshold = duplicates.threshold_setting(cfg, _KEY)
    drop = cfg.get(_DROP_KEY, False)
    if not isinstance(drop, bool):
        raise ConfigError(f"{_KEY}.{_DROP_KEY} must be true or false, got {drop!r}")
    source = read_source(raw_dir, "cifar10")

    members = _read_members(archive)
    meta = load_pickle(members[META], f"{archive}:{META}")
    names = meta.get("label_names")
    if not isinstance(names, list) or not names:
        raise DataError(f"{archive}:{META} lacks a 'label_names' list")
    classes = [str(_str(n)) for n in names]

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        what = f"{archive}:{name}"
        return _batch_arrays(load_pickle(members[name], what), what, len(classes))

    train_parts = [batch(name) for name in TRAIN_BATCHES]
    train_names = [f"{name}[{row}]" for name, part in zip(TRAIN_BATCHES, train_parts) for row in range(len(part[1]))]
    train_images = np.concatenate([p[0] for p in train_parts])
    train_labels = np.concatenate([p[1] for p in train_parts])
    test_images, test_labels = batch(TEST_BATCH)
    del train_parts, members  # the raw pickles are no longer needed
    keep, held = stratified_holdout(train_labels, val_fraction, seed)

    notes = [
        f"val is a stratified {val_fraction:g} hold-out of the official training batches "
        f"(numpy default_rng seed {seed}); test is the official test_batch and is not used for model selection",
    ]
    if len(train_labels) != _OFFICIAL["train"] or len(test_labels) != _OFFICIAL["test"]:
        notes.append(
            f"this archive is a subset: {len(train_labels)} train and {len(test_labels)} test images "
            f"(the official set has {_OFFICIAL['train']} and {_OFFICIAL['test']})"
        )
    if val_fraction == 0.0:
        notes.append("val_fraction is 0: there is no val split; report the final epoch")
    manifest: dict[str, Any] = {
        "dataset": "cifar10",
        "source": source,
        "classes": classes,
        "noisy_classes": [],
        "val_fraction": val_fraction,
        "split_seed": seed,
        "archive_train_count": int(len(train_labels)),
        "excluded": [],
        "notes": notes,
    }
    splits = {
        "train": (train_images[keep], train_labels[keep]),
        "val": (train_images[held], train_labels[held]),
        "test": (test_images, test_labels),
    }
    names = {"train": [train_names[i] for i in keep], "val": [train_names[i] for i in held],
             "test": [f"{TEST_BATCH}[{row}]" for row in range(len(test_labels))]}
    audit = _audit(splits, names, classes, threshold, drop)
    _apply_audit(audit, splits, names["train"], manifest)
    packed.write_prepared(out_dir, splits, classes, manifest, extra_json={duplicates.FILE: audit.record},
                          extra_arrays={duplicates.THUMBS_FILE: audit.thumbs})
    log.info("cifar10: %d train, %d val, %d test -> %s", len(splits["train"][1]), len(held), len(test_labels), out_dir)
    return packed.read_manifest(out_dir)


def _apply_audit(audit: duplicates.Outcome, splits: dict[str, tuple[np.ndarray, np.ndarray]], train_names: list[str],
                 manifest: dict[str, Any]) -> None:
    """Leave the dropped train copies out (listed in ``excluded``) and record the audit in the manifest."""
    for position, reason in sorted(audit.dropped.items()):
        manifest["excluded"].append({"split": "train", "file": train_names[position], "reason": reason})
    images, labels = splits["train"]
    kept = np.ones(len(labels), bool)
    kept[list(audit.dropped)] = False
    splits["train"] = (duplicates.keep_rows(images, audit.dropped), labels[kept])
    manifest["duplicates"] = audit.summary
    manifest["notes"].append(duplicates.note(audit.summary, f"{_KEY}.{_DROP_KEY}"))
    duplicates.log_findings("cifar10", audit.summary)


def _audit(splits: dict[str, tuple[np.ndarray, np.ndarray]], names: dict[str, list[str]], classes: list[str],
           threshold: float, drop: bool) -> duplicates.Outcome:
    """The leak audit of the three splits. The thumbnails are the images themselves (32 px), taken
    from the split arrays when a pair is verified, so the audit adds only the descriptors to memory."""
    refs = [duplicates.ImageRef(s, names[s][i], classes[int(y)], i)
            for s in packed.SPLITS for i, y in enumerate(splits[s][1])]
    side = duplicates.thumb_side(32, 32)
    prints = duplicates.Fingerprints(len(refs), side, keep_thumbs=False)
    for split in packed.SPLITS:
        for image in tqdm(splits[split][0], desc=f"fingerprint cifar10 {split}", unit="img", mininterval=0.5,
                          leave=False):
            prints.add(duplicates.fingerprint(Image.fromarray(image), side))
    offsets = np.cumsum([0] + [len(splits[s][1]) for s in packed.SPLITS])
    stacked = [splits[s][0] for s in packed.SPLITS]

    def thumbs_of(positions: np.ndarray) -> np.ndarray:
        which = np.searchsorted(offsets, positions, side="right") - 1
        out = np.empty((len(positions), side, side), np.uint8)
        for k, split_images in enumerate(stacked):
            mine = which == k
            if mine.any():
                out[mine] = duplicates.grey_of(split_images[positions[mine] - offsets[k]])
        return out

    result = duplicates.audit(refs, prints, threshold, thumbs_of=thumbs_of)
    return duplicates.outcome("cifar10", result, {s: splits[s][0] for s in packed.SPLITS}, drop, f"{_KEY}.{_DROP_KEY}")


# --------------------------------------------------------------------------- the kind (cnnbench.data.kinds)
# The lab reports' CIFAR-10 recipe: Normalize(0.5, 0.5), RandomCrop(32, padding=4) + flip.
DEFAULT_TRAIN = {"normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
                 "augment": {"crop": "pad", "crop_padding": 4, "flip": True}}


def describe(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What a CIFAR-10 data set is before its archive is read; ``planning``: the official split sizes
    (validation held out of train) and preprocess's cost, measured on a 2-core x86 CPU (6,102 images
    of the mirror's subset in 9.2 s, with ~3 s of start-up), for `cnnbench plan`."""
    val = round(float(settings.get("val_fraction", 0.1)) * 50_000)
    return {"image_size": 32, "num_classes": 10, "title": "CIFAR-10",
            "planning": {"splits": {"train": 50_000 - val, "val": val, "test": 10_000},
                         "preprocess_seconds_per_image": 0.0010, "archive_bytes_per_image": 3_078}}
