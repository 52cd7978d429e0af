"""Tuning: each variant's nuisance hyper-parameters chosen on the validation split, with one budget for all.

A *tuned recipe* (``tuning.recipes.<name>.base``) is a recipe of ``recipes`` whose values of the
``tuning.grid`` hyper-parameters are chosen per variant. For every tuned variant and every grid point
one *trial* per tuning seed trains the base recipe, with that point's values, for the budget's epochs
(``results/tuning/<variant>/<recipe>/<point>/seed<k>/``: history.csv and trial.json, no weights).
The *selection* of a (variant, tuned recipe) reads every trial's final validation accuracy, takes the
point with the highest mean over the seeds (the first in grid order on a tie) and writes
``selection.json`` with every trial's score and ``chosen.json`` with only the chosen values; the
study's runs of the tuned recipe read the chosen values from the latter, and their run identity (:class:`~cnnbench.spec.RunSpec`) holds them. Neither a
trial nor the selection reads the test split.

Why: a network that needs another learning rate than the one fixed recipe gives it loses a
comparison for a reason that has nothing to do with its architecture (Google's Deep Learning Tuning
Playbook: compare after tuning each with the same budget; Dodge et al. 2019, "Show Your Work").
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError

TUNING_ROOT = Path("results/tuning")

# The hyper-parameters a grid may name: the key of the grid -> where it lives in a train block.
HYPERPARAMETERS = {
    "lr": ("optimizer", "lr"),
    "weight_decay": ("optimizer", "weight_decay"),
    "label_smoothing": ("label_smoothing",),
}
SHORT = {"lr": "lr", "weight_decay": "wd", "label_smoothing": "ls"}
METRICS = ("final_val_acc",)


@dataclass(frozen=True)
class Point:
    """One point of the grid: its name (a path component, e.g. ``lr0.05-wd0.0005``) and its values."""

    name: str
    values: dict  # hyper-parameter -> value (treat as read-only)


@dataclass(frozen=True)
class Tuning:
    """The ``tuning`` block of params.yaml with the profile's keys applied, resolved."""

    recipes: dict        # tuned recipe -> its base recipe (a key of ``recipes``)
    grid: dict           # hyper-parameter -> list of values, in the order trials are listed
    budget: dict         # {"epochs": n} or {"fraction": f} of each run's epochs
    seeds: tuple         # the trials' seeds
    metric: str          # final_val_acc
    variants: tuple      # the tuned variants (every variant of the study unless tuning.variants lists some)

    @property
    def points(self) -> list[Point]:
        """Every combination of the grid's values (the first hyper-parameter varies slowest)."""
        keys = list(self.grid)
        combos = np.array(np.meshgrid(*[self.grid[k] for k in keys], indexing="ij")).reshape(len(keys), -1).T
        return [Point(point_name(dict(zip(keys, map(float, row)))), dict(zip(keys, map(float, row))))
                for row in combos]

    def point(self, name: str) -> Point:
        for p in self.points:
            if p.name == name:
                return p
        raise ConfigError(f"tuning: no grid point {name!r}; the grid's points: {', '.join(p.name for p in self.points)}")

    def budget_epochs(self, run_epochs: int) -> int:
        """A trial's epochs for a run of ``run_epochs`` epochs (a fraction rounds, never below 1)."""
        if "epochs" in self.budget:
            return int(self.budget["epochs"])
        return max(1, round(float(self.budget["fraction"]) * run_epochs))

    def describe_budget(self) -> str:
        if "epochs" in self.budget:
            n = self.budget["epochs"]
            return f"{n} epoch{'' if n == 1 else 's'}"
        return f"{self.budget['fraction']:g} of each run's epochs"


def fmt_value(value: float) -> str:
    """A grid value as written in a point's name: up to 4 significant digits, e.g. 0.05, 1e-05."""
    return f"{value:.4g}"


def point_name(values: dict) -> str:
    return "-".join(f"{SHORT[k]}{fmt_value(v)}" for k, v in values.items())


def log_grid(spec: dict) -> list[float]:
    """``{min, max, points}``: that many log-spaced values from min to max, rounded to 4 significant digits."""
    values = np.geomspace(float(spec["min"]), float(spec["max"]), int(spec["points"]))
    return [float(fmt_value(v)) for v in values]


def grid_values(spec) -> list[float]:
    return log_grid(spec) if isinstance(spec, dict) else [float(v) for v in spec]


def resolve(block: dict | None, profile_block: dict | None, study_variants: list[str]) -> Tuning | None:
    """The tuning block, the profile's top-level tuning keys replacing the file's (a profile's grid or
    budget replaces the whole grid or budget), or None without one."""
    if not block:
        return None
    merged = {**block, **(profile_block or {})}
    variants = merged.get("variants", "all")
    return Tuning(
        recipes={name: spec["base"] for name, spec in merged["recipes"].items()},
        grid={k: grid_values(v) for k, v in merged["grid"].items()},
        budget=dict(merged["budget"]),
        seeds=tuple(merged["seeds"]),
        metric=merged.get("metric", "final_val_acc"),
        variants=tuple(study_variants if variants == "all" else variants),
    )


def apply_point(train: dict, values: dict) -> dict:
    """A copy of the merged train block with the point's values set (``optimizer.lr`` and so on)."""
    import copy

    out = copy.deepcopy(train)
    for key, value in values.items():
        *path, last = HYPERPARAMETERS[key]
        node = out
        for part in path:
            node = node[part]
        node[last] = value
    return out


# --- where things live ----------------------------------------------------------------------------
def tuning_dir(root: str | Path, variant: str, recipe: str) -> Path:
    return Path(root) / variant / recipe


def trial_dir(root: str | Path, variant: str, recipe: str, point: str, seed: int) -> Path:
    """One trial's outputs: ``<root>/<variant>/<recipe>/<point>/seed<seed>``."""
    return tuning_dir(root, variant, recipe) / point / f"seed{seed}"


def selection_path(root: str | Path, variant: str, recipe: str) -> Path:
    """Every trial's score and what was chosen (the report reads it)."""
    return tuning_dir(root, variant, recipe) / "selection.json"


def chosen_path(root: str | Path, variant: str, recipe: str) -> Path:
    """Only the chosen values: what the tuned runs read and depend on, so a selection rewritten with
    more trials but the same choice leaves them as they are."""
    return tuning_dir(root, variant, recipe) / "chosen.json"


class SelectionMissing(ConfigError):
    """A run of a tuned recipe asked for the values tuning chose before the selection was made."""


def read_choice(root: str | Path, variant: str, recipe: str) -> dict:
    """The chosen values of (variant, tuned recipe): ``{"lr": 0.1, ...}``."""
    path = chosen_path(root, variant, recipe)
    try:
        chosen = json.loads(path.read_text())
    except FileNotFoundError:
        raise SelectionMissing(
            f"{path}: missing; the runs of tuned recipe {recipe!r} train with the values tuning chose for {variant}: "
            f"run its trials and `cnnbench select --variant {variant} --recipe {recipe}` first (both drivers do)"
        ) from None
    return dict(chosen)


# --- selection ------------------------------------------------------------------------------------
def read_trial(directory: Path) -> dict:
    """A finished trial's record (trial.json): its values, seed, final validation accuracy, seconds."""
    path = directory / "trial.json"
    if not path.is_file():
        raise DataError(f"{path}: missing; the trial has not finished (run its `cnnbench tune` job)")
    return json.loads(path.read_text())


def final_val_acc(history_csv: Path) -> float:
    """The selection metric: validation accuracy after the last epoch."""
    with open(history_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise DataError(f"{history_csv}: no epoch recorded")
    return float(rows[-1]["val_acc"])


def select(tuning: Tuning, trials: list[dict]) -> dict:
    """The grid point with the highest mean score over its seeds (grid order breaks ties). A diverged
    trial scores 0 (its validation accuracy is chance or worse, and it must never be chosen)."""
    by_point: dict[str, list[float]] = {}
    for t in trials:
        by_point.setdefault(t["point"], []).append(0.0 if t["diverged"] else t["val_acc"])
    points = []
    for p in tuning.points:
        scores = by_point.get(p.name)
        if not scores:
            raise DataError(f"tuning: no trial of point {p.name}; every grid point needs its trials before selection")
        points.append({"point": p.name, "values": p.values, "n": len(scores), "mean_val_acc": float(np.mean(scores)),
                       "min_val_acc": float(np.min(scores)), "max_val_acc": float(np.max(scores))})
    best = max(range(len(points)), key=lambda i: (points[i]["mean_val_acc"], -i))
    chosen = points[best]
    edges = [k for k, values in tuning.grid.items()
             if len(values) > 1 and chosen["values"][k] in (min(values), max(values))]
    return {"chosen": chosen["values"], "chosen_point": chosen["point"], "chosen_val_acc": chosen["mean_val_acc"],
            "at_grid_edge": edges, "points": points}


def selection_record(tuning: Tuning, variant: str, recipe: str, trials: list[dict]) -> dict:
    """selection.json: what was chosen, from which trials, at what cost."""
    chosen = select(tuning, trials)
    return {
        "variant": variant, "recipe": recipe, "base": tuning.recipes[recipe], "metric": tuning.metric,
        "grid": tuning.grid, "budget": tuning.budget, "seeds": list(tuning.seeds),
        **chosen,
        "trials": trials,
        # training time, as the runs' is counted (a diverged trial: its time until it stopped)
        "tuning_seconds": float(sum(t.get("train_seconds", t["seconds"]) for t in trials)),
        "wall_seconds": float(sum(t["seconds"] for t in trials)),  # each trial's training call, data loading included
        "note": "chosen on the validation split (final epoch); the test split is never read by tuning",
    }


def collect_trials(cfg, variant: str, recipe: str, root: str | Path) -> list[dict]:
    """Every trial of (variant, tuned recipe) in grid order, each checked to be the trial the
    configuration asks for now (same settings hash), so a stale trial never decides."""
    trials = []
    for point in cfg.tuning.points:
        for seed in cfg.tuning.seeds:
            directory = trial_dir(root, variant, recipe, point.name, seed)
            record = read_trial(directory)
            expected = cfg.trial(variant, recipe, point.name, seed).hash
            if record.get("settings_hash") != expected:
                raise DataError(f"{directory / 'trial.json'}: a trial of other settings than params.yaml's; rerun "
                                f"`cnnbench tune --variant {variant} --recipe {recipe} --point {point.name} --seed {seed}`")
            trials.append(record)
    return trials


def write_selection(cfg, variant: str, recipe: str, root: str | Path, out: str | Path | None = None) -> dict:
    """Choose (variant, tuned recipe)'s values from its trials and write selection.json atomically."""
    from .atomic import atomic_write_text

    record = selection_record(cfg.tuning, variant, recipe, collect_trials(cfg, variant, recipe, root))
    out = Path(out) if out is not None else selection_path(root, variant, recipe)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.parent / "chosen.json", json.dumps(record["chosen"], sort_keys=True) + "\n")
    atomic_write_text(out, json.dumps(record, indent=2) + "\n")
    return record
