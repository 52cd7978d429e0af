"""What the image-file data set kinds share: decoding any image Pillow reads, making it RGB and
``image_size`` square, bad-image bookkeeping, reading an index CSV, and packing a list of images.

The kinds ``imagefolder`` (`cnnbench.data.imagefolder`) and ``csv`` (`cnnbench.data.imagecsv`) list
their images as `Item`s (split, file, class); `pack_items` does the rest:

* **Decoding.** Every image is fully decoded (truncated or corrupt data fails here); animated
  GIF/WebP give their first frame; the EXIF orientation is applied, as image viewers show the photo.
  An image that cannot be read is a *bad image*: with ``on_bad_image: skip`` it is left out with a
  warning and listed in the manifest's ``excluded`` with the reason, with ``fail`` it stops
  preprocessing, naming the file.
* **Colour.** Every image becomes 8-bit RGB (`to_rgb`): grey (L, 1), palette (P), CMYK, YCbCr are
  converted by Pillow; 16-bit grey (I;16, I) is scaled from 0..65535 to 0..255 and float grey (F)
  clipped to 0..255; an alpha channel or transparency (RGBA, LA, PA, transparent P) is composited on
  white, so a transparent background reads as white, as a viewer shows it. Each converted image is
  listed in the manifest's ``converted`` (split, file, from_mode) and counted per mode in
  ``converted_modes``.
* **Size** (``image_size`` px square, ``resize``): ``shorter-side+center-crop`` (default) keeps the
  aspect ratio: the centred square of side min(width, height) is resized to image_size (the same as
  scaling the shorter side to image_size and cropping the centre); ``stretch`` resizes the whole image
  to image_size x image_size, distorting its aspect ratio. Pillow bilinear, antialiased when shrinking.
* **Leak audit.** Every decoded image is fingerprinted (as RGB, before the resize) for
  `cnnbench.data.duplicates`: exact, mirrored and near-duplicate copies within and across splits,
  and with ``drop_train_duplicates_of_eval`` (default true) the train copies of val/test images are
  left out and listed in ``excluded``.
* **Noisy classes.** ``noisy_classes`` must name classes; they are recorded, not removed (variants
  drop them at load time), with each split's count without them in ``splits_without_noisy``.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from cnnbench.data import duplicates, packed
from cnnbench.data.archive import Archive, open_archive
from cnnbench.data.splits import stratified_holdout
from cnnbench.errors import ConfigError, DataError

__all__ = [
    "RESIZE_POLICIES", "DEFAULT_RESIZE", "DEFAULT_MAX_BYTES", "DEFAULT_TRAIN", "describe", "ImageSettings",
    "image_settings", "open_image", "load_image", "to_rgb", "fit", "decode", "Excluded", "read_table",
    "Item", "pack_items", "open_source_archive", "is_hidden", "check_noisy", "carve_val", "SPLIT_NAMES",
]

log = logging.getLogger("cnnbench.images")

RESIZE_POLICIES = ("shorter-side+center-crop", "stretch")
DEFAULT_RESIZE = RESIZE_POLICIES[0]
DEFAULT_MAX_BYTES = 8 * 2**30  # max_uncompressed_bytes when not set: 8 GiB
_DROP_KEY = "drop_train_duplicates_of_eval"

# The kinds' defaults under datasets.<name>.train: normalisation from the training split's own
# per-channel mean and std (preprocess records them), and the ImageNet-style random resized crop
# with flips, which suits photographs of any size; for small images (32 px and below) a padded
# random crop (`augment: {crop: pad, crop_padding: 4, flip: true}`) is the usual choice instead.
DEFAULT_TRAIN: dict[str, Any] = {"normalize": None, "augment": {"crop": "resized", "min_scale": 0.35, "flip": True}}


def describe(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What an image-file data set is before its archive is read: ``image_size`` (required), no class count."""
    key = f"datasets.{settings.get('name', '?')}"
    size = settings.get("image_size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"{key}.image_size must be a positive number of pixels (the side of the square images "
                          f"preprocess makes), got {size!r}")
    return {"image_size": size, "num_classes": None, "title": str(settings.get("title") or settings.get("name"))}


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class ImageSettings:
    """The checked settings both kinds read (``key`` is ``datasets.<name>``)."""

    name: str
    key: str
    image_size: int
    resize: str
    on_bad: str
    limit: int
    threshold: float
    drop_dups: bool
    noisy: list[str]
    val_fraction: float
    seed: int


def _fraction(settings: Mapping[str, Any], key: str, name: str, default: float) -> float:
    value = settings.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{key}.{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def image_settings(settings: Mapping[str, Any]) -> ImageSettings:
    """Check the settings both kinds share; raises ConfigError naming ``datasets.<name>.<key>``."""
    name = str(settings.get("name") or "?")
    key = f"datasets.{name}"
    size = describe(settings)["image_size"]
    resize = settings.get("resize", DEFAULT_RESIZE)
    if resize not in RESIZE_POLICIES:
        raise ConfigError(f"{key}.resize must be one of {list(RESIZE_POLICIES)}, got {resize!r}")
    on_bad = settings.get("on_bad_image", "skip")
    if on_bad not in ("skip", "fail"):
        raise ConfigError(f"{key}.on_bad_image must be 'skip' or 'fail', got {on_bad!r}")
    limit = settings.get("max_uncompressed_bytes", DEFAULT_MAX_BYTES)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"{key}.max_uncompressed_bytes must be a positive number of bytes, got {limit!r}")
    drop = settings.get(_DROP_KEY, True)
    if not isinstance(drop, bool):
        raise ConfigError(f"{key}.{_DROP_KEY} must be true or false, got {drop!r}")
    noisy = settings.get("noisy_classes") or []
    if not isinstance(noisy, list) or not all(isinstance(n, str) for n in noisy):
        raise ConfigError(f"{key}.noisy_classes must be a list of class names, got {noisy!r}")
    seed = settings.get("split_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{key}.split_seed must be a non-negative integer, got {seed!r}")
    return ImageSettings(name, key, size, resize, on_bad, limit, duplicates.threshold_setting(settings, key), drop,
                         list(noisy), _fraction(settings, key, "val_fraction", 0.1), seed)


def open_source_archive(raw_dir: Path, settings: Mapping[str, Any], s: ImageSettings) -> Archive:
    """The downloaded archive ``raw_dir/<filename>``, opened and checked (`cnnbench.data.archive`)."""
    from cnnbench.data.fetch import locate_archive

    path = locate_archive(raw_dir, settings, s.name)
    return open_archive(
        path, max_uncompressed_bytes=s.limit, limit_key=f"{s.key}.max_uncompressed_bytes",
        hint="remove such members (or links) from the source and run "
             f"`cnnbench download --dataset {s.name}` again",
        redo=f"check {s.key}.source (a .zip, .tar, .tar.gz or a folder), delete {path} and run "
             f"`cnnbench download --dataset {s.name}` again",
    )


def is_hidden(name: str) -> bool:
    """Files no one means as data: hidden files (``.DS_Store``, macOS ``._*``), ``__MACOSX/``, ``Thumbs.db``."""
    parts = name.split("/")
    return any(p.startswith(".") or p == "__MACOSX" for p in parts) or parts[-1].lower() in ("thumbs.db", "desktop.ini")


# --------------------------------------------------------------------------- one image
def open_image(data: bytes) -> tuple[Image.Image | None, str | None]:
    """``(image, None)`` with only the header read, or ``(None, why it is not an image)``."""
    if not data:
        return None, "empty file (0 bytes)"
    try:
        return Image.open(io.BytesIO(data)), None
    except Exception as e:  # UnidentifiedImageError, OSError, SyntaxError, DecompressionBombError
        # Pillow names the buffer object with its memory address: the manifest would differ from run to run
        message = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", " (no format Pillow reads)", str(e))
        return None, f"not a readable image ({type(e).__name__}: {message})"


def load_image(im: Image.Image) -> str | None:
    """Fully decode `im`; None, or why its data is corrupt or truncated."""
    try:
        im.load()
    except Exception as e:
        return f"corrupt or truncated {im.format or 'image'} ({type(e).__name__}: {e})"
    return None


def _grey_16(im: Image.Image) -> Image.Image:
    """16-bit (or 32-bit integer) grey scaled from 0..65535 to 8 bits; float grey clipped to 0..255."""
    a = np.asarray(im, dtype=np.float64)
    if im.mode != "F":
        a = a / 257.0
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L")


def to_rgb(im: Image.Image) -> tuple[Image.Image, str | None]:
    """``(the image as 8-bit RGB, the mode it had or None when it was RGB already)``; see the module
    docstring for each mode. Raises ValueError/OSError when Pillow cannot convert the mode."""
    mode = im.mode
    transparent = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if mode == "RGB" and not transparent:
        return im, None
    label = mode if mode != "RGB" else "RGB with transparency"
    if mode.startswith("I") or mode == "F":
        return _grey_16(im).convert("RGB"), label
    if transparent:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        white.alpha_composite(rgba)
        return white.convert("RGB"), label
    return im.convert("RGB"), label


def fit(im: Image.Image, size: int, resize: str) -> Image.Image:
    """`im` as size x size by the `resize` policy (`RESIZE_POLICIES`; see the module docstring)."""
    w, h = im.size
    if (w, h) == (size, size):
        return im
    if resize == "stretch":
        return im.resize((size, size), Image.Resampling.BILINEAR)
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    if side == size and left.is_integer() and top.is_integer():  # no resampling needed: crop exactly
        return im.crop((int(left), int(top), int(left) + size, int(top) + size))
    return im.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))


@dataclass
class Decoded:
    """One image as stored (size x size x 3 uint8), its leak-audit fingerprint, its source size and mode."""

    array: np.ndarray
    key: duplicates.Fingerprint
    source_size: tuple[int, int]  # (width, height)
    from_mode: str | None  # the mode it was converted from, None when it was RGB


def decode(data: bytes, size: int, resize: str, thumb_side: int) -> Decoded | str:
    """Decode, convert and resize one image file; the `Decoded` image or why it is a bad image."""
    im, reason = open_image(data)
    if im is None:
        return reason or "not an image"
    with im:
        reason = load_image(im)
        if reason is not None:
            return reason
        try:
            im = ImageOps.exif_transpose(im) or im
        except Exception:  # a broken EXIF block: keep the pixels as stored
            pass
        try:
            rgb, from_mode = to_rgb(im)
        except (ValueError, OSError) as e:
            return f"colour mode {im.mode} cannot be converted to RGB ({e})"
        try:
            key = duplicates.fingerprint(rgb, thumb_side)
        except ValueError as e:
            return f"cannot be fingerprinted for the leak audit ({e})"
        return Decoded(np.asarray(fit(rgb, size, resize), dtype=np.uint8), key, rgb.size, from_mode)


# --------------------------------------------------------------------------- bookkeeping
class Excluded:
    """Every file left out, in the order met, with its reason: the manifest's ``excluded``.

    Reasons of ignored files start with "ignored:" and of dropped duplicates with "dropped:";
    anything else is a bad image, which the manifest notes count.
    """

    def __init__(self, on_bad: str, archive: Path, key: str, prefix: str = "") -> None:
        self.on_bad, self.archive, self.key, self.prefix = on_bad, archive, key, prefix
        self.items: list[dict[str, str]] = []

    def bad(self, split: str, file: str, reason: str) -> None:
        """A bad image: fatal with ``on_bad_image: fail``, else skipped with a warning."""
        if self.on_bad == "fail":
            raise DataError(
                f"bad image {self.prefix + file!r} in {self.archive}: {reason}. Set {self.key}.on_bad_image: skip to "
                "leave such files out (they are listed in the manifest), or repair the archive"
            )
        log.warning("skipping %s (%s): %s", file, split, reason)
        self.items.append({"split": split, "file": file, "reason": reason})

    def ignored(self, file: str, reason: str) -> None:
        """A file that is not part of the data (never fatal)."""
        log.info("%s: %s", file, reason)
        self.items.append({"split": "", "file": file, "reason": reason})

    def dropped(self, file: str, reason: str) -> None:
        """A good train image left out as a copy of a val or test image."""
        self.items.append({"split": "train", "file": file, "reason": reason})

    def bad_count(self) -> int:
        return sum(1 for e in self.items if not e["reason"].startswith(("ignored:", "dropped:")))


def read_table(text: str, where: str, required: Sequence[str],
               optional: Sequence[str] = ()) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Parse a CSV with a header row: ``(header, [(line number, {column: stripped value})])``.

    Column names are matched stripped and lower-cased; blank lines are skipped; columns other than
    `required` and `optional` are ignored. Raises DataError naming `where` (and the line) for an
    empty file, a missing column, a short row or no data rows.
    """
    reader = csv.reader(io.StringIO(text))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise DataError(f"{where} is empty; it needs a header row ({', '.join(required)})") from None
    except csv.Error as e:
        raise DataError(f"{where}:1: not a readable CSV row ({e})") from e
    col = {h: i for i, h in enumerate(header)}
    missing = [c for c in required if c not in col]
    if missing:
        raise DataError(f"{where} lacks column(s) {missing} in its header row; found {header}")
    wanted = [c for c in (*required, *optional) if c in col]
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        for line, rec in enumerate(reader, start=2):
            if not rec or all(not c.strip() for c in rec):
                continue
            if len(rec) < len(header):
                raise DataError(f"{where}:{line}: expected {len(header)} columns, got {len(rec)}: {rec}")
            rows.append((line, {c: rec[col[c]].strip() for c in wanted}))
    except csv.Error as e:
        raise DataError(f"{where}:{reader.line_num}: not a readable CSV row ({e})") from e
    if not rows:
        raise DataError(f"{where} has no data rows")
    return header, rows


# --------------------------------------------------------------------------- packing a list of images
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}  # -> our split


@dataclass(frozen=True)
class Item:
    """One image to pack: its split, its name in messages and the manifest (relative to the data's
    root), its archive member, its class, and where it is listed (a CSV line, or "" for a folder)."""

    split: str
    file: str
    member: str
    label: str
    where: str = ""


@dataclass
class _Kept:
    """The decoded images of one split, in item order: the first len(labels) rows of `array`."""

    array: np.ndarray  # room for every item of the split
    labels: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def filled(self) -> np.ndarray:
        return self.array[: len(self.labels)]


def _decode_all(archive: Archive, items: list[Item], s: ImageSettings, excluded: Excluded,
                prints: duplicates.Fingerprints) -> tuple[dict[str, _Kept], list[duplicates.ImageRef], dict[str, Any]]:
    """Decode every item (reading the archive in its own order); bad ones go to `excluded`."""
    by_member = {it.member: it for it in items}
    results: dict[str, Decoded | str] = {}
    side = prints.side
    stream = archive.read_many(by_member)
    for member, data, reason in tqdm(stream, total=len(by_member), desc=f"decode {s.name}", unit="img",
                                     mininterval=0.5, leave=False):
        results[member] = reason if data is None else decode(data, s.image_size, s.resize, side)
    per_split = Counter(it.split for it in items)
    kept = {split: _Kept(np.empty((per_split[split], s.image_size, s.image_size, 3), np.uint8)) for split in packed.SPLITS}
    refs: list[duplicates.ImageRef] = []
    converted: list[dict[str, str]] = []
    widths, heights = [], []
    for it in items:
        result = results.pop(it.member)  # popped: each image is held once, in the archive's order or the split's
        if isinstance(result, str):
            excluded.bad(it.split, it.file, result)
            continue
        split = kept[it.split]
        refs.append(duplicates.ImageRef(it.split, it.file, it.label, len(split.labels)))
        prints.add(result.key)
        split.array[len(split.labels)] = result.array
        split.labels.append(it.label)
        split.files.append(it.file)
        widths.append(result.source_size[0])
        heights.append(result.source_size[1])
        if result.from_mode is not None:
            converted.append({"split": it.split, "file": it.file, "from_mode": result.from_mode})
    sizes = {"min": [min(heights, default=0), min(widths, default=0)],
             "max": [max(heights, default=0), max(widths, default=0)]}
    return kept, refs, {"converted": converted, "source_sizes": sizes}


def _check_classes(kept: dict[str, _Kept], classes: list[str], items: list[Item], s: ImageSettings) -> None:
    """A class without a usable training image cannot be learnt: say which, and what was wrong."""
    have = Counter(kept["train"].labels)
    listed = Counter(it.label for it in items if it.split == "train")
    for c in classes:
        if not have[c]:
            raise DataError(
                f"{s.key}: class {c!r} has no usable training image ({listed[c]} listed, every one bad or carved "
                "into val/test; see the warnings above). Add readable images of it to train, or remove the class"
            )


def _audit(kept: dict[str, _Kept], refs: list[duplicates.ImageRef], prints: duplicates.Fingerprints,
           s: ImageSettings, excluded: Excluded) -> tuple[duplicates.Outcome, dict[str, np.ndarray]]:
    """The leak audit; with ``drop_dups`` the train copies of val/test images are left out."""
    arrays = {split: kept[split].filled() for split in packed.SPLITS}
    result = duplicates.audit(refs, prints, s.threshold)
    out = duplicates.outcome(s.name, result, arrays, s.drop_dups, f"{s.key}.{_DROP_KEY}")
    for position, reason in sorted(out.dropped.items()):
        excluded.dropped(kept["train"].files[position], reason)
    arrays["train"] = duplicates.keep_rows(arrays["train"], out.dropped)
    kept["train"].labels = [c for i, c in enumerate(kept["train"].labels) if i not in out.dropped]
    return out, arrays


def carve_val(items: list[Item], s: ImageSettings) -> tuple[list[Item], str]:
    """`items` with a seeded, stratified ``val_fraction`` of the train items moved to val (positions in
    the train items' order, `cnnbench.data.splits.stratified_holdout`), and the manifest note saying so."""
    train = [i for i, it in enumerate(items) if it.split == "train"]
    _, held = stratified_holdout(np.array([items[i].label for i in train]), s.val_fraction, s.seed)
    moved = {train[int(k)] for k in held}
    out = [Item("val", it.file, it.member, it.label, it.where) if i in moved else it for i, it in enumerate(items)]
    return out, (f"val is a stratified {s.val_fraction:g} hold-out of train ({s.key}.val_fraction, seed "
                 f"{s.key}.split_seed = {s.seed}): {len(moved)} image(s)")


def check_noisy(s: ImageSettings, classes: list[str], where: str) -> None:
    """A noisy class that is not a class is a typo in params.yaml, not a class to ignore."""
    unknown = [n for n in s.noisy if n not in classes]
    if unknown:
        raise ConfigError(f"{s.key}.noisy_classes names {unknown}, not a class of {where} (its classes: "
                          f"{classes[:10]}{' …' if len(classes) > 10 else ''}); fix the spelling or remove it")


def pack_items(archive: Archive, items: list[Item], classes: list[str], s: ImageSettings, out_dir: Path,
               manifest: dict[str, Any], excluded: Excluded) -> dict[str, Any]:
    """Decode, audit and pack `items` into `out_dir`; return the manifest written.

    `manifest` holds the kind's own keys (``dataset``, ``kind``, ``source``, its layout, ``notes``);
    this adds ``classes``, ``noisy_classes``, ``splits_without_noisy``, ``resize``, ``source_sizes``
    (``{"min": [height, width], "max": [...]}`` of the decoded images, each side on its own),
    ``converted``, ``converted_modes``, ``archive_kind``, ``uncompressed_bytes``, ``on_bad_image``,
    ``excluded`` and ``duplicates`` (see the module docstring), and appends to ``notes``.
    """
    prints = duplicates.Fingerprints(len(items), duplicates.thumb_side(s.image_size, s.image_size))
    kept, refs, found = _decode_all(archive, items, s, excluded, prints)
    _check_classes(kept, classes, items, s)
    audit, arrays = _audit(kept, refs, prints, s, excluded)
    index = {c: i for i, c in enumerate(classes)}
    splits = {split: (arrays[split], np.array([index[c] for c in kept[split].labels], np.int64))
              for split in packed.SPLITS}
    without = {split: {"count": sum(1 for c in kept[split].labels if c not in s.noisy),
                       "num_classes": len(classes) - len(s.noisy)} for split in packed.SPLITS}
    notes = list(manifest.get("notes", []))
    notes.append(f"images are decoded with Pillow, made 8-bit RGB (alpha composited on white) and resized to "
                 f"{s.image_size}x{s.image_size} by '{s.resize}' (bilinear, antialiased)")
    if found["converted"]:
        notes.append(f"{len(found['converted'])} image(s) converted to RGB; see converted")
    if excluded.bad_count():
        notes.append(f"{excluded.bad_count()} bad image(s) skipped (on_bad_image: skip); see excluded.csv")
    notes.append(duplicates.note(audit.summary, f"{s.key}.{_DROP_KEY}"))
    duplicates.log_findings(s.name, audit.summary)
    manifest = {**manifest, "classes": classes, "noisy_classes": list(s.noisy), "splits": {},
                "splits_without_noisy": without, "resize": s.resize, "source_sizes": found["source_sizes"],
                "converted": found["converted"],
                "converted_modes": dict(sorted(Counter(c["from_mode"] for c in found["converted"]).items())),
                "archive_kind": archive.kind, "uncompressed_bytes": archive.total_bytes, "on_bad_image": s.on_bad,
                "excluded": excluded.items, "duplicates": audit.summary, "notes": notes}
    packed.write_prepared(out_dir, splits, classes, manifest, extra_json={duplicates.FILE: audit.record},
                          extra_arrays={duplicates.THUMBS_FILE: audit.thumbs})
    log.info("%s: %s images of %d classes, %d excluded -> %s", s.name,
             {split: len(splits[split][1]) for split in packed.SPLITS}, len(classes), len(excluded.items), out_dir)
    return packed.read_manifest(out_dir)
