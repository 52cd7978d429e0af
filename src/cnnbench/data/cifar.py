"""CIFAR-10 and CIFAR-100: read the official python-pickle archives safely and pack train/val/test.

One reader serves both; `CIFAR10` and `CIFAR100` describe their archives, and each is a
data-set kind (``prepare``, ``describe`` and ``DEFAULT_TRAIN``, like a kind module):

- CIFAR-10 (``cifar-10-python.tar.gz``) holds ``cifar-10-batches-py/`` with
  ``data_batch_1..5``, ``test_batch`` and ``batches.meta``; labels ``labels``, class names
  ``label_names``.
- CIFAR-100 (``cifar-100-python.tar.gz``) holds ``cifar-100-python/`` with ``train``,
  ``test`` and ``meta``. ``label_mode: fine`` (the default) packs the 100 classes
  (``fine_labels`` / ``fine_label_names``), ``coarse`` the 20 superclasses
  (``coarse_labels`` / ``coarse_label_names``).

Those are pickles, and unpickling runs code named by the file, so `RestrictedUnpickler`
only admits the few callables that rebuild a numpy array; anything else is refused before
it is even imported. The tar is read in memory (nothing is extracted to disk).

``val`` is a seeded, stratified hold-out of the official training images (size
``val_fraction``); the official test member is ``test`` and is never used for model
selection. ``noisy_classes`` (class names of the chosen labels) are checked and recorded in
the manifest; variants drop them at load time.

The leak audit (`cnnbench.data.duplicates`) then looks for exact, mirrored and near-duplicate
images within and across the splits (Barz & Denzler found a near-duplicate in the training
set for 3.3 % of the CIFAR-10 and 10 % of the CIFAR-100 test images). Images are named
``<member>[<row>]`` in ``duplicates.json``; with ``drop_train_duplicates_of_eval`` the train
copies of val or test images are left out.
"""

from __future__ import annotations

import copy
import io
import logging
import pickle
import re
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from cnnbench.data import duplicates, packed
from cnnbench.data.fetch import locate_archive, read_source
from cnnbench.data.splits import stratified_holdout  # also this module's: tests and callers use cifar.stratified_holdout
from cnnbench.errors import ConfigError, DataError

__all__ = ["CIFAR10", "CIFAR100", "CifarKind", "LabelSet", "Batches", "RestrictedUnpickler", "load_pickle",
           "stratified_holdout", "audit_splits"]

log = logging.getLogger("cnnbench.cifar")

IMAGE_SIDE = 32
_MAX_MEMBER_BYTES = 256 * 1024 * 1024  # CIFAR-100's train member is ~155 MB; refuse absurd members
_OFFICIAL = {"train": 50000, "test": 10000}  # both data sets
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
                f"refusing to load global {module}.{name} from a CIFAR pickle: only numpy array "
                "reconstruction is allowed. The archive is not a genuine CIFAR python archive; "
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
        raise DataError(f"{what} is not a readable CIFAR pickle ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{what} holds a {type(obj).__name__}, expected a dict")
    return {_str(k): v for k, v in obj.items()}


# --------------------------------------------------------------------------- archive
def _not_genuine(kind: CifarKind, name: str) -> str:
    return (f"it is not a genuine {kind.title} archive; delete it and run `cnnbench download --dataset {name}` "
            "again")


def _check_member_name(member: str, archive: Path, kind: CifarKind, name: str) -> None:
    if member.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", member) or ".." in re.split(r"[\\/]", member):
        raise DataError(f"unsafe member path {member!r} in {archive}: absolute paths and '..' components are "
                        f"refused; {_not_genuine(kind, name)}")


def _read_tar(tar: tarfile.TarFile, archive: Path, kind: CifarKind, name: str, found: dict[str, bytes]) -> None:
    """Check every member of `tar`; put the bytes of the kind's members into `found`."""
    wanted = set(kind.members)
    for member in tar:
        _check_member_name(member.name, archive, kind, name)
        if not (member.isfile() or member.isdir()):
            # The genuine archive holds only folders and regular files; a link (whatever its name)
            # or device means the archive was tampered with.
            what = "symbolic link" if member.issym() else "hard link" if member.islnk() else "device or fifo"
            target = f" -> {member.linkname!r}" if member.issym() or member.islnk() else ""
            raise DataError(f"unsafe member {member.name!r}{target} in {archive}: {what}, not a regular file; "
                            f"refusing the archive: {_not_genuine(kind, name)}")
        base = PurePosixPath(member.name).name
        if base not in wanted or member.isdir():
            continue
        if member.size > _MAX_MEMBER_BYTES:
            raise DataError(f"{archive}: member {member.name!r} is {member.size} bytes, larger than any "
                            f"{kind.title} member; {_not_genuine(kind, name)}")
        if base in found:
            raise DataError(f"{archive}: {base} appears more than once (second copy {member.name!r})")
        f = tar.extractfile(member)
        assert f is not None
        found[base] = f.read()


def _read_members(archive: Path, kind: CifarKind, name: str) -> dict[str, bytes]:
    """Return ``{basename: bytes}`` of the kind's batch and meta members, read in memory."""
    found: dict[str, bytes] = {}
    again = f"delete it and run `cnnbench download --dataset {name}`"
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as e:  # tarfile lists each method it tried, one per line
        raise DataError(f"{archive} is not a readable tar archive ({' '.join(str(e).split())}); {again}") from e
    try:
        with tar:
            _read_tar(tar, archive, kind, name, found)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:  # truncated or corrupt after the header
        raise DataError(f"{archive} is not a readable tar archive ({type(e).__name__}: {e}); {again}") from e
    missing = [m for m in kind.members if m not in found]
    if missing:
        raise DataError(f"{archive} lacks {missing}; expected {kind.folder}/ with {', '.join(kind.members)}. "
                        f"{again[0].upper()}{again[1:]}")
    return found


def _batch_arrays(batch: dict[str, Any], what: str, labels_of: LabelSet) -> tuple[np.ndarray, np.ndarray]:
    """Validate a batch dict; return (N x 32 x 32 x 3 uint8 images, int64 labels)."""
    key = labels_of.batch_key
    if "data" not in batch or key not in batch:
        raise DataError(f"{what} lacks 'data' or '{key}' (keys: {sorted(map(str, batch))})")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(
            f"{what}: 'data' must be a uint8 array of shape (N, 3072), got "
            f"{type(data).__name__} {getattr(data, 'shape', '')} {getattr(data, 'dtype', '')}"
        )
    try:
        labels = np.asarray(batch[key], dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f"{what}: '{key}' must be a list of integers ({e})") from e
    if labels.ndim != 1 or len(labels) != len(data):
        raise DataError(f"{what}: {len(data)} images but '{key}' of shape {labels.shape}")
    n = labels_of.num_classes
    if labels.size and (labels.min() < 0 or labels.max() >= n):
        raise DataError(f"{what}: '{key}' must lie in 0..{n - 1}, got {labels.min()}..{labels.max()}")
    # CIFAR stores each image as 1024 R, 1024 G, 1024 B values (row-major): NCHW -> NHWC.
    images = np.ascontiguousarray(data.reshape(-1, 3, IMAGE_SIDE, IMAGE_SIDE).transpose(0, 2, 3, 1))
    return images, labels


# --------------------------------------------------------------------------- splits and the audit
Splits = dict[str, tuple[np.ndarray, np.ndarray]]


def _split(data: Batches, s: _Settings) -> tuple[Splits, dict[str, list[str]], int]:
    """The three splits (val held out of the training members), the name of every image, and the
    number of training images in the archive."""
    train_names = [f"{m}[{row}]" for m, _, y in data.train for row in range(len(y))]
    if len(data.train) == 1:  # CIFAR-100: one member, no copy of its ~150 MB
        train_images, train_labels = data.train[0][1], data.train[0][2]
    else:
        train_images = np.concatenate([x for _, x, _ in data.train])
        train_labels = np.concatenate([y for _, _, y in data.train])
    test_member, test_images, test_labels = data.test
    keep, held = stratified_holdout(train_labels, s.val_fraction, s.seed)
    splits = {
        "train": (train_images[keep], train_labels[keep]),
        "val": (train_images[held], train_labels[held]),
        "test": (test_images, test_labels),
    }
    names = {"train": [train_names[i] for i in keep], "val": [train_names[i] for i in held],
             "test": [f"{test_member}[{row}]" for row in range(len(test_labels))]}
    return splits, names, len(train_labels)


def _apply_audit(audit: duplicates.Outcome, splits: Splits, train_names: list[str], manifest: dict[str, Any],
                 s: _Settings) -> None:
    """Leave the dropped train copies out (listed in ``excluded``) and record the audit in the manifest."""
    for position, reason in sorted(audit.dropped.items()):
        manifest["excluded"].append({"split": "train", "file": train_names[position], "reason": reason})
    images, labels = splits["train"]
    kept = np.ones(len(labels), bool)
    kept[list(audit.dropped)] = False
    splits["train"] = (duplicates.keep_rows(images, audit.dropped), labels[kept])
    manifest["duplicates"] = audit.summary
    manifest["notes"].append(duplicates.note(audit.summary, f"{s.key}.{_DROP_KEY}"))
    duplicates.log_findings(s.name, audit.summary)


def audit_splits(splits: Splits, names: dict[str, list[str]], classes: list[str], threshold: float, drop: bool,
                 name: str = "cifar10") -> duplicates.Outcome:
    """The leak audit of the three splits of data set `name`. The thumbnails are the images themselves
    (32 px), taken from the split arrays when a pair is verified, so the audit adds only the
    descriptors to memory."""
    refs = [duplicates.ImageRef(s, names[s][i], classes[int(y)], i)
            for s in packed.SPLITS for i, y in enumerate(splits[s][1])]
    side = duplicates.thumb_side(IMAGE_SIDE, IMAGE_SIDE)
    prints = duplicates.Fingerprints(len(refs), side, keep_thumbs=False)
    for split in packed.SPLITS:
        for image in tqdm(splits[split][0], desc=f"fingerprint {name} {split}", unit="img", mininterval=0.5,
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
    return duplicates.outcome(name, result, {s: splits[s][0] for s in packed.SPLITS}, drop,
                              f"datasets.{name}.{_DROP_KEY}")
# --------------------------------------------------------------------------- the two kinds
@dataclass(frozen=True)
class LabelSet:
    """One set of labels of an archive: the batch key of the labels, the meta key of the names."""

    batch_key: str
    meta_key: str
    num_classes: int
    description: str  # for the manifest's notes, e.g. "the 20 coarse superclasses"


@dataclass(frozen=True)
class Batches:
    """An archive read and checked: class names in label order, then each member's
    ``(member, N x 32 x 32 x 3 uint8 images, int64 labels)``."""

    classes: list[str]
    train: list[tuple[str, np.ndarray, np.ndarray]]
    test: tuple[str, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class _Settings:
    """A data set's preprocess settings, checked."""

    name: str
    key: str  # "datasets.<name>", the prefix of every key an error names
    val_fraction: float
    seed: int
    threshold: float
    drop: bool
    label_mode: str | None  # None where the archive has a single set of labels
    labels: LabelSet
    noisy: list[str]


@dataclass(frozen=True, eq=False)
class CifarKind:
    """The layout of one official CIFAR archive; `prepare`, `describe` and `DEFAULT_TRAIN` make it
    a data-set kind."""

    kind: str
    title: str
    folder: str
    train_members: tuple[str, ...]
    test_member: str
    meta_member: str
    label_modes: Mapping[str, LabelSet]  # the first is the default; a single one: no label_mode setting
    default_train: Mapping[str, Any]

    @property
    def DEFAULT_TRAIN(self) -> dict[str, Any]:  # noqa: N802 - the name every kind exposes
        """The kind's default ``normalize`` / ``augment`` (a copy: callers merge into it)."""
        return copy.deepcopy(dict(self.default_train))

    @property
    def members(self) -> tuple[str, ...]:
        return (*self.train_members, self.test_member, self.meta_member)

    def describe(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """``image_size``, ``num_classes`` (of the chosen labels, before any filtering), ``title`` and,
        for `cnnbench plan`, ``planning``: the official split sizes (validation held out of train)
        and preprocess's cost, measured on CIFAR-10 with a 2-core x86 CPU (6,102 images of the
        mirror's subset in 9.2 s, with ~3 s of start-up; 3,078 archive bytes per image)."""
        mode, labels = self._label_set(settings, f"datasets.{_name(settings, self.kind)}")
        title = self.title if mode is None else f"{self.title} ({mode} labels)"
        val = round(float(settings.get("val_fraction", 0.1)) * 50_000)
        return {"image_size": IMAGE_SIDE, "num_classes": labels.num_classes, "title": title,
                "planning": {"splits": {"train": 50_000 - val, "val": val, "test": 10_000},
                             "preprocess_seconds_per_image": 0.0010, "archive_bytes_per_image": 3_078}}

    def _label_set(self, settings: Mapping[str, Any], key: str) -> tuple[str | None, LabelSet]:
        modes = list(self.label_modes)
        if len(modes) == 1:
            if "label_mode" in settings:
                raise ConfigError(f"{key}.label_mode: {self.title} has a single set of labels; remove the key")
            return None, self.label_modes[modes[0]]
        mode = settings.get("label_mode", modes[0])
        if mode not in self.label_modes:
            raise ConfigError(f"{key}.label_mode must be one of {', '.join(modes)}, got {mode!r}")
        return mode, self.label_modes[mode]

    def _settings(self, settings: Mapping[str, Any]) -> _Settings:
        name = _name(settings, self.kind)
        key = f"datasets.{name}"
        mode, labels = self._label_set(settings, key)
        val_fraction = settings.get("val_fraction", 0.1)
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
            raise ConfigError(f"{key}.val_fraction must be in [0, 1), got {val_fraction!r}")
        seed = settings.get("split_seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"{key}.split_seed must be an integer >= 0, got {seed!r}")
        drop = settings.get(_DROP_KEY, False)
        if not isinstance(drop, bool):
            raise ConfigError(f"{key}.{_DROP_KEY} must be true or false, got {drop!r}")
        noisy = settings.get("noisy_classes") or []
        if not isinstance(noisy, list) or not all(isinstance(c, str) and c for c in noisy) or len(set(noisy)) < len(noisy):
            raise ConfigError(f"{key}.noisy_classes must be a list of distinct class names, got {noisy!r}")
        return _Settings(name, key, float(val_fraction), seed, duplicates.threshold_setting(settings, key), drop,
                         mode, labels, list(noisy))

    def read(self, archive: Path, label_mode: str | None = None, name: str | None = None) -> Batches:
        """Read and check every member of `archive` (`label_mode` None: the default labels).
        `name` is the data set's name in the hints to download it again."""
        labels = self.label_modes[label_mode or next(iter(self.label_modes))]
        members = _read_members(archive, self, name or self.kind)
        meta_what = f"{archive}:{self.meta_member}"
        names = load_pickle(members.pop(self.meta_member), meta_what).get(labels.meta_key)
        if not isinstance(names, list) or len(names) != labels.num_classes:
            count = len(names) if isinstance(names, list) else type(names).__name__
            raise DataError(f"{meta_what}: '{labels.meta_key}' must list {labels.num_classes} class names, "
                            f"got {count}")
        classes = [str(_str(n)) for n in names]

        def batch(member: str) -> tuple[str, np.ndarray, np.ndarray]:
            what = f"{archive}:{member}"
            # pop: each raw pickle is dropped once its arrays exist (CIFAR-100's train is ~155 MB)
            return (member, *_batch_arrays(load_pickle(members.pop(member), what), what, labels))

        return Batches(classes, [batch(m) for m in self.train_members], batch(self.test_member))

    def prepare(self, raw_dir: Path, out_dir: Path, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Pack the archive ``raw_dir/settings["filename"]`` into `out_dir`; return the manifest.

        Args:
            raw_dir: the download stage's output (archive + ``source.json``).
            out_dir: the packed store to write (see `cnnbench.data.packed`).
            settings: the data set's preprocess settings; reads ``name`` (default: the kind),
                ``filename``, ``val_fraction`` (0 <= f < 1), ``split_seed``, ``label_mode``
                (CIFAR-100: fine|coarse), ``noisy_classes``, ``near_duplicate_threshold`` and
                ``drop_train_duplicates_of_eval`` (default false: the official split as published).
        """
        raw_dir, out_dir = Path(raw_dir), Path(out_dir)
        s = self._settings(settings)
        archive = locate_archive(raw_dir, settings, s.name)
        source = read_source(raw_dir, s.name)
        data = self.read(archive, s.label_mode, s.name)
        unknown = [c for c in s.noisy if c not in data.classes]
        if unknown:
            raise ConfigError(
                f"{s.key}.noisy_classes names {unknown}, not a class of {self.describe(settings)['title']} "
                f"(its {len(data.classes)} classes are e.g. {data.classes[:3]}); fix the spelling or remove it"
            )
        splits, names, archive_train = _split(data, s)
        manifest = self._manifest(s, source, data.classes, archive_train, len(splits["test"][1]))
        del data
        audit = audit_splits(splits, names, manifest["classes"], s.threshold, s.drop, s.name)
        _apply_audit(audit, splits, names["train"], manifest, s)
        packed.write_prepared(out_dir, splits, manifest["classes"], manifest,
                              extra_json={duplicates.FILE: audit.record},
                              extra_arrays={duplicates.THUMBS_FILE: audit.thumbs})
        log.info("%s: %d train, %d val, %d test -> %s", s.name, *(len(splits[k][1]) for k in packed.SPLITS), out_dir)
        return packed.read_manifest(out_dir)

    def _manifest(self, s: _Settings, source: dict[str, Any], classes: list[str], n_train: int,
                  n_test: int) -> dict[str, Any]:
        notes = [
            f"val is a stratified {s.val_fraction:g} hold-out of the official training images "
            f"(numpy default_rng seed {s.seed}); test is the official {self.test_member} and is not used for "
            "model selection",
        ]
        if s.label_mode is not None:
            notes.append(f"labels: {s.labels.description} (label_mode {s.label_mode})")
        if n_train != _OFFICIAL["train"] or n_test != _OFFICIAL["test"]:
            notes.append(f"this archive is a subset: {n_train} train and {n_test} test images "
                         f"(the official set has {_OFFICIAL['train']} and {_OFFICIAL['test']})")
        if s.val_fraction == 0.0:
            notes.append("val_fraction is 0: there is no val split; report the final epoch")
        if s.noisy:
            notes.append("noisy classes are stored; variants with filter_noisy drop them at load time")
        manifest: dict[str, Any] = {"dataset": s.name, "kind": self.kind, "source": source, "classes": classes}
        if s.label_mode is not None:
            manifest["label_mode"] = s.label_mode
        manifest.update({"noisy_classes": s.noisy, "val_fraction": s.val_fraction, "split_seed": s.seed,
                         "archive_train_count": n_train, "excluded": [], "notes": notes})
        return manifest


def _name(settings: Mapping[str, Any], kind: str) -> str:
    """The data set's name in params.yaml (settings from before names existed: the kind)."""
    return str(settings.get("name") or kind)


_AUGMENT = {"crop": "pad", "crop_padding": 4, "flip": True}

CIFAR10 = CifarKind(
    kind="cifar10", title="CIFAR-10", folder="cifar-10-batches-py",
    train_members=tuple(f"data_batch_{i}" for i in range(1, 6)), test_member="test_batch", meta_member="batches.meta",
    label_modes=MappingProxyType({"default": LabelSet("labels", "label_names", 10, "the 10 classes")}),
    default_train=MappingProxyType({"normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
                                    "augment": _AUGMENT}),
)
CIFAR100 = CifarKind(
    kind="cifar100", title="CIFAR-100", folder="cifar-100-python",
    train_members=("train",), test_member="test", meta_member="meta",
    label_modes=MappingProxyType({
        "fine": LabelSet("fine_labels", "fine_label_names", 100, "the 100 fine classes"),
        "coarse": LabelSet("coarse_labels", "coarse_label_names", 20, "the 20 coarse superclasses"),
    }),
    # normalize None: computed from the training split (the set's statistics differ from CIFAR-10's)
    default_train=MappingProxyType({"normalize": None, "augment": _AUGMENT}),
)


