"""Read what the train stage wrote (history.csv), and the helpers aggregate, plot and report share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported where a table is read: evaluate reads JSON only, and starts faster
    import pandas as pd

    from .config import Config

from .errors import DataError

HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc")


def dataset_title(cfg: Config, dataset: str) -> str:
    """Human name of the data set ``dataset`` of ``cfg``, as its kind gives it
    (``datasets.<name>.kind``: a CIFAR-10 data set is "CIFAR-10"; a folder of one's own images may be
    titled by its name)."""
    return cfg.describe_dataset(dataset).title


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
    """``path`` if it is a file, else a DataError that names it and the stage that writes it."""
    if not path.is_file():
        raise DataError(f"{path}: missing; it is written by `{stage}`")
    return path


def read_json(path: Path, stage: str):
    """The JSON in ``path`` (written by ``stage``); a DataError names the file and the stage to re-run
    when it is missing or not valid JSON."""
    try:
        return json.loads(need_file(Path(path), stage).read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise DataError(f"{path}: not valid JSON ({e}); re-run `{stage}`") from e


def read_table(path: Path, stage: str, **kwargs) -> pd.DataFrame:
    """``pandas.read_csv(path, **kwargs)`` of a CSV written by ``stage``; a DataError names the file and
    the stage to re-run when it is missing or not readable CSV."""
    import pandas as pd

    try:
        return pd.read_csv(need_file(Path(path), stage), **kwargs)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path}: not readable CSV ({type(e).__name__}: {e}); re-run `{stage}`") from e


def read_history(path: Path, variant: str) -> pd.DataFrame:
    """A run's history.csv, checked for the columns the later stages read."""
    train = f"cnnbench train --variant {variant}"
    history = read_table(Path(path), train)
    missing = [c for c in HISTORY_COLUMNS if c not in history.columns]
    if missing:
        raise DataError(f"{path}: no column(s) {', '.join(missing)}; re-run `{train}`")
    if history.empty:
        raise DataError(f"{path}: no epochs recorded; re-run `{train}`")
    return history
