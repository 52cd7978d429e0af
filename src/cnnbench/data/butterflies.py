"""Butterflies & moths (Kaggle, 100 species): validate, decode and pack the zip.

The archive is read in memory, never extracted. Before any image is decoded the
whole member list is checked: unsafe paths (absolute, drive letter, ``..``),
symlink members and archives that would expand beyond
``datasets.butterflies.max_uncompressed_bytes`` are refused outright.

The CSV (``butterflies and moths.csv`` with columns ``class id, filepaths, labels,
data set``, or the older ``butterflies.csv`` without ``class id``; at the archive
root or under one top-level folder) is the index: its ``data set`` column gives the
split (train/valid/test -> train/val/test), its ``labels`` the class. Classes are
the sorted labels. Every image is fully decoded; anything that is not a 224x224
RGB JPEG, or that the CSV and the folders disagree about, is a *bad image*, skipped
with a warning and listed in the manifest (``on_bad_image: skip``) or fatal
(``on_bad_image: fail``). The bundled Keras ``.h5`` model is ignored.

The noisy classes are validated and recorded, not removed: variants drop them at
load time with ``packed.load_split(..., exclude_classes=manifest["noisy_classes"])``.

Duplicates: every image that decodes is fingerprinted for the leak audit
(`cnnbench.data.duplicates`) from its decoded 224x224 pixels, *before* the resize to
``image_size``, so every profile finds the same duplicates and drops the same files. Exact
copies, mirror images and near-duplicates (``near_duplicate_threshold``) are found within
train, val and test and across them, each pair counted as same-class or different-class (a
label error); the counts and example groups go into ``manifest["duplicates"]``, every group
into ``duplicates.json`` and thumbnails of the groups that span splits into
``duplicate_thumbs.npy``. With ``drop_train_duplicates_of_eval`` the train images that
duplicate a val or test image are left out and listed in ``excluded``.
"""

from __future__ import annotations

import logging
import zipfile
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from cnnbench.data import duplicates, packed
from cnnbench.data.archive import check_zip_members, norm_name
from cnnbench.data.fetch import locate_archive, read_source
from cnnbench.data.images import Excluded, load_image, open_image, read_table
from cnnbench.errors import ConfigError, DataError

__all__ = ["prepare", "SOURCE_SIZE", "CSV_NAMES", "DUPLICATES_FILE", "check_archive_members"]

log = logging.getLogger("cnnbench.butterflies")

SOURCE_SIZE = (224, 224)  # (width, height) of every image in the official set
CSV_NAMES = ("butterflies and moths.csv", "butterflies.csv")  # current name first, then the older one
_SPLIT_DIRS = {"train": "train", "valid": "val", "test": "test"}  # folder in the archive -> our split
_DATA_SET = {"train": "train", "valid": "val", "val": "val", "validation": "val", "test": "test"}
_KEY = "datasets.butterflies"
DUPLICATES_FILE = duplicates.FILE  # written beside manifest.json
_DROP_KEY = "drop_train_duplicates_of_eval"


# --------------------------------------------------------------------------- archive safety
def check_archive_members(zf: zipfile.ZipFile, archive: Path, max_uncompressed_bytes: int) -> int:
    """Refuse unsafe archives; return the total declared uncompressed size (`archive.check_zip_members`).

    Raises:
        DataError: a member has an absolute path, a drive letter, a ``..`` component or
            is a symlink (the message names it), or the declared sizes add up to more
            than `max_uncompressed_bytes` (the message names the limit and its param key).
    """
    return check_zip_members(
        zf, archive, max_uncompressed_bytes, limit_key=f"{_KEY}.max_uncompressed_bytes",
        hint="this is not a genuine copy of the butterfly data set, delete it and download it again",
    )


# --------------------------------------------------------------------------- CSV
class _Row:
    __slots__ = ("line", "path", "label", "split", "class_id")

    def __init__(self, line: int, path: str, label: str, split: str, class_id: int | None) -> None:
        self.line, self.path, self.label, self.split, self.class_id = line, path, label, split, class_id


def _find_csv(names: list[str], archive: Path) -> str:
    for csv_name in CSV_NAMES:
        hits = sorted(n for n in names if PurePosixPath(n).name == csv_name and n.count("/") <= 1)
        if len(hits) > 1:
            raise DataError(f"{archive} holds several {csv_name!r} files ({hits}); cannot tell which one indexes the images")
        if hits:
            return hits[0]
    raise DataError(
        f"{archive} has no {CSV_NAMES[0]!r} or {CSV_NAMES[1]!r} at its root or under one top-level folder; "
        "is this the Kaggle butterfly & moth archive?"
    )


_norm = norm_name


def _read_csv(text: str, where: str) -> tuple[list[_Row], bool]:
    """Parse the index CSV; return its rows and whether it has a class id column."""
    try:
        header, records = read_table(text, where, ("filepaths", "labels", "data set"), ("class id",))
    except DataError as e:
        if "lacks column" not in str(e):
            raise
        raise DataError(f"{e}. Expected 'class id, filepaths, labels, data set' or (older format) "
                        "'filepaths, labels, data set'") from None
    has_id = "class id" in header
    rows: list[_Row] = []
    for line, rec in records:
        data_set = rec["data set"].lower()
        if data_set not in _DATA_SET:
            raise DataError(f"{where}:{line}: unknown 'data set' value {rec['data set']!r}; expected train, valid or test")
        class_id = None
        if has_id:
            try:
                class_id = int(float(rec["class id"]))
            except ValueError:
                raise DataError(f"{where}:{line}: 'class id' {rec['class id']!r} is not an integer") from None
        if not rec["labels"]:
            raise DataError(f"{where}:{line}: empty label")
        rows.append(_Row(line, _norm(rec["filepaths"]), rec["labels"], _DATA_SET[data_set], class_id))
    return rows, has_id


def _check_class_ids(rows: list[_Row], labels: list[str], where: str) -> None:
    """The class id of each row must equal its label's position in the sorted labels."""
    index = {name: i for i, name in enumerate(labels)}
    for row in rows:
        if row.class_id is not None and row.class_id != index[row.label]:
            raise DataError(
                f"{where}:{row.line}: class id {row.class_id} of label {row.label!r} does not match its position "
                f"{index[row.label]} among the sorted labels; the CSV is inconsistent"
            )


# --------------------------------------------------------------------------- images
_THUMB_SIDE = duplicates.thumb_side(*SOURCE_SIZE)


def _decode(data: bytes, size: int) -> tuple[np.ndarray | None, duplicates.Fingerprint | None, str | None]:
    """Fully decode one image; return (HxWx3 uint8 array, its leak-audit fingerprint at 224 px, None)
    or (None, None, reason it is bad)."""
    im, reason = open_image(data)
    if im is None:
        return None, None, reason
    with im:
        if im.format != "JPEG":
            return None, None, f"not a JPEG (content is {im.format or 'unknown'})"
        if im.mode != "RGB":
            return None, None, f"colour mode {im.mode}, expected RGB"
        if im.size != SOURCE_SIZE:
            return None, None, f"size {im.size[0]}x{im.size[1]}, expected {SOURCE_SIZE[0]}x{SOURCE_SIZE[1]}"
        reason = load_image(im)  # full decode: truncated or corrupt data fails here
        if reason is not None:
            return None, None, reason
        try:
            key = duplicates.fingerprint(im, _THUMB_SIDE)  # before the resize: see the module docstring
        except ValueError as e:
            return None, None, f"cannot be fingerprinted for the leak audit ({e})"
        if im.size != (size, size):
            # Pillow's resize antialiases when downscaling (the filter support scales with the factor).
            resized = im.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(resized, dtype=np.uint8), key, None
        return np.asarray(im, dtype=np.uint8), key, None


# --------------------------------------------------------------------------- prepare
@dataclass(frozen=True)
class _Settings:
    """The validated ``datasets.butterflies`` settings that decide what preprocessing keeps."""

    image_size: int
    on_bad: str  # "skip" or "fail"
    noisy: list[str]
    drop_dups: bool  # drop_train_duplicates_of_eval
    threshold: float  # near_duplicate_threshold


def prepare(raw_dir: Path, out_dir: Path, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Pack the butterfly archive ``raw_dir/cfg["filename"]`` into `out_dir`; return the manifest.

    Args:
        raw_dir: the download stage's output (archive + ``source.json``).
        out_dir: the packed store to write (see `cnnbench.data.packed`).
        cfg: ``datasets.butterflies`` params; reads ``filename``, ``image_size``,
            ``on_bad_image`` (skip|fail), ``max_uncompressed_bytes``, ``noisy_classes``,
            ``drop_train_duplicates_of_eval`` (true|false) and ``near_duplicate_threshold``.

    The manifest adds to the common keys: ``noisy_classes``, ``splits_without_noisy``
    (per-split counts once the noisy classes are dropped), ``dropped_classes``
    (CSV classes left with no usable image; not in ``classes``), ``csv``,
    ``source_image_size``, ``on_bad_image``, ``excluded`` (every skipped, dropped or
    ignored member with its reason; ``split`` is "" for files outside the splits) and
    ``duplicates`` (counts and example groups of exact, mirrored and near-duplicates among
    the decoded images, before any is dropped; every group is in ``duplicates.json``).

    Raises:
        DataError: a missing archive or ``source.json``, an unsafe, oversized or unreadable
            archive, a malformed CSV, or (with ``on_bad_image: fail``) the first bad image,
            naming the member.
        ConfigError: an unknown noisy class, or a setting out of range (e.g. a
            ``drop_train_duplicates_of_eval`` that is not a boolean).
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    archive = locate_archive(raw_dir, cfg, "butterflies")
    image_size = int(cfg.get("image_size", SOURCE_SIZE[0]))
    if image_size < 1:
        raise ConfigError(f"{_KEY}.image_size must be a positive number of pixels, got {image_size}")
    on_bad = cfg.get("on_bad_image", "skip")
    if on_bad not in ("skip", "fail"):
        raise ConfigError(f"{_KEY}.on_bad_image must be 'skip' or 'fail', got {on_bad!r}")
    limit = int(cfg["max_uncompressed_bytes"])
    noisy = list(cfg.get("noisy_classes") or [])
    drop_dups = cfg.get(_DROP_KEY)
    if not isinstance(drop_dups, bool):
        raise ConfigError(
            f"{_KEY}.{_DROP_KEY} must be true or false, got {drop_dups!r}; set it in params.yaml "
            "(true leaves out train images that are exact or mirrored copies of a valid or test image)"
        )
    settings = _Settings(image_size, on_bad, noisy, drop_dups, duplicates.threshold_setting(cfg, _KEY))
    source = read_source(raw_dir, "butterflies")

    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(
            f"{archive} is not a readable zip archive ({e}); delete it and run `cnnbench download --dataset butterflies`"
        ) from e
    with zf:
        total_bytes = check_archive_members(zf, archive, limit)
        return _prepare(zf, archive, out_dir, settings, source, total_bytes)


def _prepare(
    zf: zipfile.ZipFile, archive: Path, out_dir: Path, settings: _Settings, source: dict[str, Any], total_bytes: int
) -> dict[str, Any]:
    # Every check that needs no image comes first, so a wrong archive or setting fails in seconds.
    index = _read_index(zf, archive)
    _check_noisy_classes(settings.noisy, index.labels, archive)
    excluded = _excluded(settings.on_bad, archive, index.prefix)
    folder_files, folders = _sort_members(index, excluded)
    candidates = _match_csv_to_folders(index, folder_files, folders, excluded)

    decoded = _decode_splits(zf, index, candidates, settings, excluded)
    audit = _audit(decoded, settings, excluded)
    summary = audit.summary
    classes, dropped, noisy_kept = _kept_classes(index.labels, decoded, settings.noisy, archive)
    notes = _notes(settings, classes, dropped, noisy_kept, excluded.items, summary)
    _log_findings(dropped, summary)

    splits, without_noisy = _pack_splits(decoded, classes, noisy_kept)
    manifest = _build_manifest(
        index, source, total_bytes, settings, classes=classes, noisy_kept=noisy_kept, without_noisy=without_noisy,
        dropped=dropped, excluded=excluded.items, summary=summary, notes=notes,
    )
    packed.write_prepared(out_dir, splits, classes, manifest, extra_json={DUPLICATES_FILE: audit.record},
                          extra_arrays={duplicates.THUMBS_FILE: audit.thumbs})
    log.info(
        "butterflies: %s images of %d classes, %d excluded -> %s",
        {s: len(decoded.labels[s]) for s in packed.SPLITS},
        len(classes),
        len(excluded.items),
        out_dir,
    )
    return packed.read_manifest(out_dir)


# --------------------------------------------------------------------------- prepare: index and members
@dataclass(frozen=True)
class _Index:
    """The archive's files and its parsed, checked index CSV."""

    members: dict[str, zipfile.ZipInfo]  # normalised name -> member, folders left out
    csv_name: str
    prefix: str  # "" or "<top-level folder>/": the CSV's paths are relative to the folder it is in
    rows: list[_Row]
    has_id: bool  # the CSV has a class id column
    labels: list[str]  # the CSV's classes, sorted: a class id is a position in this list


def _read_index(zf: zipfile.ZipFile, archive: Path) -> _Index:
    """Find, read and parse the index CSV; its class ids must match the sorted labels."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        if not info.is_dir():
            members[_norm(info.filename)] = info
    csv_name = _find_csv(list(members), archive)
    root = str(PurePosixPath(csv_name).parent)
    prefix = "" if root == "." else root + "/"
    where = f"{archive}:{csv_name}"
    try:
        text = zf.read(members[csv_name]).decode("utf-8-sig")
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, UnicodeDecodeError) as e:
        raise DataError(f"{where} cannot be read ({type(e).__name__}: {e}); delete {archive} and run "
                        "`cnnbench download --dataset butterflies`") from e
    rows, has_id = _read_csv(text, where)
    labels = sorted({r.label for r in rows})
    _check_class_ids(rows, labels, where)
    return _Index(members, csv_name, prefix, rows, has_id, labels)


def _check_noisy_classes(noisy: list[str], labels: list[str], archive: Path) -> None:
    """A noisy class that the CSV does not know is a typo in params.yaml, not a class to ignore."""
    unknown = [n for n in noisy if n not in labels]
    if unknown:
        raise ConfigError(
            f"{_KEY}.noisy_classes names {unknown}, not a class of {archive} "
            f"(its CSV has {len(labels)} classes, e.g. {labels[:3]}); fix the spelling or remove it"
        )


def _excluded(on_bad: str, archive: Path, prefix: str) -> Excluded:
    """The manifest's ``excluded`` list; the bundled ``.h5`` model is among its ignored files."""
    return Excluded(on_bad, archive, _KEY, prefix)


def _sort_members(index: _Index, excluded: Excluded) -> tuple[dict[str, tuple[str, str]], set[str]]:
    """Everything in the archive that is not the CSV: images in split class folders, returned as
    ``({relative path: (split, folder class)}, {"<split dir>/<class>" folders})``, or other files,
    which are ignored and listed."""
    folder_files: dict[str, tuple[str, str]] = {}
    folders: set[str] = set()
    for name in index.members:
        if name == index.csv_name:
            continue
        rel = name[len(index.prefix):] if name.startswith(index.prefix) else None
        parts = rel.split("/") if rel is not None else []
        if rel is not None and len(parts) >= 3 and parts[0] in _SPLIT_DIRS:
            folder_files[rel] = (_SPLIT_DIRS[parts[0]], parts[1])
            folders.add("/".join(parts[:2]))
            continue
        if name.lower().endswith(".h5"):
            reason = "ignored: Keras model file (.h5), not part of the data"
        elif PurePosixPath(name).name in CSV_NAMES:
            reason = f"ignored: another index CSV ({index.csv_name!r} is used)"
        else:
            reason = "ignored: not inside a train/, valid/ or test/ class folder"
        excluded.ignored(rel if rel is not None else name, reason)
    return folder_files, folders


def _match_csv_to_folders(
    index: _Index, folder_files: dict[str, tuple[str, str]], folders: set[str], excluded: Excluded
) -> list[_Row]:
    """The CSV rows whose image is in the archive, in CSV order. Every disagreement between the
    CSV and the folders is a bad image: CSV rows first, then files the CSV does not list."""
    listed: dict[str, int] = {}
    candidates: list[_Row] = []
    for row in index.rows:
        if row.path in listed:
            excluded.bad(row.split, row.path, f"duplicate CSV row (also on line {listed[row.path]})")
            continue
        listed[row.path] = row.line
        folder = str(PurePosixPath(row.path).parent)
        if row.path in folder_files:
            candidates.append(row)
        elif folder not in folders:
            excluded.bad(row.split, row.path, f"folder {folder}/ of CSV class {row.label!r} is not in the archive")
        else:
            excluded.bad(row.split, row.path, "listed in the CSV but missing from the archive")
    label_set = set(index.labels)
    for rel, (split, folder_class) in folder_files.items():
        if rel in listed:
            continue
        if folder_class not in label_set:
            excluded.bad(split, rel, f"class folder {folder_class!r} is not in the CSV")
        else:
            excluded.bad(split, rel, "in a class folder but not listed in the CSV")
    return candidates


# --------------------------------------------------------------------------- prepare: decode
@dataclass
class _Decoded:
    """The images per split that decoded, with their leak-audit fingerprints."""

    arrays: dict[str, np.ndarray]  # split -> room for every candidate; the first len(labels[split]) are filled
    labels: dict[str, list[str]]  # split -> class name of each kept image, in CSV order
    refs: list[duplicates.ImageRef]  # every decoded image, in the order of `prints`
    prints: duplicates.Fingerprints

    def filled(self, split: str) -> np.ndarray:
        return self.arrays[split][: len(self.labels[split])]


def _decode_splits(
    zf: zipfile.ZipFile, index: _Index, candidates: list[_Row], settings: _Settings, excluded: Excluded
) -> _Decoded:
    """Decode and fingerprint every candidate; bad ones go to `excluded`."""
    per_split = Counter(r.split for r in candidates)
    size = settings.image_size
    decoded = _Decoded(
        arrays={s: np.empty((per_split[s], size, size, 3), np.uint8) for s in packed.SPLITS},
        labels={s: [] for s in packed.SPLITS},
        refs=[],
        prints=duplicates.Fingerprints(len(candidates), _THUMB_SIDE),
    )
    for row in tqdm(candidates, desc="decode butterflies", unit="img", mininterval=0.5, leave=False):
        array, key = _decode_row(zf, index, row, size, excluded)
        if array is None or key is None:
            continue
        stored = len(decoded.labels[row.split])
        decoded.arrays[row.split][stored] = array
        decoded.labels[row.split].append(row.label)
        decoded.refs.append(duplicates.ImageRef(row.split, row.path, row.label, stored))
        decoded.prints.add(key)
    return decoded


def _decode_row(
    zf: zipfile.ZipFile, index: _Index, row: _Row, size: int, excluded: Excluded
) -> tuple[np.ndarray | None, duplicates.Fingerprint | None]:
    """Read and decode one CSV row's image: (pixels, its fingerprint), or (None, None) when it is bad."""
    try:
        data = zf.read(index.members[index.prefix + row.path])
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as e:
        excluded.bad(row.split, row.path, f"zip member cannot be read ({type(e).__name__}: {e})")
        return None, None
    array, key, reason = _decode(data, size)
    if array is None or key is None:
        assert reason is not None
        excluded.bad(row.split, row.path, reason)
        return None, None
    return array, key


# --------------------------------------------------------------------------- prepare: leak audit, what is kept, manifest
def _audit(decoded: _Decoded, settings: _Settings, excluded: Excluded) -> duplicates.Outcome:
    """Find every duplicate pair; with ``drop_dups`` leave out the train copies of val/test images."""
    result = duplicates.audit(decoded.refs, decoded.prints, settings.threshold)
    out = duplicates.outcome("butterflies", result, {s: decoded.filled(s) for s in packed.SPLITS},
                             settings.drop_dups, f"{_KEY}.{_DROP_KEY}")
    train_files = {r.index: r.name for r in decoded.refs if r.split == "train"}
    for position, reason in sorted(out.dropped.items()):
        excluded.dropped(train_files[position], reason)
    kept = duplicates.keep_rows(decoded.filled("train"), out.dropped)
    decoded.labels["train"] = [c for i, c in enumerate(decoded.labels["train"]) if i not in out.dropped]
    decoded.arrays["train"] = kept
    return out


def _kept_classes(
    csv_labels: list[str], decoded: _Decoded, noisy: list[str], archive: Path
) -> tuple[list[str], list[str], list[str]]:
    """``(classes, dropped, noisy_kept)``: the CSV's classes with at least one kept image (the
    others are dropped rather than left empty), and the noisy ones among them."""
    kept_labels = {label for split_labels in decoded.labels.values() for label in split_labels}
    classes = [c for c in csv_labels if c in kept_labels]
    dropped = [c for c in csv_labels if c not in kept_labels]
    if not classes:
        raise DataError(f"{archive}: no usable image left (see the warnings); the archive is not usable")
    noisy_kept = [c for c in noisy if c in classes]
    return classes, dropped, noisy_kept


def _notes(
    settings: _Settings, classes: list[str], dropped: list[str], noisy_kept: list[str],
    excluded: list[dict[str, str]], summary: dict[str, Any],
) -> list[str]:
    """The manifest's notes: how the splits were made and what was left out."""
    image_size = settings.image_size
    notes: list[str] = [
        "splits follow the CSV's 'data set' column: train -> train, valid -> val (model selection), test -> test",
        f"images are {SOURCE_SIZE[0]}x{SOURCE_SIZE[1]} RGB JPEGs"
        + (f", resized to {image_size}x{image_size} with Pillow bilinear (antialiased)" if image_size != SOURCE_SIZE[0] else ""),
        "noisy classes are stored; variants with filter_noisy drop them at load time",
    ]
    if dropped:
        notes.append(f"classes {dropped} of the CSV have no usable image and are not among the classes")
    if len(noisy_kept) != len(settings.noisy):
        notes.append(f"noisy classes {[c for c in settings.noisy if c not in classes]} have no usable image")
    n_bad = sum(1 for e in excluded if not e["reason"].startswith(("ignored:", "dropped:")))
    if n_bad:
        notes.append(f"{n_bad} bad image(s) or CSV/folder mismatch(es) skipped (on_bad_image: skip); see excluded.csv")
    notes.append(duplicates.note(summary, f"{_KEY}.{_DROP_KEY}"))
    return notes


def _log_findings(dropped: list[str], summary: dict[str, Any]) -> None:
    """Say what the manifest notes say that needs a reader's attention."""
    if dropped:
        log.warning("classes %s have no usable image and are left out", dropped)
    duplicates.log_findings("butterflies", summary)


def _pack_splits(
    decoded: _Decoded, classes: list[str], noisy_kept: list[str]
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, dict[str, int]]]:
    """Each split's ``(images, class indices)``, and its counts once the noisy classes are dropped."""
    index = {name: i for i, name in enumerate(classes)}
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    without_noisy: dict[str, dict[str, int]] = {}
    for split in packed.SPLITS:
        names = decoded.labels[split]
        labels = np.array([index[n] for n in names], dtype=np.int64)
        splits[split] = (decoded.arrays[split][: len(labels)], labels)
        without_noisy[split] = {
            "count": int(sum(1 for n in names if n not in noisy_kept)),
            "num_classes": len(classes) - len(noisy_kept),
        }
    return splits, without_noisy


def _build_manifest(
    index: _Index, source: dict[str, Any], total_bytes: int, settings: _Settings, *, classes: list[str],
    noisy_kept: list[str], without_noisy: dict[str, dict[str, int]], dropped: list[str],
    excluded: list[dict[str, str]], summary: dict[str, Any], notes: list[str],
) -> dict[str, Any]:
    """The butterfly keys of manifest.json (``splits`` is filled in by `packed.write_prepared`)."""
    return {
        "dataset": "butterflies",
        "source": source,
        "source_image_size": [SOURCE_SIZE[1], SOURCE_SIZE[0]],
        "classes": classes,
        "noisy_classes": noisy_kept,
        "splits": {},
        "splits_without_noisy": without_noisy,
        "dropped_classes": dropped,
        "csv": index.csv_name,
        "csv_has_class_id": index.has_id,
        "uncompressed_bytes": total_bytes,
        "on_bad_image": settings.on_bad,
        "excluded": excluded,
        "duplicates": summary,
        "notes": notes,
    }


# --------------------------------------------------------------------------- the kind (cnnbench.data.kinds)
# ImageNet's statistics (the images are ImageNet-like photographs) and a random resized crop.
DEFAULT_TRAIN = {"normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
                 "augment": {"crop": "resized", "min_scale": 0.35, "flip": True}}


def describe(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What the butterfly set is before its archive is read (100 species, ``image_size`` px);
    ``planning``: the Kaggle split sizes and preprocess's cost, measured on a 2-core x86 CPU (3,000
    JPEGs of the mirror's subset in 16.7 s, with ~3 s of start-up), for `cnnbench plan`."""
    return {"image_size": int(settings["image_size"]), "num_classes": 100, "title": "Butterflies & moths",
            "planning": {"splits": {"train": 12_594, "val": 500, "test": 500},
                         "preprocess_seconds_per_image": 0.0045, "archive_bytes_per_image": 26_300}}
