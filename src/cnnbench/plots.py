"""The study's figures: every variant under every recipe, mean ± std over the seeds.

:func:`plot_all` reads the run directories (``<runs_root>/<variant>/<recipe>/seed<k>/``) and the
aggregate stage's ``runs.csv`` / ``variants.csv`` and writes, per data set, the learning curves
(one figure per recipe), the accuracy chart, the accuracy-cost (Pareto) chart, the confusion
matrix of its best model and the per-class accuracy (of the variant that keeps the noisy classes
where the data set lists ``noisy_classes`` and has one, else of the best model), and, for a data
set that lists noisy classes and has a variant with ``filter_noisy: false``, the effect of
filtering them; where tuning chose hyper-parameters for its variants (``selection.json`` under the
tuning root), validation accuracy against the learning rate tried and the expected best validation
accuracy against the number of grid points tried (Dodge et al. 2019); plus ``figures.json``: the
figures in display order with a title and a caption each, which the report embeds. The figures stay legible up to a few hundred classes: class names
are drawn up to :data:`LABELLED_CLASSES` (per-class) and :data:`CONFUSION_NAMED` (confusion) classes.

The work is split in two so that the numbers can be tested without images:
:func:`plan_figures` computes every figure's data, title and caption (pure helpers:
:func:`curve_stats`, :func:`pareto_frontier`, :func:`best_model`, :func:`unfiltered_variant`);
the ``draw_*`` functions only render a planned figure.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display (and safe to call before pyplot is imported)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .atomic import replace_dir, temp_dir  # noqa: E402
from .config import Config, run_dir  # noqa: E402
from .errors import DataError  # noqa: E402
from .results import dataset_title, lab_rows, read_history, read_json, read_table  # noqa: E402
from .selections import budget_curve, diverged, read_selections, sweep, trial_epochs, x_key  # noqa: E402

DPI = 90
# No "Software" tEXt chunk: the PNGs carry no version string or URL and are byte-stable across
# matplotlib patch releases, so DVC/Snakemake see a change only when a figure changes.
PNG_METADATA = {"Software": None}
INDEX_NAME = "figures.json"
KINDS = ("curves", "accuracy", "pareto", "confusion", "per_class", "filtering", "tuning", "tuning_budget")
LABELLED_CLASSES = 150  # per-class figure: beyond this many classes their names (5 pt) would not fit
CONFUSION_NAMED = 40    # confusion matrix: class names on its axes up to this many classes
CONFUSION_SHARES = 12   # ... and each cell's share written in it up to this many
RECIPE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
HIGHLIGHT = "tab:red"
AGGREGATE_STAGE = "cnnbench aggregate"


@dataclass
class Figure:
    """One planned figure: what figures.json lists about it plus the data its drawing needs."""

    file: str
    kind: str
    dataset: str | None
    recipe: str | None
    title: str
    caption: str
    data: dict = field(default_factory=dict, repr=False)

    def index_entry(self) -> dict:
        return {"file": self.file, "dataset": self.dataset, "recipe": self.recipe, "kind": self.kind,
                "title": self.title, "caption": self.caption}


# ---------------------------------------------------------------------------------------------
# pure helpers


def curve_stats(histories: list[pd.DataFrame], column: str, scale: float = 1.0) -> pd.DataFrame:
    """Mean and standard deviation of ``column`` per epoch over several runs' histories.

    Returns a frame with columns ``epoch``, ``mean``, ``std`` and ``n`` (how many runs reached
    that epoch), sorted by epoch. ``std`` uses ddof 1 and is NaN where fewer than two runs
    contribute, so a single seed yields no band. Values are multiplied by ``scale`` (100 turns
    accuracy fractions into percent).
    """
    if not histories:
        raise ValueError("no histories to summarise")
    frames = [h[["epoch", column]].assign(run=i) for i, h in enumerate(histories)]
    long = pd.concat(frames, ignore_index=True)
    long[column] = long[column].astype(float) * scale
    grouped = long.groupby("epoch", sort=True)[column]
    out = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1), "n": grouped.count()})
    out.loc[out["n"] < 2, "std"] = np.nan
    return out.reset_index()


def pareto_frontier(cost, accuracy) -> list[int]:
    """Indices of the points no other point beats: at most the cost and at least the accuracy, one strictly.

    Ordered by increasing cost (and so increasing accuracy): the frontier drawn as a step line.
    Points with a NaN coordinate are never on it; exact duplicates keep the first.
    """
    cost, accuracy = np.asarray(cost, dtype=float), np.asarray(accuracy, dtype=float)
    if cost.shape != accuracy.shape:
        raise ValueError("cost and accuracy must have the same length")
    valid = [i for i in range(len(cost)) if not (math.isnan(cost[i]) or math.isnan(accuracy[i]))]
    # Cheapest first; among equal costs the most accurate first; then the original order.
    order = sorted(valid, key=lambda i: (cost[i], -accuracy[i], i))
    frontier, best = [], -math.inf
    for i in order:
        if accuracy[i] > best:
            frontier.append(i)
            best = accuracy[i]
    return frontier


def best_model(variants: pd.DataFrame, dataset: str | None = None, metric: str = "test_top1_mean") -> tuple[str, str]:
    """(variant, recipe) with the highest ``metric`` in variants.csv (of ``dataset`` if given).

    Ties go to the row that comes first (params.yaml order); NaN never wins.
    """
    rows = variants if dataset is None else variants[variants["dataset"] == dataset]
    rows = rows[rows[metric].notna()]
    if rows.empty:
        raise ValueError(f"no variant{' of ' + dataset if dataset else ''} has a value of {metric}")
    best = rows.loc[rows[metric].idxmax()]
    return str(best["variant"]), str(best["recipe"])


def noisy_classes(cfg: Config, dataset: str) -> list[str]:
    """The classes ``datasets.<dataset>.noisy_classes`` lists (none: ``[]``)."""
    return [str(c) for c in cfg.dataset(dataset).get("noisy_classes") or []]


def unfiltered_variant(cfg: Config, dataset: str) -> str | None:
    """The first variant of ``dataset`` that keeps the noisy classes it lists (``filter_noisy: false``);
    None when the data set lists none or every variant leaves them out."""
    if not noisy_classes(cfg, dataset):
        return None
    for v in cfg.variants_of(dataset):
        if cfg.variant(v)["exclude_classes"] == []:
            return v
    return None


def seeds_text(ns) -> str:
    """"1 seed", "3 seeds" or "2–3 seeds" for the run counts ``ns``."""
    ns = sorted({int(n) for n in ns})
    if not ns:
        return "0 seeds"
    if len(ns) == 1:
        return f"{ns[0]} seed{'s' if ns[0] != 1 else ''}"
    return f"{ns[0]}–{ns[-1]} seeds"


def spread_text(ns) -> str:
    """How the spread is shown, for a caption: mean ± 1 std over n seeds, or a single seed."""
    ns = sorted({int(n) for n in ns})
    if ns == [1]:
        return "one seed per variant, so no spread is shown"
    text = f"mean ± 1 standard deviation over {seeds_text(ns)}"
    if 1 in ns:
        text += " (no spread where a variant has a single seed)"
    return text


def _short(variant: str, dataset: str) -> str:
    prefix = f"{dataset}-"
    return variant[len(prefix):] if variant.startswith(prefix) else variant


def _finite(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


# ---------------------------------------------------------------------------------------------
# reading the study


class Study:
    """The study's inputs, read once: config, runs.csv, variants.csv, and run files on demand."""

    def __init__(self, cfg: Config, runs_root: Path, summary_dir: Path):
        self.cfg, self.runs_root, self.summary_dir = cfg, Path(runs_root), Path(summary_dir)
        self.runs = self._read_csv("runs.csv")
        self.variants = self._read_csv("variants.csv")
        self._check_complete()

    def _read_csv(self, name: str) -> pd.DataFrame:
        return read_table(self.summary_dir / name, AGGREGATE_STAGE)

    def _check_complete(self) -> None:
        """runs.csv must hold exactly the study's runs: a stale summary would plot another study."""
        have = {(str(v), str(r), int(s)) for v, r, s in zip(self.runs["variant"], self.runs["recipe"],
                                                            self.runs["seed"])}
        want = set(self.cfg.runs)
        missing, extra = sorted(want - have), sorted(have - want)
        if missing or extra:
            bits = []
            if missing:
                bits.append("no row for " + ", ".join(f"{v}/{r}/seed{s}" for v, r, s in missing[:5])
                            + (" …" if len(missing) > 5 else ""))
            if extra:
                bits.append("rows for runs not in the study: " + ", ".join(f"{v}/{r}/seed{s}" for v, r, s in extra[:5])
                            + (" …" if len(extra) > 5 else ""))
            raise DataError(f"{self.summary_dir / 'runs.csv'}: {'; '.join(bits)}; re-run `{AGGREGATE_STAGE}`")

    def run_dir(self, variant: str, recipe: str, seed: int) -> Path:
        return run_dir(self.runs_root, variant, recipe, seed)

    def history(self, variant: str, recipe: str, seed: int) -> pd.DataFrame:
        return read_history(self.run_dir(variant, recipe, seed) / "history.csv", variant)

    def metrics(self, variant: str, recipe: str, seed: int) -> dict:
        return read_json(self.run_dir(variant, recipe, seed) / "metrics.json",
                         f"cnnbench evaluate --variant {variant} --recipe {recipe} --seed {seed}")

    def confusion(self, variant: str, recipe: str, seed: int) -> pd.DataFrame:
        frame = read_table(self.run_dir(variant, recipe, seed) / "confusion.csv",
                           f"cnnbench evaluate --variant {variant} --recipe {recipe} --seed {seed}", index_col=0)
        frame.index = frame.index.astype(str)
        frame.columns = frame.columns.astype(str)
        return frame

    def seeds_of(self, variant: str, recipe: str) -> list[int]:
        rows = self.runs[(self.runs["variant"] == variant) & (self.runs["recipe"] == recipe)]
        return sorted(int(s) for s in rows["seed"])

    def summary_row(self, variant: str, recipe: str) -> pd.Series:
        rows = self.variants[(self.variants["variant"] == variant) & (self.variants["recipe"] == recipe)]
        if rows.empty:
            raise DataError(f"{self.summary_dir / 'variants.csv'}: no row for {variant} under recipe {recipe}; "
                            f"re-run `{AGGREGATE_STAGE}`")
        return rows.iloc[0]

    def seed_values(self, variant: str, recipe: str, column: str) -> list[float]:
        rows = self.runs[(self.runs["variant"] == variant) & (self.runs["recipe"] == recipe)].sort_values("seed")
        return [float(x) for x in rows[column]]


def summed_confusion(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """The sum of confusion matrices (rows true, columns predicted), aligned on class names."""
    if not frames:
        raise ValueError("no confusion matrices to sum")
    classes = list(frames[0].index)
    for f in frames[1:]:
        classes += [c for c in f.index if c not in classes]
    total = pd.DataFrame(0.0, index=classes, columns=classes)
    for f in frames:
        total = total.add(f.reindex(index=classes, columns=classes, fill_value=0).astype(float), fill_value=0)
    return total


def row_normalise(confusion: pd.DataFrame) -> pd.DataFrame:
    """Each row divided by its sum (rows without test images stay 0)."""
    sums = confusion.sum(axis=1).replace(0, np.nan)
    return confusion.div(sums, axis=0).fillna(0.0)


# ---------------------------------------------------------------------------------------------
# planning: every figure's data, title and caption


def plan_figures(cfg: Config, runs_root: Path, summary_dir: Path, tuning_root: Path | None = None) -> list[Figure]:
    """Every figure of the study in display order, with its data, title and caption (no drawing);
    with ``tuning_root``, the tuning figures of the selections found there."""
    study = Study(cfg, runs_root, summary_dir)
    selected = read_selections(cfg, tuning_root) if tuning_root is not None else {}
    figures: list[Figure] = []
    for ds in cfg.datasets:
        if not cfg.variants_of(ds):
            continue
        for recipe in cfg.recipes:
            if trained_variants(cfg, ds, recipe):
                figures.append(_plan_curves(study, ds, recipe))
        figures.append(_plan_accuracy(study, ds))
        figures.append(_plan_pareto(study, ds))
        figures.append(_plan_confusion(study, ds))
        figures.append(_plan_per_class(study, ds))
        filtering = _plan_filtering(study, ds)
        if filtering is not None:
            figures.append(filtering)
        figures += _plan_tuning(cfg, ds, selected)
    return figures


def trained_variants(cfg: Config, ds: str, recipe: str) -> list[str]:
    """The variants of ``ds`` the study trains under ``recipe`` (a tuned recipe: only the tuned ones)."""
    return [v for v in cfg.variants_of(ds) if cfg.runs_under(v, recipe)]


def untrained_note(cfg: Config, ds: str) -> str:
    """A caption's note on the (variant, recipe) pairs the study does not train, or ""."""
    missing = [r for r in cfg.recipes if len(trained_variants(cfg, ds, r)) < len(cfg.variants_of(ds))]
    if not missing:
        return ""
    return (f" Recipe{'s' if len(missing) > 1 else ''} {', '.join(missing)} train{'s' if len(missing) == 1 else ''} "
            f"only the variants tuning tunes (tuning.variants): the others have no {'/'.join(missing)} value.")


def _plan_curves(study: Study, ds: str, recipe: str) -> Figure:
    curves, ns, epochs = {}, [], set()
    for v in trained_variants(study.cfg, ds, recipe):
        seeds = study.seeds_of(v, recipe)
        histories = [study.history(v, recipe, s) for s in seeds]
        curves[v] = {
            "val_acc": curve_stats(histories, "val_acc", 100),
            "train_acc": curve_stats(histories, "train_acc", 100),
            "val_loss": curve_stats(histories, "val_loss"),
            "train_loss": curve_stats(histories, "train_loss"),
            "n": len(seeds),
        }
        ns.append(len(seeds))
        epochs.update(int(h["epoch"].max()) for h in histories)
    n_text = seeds_text(ns)
    ep = sorted(epochs)
    epochs_text = f"{ep[0]} epochs" if len(ep) == 1 else f"{ep[0]}–{ep[-1]} epochs"
    name = dataset_title(study.cfg, ds)
    title = (f"{name}, recipe {recipe}: learning curves of {len(curves)} variants, "
             f"{epochs_text}, n = {n_text}")
    band = ("the shaded band is ± 1 standard deviation over the seeds" if max(ns) > 1
            else "one seed, so no band is shown")
    caption = (f"Validation accuracy and loss per epoch on {name} under the {recipe} recipe, one colour "
               f"per variant: solid lines are the validation mean over {n_text}, {band}; dashed lines are the "
               f"training mean (train accuracy is measured on augmented batches).")
    return Figure(f"learning_curves_{ds}_{recipe}.png", "curves", ds, recipe, title, caption,
                  {"curves": curves, "dataset": ds, "recipe": recipe})


def _plan_accuracy(study: Study, ds: str) -> Figure:
    cfg = study.cfg
    variants = cfg.variants_of(ds)
    recipes = [r for r in cfg.recipes if trained_variants(cfg, ds, r)]  # a slot only for a recipe it trains
    rows, ns = [], []
    for v in variants:
        per_recipe = {}
        for recipe in (r for r in cfg.recipes if cfg.runs_under(v, r)):
            s = study.summary_row(v, recipe)
            per_recipe[recipe] = {"mean": float(s["test_top1_mean"]), "std": _finite(s["test_top1_std"]),
                                  "n": int(s["n"]), "seeds": study.seed_values(v, recipe, "test_top1")}
            ns.append(int(s["n"]))
        lab = [float(r["accuracy"]) for r in lab_rows(cfg.variant(v)) if r.get("accuracy") is not None]
        rows.append({"variant": v, "recipes": per_recipe, "lab": lab})
    any_lab = any(r["lab"] for r in rows)
    name = dataset_title(cfg, ds)
    title = f"{name}: test top-1 accuracy per variant and recipe, n = {seeds_text(ns)}"
    caption = (f"Test top-1 accuracy (%) of each {name} variant, one bar per recipe "
               f"({', '.join(recipes)}): bar height and error bar are the {spread_text(ns)}; "
               f"small dots are the individual seeds")
    caption += ("; black diamonds are the accuracies the lab reports give for that network "
                "(their own recipe and epoch count)." if any_lab else ".")
    caption += untrained_note(cfg, ds)
    return Figure(f"accuracy_{ds}.png", "accuracy", ds, None, title, caption,
                  {"rows": rows, "recipes": recipes, "dataset": ds})


def _plan_pareto(study: Study, ds: str) -> Figure:
    cfg = study.cfg
    points, ns = {}, []
    for recipe in cfg.recipes:
        pts = []
        for v in trained_variants(cfg, ds, recipe):
            s = study.summary_row(v, recipe)
            pts.append({"variant": v, "acc": float(s["test_top1_mean"]), "acc_std": _finite(s["test_top1_std"]),
                        "params": float(s["params_mean"]), "seconds": float(s["epoch_seconds_mean"]),
                        "seconds_std": _finite(s["epoch_seconds_std"]), "n": int(s["n"])})
            ns.append(int(s["n"]))
        frontier = {
            "params": pareto_frontier([p["params"] for p in pts], [p["acc"] for p in pts]),
            "seconds": pareto_frontier([p["seconds"] for p in pts], [p["acc"] for p in pts]),
        }
        if pts:
            points[recipe] = {"points": pts, "frontier": frontier}
    name = dataset_title(cfg, ds)
    title = f"{name}: accuracy against size and training time, n = {seeds_text(ns)}"
    caption = (f"Test top-1 accuracy (%) of each {name} variant against its parameter count (left, "
               f"log scale) and its training time per epoch (right), one marker shape per recipe; points and "
               f"error bars are the {spread_text(ns)}. The step line per recipe is the Pareto frontier: the "
               f"variants no other variant beats with at least the accuracy at no more parameters (or time)."
               + untrained_note(cfg, ds))
    return Figure(f"pareto_{ds}.png", "pareto", ds, None, title, caption,
                  {"recipes": points, "dataset": ds})


def _plan_confusion(study: Study, ds: str) -> Figure:
    variant, recipe = best_model(study.variants, ds)
    seeds = study.seeds_of(variant, recipe)
    total = summed_confusion([study.confusion(variant, recipe, s) for s in seeds])
    mean = float(study.summary_row(variant, recipe)["test_top1_mean"])
    n, k = len(seeds), len(total)
    name = dataset_title(study.cfg, ds)
    title = (f"{name}: confusion matrix of the best model, {_short(variant, ds)} "
             f"({recipe} recipe), summed over n = {seeds_text([n])}")
    if k <= CONFUSION_SHARES:
        names = "every class named, each cell's share written in it (%)"
    elif k <= CONFUSION_NAMED:
        names = "every class named"
    else:
        names = f"in class order, too many to name (names are shown up to {CONFUSION_NAMED} classes)"
    caption = (f"Row-normalised confusion matrix (rows: true class, columns: predicted class; colour: share of "
               f"the true class's test images) of {variant} under the {recipe} recipe, the {name} "
               f"variant and recipe with the highest mean test top-1 ({mean:.1f} %), its {seeds_text([n])}' "
               f"test predictions summed; {k} classes, {names}.")
    return Figure(f"confusion_{ds}.png", "confusion", ds, recipe, title, caption,
                  {"variant": variant, "recipe": recipe, "n": n, "matrix": total, "mean": mean})


def _per_class_means(study: Study, variant: str, recipe: str) -> tuple[pd.Series, int]:
    seeds = study.seeds_of(variant, recipe)
    frames = []
    for s in seeds:
        per_class = study.metrics(variant, recipe, s).get("per_class_accuracy") or {}
        frames.append(pd.Series({str(k): (np.nan if v is None else 100 * float(v)) for k, v in per_class.items()},
                                dtype=float))
    if not frames or all(f.empty for f in frames):
        raise DataError(f"{study.run_dir(variant, recipe, seeds[0] if seeds else 0) / 'metrics.json'}: no "
                        f"per_class_accuracy; re-run `cnnbench evaluate --variant {variant} --recipe {recipe}`")
    table = pd.concat(frames, axis=1)
    return table.mean(axis=1, skipna=True).sort_values(kind="stable"), len(seeds)


def _plan_per_class(study: Study, ds: str) -> Figure:
    """Per-class accuracy of the variant that keeps the noisy classes (one panel per recipe), so
    they can be seen among the others; without one, of the best model under its best recipe."""
    cfg = study.cfg
    noisy = noisy_classes(cfg, ds)
    variant = unfiltered_variant(cfg, ds)
    fallback = variant is None
    if fallback:
        variant, best_recipe = best_model(study.variants, ds)
        recipes = [best_recipe]
    else:
        recipes = [r for r in cfg.recipes if cfg.runs_under(variant, r)]
    panels, ns = [], []
    for recipe in recipes:
        values, n = _per_class_means(study, variant, recipe)
        panels.append({"recipe": recipe, "values": values, "n": n,
                       "highlighted": [c for c in values.index if c in noisy]})
        ns.append(n)
    highlighted = sorted({c for p in panels for c in p["highlighted"]})
    classes = max(len(p["values"]) for p in panels)
    name = dataset_title(cfg, ds)
    if not fallback:
        what = "the unfiltered variant, trained on all classes"
    else:
        what = "the best model" + (" (no variant keeps every class)" if noisy else "")
    title = f"{name}: per-class test accuracy of {_short(variant, ds)}, n = {seeds_text(ns)}"
    caption = (f"Test accuracy (%) of each of the {classes} classes of {name} for {variant} ({what}), "
               f"{'one panel per recipe' if len(panels) > 1 else 'recipe ' + panels[0]['recipe']}, mean over "
               f"{seeds_text(ns)}, classes sorted from worst (top) to best.")
    if classes > LABELLED_CLASSES:
        caption += f" The class names are left out (they are written up to {LABELLED_CLASSES} classes)."
    if highlighted:
        caption += (f" The {len(highlighted)} classes listed as noisy in params.yaml "
                    f"(datasets.{ds}.noisy_classes) are drawn in red and named.")
    elif noisy:
        caption += " None of the noisy classes is among this model's classes."
    return Figure(f"per_class_{ds}.png", "per_class", ds, recipes[0] if len(recipes) == 1 else None,
                  title, caption, {"variant": variant, "panels": panels, "highlighted": highlighted,
                                   "noisy": noisy, "fallback": fallback})


def filtering_pairs(cfg: Config, ds: str) -> tuple[list[dict], bool]:
    """The (filtered, unfiltered) pairs the filtering figure of ``ds`` shows, and whether they are
    the study's claims: its ``top1_kept`` claims on ``ds``; without any, each variant that keeps the
    noisy classes beside the filtered variant of the same model and arguments (else the first
    filtered one). ``[]`` when the data set lists no noisy class, or no variant keeps or drops them."""
    if unfiltered_variant(cfg, ds) is None:
        return [], False
    claims = [c for c in cfg.claims if c["metric"] == "top1_kept" and cfg.variant(c["a"])["dataset"] == ds]
    if claims:
        return claims, True
    specs = {v: cfg.variant(v) for v in cfg.variants_of(ds)}
    filtered = [v for v, s in specs.items() if s["exclude_classes"]]
    pairs = []
    for v, spec in specs.items():
        if spec["exclude_classes"] or not filtered:
            continue
        network = (spec["model"], spec["model_args"])
        same = [f for f in filtered if (specs[f]["model"], specs[f]["model_args"]) == network]
        a = (same or filtered)[0]
        pairs.append({"id": f"{ds}-filtering-{_short(v, ds)}", "a": a, "b": v,
                      "text": f"{_short(a, ds)} (filtered) vs {_short(v, ds)} (unfiltered)"})
    return pairs, False


def _plan_filtering(study: Study, ds: str) -> Figure | None:
    cfg = study.cfg
    pairs, from_claims = filtering_pairs(cfg, ds)
    if not pairs:
        return None
    panels, ns = [], []
    for pair in pairs:
        per_recipe = []
        for recipe in (r for r in cfg.recipes if cfg.runs_under(pair["a"], r) and cfg.runs_under(pair["b"], r)):
            sides = {}
            for side in ("a", "b"):
                v = pair[side]
                values = [x for x in study.seed_values(v, recipe, "top1_kept") if not math.isnan(x)]
                arr = np.asarray(values, dtype=float)
                sides[side] = {"variant": v, "seeds": values, "n": len(values),
                               "filtered": bool(cfg.variant(v)["exclude_classes"]),
                               "mean": float(arr.mean()) if len(arr) else float("nan"),
                               "std": float(arr.std(ddof=1)) if len(arr) > 1 else None}
                ns.append(len(values))
            per_recipe.append({"recipe": recipe, **sides})
        panels.append({"claim": pair, "recipes": per_recipe})
    name = dataset_title(cfg, ds)
    title = (f"{name}: effect of filtering the noisy classes, test top-1 on the classes both "
             f"models keep, n = {seeds_text(ns)}")
    state = lambda v: "filtered" if cfg.variant(v)["exclude_classes"] else "unfiltered"  # noqa: E731
    shown = "; ".join(f"{p['a']} ({state(p['a'])}) vs {p['b']} ({state(p['b'])})" for p in pairs)
    why = ("the study's claims" if from_claims else
           "no claim compares them, so each unfiltered variant is shown beside the filtered variant of the same "
           "model")
    caption = (f"Test top-1 accuracy (%) measured only on the classes both models keep (all but "
               f"datasets.{ds}.noisy_classes), so the filtered and the unfiltered model are scored on the same "
               f"test images: {shown} (a vs b; {why}), per recipe. Large markers and error bars are the "
               f"{spread_text(ns)}; small dots are the individual seeds; the axis does not start at 0.")
    return Figure(f"filtering_{ds}.png", "filtering", ds, None, title, caption, {"panels": panels})


def tuning_panels(cfg: Config, ds: str, selected: dict) -> dict:
    """``{tuned recipe: {variant: selection}}`` of the variants of ``ds`` that have a selection."""
    panels: dict = {}
    for (variant, recipe), selection in selected.items():
        if cfg.variant(variant)["dataset"] == ds:
            panels.setdefault(recipe, {})[variant] = selection
    return panels


def _tuning_setting(selections: list[dict]) -> str:
    """"2 tuning seeds, 3-epoch trials": what every trial of the figure shares."""
    seeds = sorted({len({t["seed"] for t in s["trials"] if t["point"] == p["point"]})
                    for s in selections for p in s["points"]})  # tuning seeds per grid point
    epochs = trial_epochs(selections)
    ep = "–".join(map(str, (epochs[0], epochs[-1]) if len(epochs) > 1 else epochs)) if epochs else "?"
    return f"{seeds_text(seeds).replace('seed', 'tuning seed')}, {ep}-epoch trials"


def _plan_tuning(cfg: Config, ds: str, selected: dict) -> list[Figure]:
    """The tuning figures of ``ds``: validation accuracy against the learning rate, and the expected
    best validation accuracy against the number of trials; none without a selection."""
    panels = tuning_panels(cfg, ds, selected)
    if not panels:
        return []
    every = [s for per in panels.values() for s in per.values()]
    recipe = next(iter(panels)) if len(panels) == 1 else None
    return [_plan_sweep(cfg, ds, panels, every, recipe), _plan_budget(cfg, ds, panels, every, recipe)]


def _plan_sweep(cfg: Config, ds: str, panels: dict, every: list[dict], recipe: str | None) -> Figure:
    data = {r: {v: {"sweep": sweep(s), "x": float(s["chosen"][x_key(s)]), "acc": 100 * s["chosen_val_acc"],
                    "edge": bool(s["at_grid_edge"])} for v, s in per.items()} for r, per in panels.items()}
    key = x_key(every[0])
    others = sorted({k for s in every for k in s["grid"] if k != key})
    name, setting = dataset_title(cfg, ds), _tuning_setting(every)
    several = any(p["n"] > 1 for s in every for p in s["points"])
    title = f"{name}: validation accuracy against the {key} tried by tuning, {setting}"
    caption = (f"Final validation accuracy (%) of each tuning trial of the {name} variants against its {key} "
               f"(log scale), one curve per variant, "
               + (f"one panel per tuned recipe ({', '.join(panels)})" if recipe is None else f"tuned recipe {recipe}")
               + f" ({setting}): "
               + ("the mean over the tuning seeds, the band their minimum to maximum" if several else
                  "one tuning seed per point, so no spread is shown")
               + "; the star marks the value chosen (the best mean), a ring around it a choice at the grid's edge.")
    if others:
        caption += f" At each {key} the curve shows the best point over {', '.join(others)}."
    bad = sum(diverged(s) for s in every)
    if bad:
        caption += f" {bad} trial(s) diverged and count as 0 %, as they did in the selection."
    caption += " Measured on the validation split; tuning never reads the test split."
    return Figure(f"tuning_{ds}.png", "tuning", ds, recipe, title, caption,
                  {"panels": data, "dataset": ds, "key": key})


def _plan_budget(cfg: Config, ds: str, panels: dict, every: list[dict], recipe: str | None) -> Figure:
    data = {r: {v: budget_curve(s) for v, s in per.items()} for r, per in panels.items()}
    points = sorted({len(s["points"]) for s in every})
    name = dataset_title(cfg, ds)
    title = f"{name}: expected best validation accuracy against the tuning budget (Dodge et al. 2019)"
    caption = (f"Expected best final validation accuracy (%) of each {name} variant when n of its "
               f"{'–'.join(map(str, (points[0], points[-1]) if len(points) > 1 else points))} grid points are "
               f"tried, drawn at random with replacement from those tuning tried (Dodge et al. 2019, \"Show Your "
               f"Work\"), n = 1 up to all of them; a point scores its mean over the tuning seeds; the band is ± 1 "
               f"standard deviation of that best"
               + (f"; one panel per tuned recipe ({', '.join(panels)})." if recipe is None else
                  f"; tuned recipe {recipe}.")
               + " Where two curves cross, which variant looks better depends on the tuning budget.")
    return Figure(f"tuning_budget_{ds}.png", "tuning_budget", ds, recipe, title, caption,
                  {"panels": data, "dataset": ds})


# ---------------------------------------------------------------------------------------------
# drawing


def _colors(n: int = 0) -> list:
    """The default colour cycle, or tab20 when there are more lines than it has colours."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if n <= len(cycle):
        return cycle
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))  # ten strong colours first, then their light twins
    return [plt.get_cmap("tab20")(order[i % 20]) for i in range(n)]


def _recipe_colors(recipes: list[str]) -> dict:
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
    return {r: palette[i % len(palette)] for i, r in enumerate(recipes)}


def _wrap(title: str, width: int = 95) -> str:
    """A long title on two lines, split at the last ", " before ``width``."""
    if len(title) <= width:
        return title
    cut = title.rfind(", ", 0, width)
    return title if cut < 0 else title[:cut + 1] + "\n" + title[cut + 2:]


def _save(fig, path: Path) -> None:
    try:
        fig.savefig(path, dpi=DPI, metadata=PNG_METADATA)
    finally:
        plt.close(fig)


def draw_curves(figure: Figure, path: Path) -> None:
    curves = figure.data["curves"]
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    colors = _colors(len(curves))
    handles, last = [], 1
    for i, (variant, c) in enumerate(curves.items()):
        color = colors[i % len(colors)]
        for ax, key in ((ax_acc, "acc"), (ax_loss, "loss")):
            val, train = c[f"val_{key}"], c[f"train_{key}"]
            ax.plot(train["epoch"], train["mean"], "--", color=color, lw=1, alpha=0.8)
            ax.plot(val["epoch"], val["mean"], "-", color=color, lw=1.5)
            band = val["std"].notna()
            if band.any():
                ax.fill_between(val["epoch"][band], (val["mean"] - val["std"])[band],
                                (val["mean"] + val["std"])[band], color=color, alpha=0.15, lw=0)
            last = max(last, int(val["epoch"].max()))
        handles.append(Line2D([], [], color=color, lw=2, label=f"{_short(variant, figure.dataset)} (n={c['n']})"))
    handles += [Line2D([], [], color="0.3", ls="-", label="validation (mean)"),
                Line2D([], [], color="0.3", ls="--", label="train (mean)")]
    if any(c["n"] > 1 for c in curves.values()):
        handles.append(Patch(color="0.3", alpha=0.2, label="validation ± 1 std"))
    for ax, what in ((ax_acc, "accuracy (%)"), (ax_loss, "loss")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.set_title(what.split(" ")[0])
        ax.grid(alpha=0.3)
        ax.set_xlim(1, max(2, last))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.legend(handles=handles, loc="outside right upper", fontsize=7, frameon=False)
    fig.suptitle(_wrap(figure.title))
    _save(fig, path)


def draw_accuracy(figure: Figure, path: Path) -> None:
    rows, recipes, ds = figure.data["rows"], figure.data["recipes"], figure.data["dataset"]
    colors = _recipe_colors(recipes)
    k = len(recipes)
    width = 0.8 / k
    fig, ax = plt.subplots(figsize=(max(7.0, 0.75 * len(rows) * max(1, k) / 2 + 4), 5.2), constrained_layout=True)
    rng = np.random.default_rng(0)  # fixed jitter: byte-stable figures
    lab_labelled = seed_labelled = False
    labelled: set = set()
    for x, row in enumerate(rows):
        for j, recipe in enumerate(recipes):
            r = row["recipes"].get(recipe)
            if r is None:  # not trained under this recipe (a tuned recipe tunes only some variants)
                continue
            xc = x - 0.4 + width * (j + 0.5)
            ax.bar(xc, r["mean"], width=width * 0.92, color=colors[recipe], alpha=0.85,
                   yerr=r["std"] if r["std"] is not None else None, capsize=2,
                   error_kw={"lw": 1, "ecolor": "0.2"}, label=None if recipe in labelled else recipe)
            labelled.add(recipe)
            if r["seeds"]:
                jitter = rng.uniform(-0.2, 0.2, len(r["seeds"])) * width
                ax.plot(xc + jitter, r["seeds"], ".", color="0.15", ms=3.5, linestyle="none",
                        label=None if seed_labelled else "one seed")
                seed_labelled = True
        labs = row["lab"]
        offsets = [0.0] if len(labs) == 1 else [-0.25 + 0.5 * i / (len(labs) - 1) for i in range(len(labs))]
        for lab, dx in zip(labs, offsets):
            ax.plot([x + dx], [lab], marker="D", color="black", linestyle="none", markersize=5,
                    label=None if lab_labelled else "lab report figure")
            lab_labelled = True
    ax.set_xticks(range(len(rows)), [_short(r["variant"], ds) for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, title="recipe",
              title_fontsize=8)
    fig.suptitle(_wrap(figure.title, 80))
    _save(fig, path)


def draw_pareto(figure: Figure, path: Path) -> None:
    data, ds = figure.data["recipes"], figure.data["dataset"]
    recipes = list(data)
    colors = _recipe_colors(recipes)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.4), constrained_layout=True)
    for ax, key, xlabel in ((axes[0], "params", "parameters (log scale)"), (axes[1], "seconds", "seconds per epoch")):
        for j, recipe in enumerate(recipes):
            pts, color = data[recipe]["points"], colors[recipe]
            marker = RECIPE_MARKERS[j % len(RECIPE_MARKERS)]
            xs = np.array([p[key] for p in pts], dtype=float)
            ys = np.array([p["acc"] for p in pts], dtype=float)
            yerr = np.array([p["acc_std"] if p["acc_std"] is not None else 0.0 for p in pts])
            xerr = None
            if key == "seconds":
                xerr = np.array([p["seconds_std"] if p["seconds_std"] is not None else 0.0 for p in pts])
            ax.errorbar(xs, ys, yerr=yerr if yerr.any() else None,
                        xerr=xerr if xerr is not None and xerr.any() else None,
                        fmt=marker, color=color, ms=6, capsize=2, elinewidth=0.8, label=f"recipe {recipe}")
            front = data[recipe]["frontier"][key]
            if front:
                fx, fy = xs[front], ys[front]
                ax.step(fx, fy, where="post", color=color, lw=1.2,
                        alpha=0.7, ls="-")
            for p, x, y in zip(pts, xs, ys):
                ax.annotate(_short(p["variant"], ds), (x, y), xytext=(4, 3), textcoords="offset points", fontsize=6,
                            color=color)
        if key == "params":
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test top-1 accuracy (%)")
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0].get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.3", lw=1.2, label="Pareto frontier"))
    axes[0].legend(handles=handles, fontsize=8, loc="lower right")
    axes[0].set_title("accuracy vs parameters")
    axes[1].set_title("accuracy vs time per epoch")
    fig.suptitle(_wrap(figure.title))
    _save(fig, path)


def draw_confusion(figure: Figure, path: Path) -> None:
    """The row-normalised matrix as an image; class names on the axes up to CONFUSION_NAMED classes
    (beyond, a name per row would be under 4 pt), the shares written in the cells up to CONFUSION_SHARES."""
    matrix = row_normalise(figure.data["matrix"])
    n = len(matrix)
    fig, ax = plt.subplots(figsize=(9, 8.4), constrained_layout=True)
    im = ax.imshow(matrix.to_numpy(), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    if n <= CONFUSION_NAMED:
        labels, font = [str(c) for c in matrix.index], 8 if n <= 20 else 6
        ax.set_yticks(range(n), labels, fontsize=font)
        ax.set_xticks(range(n), labels, fontsize=font, rotation=90)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
    else:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"predicted class ({n} classes in class order, not named)")
        ax.set_ylabel(f"true class ({n} classes in class order, not named)")
    if n <= CONFUSION_SHARES:
        for (i, j), share in np.ndenumerate(matrix.to_numpy()):
            if share > 0:
                ax.text(j, i, f"{100 * share:.0f}", ha="center", va="center", fontsize=7,
                        color="black" if share > 0.6 else "white")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class's test images")
    fig.suptitle(_wrap(figure.title, 80))
    _save(fig, path)


def per_class_layout(classes: int, panels: int) -> dict:
    """Size of the per-class figure (inches) and its class-name font (pt): one row per class, tall
    enough for its name up to LABELLED_CLASSES classes (8 pt up to 40 classes, 6 up to 100, then 5);
    beyond, the names are left out and the figure keeps a fixed height."""
    named = classes <= LABELLED_CLASSES
    if named:
        font = 8.0 if classes <= 40 else 6.0 if classes <= 100 else 5.0
        height = max(4.0, classes * font * 1.5 / 72 + 1.8)  # a row: the name's height and half again
    else:
        font, height = None, 9.0
    width = (5.5 if named else 4.0) * panels + 1.0
    return {"named": named, "font": font, "width": width, "height": height}


def _per_class_panel(ax, panel: dict, highlighted: set, layout: dict) -> None:
    values = panel["values"]
    ys = np.arange(len(values))
    colors = [HIGHLIGHT if c in highlighted else "tab:blue" for c in values.index]
    ax.barh(ys, values.to_numpy(), height=0.85, color=colors)
    if layout["named"]:
        ax.set_yticks(ys, [str(c) for c in values.index], fontsize=layout["font"])
        for label in ax.get_yticklabels():
            if label.get_text() in highlighted:
                label.set_color(HIGHLIGHT)
        ax.set_xlim(0, 100)
    else:
        ax.set_yticks([])
        for y, (cls, val) in zip(ys, values.items()):
            if cls in highlighted:  # the names are left out: the noisy classes are named beside their bars
                ax.annotate(cls, (0 if math.isnan(val) else val, y), xytext=(3, 0), textcoords="offset points",
                            va="center", fontsize=6, color=HIGHLIGHT)
        ax.set_xlim(0, 135)  # room for a name beside a bar at 100 %
        ax.set_xticks(range(0, 101, 20))
    ax.set_ylim(len(values) - 0.5, -0.5)  # the worst class at the top
    ax.set_xlabel("test accuracy (%)")
    ax.set_ylabel(f"class, sorted by accuracy ({len(values)} classes{'' if layout['named'] else ', not named'})")
    ax.set_title(f"recipe {panel['recipe']}, mean over {seeds_text([panel['n']])}", fontsize=9)
    ax.grid(axis="x", alpha=0.3)


def draw_per_class(figure: Figure, path: Path) -> None:
    panels, highlighted = figure.data["panels"], set(figure.data["highlighted"])
    layout = per_class_layout(max(len(p["values"]) for p in panels), len(panels))
    fig, axes = plt.subplots(1, len(panels), figsize=(layout["width"], layout["height"]), constrained_layout=True,
                             squeeze=False)
    for ax, panel in zip(axes[0], panels):
        _per_class_panel(ax, panel, highlighted, layout)
    if highlighted:
        handles = [Patch(color=HIGHLIGHT, label="noisy class (params.yaml)"),
                   Patch(color="tab:blue", label="other class")]
        fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncols=2, frameon=False)
    fig.suptitle(_wrap(figure.title, 45 * len(panels) + 30))
    _save(fig, path)


def draw_filtering(figure: Figure, path: Path) -> None:
    panels = figure.data["panels"]
    width = max(5.5, 2.2 * len(panels[0]["recipes"]) + 2)
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 5), constrained_layout=True,
                             squeeze=False)
    rng = np.random.default_rng(0)  # fixed jitter: byte-stable figures
    for ax, panel in zip(axes[0], panels):
        claim = panel["claim"]
        for x, per in enumerate(panel["recipes"]):
            for j, side in enumerate(("a", "b")):
                s = per[side]
                xc = x + (-0.15 if j == 0 else 0.15)
                state, color = ("filtered", "tab:green") if s["filtered"] else ("unfiltered", "tab:gray")
                label = f"{_short(s['variant'], figure.dataset)} ({state})" if x == 0 else None
                if s["seeds"]:
                    ax.plot(xc + 0.1 + rng.uniform(-0.03, 0.03, len(s["seeds"])), s["seeds"], ".", color="0.2",
                            ms=4, linestyle="none", label="one seed" if x == 0 and j == 0 else None)
                if not math.isnan(s["mean"]):
                    ax.errorbar([xc], [s["mean"]], yerr=[s["std"]] if s["std"] is not None else None, fmt="o",
                                ms=8, color=color, capsize=4, elinewidth=1.5, label=label)
            a, b = per["a"]["mean"], per["b"]["mean"]
            if not (math.isnan(a) or math.isnan(b)):
                ax.annotate(f"a − b = {a - b:+.2f} points", (x, 0), xycoords=("data", "axes fraction"),
                            xytext=(0, 6), textcoords="offset points", ha="center", fontsize=8)
        ax.set_xticks(range(len(panel["recipes"])), [f"recipe {p['recipe']}" for p in panel["recipes"]])
        ax.set_xlim(-0.6, len(panel["recipes"]) - 0.4)
        ax.margins(y=0.2)
        ax.set_ylabel("test top-1 on the classes both keep (%)")
        ax.set_title(_wrap(claim.get("text", claim["id"]), 60), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(_wrap(figure.title, 80))
    _save(fig, path)


def _tuning_axes(n: int, width: float = 6.5):
    fig, axes = plt.subplots(1, n, figsize=(width * n + 2.5, 4.8), constrained_layout=True, squeeze=False)
    return fig, axes[0]


def _tuning_legend(fig, axes, handles, title: str) -> None:
    """The legend beside the last panel (below the title, which spans the figure) and the title."""
    axes[-1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, frameon=False)
    fig.suptitle(_wrap(title, 60 * len(axes) + 10))


def draw_tuning(figure: Figure, path: Path) -> None:
    panels, ds, key = figure.data["panels"], figure.data["dataset"], figure.data["key"]
    fig, axes = _tuning_axes(len(panels))
    colors = _colors(max(len(per) for per in panels.values()))
    for ax, (recipe, per) in zip(axes, panels.items()):
        for i, (variant, d) in enumerate(per.items()):
            xs = np.array([p["x"] for p in d["sweep"]])
            mean = np.array([p["mean"] for p in d["sweep"]])
            color = colors[i % len(colors)]
            ax.plot(xs, mean, "o-", color=color, ms=4, lw=1.4, label=_short(variant, ds))
            if any(p["n"] > 1 for p in d["sweep"]):
                ax.fill_between(xs, [p["min"] for p in d["sweep"]], [p["max"] for p in d["sweep"]],
                                color=color, alpha=0.15, lw=0)
            ax.plot([d["x"]], [d["acc"]], "*", color=color, ms=14, mec="black", mew=0.6)
            if d["edge"]:
                ax.plot([d["x"]], [d["acc"]], "o", ms=20, mfc="none", mec=HIGHLIGHT, mew=1.2)
        log = all(p["x"] > 0 for d in per.values() for p in d["sweep"])
        if log:  # the grids are log-spaced
            ax.set_xscale("log")
        ax.set_xlabel(f"{key}{' (log scale)' if log else ''}")
        ax.set_ylabel("final validation accuracy (%)")
        ax.set_title(f"tuned recipe {recipe}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    handles, _ = axes[0].get_legend_handles_labels()
    handles += [Line2D([], [], marker="*", color="0.3", ls="none", ms=12, label="chosen"),
                Line2D([], [], marker="o", mfc="none", mec=HIGHLIGHT, ls="none", ms=12,
                       label="chosen at the grid's edge")]
    _tuning_legend(fig, axes, handles, figure.title)
    _save(fig, path)


def draw_tuning_budget(figure: Figure, path: Path) -> None:
    panels, ds = figure.data["panels"], figure.data["dataset"]
    fig, axes = _tuning_axes(len(panels))
    colors = _colors(max(len(per) for per in panels.values()))
    for ax, (recipe, per) in zip(axes, panels.items()):
        for i, (variant, curve) in enumerate(per.items()):
            color = colors[i % len(colors)]
            ax.plot(curve.n, curve.mean, "-", color=color, lw=1.5, label=_short(variant, ds))
            ax.fill_between(curve.n, curve.mean - curve.std, curve.mean + curve.std, color=color, alpha=0.15, lw=0)
        ax.set_xlabel("grid points tried (n)")
        ax.set_ylabel("expected best validation accuracy (%)")
        ax.set_title(f"tuned recipe {recipe}", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, _ = axes[0].get_legend_handles_labels()
    handles.append(Patch(color="0.3", alpha=0.2, label="± 1 std"))
    _tuning_legend(fig, axes, handles, figure.title)
    _save(fig, path)


def draw(figure: Figure, path: Path) -> None:
    """Render one planned figure into ``path`` (looked up by kind at call time)."""
    drawers = {"curves": draw_curves, "accuracy": draw_accuracy, "pareto": draw_pareto,
               "confusion": draw_confusion, "per_class": draw_per_class, "filtering": draw_filtering,
               "tuning": draw_tuning, "tuning_budget": draw_tuning_budget}
    if figure.kind not in drawers:
        raise ValueError(f"unknown figure kind {figure.kind!r}; known: {', '.join(KINDS)}")
    drawers[figure.kind](figure, path)


# ---------------------------------------------------------------------------------------------
# the stage


def plot_all(cfg: Config, runs_root: Path, summary_dir: Path, out_dir: Path,
             tuning_root: Path | None = None) -> list[Path]:
    """Write the study's figures and ``figures.json`` into ``out_dir``; return the PNG paths in display order.

    Reads the runs under ``runs_root``, the aggregate output in ``summary_dir`` and, with
    ``tuning_root``, the selections of tuning (``<tuning_root>/<variant>/<recipe>/selection.json``). Everything is
    built in a sibling temporary directory that replaces ``out_dir`` only once every figure and
    the index are written, so an interrupted run leaves ``out_dir`` as it was (or absent).
    """
    figures = plan_figures(cfg, runs_root, summary_dir, tuning_root)
    if not figures:
        raise ValueError("no figures to draw: the configuration lists no variant")
    out_dir = Path(out_dir)
    tmp = temp_dir(out_dir)
    try:
        for figure in figures:
            draw(figure, tmp / figure.file)
        index = [f.index_entry() for f in figures]
        (tmp / INDEX_NAME).write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out_dir / f.file for f in figures]
