"""Evaluate one trained variant on the test split: metrics.json and a confusion matrix.

Where preprocess audited the data set for duplicates (duplicates.json with ``test_leaked``), top-1 is
also reported on the clean test images, those with no exact, mirrored or near duplicate among the
training images (``test_top1_clean``), as ciFAIR does for CIFAR: a model that memorised a training
image gets its test copy right without having learned anything.

Top-5 (``test_top5``) is reported for a data set of at least :data:`TOP5_MIN_CLASSES` classes (all
its classes, before a variant leaves its noisy ones out, so every variant of it has the metric):
with fewer, five guesses cover a quarter of the classes or more and say little. Where the data set lists
``noisy_classes`` (preprocess records them in the manifest), top-1 is also reported on the test
images of the other classes (``test_top1_kept``, ``test_images_kept``), which every variant of the
data set keeps, so a model trained without the noisy classes and one trained with them are scored
on the same images.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from .atomic import atomic_write_text, write_csv
from .checkpoint import load_plain
from .config import Config
from .data import packed
from .engine import DeviceData, Engine, configure_process, describe_device, select_device
from .errors import DataError, ModelMismatch
from .models import build_model
from .results import read_json
from .spec import RunSpec
from .train import normalization, predict, with_data_normalization

log = logging.getLogger("cnnbench.evaluate")
TOP5_MIN_CLASSES = 20


def load_trained(model_path: Path, spec: RunSpec) -> tuple[torch.nn.Module, dict]:
    train_cmd = f"cnnbench train --variant {spec.variant} --recipe {spec.recipe} --seed {spec.seed}"
    if not model_path.exists():
        raise DataError(f"{model_path}: no trained model; run `{train_cmd}` first")
    blob = load_plain(model_path, "trained model", f"Retrain it: `{train_cmd}`.")
    if blob.get("variant") != spec.variant or blob.get("dataset") != spec.dataset:
        raise ModelMismatch(
            f"{model_path} holds variant {blob.get('variant')!r} on {blob.get('dataset')!r}, "
            f"not {spec.variant!r} on {spec.dataset!r}"
        )
    if blob.get("settings_hash") != spec.hash:
        raise ModelMismatch(
            f"{model_path} was trained with other settings than params.yaml now gives run "
            f"{spec.run_id}; retrain it (`{train_cmd}`)"
        )
    model = build_model(blob["model"], blob["num_classes"], **blob["model_args"])
    model.load_state_dict(blob["state_dict"])
    return model, blob


def evaluate_variant(cfg: Config, name: str, prepared_dir: Path, run_dir: Path, recipe: str | None = None,
                     seed: int | None = None) -> dict:
    """Write ``metrics.json``, ``confusion.csv`` and ``predictions.csv`` for one run of variant
    ``name`` (under ``recipe``, with ``seed``) into ``run_dir``."""
    return evaluate_run(cfg.run(name, recipe, seed), prepared_dir, run_dir)


def evaluate_run(spec: RunSpec, prepared_dir: Path, run_dir: Path) -> dict:
    """:func:`evaluate_variant` for a resolved run."""
    name, settings = spec.variant, spec.train
    configure_process(spec.execution)
    device = select_device(spec.execution.device)
    engine = Engine(spec.execution, device)
    model, blob = load_trained(run_dir / "model.pt", spec)
    model = engine.prepare(model)
    x, y, classes = packed.load_split(prepared_dir, "test", exclude_classes=list(spec.exclude_classes))
    clean = packed.clean_mask(prepared_dir, "test", exclude_classes=list(spec.exclude_classes))
    if classes != blob["classes"]:
        raise ModelMismatch(f"{run_dir / 'model.pt'}: trained on classes that differ from {prepared_dir}'s test split")
    data = DeviceData(x, y, device)
    mean, std = normalization(with_data_normalization(settings, prepared_dir), device)
    logits, losses = predict(model, data, mean, std, settings.eval_batch_size, engine, settings.tta_flip)
    labels = data.labels
    pred = logits.argmax(1)
    k = len(classes)
    confusion = torch.bincount(labels * k + pred, minlength=k * k).view(k, k).cpu()
    per_class_total = confusion.sum(1)
    per_class = {
        c: (confusion[i, i].item() / per_class_total[i].item()) if per_class_total[i] > 0 else None
        for i, c in enumerate(classes)
    }
    train_summary = read_json(run_dir / "train.json", f"cnnbench train --variant {name}")
    metrics = {
        "variant": name,
        "dataset": spec.dataset,
        "recipe": spec.recipe,
        "seed": spec.seed,
        "model": spec.model,
        "num_classes": k,
        "test_images": int(len(labels)),
        "test_top1": (pred == labels).float().mean().item(),
        "test_loss": losses.mean().item(),
        "params": train_summary["params"],
        "epochs": train_summary["epochs"],
        "mean_epoch_seconds": train_summary["mean_epoch_seconds"],
        "peak_memory_mb": train_summary["peak_memory_mb"],
        "memory_kind": train_summary["memory_kind"],
        "device": train_summary["device"],
        "eval_device": describe_device(device),
        "precision": train_summary["precision"],
        "tta_flip": settings.tta_flip,
        "torch_version": train_summary["torch_version"],
        "per_class_accuracy": per_class,
        # None when the data set has no leak audit (no duplicates.json, or its v1 format); then
        # predictions.csv has no `clean` column either
        "test_images_clean": None,
        "test_top1_clean": None,
    }
    if clean is not None:
        is_clean = torch.from_numpy(clean).to(labels.device)
        metrics["test_images_clean"] = int(is_clean.sum().item())
        metrics["test_top1_clean"] = ((pred[is_clean] == labels[is_clean]).float().mean().item()
                                      if is_clean.any() else None)
    metrics.update(_class_metrics(logits, labels, classes, prepared_dir))
    _write_tables(run_dir, classes, confusion, labels, pred, clean)
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    clean_top1 = metrics["test_top1_clean"]
    log.info("%s: test top-1 %.4f%s on %d images%s", name, metrics["test_top1"],
             f", top-5 {metrics['test_top5']:.4f}" if "test_top5" in metrics else "", len(labels),
             f"; {clean_top1:.4f} on the {metrics['test_images_clean']} clean ones" if clean_top1 is not None else "")
    return metrics


def _class_metrics(logits: torch.Tensor, labels: torch.Tensor, classes: list[str], prepared_dir: Path) -> dict:
    """Top-5 when the data set has at least TOP5_MIN_CLASSES classes (the manifest's, before any
    filtering), and top-1 on the test images of the classes every variant keeps when the data set
    lists noisy classes (as preprocess recorded them in the manifest), so a filtered and an
    unfiltered model are compared on the same images."""
    out: dict = {}
    manifest = packed.read_manifest(prepared_dir)
    if len(manifest.get("classes") or classes) >= TOP5_MIN_CLASSES:
        top5 = logits.topk(min(5, len(classes)), dim=1).indices
        out["test_top5"] = (top5 == labels[:, None]).any(1).float().mean().item()
    noisy = set(manifest.get("noisy_classes") or [])
    if noisy:
        pred = logits.argmax(1)
        keep = torch.tensor([c not in noisy for c in classes], device=labels.device)[labels]
        out["test_top1_kept"] = (pred[keep] == labels[keep]).float().mean().item() if keep.any() else None
        out["test_images_kept"] = int(keep.sum().item())
    return out


def _write_tables(run_dir: Path, classes: list[str], confusion: torch.Tensor, labels: torch.Tensor,
                  pred: torch.Tensor, clean) -> None:
    """confusion.csv (rows: true class, columns: predicted) and predictions.csv: one row per test
    image, for `dvc plots` (confusion template) and aggregate's statistics, with `clean` (1/0: no
    duplicate in train) when the data set was audited for leaks."""
    write_csv(run_dir / "confusion.csv", ([c, *(int(v) for v in confusion[i].tolist())] for i, c in enumerate(classes)),
              ["true\\predicted", *classes])
    pairs = ([classes[a], classes[b]] for a, b in zip(labels.tolist(), pred.tolist()))
    if clean is None:
        write_csv(run_dir / "predictions.csv", pairs, ["actual", "predicted"])
    else:
        write_csv(run_dir / "predictions.csv", ([*row, int(c)] for row, c in zip(pairs, clean.tolist())),
                  ["actual", "predicted", "clean"])
