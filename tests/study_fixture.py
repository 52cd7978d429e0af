"""A constructed study on disk: params.yaml (the real one, profile and seeds chosen), one run
directory per (variant, recipe, seed) with the files train and evaluate write, prepared-data
manifests, and the aggregate stage's output. Used by the aggregate, plot and report tests.

Every number is a known function of the variant, recipe and seed, so tests can state the
answer: a variant's test top-1 is ``base(variant) + RECIPE_GAIN[recipe] + noise(seed)``.
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


def butterfly_classes(noisy: list[str]) -> list[str]:
    return sorted(BUTTERFLY_CLASSES + list(noisy))


def base_accuracy(variant: str, spec: dict) -> float:
    """The lab report's first accuracy figure when there is one, else 60 %."""
    for row in spec.get("lab_report") or []:
        if row.get("accuracy") is not None:
            return float(row["accuracy"])
    return 60.0


def write_params(root: Path, profile: str = "smoke", seeds: list[int] | None = None, edit=None) -> Path:
    """A copy of the real params.yaml with ``profile`` chosen and that profile's seeds set."""
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    doc["profile"] = profile
    if seeds is not None:
        doc["profiles"][profile]["seeds"] = list(seeds)
    if edit is not None:
        edit(doc)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _csv_cell(text: str) -> str:
    return f'"{text}"' if ("," in text or '"' in text) else text


def _outcomes(classes: list[str], per_class: int, top1: float) -> tuple[np.ndarray, np.ndarray]:
    """(actual, predicted) per test image: ``per_class`` images of each class, in class order, of which
    round(top1 % x images) are right: the images ranked first by a fixed permutation (the same for
    every run, so runs and variants agree on the easy images, as real ones do)."""
    names = np.array(classes, dtype=object)
    actual = np.repeat(names, per_class)
    rank = np.random.default_rng(12345).permutation(actual.size)
    right = rank < round(top1 / 100 * actual.size)
    predicted = np.where(right, actual, np.repeat(np.roll(names, -1), per_class))
    return actual, predicted


def write_run(run: Path, *, variant: str, dataset: str, model: str, recipe: str, seed: int, classes: list[str],
              top1: float, epochs: int, epoch_seconds: float, params: int, wobble: float = 0.0,
              noisy: tuple[str, ...] = ()) -> None:
    """history.csv, metrics.json, confusion.csv and predictions.csv of one run (accuracies in %).

    The test split has 1000 images per class on CIFAR-10 (10,000, as the real one) and 10 on the
    butterflies (1000), so the accuracy the predictions give is ``top1`` to 0.01 / 0.1 points;
    metrics.json holds that (aggregate checks that the two agree, as they do when evaluate writes both).
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
    per_class_images = 1000 if dataset == "cifar10" else 10
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
    if dataset == "butterflies":
        kept = ~np.isin(actual, list(noisy))
        metrics["test_top5"] = min(1.0, top1 / 100 + 0.2)
        metrics["test_top1_kept"] = float(right[kept].mean())
        metrics["test_images_kept"] = int(kept.sum())
    (run / "metrics.json").write_text(json.dumps(metrics))
    lines = ["true\\predicted," + ",".join(_csv_cell(c) for c in classes)]
    lines += [_csv_cell(c) + "," + ",".join(map(str, confusion[i])) for i, c in enumerate(classes)]
    (run / "confusion.csv").write_text("\n".join(lines) + "\n")
    cell = {c: _csv_cell(c) for c in classes}
    preds = ["actual,predicted", *(f"{cell[a]},{cell[p]}" for a, p in zip(actual.tolist(), predicted.tolist()))]
    (run / "predictions.csv").write_text("\n".join(preds) + "\n")


def write_manifests(prepared: Path, cfg) -> None:
    for ds in cfg.datasets:
        (prepared / ds).mkdir(parents=True, exist_ok=True)
        manifest = {"dataset": ds, "source": {"source": "mirror", "location": f"/mirror/{ds}.archive",
                                              "sha256": "ab" * 32},
                    "splits": {"train": {"count": 100}, "val": {"count": 10}, "test": {"count": 50}}}
        (prepared / ds / "manifest.json").write_text(json.dumps(manifest))


def make_study(root: Path, *, profile: str = "smoke", seeds: list[int] | None = (0, 1, 2), epochs: int = 4,
               accuracy=None, edit=None, run_aggregate: bool = True) -> SimpleNamespace:
    """Write a whole constructed study under ``root``; return its paths and config.

    ``accuracy(variant, recipe, seed, default) -> float`` may replace the default test top-1.
    """
    root = Path(root)
    params = write_params(root, profile, list(seeds) if seeds is not None else None, edit)
    cfg = load(params)
    runs_root, summary, prepared = root / "results" / "runs", root / "results" / "summary", root / "prepared"
    noisy = cfg.dataset("butterflies")["noisy_classes"]
    for index, variant in enumerate(cfg.variants):
        for recipe in cfg.recipes:
            for seed in cfg.seeds:
                spec = cfg.variant(variant)
                dataset = spec["dataset"]
                if dataset == "cifar10":
                    classes = [f"class {i}" for i in range(10)]
                else:
                    classes = [c for c in butterfly_classes(noisy) if c not in spec["exclude_classes"]]
                top1 = base_accuracy(variant, spec) + RECIPE_GAIN.get(recipe, 0.0) + SEED_NOISE.get(seed, 0.0)
                if accuracy is not None:
                    top1 = accuracy(variant, recipe, seed, top1)
                unstable = "nomaxpool" in variant
                write_run(runs_root / variant / recipe / f"seed{seed}", variant=variant, dataset=dataset,
                          model=spec["model"], recipe=recipe, seed=seed, classes=classes, top1=top1,
                          epochs=epochs, epoch_seconds=1.0 + 0.1 * index + 0.01 * seed,
                          params=1_000_000 + 1000 * index, wobble=4.0 if unstable else 0.5,
                          noisy=tuple(noisy) if dataset == "butterflies" else ())
    write_manifests(prepared, cfg)
    out = SimpleNamespace(root=root, params=params, cfg=cfg, runs=runs_root, summary=summary, prepared=prepared,
                          plots=root / "results" / "plots", report=root / "results" / "report")
    if run_aggregate:
        out.result = aggregate(cfg, runs_root, summary)
    return out


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
