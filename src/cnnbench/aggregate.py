"""Aggregate the study: every run's numbers, mean ± std and a 95 % interval per (variant, recipe), and
each lab-report claim tested under the rule in params.yaml ``claims_rule`` (see ``claims``).

Reads each run's metrics.json, history.csv and predictions.csv (the per-image outcomes the
statistics need, and which test images are clean: no duplicate in train, where the data set was
audited); writes runs.csv, variants.csv, claims.csv and summary.json. Every bootstrap draws
from a generator seeded by ``claims_rule.bootstrap.seed`` and the claim, so a rerun on the same
runs writes byte-identical files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from . import stats
from .atomic import atomic_write_text
from .claims import FAILS, HOLDS, INCONCLUSIVE, Rule, RunResult, evaluate_claims
from .config import Config, run_dir
from .errors import DataError
from .results import read_history, read_json, read_table

__all__ = ["HOLDS", "FAILS", "INCONCLUSIVE", "METRIC_LABELS", "aggregate", "collect_runs", "instability", "summarize"]
METRIC_LABELS = {
    "test_top1": "test top-1 (%)",
    "top1_kept": "test top-1 on the kept classes (%)",
    "test_top1_clean": "test top-1 on the clean test images (%)",
    "epoch_seconds": "seconds per epoch",
    "params": "parameters",
    "instability": "instability (mean drop of validation accuracy per epoch, points)",
}
RUN_COLUMNS = ["variant", "dataset", "model", "recipe", "seed", "test_top1", "test_top5", "top1_kept",
               "test_top1_clean", "epoch_seconds", "params", "instability", "epochs", "peak_memory_mb", "device",
               "test_images", "test_images_clean"]
SUMMARY_METRICS = ["test_top1", "test_top5", "top1_kept", "test_top1_clean", "epoch_seconds", "params", "instability",
                   "peak_memory_mb"]
ALL_SEEDS = ("test_top1_clean",)  # a mean over some seeds only would pass for the variant's: NaN unless all have it
PREDICTIONS_AGREE = 1e-6  # predictions.csv's accuracy may differ from metrics.json's by rounding only


def instability(val_acc: pd.Series) -> float:
    """Mean drop of validation accuracy from one epoch to the next, in points (rises count 0).

    A network that learns stably rarely loses validation accuracy from one epoch to the next; one
    that learns unstably goes up and down. Steady learning progress does not count, so a fast
    learner is not called unstable. NaN with fewer than two epochs.
    """
    values = 100 * np.asarray(val_acc, dtype=float)
    if len(values) < 2:
        return float("nan")
    return float(np.mean(np.clip(-np.diff(values), 0, None)))


class Study(NamedTuple):
    """What aggregate reads: one row per run (runs.csv) and each run's per-image outcomes."""

    table: pd.DataFrame
    runs: dict  # (variant, recipe) -> list of claims.RunResult, by seed


def _read_predictions(path: Path, where: str, metrics: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(true class, correct?, clean?) per test image from predictions.csv, checked against metrics.json.

    ``clean`` is None when the run's data set had no leak audit (no ``clean`` column, and
    ``test_images_clean`` null or absent in metrics.json).
    """
    table = read_table(path, where, dtype=str, keep_default_na=False)
    if list(table.columns) not in (["actual", "predicted"], ["actual", "predicted", "clean"]):
        raise DataError(f"{path}: columns {list(table.columns)}, expected actual, predicted (and clean); "
                        f"re-run `{where}`")
    actual, correct = table["actual"].to_numpy(), (table["actual"] == table["predicted"]).to_numpy()
    if len(table) != metrics.get("test_images", len(table)) or \
            abs(correct.mean() - metrics["test_top1"]) > PREDICTIONS_AGREE:
        raise DataError(f"{path}: {len(table)} images at top-1 {correct.mean():.6f} disagree with metrics.json "
                        f"({metrics.get('test_images')} images, top-1 {metrics['test_top1']:.6f}); re-run `{where}`")
    expected_clean = metrics.get("test_images_clean")
    if "clean" not in table:
        if expected_clean is not None:
            raise DataError(f"{path}: no `clean` column, but metrics.json counts {expected_clean} clean test images; "
                            f"re-run `{where}`")
        return actual, correct, None
    if not table["clean"].isin(["0", "1"]).all():
        raise DataError(f"{path}: the `clean` column must hold 1 or 0 on every row; re-run `{where}`")
    clean = (table["clean"] == "1").to_numpy()
    top1 = correct[clean].mean() if clean.any() else None
    stated = metrics.get("test_top1_clean")
    if expected_clean != int(clean.sum()) or (top1 is None) != (stated is None) or \
            (top1 is not None and abs(top1 - stated) > PREDICTIONS_AGREE):
        raise DataError(f"{path}: {int(clean.sum())} clean images at top-1 {fmt_share(top1)} disagree with "
                        f"metrics.json ({expected_clean} clean images, top-1 {fmt_share(stated)}); re-run `{where}`")
    return actual, correct, clean


def fmt_share(value) -> str:
    """A share such as top-1 in six decimals, or "none" (no images to score, or not measured)."""
    return "none" if value is None else f"{value:.6f}"


def _read_run(cfg: Config, runs_root: Path, variant: str, recipe: str, seed: int) -> tuple[dict, RunResult]:
    run = run_dir(runs_root, variant, recipe, seed)
    where = f"cnnbench evaluate --variant {variant} --recipe {recipe} --seed {seed}"
    metrics_path = run / "metrics.json"
    m = read_json(metrics_path, where)
    if (m.get("variant"), m.get("recipe"), m.get("seed")) != (variant, recipe, seed):
        raise DataError(f"{metrics_path}: holds run {m.get('variant')}/{m.get('recipe')}/seed{m.get('seed')}, "
                        f"not {variant}/{recipe}/seed{seed}; re-run `{where}`")
    history = read_history(run / "history.csv", variant)
    actual, correct, clean = _read_predictions(run / "predictions.csv", where, m)
    kept, clean_top1 = m.get("test_top1_kept"), m.get("test_top1_clean")
    row = {
        "variant": variant, "dataset": m["dataset"], "model": m["model"], "recipe": recipe, "seed": seed,
        "test_top1": 100 * m["test_top1"],
        "test_top5": 100 * m["test_top5"] if m.get("test_top5") is not None else float("nan"),
        "top1_kept": 100 * kept if kept is not None else float("nan"),
        "test_top1_clean": 100 * clean_top1 if clean_top1 is not None else float("nan"),
        "epoch_seconds": m["mean_epoch_seconds"], "params": m["params"],
        "instability": instability(history["val_acc"]), "epochs": m["epochs"],
        "peak_memory_mb": m.get("peak_memory_mb", float("nan")), "device": m.get("device", ""),
        "test_images": len(actual),
        "test_images_clean": int(clean.sum()) if clean is not None else pd.NA,
    }
    noisy = cfg.dataset(m["dataset"]).get("noisy_classes") or []
    seconds = history["seconds"].to_numpy(dtype=float) if "seconds" in history else np.array([row["epoch_seconds"]])
    return row, RunResult(seed=seed, values=row, actual=actual, correct=correct, epoch_seconds=seconds,
                          kept=~np.isin(actual, noisy), clean=clean)


def collect_runs(cfg: Config, runs_root: Path) -> Study:
    """Every (variant, recipe, seed) of the study, read from its run directory."""
    rows, runs = [], {}
    for variant, recipe, seed in cfg.runs:
        row, result = _read_run(cfg, runs_root, variant, recipe, seed)
        rows.append(row)
        runs.setdefault((variant, recipe), []).append(result)
    for results in runs.values():
        results.sort(key=lambda r: r.seed)
    table = pd.DataFrame(rows, columns=RUN_COLUMNS).astype({"test_images_clean": "Int64"})  # NA: not audited
    return Study(table, runs)


def _accuracy_interval(results: list, metric: str) -> dict:
    """95 % interval of a variant's mean accuracy in percent, seeds and test images counted."""
    subset = {"test_top1": lambda r: slice(None), "top1_kept": lambda r: r.kept, "test_top1_clean": lambda r: r.clean}
    scores = [r.correct[subset[metric](r)] for r in results]
    _, low, high, _ = stats.accuracy_interval([s.astype(float) for s in scores])
    return {"ci_low": 100 * low, "ci_high": 100 * high}


def summarize(study: Study) -> pd.DataFrame:
    """Mean, standard deviation (ddof 1; NaN for one seed) and n per (variant, recipe); for test top-1
    (and top-1 on the kept classes, and on the clean test images) also the 95 % interval of the mean.

    Top-1 on the clean test images is NaN unless every seed has it (a run evaluated before the data
    set's leak audit has none); ``test_images_clean`` is then empty too.
    """
    out = []
    for (variant, recipe), group in study.table.groupby(["variant", "recipe"], sort=False):
        clean_images = group["test_images_clean"]
        row = {"variant": variant, "dataset": group["dataset"].iloc[0], "model": group["model"].iloc[0],
               "recipe": recipe, "n": len(group), "seeds": " ".join(str(s) for s in group["seed"]),
               "epochs": int(group["epochs"].iloc[0]), "test_images": int(group["test_images"].iloc[0]),
               "test_images_clean": clean_images.iloc[0] if clean_images.notna().all() else pd.NA}
        for metric in SUMMARY_METRICS:
            values = group[metric].astype(float)
            if metric in ALL_SEEDS and values.isna().any():
                values = values * float("nan")
            row[f"{metric}_mean"] = values.mean()
            row[f"{metric}_std"] = values.std(ddof=1) if len(values) > 1 else float("nan")
        results = study.runs[(variant, recipe)]
        for metric in ("test_top1", "top1_kept", "test_top1_clean"):
            interval = (_accuracy_interval(results, metric) if group[metric].notna().all()
                        else {"ci_low": float("nan"), "ci_high": float("nan")})
            row.update({f"{metric}_{k}": v for k, v in interval.items()})
        out.append(row)
    return pd.DataFrame(out).astype({"test_images_clean": "Int64"}) if out else pd.DataFrame(out)


def _clean(value):
    """JSON-safe: NaN, inf and pandas' NA become null; numpy scalars become Python ones."""
    if value is pd.NA:
        return None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return _clean(value.item())
    return value


def aggregate(cfg: Config, runs_root: Path, out_dir: Path) -> dict:
    """Write runs.csv, variants.csv, claims.csv and summary.json into ``out_dir``."""
    study = collect_runs(cfg, runs_root)
    variants = summarize(study)
    rule_block = cfg.raw["claims_rule"]
    claims, family = evaluate_claims(cfg.claims, cfg.recipes, study.runs, Rule.from_params(rule_block),
                                     trained=cfg.runs_under)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # DataFrames: pandas' to_csv quotes like the csv module (atomic.csv_text) and writes NaN as an empty
    # field, which plot and report read back as missing
    atomic_write_text(out_dir / "runs.csv", study.table.to_csv(index=False))
    atomic_write_text(out_dir / "variants.csv", variants.to_csv(index=False))
    atomic_write_text(out_dir / "claims.csv", claims.to_csv(index=False))
    verdicts = {recipe: claims[claims["recipe"] == recipe]["verdict"].value_counts().to_dict() for recipe in cfg.recipes}
    summary = {
        "profile": cfg.profile,
        "seeds": cfg.seeds,
        "recipes": cfg.recipes,
        "rule": {**rule_block, "tests": family},
        "verdicts": verdicts,
        "claims": [{k: _clean(v) for k, v in row.items()} for row in claims.to_dict("records")],
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary
