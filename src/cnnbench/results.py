"""Read what train and evaluate wrote for each variant."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def _need(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; it is written by `{stage}`")
    return path


def load_runs(variants: dict[str, dict], runs_dir: Path) -> list[dict]:
    """One dict per variant (in the given order): spec, history, metrics, confusion."""
    runs = []
    for name, spec in variants.items():
        run = Path(runs_dir) / name
        history = pd.read_csv(_need(run / "history.csv", f"cnnbench train --variant {name}"))
        metrics = json.loads(_need(run / "metrics.json", f"cnnbench evaluate --variant {name}").read_text())
        confusion = pd.read_csv(_need(run / "confusion.csv", f"cnnbench evaluate --variant {name}"), index_col=0)
        runs.append({"variant": name, "dataset": spec["dataset"], "spec": spec,
                     "history": history, "metrics": metrics, "confusion": confusion})
    return runs


def by_dataset(runs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for run in runs:
        out.setdefault(run["dataset"], []).append(run)
    return out
