"""Read what the train stage wrote (history.csv), and the helpers aggregate, plot and report share."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")

DATASET_TITLES = {"cifar10": "CIFAR-10", "butterflies": "Butterflies & moths"}


def dataset_title(dataset: str) -> str:
    """Human name of a data set key (``cifar10`` -> ``CIFAR-10``); unknown keys pass through."""
    return DATASET_TITLES.get(dataset, dataset)


def lab_rows(spec: dict) -> list[dict]:
    """The lab-report rows a variant is compared with: ``lab_report`` as a list (none: ``[]``).

    params.yaml gives a list of rows ({report, row, accuracy?, epochs?, epoch_seconds?, claim?});
    a single row given as a dict is accepted too.
    """
    lab = spec.get("lab_report")
    if not lab:
        return []
    if isinstance(lab, dict):
        return [lab]
    return [row for row in lab if isinstance(row, dict)]


def need_file(path: Path, stage: str) -> Path:
    """``path`` if it is a file, else an error that names it and the stage that writes it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; it is written by `{stage}`")
    return path


def read_history(path: Path, variant: str) -> pd.DataFrame:
    """A run's history.csv, checked for the columns the later stages read."""
    train = f"cnnbench train --variant {variant}"
    history = pd.read_csv(need_file(Path(path), train))
    missing = [c for c in HISTORY_COLUMNS if c not in history.columns]
    if missing:
        raise ValueError(f"{path}: no column(s) {', '.join(missing)}; re-run `{train}`")
    if history.empty:
        raise ValueError(f"{path}: no epochs recorded; re-run `{train}`")
    return history
