"""A constructed study on disk: params.yaml (the real one, profile and seeds chosen), one run
directory per (variant, recipe, seed) with the files train and evaluate write, prepared-data
manifests, and the aggregate stage's output. Used by the aggregate, plot and report tests.

Every number is a known function of the variant, recipe and seed, so tests can state the
answer: a variant's test top-1 is ``base(variant) + RECIPE_GAIN[recipe] + noise(seed)``.

The leak audit: each prepared data set has a duplicates.json (v2) with thumbnails (`write_audit`),
and every run marks the easiest ``LEAKED_SHARE`` of its test images as leaked (they have a duplicate
in train, and every run gets them right, as memorised images are). So, with N test images and
L = round(LEAKED_SHARE x N), the top-1 on the clean images is ``(round(top1 x N) - L) / (N - L)``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import yaml

from cnnbench.aggregate import aggregate
from cnnbench.config import load

REPO = Path(__file__).resolve().parents[1]
RECIPE_GAIN = {"lab": 0.0, "fast": 3.0}
SEED_NOISE = {0: -0.4, 1: 0.1, 2: 0.3, 3: -0.2, 4: 0.5}
BUTTERFLY_CLASSES = [f"SPECIES {i:02d}" for i in range(94)]
LEAKED_SHARE = 0.1
SPLIT_PAIRS = ("train-train", "val-val", "test-test", "train-val", "train-test", "val-test")


def butterfly_classes(noisy: list[str]) -> list[str]:
    return sorted(BUTTERFLY_CLASSES + list(noisy))


def dataset_classes(cfg, dataset: str) -> list[str]:
    """Every class of ``dataset`` in the fixture, by its kind: CIFAR-10's ten, the butterflies' 94
    species and their noisy classes, a subset's chosen classes, else as many as the kind says
    (``describe``) with the noisy classes among them."""
    kind, noisy = cfg.kind(dataset), list(cfg.dataset(dataset).get("noisy_classes") or [])
    if kind == "cifar10":
        return [f"class {i}" for i in range(10)]
    if kind == "butterflies":
        return butterfly_classes(noisy)
    chosen = cfg.dataset(dataset).get("classes")  # a subset's
    if chosen:
        return list(chosen)
    count = cfg.describe_dataset(dataset).num_classes
    return sorted(noisy + [f"{dataset} class {i:03d}" for i in range(count - len(noisy))])


USER_NOISY = ["blurry", "mislabelled"]


def add_user_dataset(doc: dict, name: str = "mine") -> None:
    """A params.yaml edit: a third data set named by its user, ``name``, of kind cifar100 with its 20
    coarse classes (no train.normalize: the kind's default, the training split's own statistics), two
    of them listed as noisy; three variants, ``<name>-small-all`` keeping the noisy classes, and no
    claim about any of them."""
    doc["datasets"][name] = {
        "kind": "cifar100", "label_mode": "coarse", "val_fraction": 0.1, "split_seed": 0,
        "source": {"url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                   "md5": "eb9058c3a382ffc7106e4002c42a8d85", "filename": "cifar-100-python.tar.gz"},
        "noisy_classes": list(USER_NOISY),
    }
    doc["variants"][name] = {"small": {"model": "resnet18"}, "mobile": {"model": "mobilenet_v2"},
                             "small-all": {"model": "resnet18", "filter_noisy": False}}


def titled_by_name(monkeypatch, name: str = "mine") -> None:
    """Make the kinds describe data set ``name`` with its own name as title, as a kind of the user's
    own images does, so no kind's title (CIFAR, butterflies) can hide in what is shown of it."""
    import dataclasses

    from cnnbench.data import kinds

    real = kinds.describe

    def describe(settings):
        info = real(settings)
        return dataclasses.replace(info, title=name) if settings.get("name") == name else info

    monkeypatch.setattr(kinds, "describe", describe)


def base_accuracy(variant: str, spec: dict) -> float:
    """The lab report's first accuracy figure when there is one, else 60 %."""
    for row in spec.get("lab_report") or []:
        if row.get("accuracy") is not None:
            return float(row["accuracy"])
    return 60.0


def write_params(root: Path, profile: str = "smoke", seeds: list[int] | None = None, edit=None) -> Path:
    """A copy of the real params.yaml with ``profile`` chosen and that profile's seeds set. The synthetic
    studies tune every variant (the real smoke profile tunes six, to keep CI short), so every figure and
    table has every variant under every recipe; the quick profile's studies keep their tuned subset."""
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    doc["profile"] = profile
    doc["profiles"]["smoke"]["tuning"]["variants"] = "all"
    if seeds is not None:
        doc["profiles"][profile]["seeds"] = list(seeds)
    if edit is not None:
        edit(doc)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _csv_cell(text: str) -> str:
    return f'"{text}"' if ("," in text or '"' in text) else text


def _rank(size: int) -> np.ndarray:
    """How easy each test image is (0: easiest): a fixed permutation, the same for every run."""
    return np.random.default_rng(12345).permutation(size)


def clean_top1(top1: float, size: int) -> float:
    """The fixture's top-1 on the clean test images, in %, for a run of ``top1`` % on ``size`` images."""
    leaked = round(LEAKED_SHARE * size)
    return 100 * (round(top1 / 100 * size) - leaked) / (size - leaked)


def _outcomes(classes: list[str], per_class: int, top1: float) -> tuple[np.ndarray, np.ndarray]:
    """(actual, predicted) per test image: ``per_class`` images of each class, in class order, of which
    round(top1 % x images) are right: the images ranked first by a fixed permutation (the same for
    every run, so runs and variants agree on the easy images, as real ones do)."""
    names = np.array(classes, dtype=object)
    actual = np.repeat(names, per_class)
    rank = _rank(actual.size)
    right = rank < round(top1 / 100 * actual.size)
    predicted = np.where(right, actual, np.repeat(np.roll(names, -1), per_class))
    return actual, predicted


def write_run(run: Path, *, variant: str, dataset: str, model: str, recipe: str, seed: int, classes: list[str],
              top1: float, epochs: int, epoch_seconds: float, params: int, wobble: float = 0.0,
              noisy: tuple[str, ...] = (), audited: bool = True, all_classes: int | None = None) -> None:
    """history.csv, metrics.json, confusion.csv and predictions.csv of one run (accuracies in %).

    ``audited``: the data set has a leak audit, so metrics.json has the clean-test numbers and
    predictions.csv a `clean` column (the easiest LEAKED_SHARE of the images are leaked).

    The test split has 1000 images per class with at most 10 classes (CIFAR-10: 10,000, as the real
    one) and 10 with more (the butterflies: 1000), so the accuracy the predictions give is ``top1`` to
    0.01 / 0.1 points; metrics.json holds that (aggregate checks that the two agree, as they do when
    evaluate writes both). As evaluate: top-5 when the data set has at least 20 classes
    (``all_classes``, before filtering; default: ``classes``), top-1 on the kept classes where
    it lists ``noisy`` classes.
    """
    run.mkdir(parents=True, exist_ok=True)
    rows = ["epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds,peak_memory_mb"]
    for e in range(1, epochs + 1):
        frac = e / epochs
        val = (top1 * (0.5 + 0.5 * frac) + (wobble if e % 2 else -wobble)) / 100
        seconds = epoch_seconds * (1.0 + 0.02 * ((e * 7 + seed) % 5 - 2))  # a little epoch-to-epoch noise
        rows.append(f"{e},{2.3 * (1.1 - frac):.4f},{min(0.99, val + 0.05):.4f},{2.4 * (1.1 - frac):.4f},"
                    f"{max(0.0, min(1.0, val)):.4f},0.01,{seconds:.4f},512")
    (run / "history.csv").write_text("\n".join(rows) + "\n")
    per_class_images = 1000 if len(classes) <= 10 else 10
    actual, predicted = _outcomes(classes, per_class_images, top1)
    right = actual == predicted
    true_index = np.repeat(np.arange(len(classes)), per_class_images)
    predicted_index = np.where(right, true_index, (true_index + 1) % len(classes))
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    np.add.at(confusion, (true_index, predicted_index), 1)
    metrics = {"variant": variant, "dataset": dataset, "recipe": recipe, "seed": seed, "model": model,
               "num_classes": len(classes), "test_images": len(actual), "test_top1": float(right.mean()),
               "test_loss": 1.0, "params": params, "epochs": epochs,
               "mean_epoch_seconds": epoch_seconds, "peak_memory_mb": 512.0,
               "memory_kind": "process peak RSS", "device": "cpu (test fixture)", "eval_device": "cpu (test fixture)",
               "precision": "fp32", "tta_flip": recipe == "fast", "torch_version": "2.x",
               "per_class_accuracy": {c: float(confusion[i, i] / confusion[i].sum()) for i, c in enumerate(classes)}}
    clean = _rank(len(actual)) >= round(LEAKED_SHARE * len(actual)) if audited else None
    metrics["test_images_clean"] = int(clean.sum()) if audited else None
    metrics["test_top1_clean"] = float(right[clean].mean()) if audited else None
    if (all_classes or len(classes)) >= 20:
        metrics["test_top5"] = min(1.0, top1 / 100 + 0.2)
    if noisy:
        kept = ~np.isin(actual, list(noisy))
        metrics["test_top1_kept"] = float(right[kept].mean())
        metrics["test_images_kept"] = int(kept.sum())
    (run / "metrics.json").write_text(json.dumps(metrics))
    lines = ["true\\predicted," + ",".join(_csv_cell(c) for c in classes)]
    lines += [_csv_cell(c) + "," + ",".join(map(str, confusion[i])) for i, c in enumerate(classes)]
    (run / "confusion.csv").write_text("\n".join(lines) + "\n")
    cell = {c: _csv_cell(c) for c in classes}
    preds = ["actual,predicted", *(f"{cell[a]},{cell[p]}" for a, p in zip(actual.tolist(), predicted.tolist()))]
    if audited:
        preds = [f"{preds[0]},clean", *(f"{row},{int(c)}" for row, c in zip(preds[1:], clean.tolist()))]
    (run / "predictions.csv").write_text("\n".join(preds) + "\n")


def write_manifests(prepared: Path, cfg, audit: bool = True) -> None:
    """manifest.json of each data set (100 train, 10 val, 50 test images) and, with ``audit``, its
    duplicates.json and thumbnails: CIFAR-10 with 30 groups that span splits, the butterflies with 3."""
    for ds in cfg.datasets:
        (prepared / ds).mkdir(parents=True, exist_ok=True)
        manifest = {"dataset": ds, "source": {"source": "mirror", "location": f"/mirror/{ds}.archive",
                                              "sha256": "ab" * 32},
                    "splits": {"train": {"count": 100}, "val": {"count": 10}, "test": {"count": 50}},
                    "noisy_classes": list(cfg.dataset(ds).get("noisy_classes") or []),
                    "train_stats": {"mean": [0.5071, 0.4865, 0.4409], "std": [0.2673, 0.2564, 0.2762]}}
        (prepared / ds / "manifest.json").write_text(json.dumps(manifest))
        if audit:
            write_audit(prepared / ds, ds, cross_split=30 if ds == "cifar10" else 3)


def _member(dataset: str, split: str, index: int, cls: str, thumb: int | None, dropped: bool = False) -> dict:
    batch = {"train": "data_batch_1", "val": "data_batch_5", "test": "test_batch"}[split]
    file = f"{batch}[{index}]" if dataset == "cifar10" else f"{'valid' if split == 'val' else split}/{cls}/{index}.jpg"
    return {"split": split, "file": file, "index": index, "class": cls, "dropped": dropped, "thumb": thumb}


def write_audit(prepared_dir: Path, dataset: str, cross_split: int, *, thumbs: bool = True,
                drop: bool = False) -> dict:
    """A duplicates.json (format v2) the way preprocess writes it, and duplicate_thumbs.npy (unless not
    ``thumbs``); returns the audit. Groups, sorted as preprocess sorts them: one label conflict (train
    "cat" = test "dog", mirrored), then ``cross_split - 1`` more train-test groups (near duplicates at
    distance 0.01 x g), then one train-train exact group (no thumbnails). With ``drop``
    (drop_train_duplicates_of_eval) the train copies of test images are dropped, so no test image leaks.
    Every thumbnail is a flat colour: row k of the file is (k, 255 - k, 100)."""
    groups, pairs_count, leaked, thumb_rows = [], {}, [], []

    def thumb() -> int | None:
        thumb_rows.append(len(thumb_rows))
        return thumb_rows[-1]

    def add(kind: str, members: list[dict], distance: float) -> None:
        a, b = members
        splits = f"{a['split']}-{b['split']}"  # members come in SPLIT_PAIRS' order
        key = (splits, kind, "same_class" if a["class"] == b["class"] else "different_class")
        pairs_count[key] = pairs_count.get(key, 0) + 1
        conflict = a["class"] != b["class"]
        groups.append({"id": len(groups), "kinds": [kind], "splits": sorted({a["split"], b["split"]}),
                       "classes": sorted({a["class"], b["class"]}), "label_conflict": conflict,
                       "members": members, "pairs": [{"a": 0, "b": 1, "kind": kind, "distance": distance}]})
        if b["split"] == "test" and not a["dropped"]:
            leaked.append(b["index"])

    add("flip", [_member(dataset, "train", 7, "cat", thumb(), drop), _member(dataset, "test", 3, "dog", thumb())], 0.0)
    for g in range(1, cross_split):
        add("near", [_member(dataset, "train", 10 + g, "cat", thumb(), drop),
                     _member(dataset, "test", 3 + g, "cat", thumb())], round(0.01 * g, 3))
    add("exact", [_member(dataset, "train", 90, "ship", None), _member(dataset, "train", 91, "ship", None)], 0.0)
    test_count = 50
    audit = {
        "format": "cnnbench-duplicates-v2", "dataset": dataset,
        "method": "exact and mirrored: SHA-1 of the pixels; near: distance of 64-bit perceptual hashes",
        "near_duplicate_threshold": 0.25, "images_audited": {"train": 100, "val": 10, "test": test_count},
        "pairs": [{"splits": sp, "kind": kind, "same_class": pairs_count.get((sp, kind, "same_class"), 0),
                   "different_class": pairs_count.get((sp, kind, "different_class"), 0)}
                  for sp in SPLIT_PAIRS for kind in ("exact", "flip", "near")],
        "group_count": len(groups), "cross_split_groups": cross_split, "label_conflict_groups": 1,
        "images_in_groups": 2 * len(groups), "train_duplicates_of_eval": cross_split,
        "drop_train_duplicates_of_eval": drop, "dropped_train": cross_split if drop else 0,
        "test_leaked": sorted(leaked), "test_clean_count": test_count - len(leaked),
        "thumbs_file": "duplicate_thumbs.npy", "groups": groups,
    }
    prepared_dir = Path(prepared_dir)
    prepared_dir.mkdir(parents=True, exist_ok=True)
    (prepared_dir / "duplicates.json").write_text(json.dumps(audit))
    if thumbs:
        rows = np.zeros((len(thumb_rows), 64, 64, 3), dtype=np.uint8)
        for k in thumb_rows:
            rows[k] = (k, 255 - k, 100)
        np.save(prepared_dir / "duplicate_thumbs.npy", rows)
    return audit


def make_study(root: Path, *, profile: str = "smoke", seeds: list[int] | None = (0, 1, 2), epochs: int = 4,
               accuracy=None, edit=None, run_aggregate: bool = True, audit: bool = True) -> SimpleNamespace:
    """Write a whole constructed study under ``root``; return its paths and config.

    ``accuracy(variant, recipe, seed, default) -> float`` may replace the default test top-1.
    ``audit``: the data sets have a leak audit (duplicates.json, clean-test numbers in every run).
    """
    root = Path(root)
    params = write_params(root, profile, list(seeds) if seeds is not None else None, edit)
    cfg = load(params)
    runs_root, summary, prepared = root / "results" / "runs", root / "results" / "summary", root / "prepared"
    for index, variant in enumerate(cfg.variants):
        for recipe in (r for r in cfg.recipes if cfg.runs_under(variant, r)):  # tuned: tuning.variants only
            for seed in cfg.seeds:
                spec = cfg.variant(variant)
                dataset = spec["dataset"]
                noisy = list(cfg.dataset(dataset).get("noisy_classes") or [])
                every = dataset_classes(cfg, dataset)
                classes = [c for c in every if c not in spec["exclude_classes"]]
                top1 = base_accuracy(variant, spec) + RECIPE_GAIN.get(recipe, 0.0) + SEED_NOISE.get(seed, 0.0)
                if accuracy is not None:
                    top1 = accuracy(variant, recipe, seed, top1)
                unstable = "nomaxpool" in variant
                write_run(runs_root / variant / recipe / f"seed{seed}", variant=variant, dataset=dataset,
                          model=spec["model"], recipe=recipe, seed=seed, classes=classes, top1=top1,
                          epochs=epochs, epoch_seconds=1.0 + 0.1 * index + 0.01 * seed,
                          params=1_000_000 + 1000 * index, wobble=4.0 if unstable else 0.5,
                          noisy=tuple(noisy), audited=audit, all_classes=len(every))
    write_manifests(prepared, cfg, audit)
    out = SimpleNamespace(root=root, params=params, cfg=cfg, runs=runs_root, summary=summary, prepared=prepared,
                          plots=root / "results" / "plots", report=root / "results" / "report")
    if run_aggregate:
        out.result = aggregate(cfg, runs_root, summary)
    return out


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


# --- tuning -----------------------------------------------------------------------------------
TRIAL_SECONDS = 2.5  # every trial's training seconds


def tuning_score(variant: str, values: dict, seed: int, best_lr=None) -> float:
    """A trial's final validation accuracy (fraction): peaks at ``best_lr(variant)`` (default 0.1),
    falls by 0.05 per doubling away from it, and seed ``k`` adds ``0.01 * (k % 2)``."""
    peak = best_lr(variant) if best_lr is not None else 0.1
    return 0.6 - 0.05 * abs(np.log2(values["lr"] / peak)) + 0.01 * (seed % 2)


def write_selections(cfg, root: Path, seeds=(1000, 1001), best_lr=None) -> dict:
    """selection.json of every (tuned variant, tuned recipe) of ``cfg`` under ``root``, as `cnnbench select`
    writes it (cnnbench.tuning.selection_record), from trials scored by :func:`tuning_score`, each
    ``seeds`` of them per grid point; returns ``{(variant, recipe): selection}``."""
    from cnnbench import tuning

    t, out = cfg.tuning, {}
    for recipe in cfg.tuned_recipes:
        for variant in t.variants:
            trials = [{"point": p.name, "values": p.values, "seed": s, "epochs": 2, "seconds": TRIAL_SECONDS,
                       "val_acc": tuning_score(variant, p.values, s, best_lr), "diverged": False,
                       "settings_hash": "0" * 12} for p in t.points for s in seeds]
            record = tuning.selection_record(t, variant, recipe, trials)
            path = tuning.selection_path(root, variant, recipe)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=2))
            out[(variant, recipe)] = record
    return out
