"""The ``imagefolder`` kind: images sorted into one folder per class, as torchvision's ImageFolder reads them.

The download (``datasets.<name>.source``: a local folder, which `cnnbench.data.fetch` packs into a
zip, or a ``.zip``/``.tar``/``.tar.gz`` file by path, URL or kagglehub handle) holds, at its root
or under one top-level folder::

    train/<class>/<image>       required; the classes are the sorted names of these folders
    val/<class>/<image>         optional (also valid/ or validation/): model selection
    test/<class>/<image>        required: the final evaluation

Images may sit deeper inside a class folder. A missing val split is carved from train: a seeded,
stratified ``val_fraction`` (default 0.1, seed ``split_seed``, default 0) of each class, chosen from
the file list (so a bad image never moves another between splits). Hidden and system files
(``.DS_Store``, ``__MACOSX/``, ``Thumbs.db``) and files outside the class folders are ignored and
listed in the manifest's ``excluded``; every other file in a class folder is tried as an image
whatever its extension (a bad one follows ``on_bad_image``).

Errors (`DataError`, naming the folder): no train/ folder, no test/ folder, an empty class folder,
a class folder in val/ or test/ with no counterpart in train/, a class with no usable training image.
Decoding, colour conversion, the ``resize`` policy, the leak audit and the manifest are
`cnnbench.data.images`'.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cnnbench.data import packed
from cnnbench.data.archive import Archive
from cnnbench.data.fetch import read_source
from cnnbench.data.images import (
    DEFAULT_TRAIN, SPLIT_NAMES, Excluded, Item, carve_val, check_noisy, describe, image_settings,
    is_hidden, open_source_archive, pack_items,
)
from cnnbench.errors import DataError

__all__ = ["prepare", "describe", "DEFAULT_TRAIN", "find_root"]


def prepare(raw_dir: Path, out_dir: Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Pack the image folders of ``raw_dir/<filename>`` into `out_dir`; return the manifest.

    Reads ``name``, ``filename``, ``image_size``, ``resize``, ``on_bad_image``, ``max_uncompressed_bytes``,
    ``val_fraction``, ``split_seed``, ``near_duplicate_threshold``, ``drop_train_duplicates_of_eval`` and
    ``noisy_classes`` (see `cnnbench.data.images`). The manifest adds ``layout`` (the root folder and
    the folder of each split; val None when carved) and ``val_fraction``/``split_seed`` when val was carved.

    Raises:
        DataError: see the module docstring, and `cnnbench.data.archive` for unsafe or unreadable archives.
        ConfigError: a setting out of range, or a noisy class that is not a class.
    """
    s = image_settings(settings)
    source = read_source(Path(raw_dir), s.name)
    with open_source_archive(Path(raw_dir), settings, s) as archive:
        root = find_root(archive)
        excluded = Excluded(s.on_bad, archive.path, s.key, root)
        folders = _split_folders(archive, root)
        items, class_dirs = _list_items(archive, root, folders, excluded)
        classes = _classes(archive, root, folders, class_dirs)
        check_noisy(s, classes, f"{archive.path} (the folders of {root}{folders['train']}/)")
        manifest: dict[str, Any] = {
            "dataset": s.name, "kind": "imagefolder", "source": source,
            "layout": {"root": root, "splits": {k: (v + "/" if v else None) for k, v in folders.items()}},
            "notes": [f"classes are the sorted folder names of {root}train/"],
        }
        if folders["val"] is None:
            items, note = carve_val(items, s)
            manifest.update(val_fraction=s.val_fraction, split_seed=s.seed)
            manifest["notes"].append(note)
        else:
            manifest["notes"].append(f"val is the archive's {root}{folders['val']}/ folder; test is {root}test/")
        return pack_items(archive, items, classes, s, Path(out_dir), manifest, excluded)


def _visible(archive: Archive) -> list[str]:
    return [n for n in [*archive.files, *archive.dirs] if not is_hidden(n)]


def find_root(archive: Archive) -> str:
    """``""`` or ``"<top-level folder>/"``: where train/ is."""
    names = _visible(archive)
    if any(n == "train" or n.startswith("train/") for n in names):
        return ""
    tops = sorted({n.split("/")[0] for n in names})
    if len(tops) == 1 and any(n.startswith(f"{tops[0]}/train/") or n == f"{tops[0]}/train" for n in names):
        return tops[0] + "/"
    raise DataError(
        f"{archive.path} has no train/ folder at its root or under one top-level folder (at its top: "
        f"{tops[:10]}); an imagefolder data set holds train/<class>/<images>, test/<class>/<images> and "
        "optionally val/<class>/<images>. Lay the folders out so, or describe the images with a CSV (kind csv)"
    )


def _split_folders(archive: Archive, root: str) -> dict[str, str | None]:
    """Our split -> the archive's folder name for it under `root` (val None when there is none)."""
    present = {n[len(root):].split("/")[0] for n in _visible(archive) if n.startswith(root) and n != root.rstrip("/")}
    vals = sorted(f for f in present if SPLIT_NAMES.get(f) == "val")
    if len(vals) > 1:
        raise DataError(f"{archive.path} has several val folders under '{root}': {vals}; keep one (val/ or valid/)")
    if "test" not in present:
        raise DataError(
            f"{archive.path} has no test/ folder beside '{root}train/': the test split is the final evaluation "
            "and cannot be guessed. Add test/<class>/<images> (e.g. move a fifth of each class's images there), "
            "or describe the images with a CSV (kind csv), whose test split can be carved by test_fraction"
        )
    return {"train": "train", "val": vals[0] if vals else None, "test": "test"}


def _list_items(archive: Archive, root: str, folders: dict[str, str | None],
                excluded: Excluded) -> tuple[list[Item], set[tuple[str, str]]]:
    """The images in class folders (sorted by split, then path) and the (split, class) folders that hold
    one; every other file is ignored and listed."""
    split_of = {folder: split for split, folder in folders.items() if folder}
    items: list[Item] = []
    with_files: set[tuple[str, str]] = set()
    for member in sorted(archive.files):
        rel = member[len(root):] if member.startswith(root) else None
        parts = rel.split("/") if rel is not None else []
        if is_hidden(member):
            excluded.ignored(rel or member, "ignored: hidden or system file")
        elif rel is not None and len(parts) >= 3 and parts[0] in split_of:
            items.append(Item(split_of[parts[0]], rel, member, parts[1]))
            with_files.add((parts[0], parts[1]))
        elif rel is not None and len(parts) == 2 and parts[0] in split_of:
            excluded.ignored(rel, f"ignored: not inside a class folder of {parts[0]}/")
        else:
            excluded.ignored(rel if rel is not None else member, "ignored: not inside a train/, val/ or test/ class folder")
    order = {s: i for i, s in enumerate(packed.SPLITS)}
    items.sort(key=lambda it: (order[it.split], it.file))
    return items, with_files


def _classes(archive: Archive, root: str, folders: dict[str, str | None],
             with_files: set[tuple[str, str]]) -> list[str]:
    """The sorted train class folders; an empty class folder or one in val/test only is an error."""
    seen: set[tuple[str, str]] = set(with_files)
    for d in archive.dirs:
        parts = d[len(root):].split("/") if d.startswith(root) else []
        if len(parts) >= 2 and parts[0] in folders.values() and not is_hidden(d):
            seen.add((parts[0], parts[1]))
    for folder, cls in sorted(seen - with_files):
        raise DataError(f"empty class folder '{root}{folder}/{cls}/' in {archive.path}: it holds no image. "
                        "Add images to it or remove it")
    classes = sorted(c for f, c in seen if f == folders["train"])
    if not classes:
        raise DataError(f"{archive.path}: '{root}train/' holds no class folder; expected train/<class>/<images>")
    for folder, cls in sorted(seen):
        if cls not in classes:
            raise DataError(
                f"class folder '{root}{folder}/{cls}/' in {archive.path} has no counterpart in '{root}train/' "
                f"(train classes: {classes[:10]}{' …' if len(classes) > 10 else ''}); a class needs training images: "
                f"add {root}train/{cls}/ or remove {root}{folder}/{cls}/"
            )
    return classes
