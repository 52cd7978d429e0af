"""The ``subset`` kind: a small data set drawn from another's packed store.

``datasets.<name>: {kind: subset, of: <parent>, classes: [...], max_per_class: N, seed: S}`` keeps
the listed classes of the parent (all when ``classes`` is null), in that order, with at most ``N``
training images of each, drawn without replacement by a numpy Generator seeded with ``S``, and every
validation and test image of those classes. It is prepared once from the parent's prepared store
(``data/prepared/<parent>``, which both drivers make first) and cached like any data set.

The leak audit runs again on the subset's own images: a test image is "clean" when none of the
training images the subset kept is a copy of it, which a subset with fewer training images can
change. A subset trains with its parent's ``train`` settings unless it sets its own, and its
``noisy_classes`` (if any) must be among its classes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cnnbench.data import duplicates, packed
from cnnbench.errors import ConfigError

log = logging.getLogger("cnnbench.subset")

# A subset trains like its parent (Config.dataset_train): the kind itself adds nothing.
DEFAULT_TRAIN: dict[str, Any] = {}


def _key(settings: Mapping[str, Any]) -> str:
    return f"datasets.{settings.get('name', 'subset')}"


def describe(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The parent's image size; the chosen classes; planning sizes scaled from the parent's."""
    from cnnbench.data import kinds

    parent = kinds.describe(settings["parent"])
    chosen = settings.get("classes")
    classes = len(chosen) if chosen else parent.num_classes
    info: dict[str, Any] = {"image_size": parent.image_size, "num_classes": classes,
                            "title": f"{settings.get('name')} ({classes or 'some'} classes of {parent.title})"}
    if parent.planning and parent.num_classes and classes:
        share = classes / parent.num_classes
        splits = {s: round(n * share) for s, n in parent.planning["splits"].items()}
        cap = settings.get("max_per_class")
        if cap:
            splits["train"] = min(splits["train"], cap * classes)
        info["planning"] = {**parent.planning, "splits": splits, "preprocess_seconds_per_image": 0.0005}
    return info


def _chosen_classes(settings: Mapping[str, Any], parent_classes: list[str], parent_dir: Path) -> list[str]:
    chosen = settings.get("classes") or list(parent_classes)
    unknown = [c for c in chosen if c not in parent_classes]
    if unknown:
        raise ConfigError(f"{_key(settings)}.classes: {unknown} are not classes of {parent_dir} (data set "
                          f"{settings['of']!r}, {len(parent_classes)} classes, e.g. {parent_classes[:5]}); check the spelling")
    noisy = [c for c in settings.get("noisy_classes") or [] if c not in chosen]
    if noisy:
        raise ConfigError(f"{_key(settings)}.noisy_classes: {noisy} are not among the subset's classes {chosen}")
    return list(chosen)


def draw_train(labels: np.ndarray, chosen: list[int], max_per_class: int | None, seed: int) -> np.ndarray:
    """Positions of the training images kept: at most ``max_per_class`` of each chosen label, drawn
    without replacement by ``numpy.random.default_rng(seed)`` one class after another, in order."""
    rng = np.random.default_rng(seed)
    keep = []
    for label in chosen:
        where = np.flatnonzero(labels == label)
        if max_per_class is not None and len(where) > max_per_class:
            where = np.sort(rng.choice(where, size=max_per_class, replace=False))
        keep.append(where)
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def prepare(raw_dir: Path, out_dir: Path, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Draw the subset from the parent's packed store ``raw_dir`` into ``out_dir``; return the manifest."""
    parent_dir = Path(raw_dir)
    parent_manifest = packed.read_manifest(parent_dir)
    parent_classes = packed.read_classes(parent_dir)
    chosen = _chosen_classes(settings, parent_classes, parent_dir)
    labels_of = [parent_classes.index(c) for c in chosen]
    remap = np.full(len(parent_classes), -1, dtype=np.int64)
    remap[labels_of] = np.arange(len(chosen))
    splits, names = {}, {}
    for split in packed.SPLITS:
        images, labels, _ = packed.load_split(parent_dir, split)
        keep = (draw_train(labels, labels_of, settings.get("max_per_class"), int(settings["seed"]))
                if split == "train" else np.flatnonzero(remap[labels] >= 0))
        splits[split] = (np.asarray(images[keep]), remap[labels[keep]])
        names[split] = [f"{settings['of']}:{split}[{i}]" for i in keep.tolist()]
    audit = _audit(splits, names, chosen, settings)
    manifest = {
        "dataset": settings.get("name"), "kind": "subset", "of": settings["of"], "classes_chosen": chosen,
        "max_per_class": settings.get("max_per_class"), "seed": int(settings["seed"]), "why": settings.get("why", ""),
        "source": parent_manifest.get("source"), "parent_format": parent_manifest.get("format"),
        "noisy_classes": list(settings.get("noisy_classes") or []),
        "duplicates": audit.summary,
        "notes": [f"drawn from {parent_dir}: {len(chosen)} classes, at most {settings.get('max_per_class') or 'all'} "
                  f"training images each (numpy default_rng({int(settings['seed'])})), every val and test image of them",
                  duplicates.note(audit.summary, f"{_key(settings)}.drop_train_duplicates_of_eval")],
    }
    duplicates.log_findings(str(settings.get("name")), audit.summary)
    packed.write_prepared(out_dir, splits, chosen, manifest, extra_json={duplicates.FILE: audit.record},
                          extra_arrays={duplicates.THUMBS_FILE: audit.thumbs})
    log.info("%s: %s", settings.get("name"), manifest["notes"][0])
    return packed.read_manifest(out_dir)


def _audit(splits: dict[str, tuple[np.ndarray, np.ndarray]], names: dict[str, list[str]], classes: list[str],
           settings: Mapping[str, Any]) -> duplicates.Outcome:
    """The leak audit of the subset's own images, fingerprinted at their packed size (nothing is
    dropped here: the parent's preprocess already dropped what its settings asked)."""
    refs = [duplicates.ImageRef(s, names[s][i], classes[int(y)], i)
            for s in packed.SPLITS for i, y in enumerate(splits[s][1])]
    height, width = splits["train"][0].shape[1:3]
    side = duplicates.thumb_side(width, height)
    prints = duplicates.Fingerprints(len(refs), side)
    for split in packed.SPLITS:
        for image in splits[split][0]:
            prints.add(duplicates.fingerprint(Image.fromarray(image), side))
    # the parent's threshold: the subset holds the same kind of images
    threshold = duplicates.threshold_setting(settings.get("parent") or settings, f"datasets.{settings['of']}")
    result = duplicates.audit(refs, prints, threshold, progress=False)
    return duplicates.outcome(str(settings.get("name")), result, {s: splits[s][0] for s in packed.SPLITS}, False,
                              f"{_key(settings)}.drop_train_duplicates_of_eval")
