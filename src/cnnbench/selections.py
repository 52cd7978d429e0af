"""What tuning chose, read back for the figures and the report: every ``selection.json`` of the study.

``cnnbench select`` writes one per (tuned variant, tuned recipe) under the tuning root
(:func:`cnnbench.tuning.selection_path`). Its accuracies are fractions, as in history.csv; the
functions here return percent, as the rest of the report. A diverged trial counts 0, as it did
when the point was chosen.

The budget curve treats one *grid point* as one trial of Dodge et al.'s expected-validation
curve: selection compares points by their mean over the tuning seeds, so that mean is the score
a point contributes (with one tuning seed, a point and a trial are the same).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import stats
from . import tuning as tuning_mod
from .config import Config
from .errors import DataError

SELECT_STAGE = "cnnbench select"
SELECTION_KEYS = ("variant", "recipe", "base", "grid", "chosen", "chosen_val_acc", "at_grid_edge", "points",
                  "trials", "tuning_seconds")


def read_selection(path: Path) -> dict:
    """One selection.json, checked to hold the keys the figures and the report read."""
    try:
        selection = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); re-run `{SELECT_STAGE}`") from None
    missing = [k for k in SELECTION_KEYS if k not in selection]
    if missing:
        raise DataError(f"{path}: no {', '.join(missing)}; it was written by another version, re-run `{SELECT_STAGE}`")
    return selection


def read_selections(cfg: Config, root: str | Path) -> dict[tuple[str, str], dict]:
    """``{(variant, tuned recipe): selection}`` for every selection of the study found under ``root``,
    in params order (recipes, then variants); ``{}`` without a tuning block or before any selection."""
    if cfg.tuning is None:
        return {}
    out = {}
    for recipe in cfg.tuned_recipes:
        for variant in cfg.tuning.variants:
            path = tuning_mod.selection_path(root, variant, recipe)
            if path.is_file():
                out[(variant, recipe)] = read_selection(path)
    return out


def x_key(selection: dict) -> str:
    """The hyper-parameter on the x axis: the learning rate, else the grid's first."""
    return "lr" if "lr" in selection["grid"] else next(iter(selection["grid"]))


def sweep(selection: dict) -> list[dict]:
    """Validation accuracy (%) per value of :func:`x_key`, sorted by it: the point with the best mean at
    each value (the best over the grid's other hyper-parameters), with its seeds' min and max."""
    key, best = x_key(selection), {}
    for p in selection["points"]:
        x = float(p["values"][key])
        if x not in best or p["mean_val_acc"] > best[x]["mean_val_acc"]:
            best[x] = p
    return [{"x": x, "point": p["point"], "mean": 100 * p["mean_val_acc"], "min": 100 * p["min_val_acc"],
             "max": 100 * p["max_val_acc"], "n": int(p["n"])} for x, p in sorted(best.items())]


def point_scores(selection: dict) -> np.ndarray:
    """Each grid point's score (%): its mean validation accuracy over the tuning seeds."""
    return np.array([100 * p["mean_val_acc"] for p in selection["points"]], dtype=float)


def budget_curve(selection: dict) -> stats.BudgetCurve:
    """Expected best validation accuracy (%) of n grid points drawn at random, n = 1..points."""
    return stats.expected_max_curve(point_scores(selection))


def diverged(selection: dict) -> int:
    return sum(1 for t in selection["trials"] if t.get("diverged"))


def trial_epochs(selections) -> list[int]:
    """The distinct epoch counts of the trials of ``selections``, sorted."""
    return sorted({int(t["epochs"]) for s in selections for t in s["trials"] if t.get("epochs") is not None})
