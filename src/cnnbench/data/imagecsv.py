"""The ``csv`` kind: images listed in a CSV of ``file,label[,split]``.

The download (a folder, ``.zip``, ``.tar`` or ``.tar.gz``; see `cnnbench.data.fetch`) holds the CSV
at ``datasets.<name>.csv`` (a path inside the archive, also found under one top-level folder) and the
images under ``image_root`` (a folder inside the archive, given like ``csv``; default: the CSV's own
folder). The CSV needs a header row naming the columns ``file`` (the image's path relative to the
image root), ``label`` (its class) and optionally ``split`` (``train``, ``val``/``valid``/``validation``
or ``test``, any case); other columns are ignored. The classes are the sorted labels of the train rows.

Splits:

* with a ``split`` column, its values; a missing val split is carved from train as for ``imagefolder``
  (seeded, stratified ``val_fraction`` of each class); no test row is an error (``test_fraction``
  then is an error too: the CSV decides);
* without one, per class a seeded permutation (``split_seed``) puts round(``test_fraction`` x n)
  images (default 0.2) into test, the next round(``val_fraction`` x n) (default 0.1) into val and the
  rest into train (`cnnbench.data.splits.stratified_carve`).

Images come in CSV order. Errors (`DataError`, naming the CSV line): a row whose file is empty (a
label with no image) or not in the archive, a path outside the image root (absolute, or with a
``..`` component), an unknown split value, a file listed twice, a label in val/test that no train row
has. Files in the archive that the CSV does not list are ignored and listed in ``excluded``.
Decoding, colour conversion, the ``resize`` policy, the leak audit and the manifest are
`cnnbench.data.images`'.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from cnnbench.data.archive import READ_ERRORS, Archive, member_problem, norm_name
from cnnbench.data.fetch import read_source
from cnnbench.data.images import (
    DEFAULT_TRAIN, SPLIT_NAMES, Excluded, ImageSettings, Item, carve_val, check_noisy, describe, image_settings,
    is_hidden, open_source_archive, pack_items, read_table,
)
from cnnbench.data.splits import stratified_carve
from cnnbench.errors import ConfigError, DataError

__all__ = ["prepare", "describe", "DEFAULT_TRAIN", "DEFAULT_TEST_FRACTION"]

DEFAULT_TEST_FRACTION = 0.2


def _inside(settings: Mapping[str, Any], s: ImageSettings, name: str, required: bool) -> str | None:
    """A path setting inside the archive (``csv``, ``image_root``), normalised and checked."""
    value = settings.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not norm_name(value).strip("/"):
        raise ConfigError(f"{s.key}.{name} must be a path inside the archive, got {value!r}")
    problem = member_problem(value)
    if problem is not None:
        raise ConfigError(f"{s.key}.{name} = {value!r} has an {problem}; give a path relative to the archive's root")
    return norm_name(value).strip("/")


def prepare(raw_dir: Path, out_dir: Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Pack the images the CSV of ``raw_dir/<filename>`` lists into `out_dir`; return the manifest.

    Reads what ``imagefolder`` reads (`cnnbench.data.images`) plus ``csv``, ``image_root`` and
    ``test_fraction``. The manifest adds ``csv`` (the member read), ``image_root``, ``split_column``
    and, for carved splits, ``val_fraction``/``test_fraction``/``split_seed``.

    Raises:
        DataError: see the module docstring, and `cnnbench.data.archive` for unsafe or unreadable archives.
        ConfigError: a setting out of range or missing, or a noisy class that is not a class.
    """
    s = image_settings(settings)
    csv_setting = _inside(settings, s, "csv", required=True)
    root_setting = _inside(settings, s, "image_root", required=False)
    source = read_source(Path(raw_dir), s.name)
    with open_source_archive(Path(raw_dir), settings, s) as archive:
        csv_member, prefix = _find_csv(archive, csv_setting, s)
        where = f"{archive.path}:{csv_member}"
        header, rows = read_table(_csv_text(archive, csv_member, where), where, ["file", "label"], ["split"])
        has_split = "split" in header
        test_fraction = _test_fraction(settings, s, has_split, where)
        root = prefix + root_setting + "/" if root_setting else str(PurePosixPath(csv_member).parent) + "/"
        root = "" if root == "./" else root
        excluded = Excluded(s.on_bad, archive.path, s.key, root)
        items = _items(rows, has_split, archive, root, where)
        _ignore_unlisted(archive, items, csv_member, root, excluded)
        manifest: dict[str, Any] = {"dataset": s.name, "kind": "csv", "source": source, "csv": csv_member,
                                    "image_root": root, "split_column": has_split, "notes": []}
        items, classes = _split(items, s, has_split, test_fraction, where, manifest)
        check_noisy(s, classes, where)
        return pack_items(archive, items, classes, s, Path(out_dir), manifest, excluded)


def _find_csv(archive: Archive, csv_path: str, s: ImageSettings) -> tuple[str, str]:
    """``(the CSV's member name, "" or "<top-level folder>/")``."""
    if csv_path in archive.files:
        return csv_path, ""
    under = [n for n in archive.files if n.count("/") == csv_path.count("/") + 1 and n.split("/", 1)[1] == csv_path]
    if len(under) == 1:
        return under[0], under[0].split("/", 1)[0] + "/"
    found = sorted(n for n in archive.files if n.lower().endswith(".csv") and not is_hidden(n))
    raise DataError(f"{s.key}.csv = {csv_path!r} is not in {archive.path} (nor under one top-level folder); "
                    f"CSV files there: {found[:10] or 'none'}. Fix {s.key}.csv")


def _csv_text(archive: Archive, member: str, where: str) -> str:
    try:
        return archive.read(member).decode("utf-8-sig")
    except (*READ_ERRORS, UnicodeDecodeError) as e:
        raise DataError(f"{where} cannot be read ({type(e).__name__}: {e}); it must be a UTF-8 CSV") from e


def _test_fraction(settings: Mapping[str, Any], s: ImageSettings, has_split: bool, where: str) -> float:
    value = settings.get("test_fraction")
    if has_split:
        if value is not None:
            raise ConfigError(f"{s.key}.test_fraction is set but {where} has a split column, which decides the test "
                              f"split; remove {s.key}.test_fraction or the split column")
        return 0.0
    value = DEFAULT_TEST_FRACTION if value is None else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1 \
            or value + s.val_fraction >= 1:
        raise ConfigError(f"{s.key}.test_fraction must be a number in (0, 1) with {s.key}.val_fraction "
                          f"({s.val_fraction:g}) summing below 1, got {value!r}")
    return float(value)


def _items(rows: list[tuple[int, dict[str, str]]], has_split: bool, archive: Archive, root: str,
           where: str) -> list[Item]:
    """One item per CSV row, checked; the split is "" when the CSV has no split column."""
    items: list[Item] = []
    first_line: dict[str, int] = {}
    for line, row in rows:
        file, label, at = row["file"], row["label"], f"{where}:{line}"
        if not file:
            raise DataError(f"{at}: label {label!r} has no image (the file column is empty)")
        if not label:
            raise DataError(f"{at}: file {file!r} has no label")
        problem = member_problem(file)
        if problem is not None:
            raise DataError(f"{at}: file {file!r} is outside the image root '{root}' ({problem}); give paths "
                            "relative to the image root, without '..'")
        rel = norm_name(file)
        if root + rel not in archive.files:
            raise DataError(f"{at}: file {file!r} (label {label!r}) is not in {archive.path} (looked for "
                            f"'{root}{rel}'); fix the path, the image_root, or add the image")
        split = ""
        if has_split:
            split = SPLIT_NAMES.get(row.get("split", "").lower(), "")
            if not split:
                raise DataError(f"{at}: unknown split {row.get('split')!r}; expected train, val (or valid) or test")
        if rel in first_line:
            raise DataError(f"{at}: file {file!r} is listed again (first on line {first_line[rel]}); list each image once")
        first_line[rel] = line
        items.append(Item(split, rel, root + rel, label, at))
    return items


def _ignore_unlisted(archive: Archive, items: list[Item], csv_member: str, root: str, excluded: Excluded) -> None:
    listed = {it.member for it in items}
    for member in sorted(archive.files):
        if member in listed or member == csv_member:
            continue
        rel = member[len(root):] if member.startswith(root) else member
        if is_hidden(member):
            excluded.ignored(rel, "ignored: hidden or system file")
        else:
            excluded.ignored(rel, "ignored: not listed in the CSV" if member.startswith(root)
                             else "ignored: outside the image root")


def _split(items: list[Item], s: ImageSettings, has_split: bool, test_fraction: float, where: str,
           manifest: dict[str, Any]) -> tuple[list[Item], list[str]]:
    """Assign or check the splits; return the items and the classes (sorted train labels)."""
    if not has_split:
        labels = np.array([it.label for it in items])
        train, val, test = stratified_carve(labels, s.val_fraction, test_fraction, s.seed)
        split_of = {**{int(i): "train" for i in train}, **{int(i): "val" for i in val}, **{int(i): "test" for i in test}}
        items = [Item(split_of[i], it.file, it.member, it.label, it.where) for i, it in enumerate(items)]
        manifest.update(val_fraction=s.val_fraction, test_fraction=test_fraction, split_seed=s.seed)
        manifest["notes"].append(
            f"the CSV has no split column: per class a seeded permutation (seed {s.seed}) put {test_fraction:g} of the "
            f"images into test ({s.key}.test_fraction) and {s.val_fraction:g} into val ({s.key}.val_fraction)")
        return items, sorted({it.label for it in items})
    if not any(it.split == "test" for it in items):
        raise DataError(f"{where} has a split column but no test row: the test split is the final evaluation. Mark "
                        "some rows test, or drop the split column to carve test by test_fraction")
    classes = sorted({it.label for it in items if it.split == "train"})
    known = set(classes)
    for it in items:
        if it.label not in known:
            raise DataError(f"{it.where}: label {it.label!r} ({it.split}) has no train row; a class needs training "
                            "images: add train rows for it or remove its rows")
    if not any(it.split == "val" for it in items):
        items, note = carve_val(items, s)
        manifest.update(val_fraction=s.val_fraction, split_seed=s.seed)
        manifest["notes"].append(note)
    else:
        manifest["notes"].append("splits follow the CSV's split column")
    return items, classes
