"""The study report: one self-contained HTML file (images embedded) and the same in Markdown.

It reads what `cnnbench aggregate` wrote (runs, mean ± std per variant and recipe, the claims'
verdicts), the figures `cnnbench plot` listed in figures.json, and each run's metrics for the
devices and versions; the methods section is generated from params.yaml.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import subprocess
from pathlib import Path

import jinja2
import pandas as pd

from .atomic import atomic_write_text
from .aggregate import FAILS, HOLDS, INCONCLUSIVE, METRIC_LABELS
from .claims import plan_seeds
from .config import Config, run_dir
from .results import dataset_title, lab_rows, need_file, read_json, read_table
from .selections import read_selections
from .spec import TrainSpec

NOT_A_CHECKOUT = "unknown (not a git checkout)"
VERDICT_CLASS = {HOLDS: "holds", FAILS: "fails", INCONCLUSIVE: "inconclusive"}
EXPECT_TEXT = {"greater": "a > b", "less": "a < b", "similar": "a ≈ b"}


# ---------------------------------------------------------------------------------------------
# provenance helpers


def git_commit(repo_dir: Path) -> str:
    """HEAD of the checkout at ``repo_dir``, plus " (dirty)" when tracked files are modified.

    Returns ``"unknown (not a git checkout)"`` outside a repository or without git; never raises.
    """
    try:
        head = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=repo_dir,
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0 or not head.stdout.strip():
            return NOT_A_CHECKOUT
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_dir,
                                capture_output=True, text=True, timeout=10)
        dirty = status.returncode != 0 or bool(status.stdout.strip())
        return head.stdout.strip() + (" (dirty)" if dirty else "")
    except (OSError, subprocess.SubprocessError, ValueError):
        return NOT_A_CHECKOUT


def banner(profile: str) -> str | None:
    """The warning shown above everything else when the numbers are not the real study's."""
    if profile == "full":
        return None
    if profile == "smoke":
        return ("smoke data: not evidence. The smoke profile trains tiny networks for a few batches to test "
                "the pipeline; its verdicts say nothing about the lab reports' claims.")
    return f"{profile} profile: small data, small networks and few epochs — not evidence."


# ---------------------------------------------------------------------------------------------
# number formatting


def _isnum(value) -> bool:
    try:
        return value is not None and not math.isnan(float(value))
    except (TypeError, ValueError):
        return False


def fmt(value, spec: str = ".2f") -> str:
    """A number, or "—" when it is missing or NaN."""
    return format(float(value), spec) if _isnum(value) else "—"


def mean_std(mean, std, n=None, spec: str = ".2f") -> str:
    """``"84.10 ± 0.35 (n=3)"``; no ± part when the std is undefined (one seed)."""
    if not _isnum(mean):
        return "—"
    text = format(float(mean), spec)
    if _isnum(std):
        text += f" ± {format(float(std), spec)}"
    if n is not None:
        text += f" (n={int(n)})"
    return text


def metric_spec(metric: str) -> str:
    return {"params": ",.0f", "epoch_seconds": ".3g", "instability": ".2f"}.get(metric, ".2f")


# ---------------------------------------------------------------------------------------------
# table content


NOT_TUNED = "not tuned"


def verdict_summary(claims: pd.DataFrame, recipes: list[str]) -> list[dict]:
    """Counts of each verdict per recipe, in a fixed order, and how many claims a recipe does not test
    (a tuned recipe trains only the variants tuning tunes)."""
    out, every = [], claims["claim"].nunique()
    for recipe in recipes:
        sub = claims[claims["recipe"] == recipe]
        out.append({"recipe": recipe, "total": len(sub), "untested": every - len(sub),
                    "counts": [(v, VERDICT_CLASS[v], int((sub["verdict"] == v).sum())) for v in (HOLDS, FAILS, INCONCLUSIVE)]})
    return out


def _interval(low, high, spec: str) -> str:
    """``"[83.40, 84.80]"``; empty when there is no interval (or it is a point)."""
    if not (_isnum(low) and _isnum(high)) or low == high:
        return ""
    return f"[{fmt(low, spec)}, {fmt(high, spec)}]"


def _sample_size(r) -> str:
    """What the numbers of one claim x recipe rest on: seeds per side and test images."""
    seeds = f"{int(r['n_a'])} + {int(r['n_b'])} seed(s)"
    images = r["n_images"]
    if isinstance(images, str) and images:
        return f"{seeds}, {images} test images (not paired)"
    if _isnum(images):
        return f"{seeds} × {int(float(images))} test images (paired)"
    return seeds


def _seeds_cell(r) -> str:
    if r["verdict"] != INCONCLUSIVE or not (isinstance(r["seeds_needed_note"], str) and r["seeds_needed_note"]):
        return "—"
    if _isnum(r["seeds_needed"]):
        return f"{int(float(r['seeds_needed']))} per side"
    return r["seeds_needed_note"]


def claim_cell(r, spec: str) -> dict:
    """Display strings for one claim under one recipe (a row of claims.csv)."""
    ci = _interval(r["ci_low"], r["ci_high"], spec)
    pi = _interval(r["pi_low"], r["pi_high"], ".2f")
    return {
        "recipe": r["recipe"],
        "a": mean_std(r["mean_a"], r["std_a"], r["n_a"], spec),
        "b": mean_std(r["mean_b"], r["std_b"], r["n_b"], spec),
        "diff": fmt(r["diff"], "+" + spec.lstrip("+")) + (f" {ci}" if ci else ""),
        "p": fmt(r["p"], ".3g"),
        "p_adjusted": fmt(r["p_adjusted"], ".3g"),
        "prob": fmt(r["prob_improvement"], ".2f") + (f" {pi}" if pi else ""),
        "n": _sample_size(r),
        "noise": r["noise"] if isinstance(r["noise"], str) else "",
        "seeds": _seeds_cell(r),
        "verdict": r["verdict"],
        "css": VERDICT_CLASS.get(r["verdict"], "inconclusive"),
        "reason": r["reason"],
    }


def untested_cell(recipe: str) -> dict:
    """The verdict grid's cell of a claim its recipe does not test: its variants are not trained under it."""
    return {"recipe": recipe, "verdict": NOT_TUNED, "css": "untested", "p_adjusted": "—",
            "n": "its variants are not tuned", "reason": "tuning.variants leaves out a variant of this claim"}


def claim_rows(claims: pd.DataFrame, recipes: list[str]) -> list[dict]:
    """One row per claim: ``per``, a cell group per recipe that tests it (the claims table), and
    ``grid``, one cell per recipe (the verdict grid; "not tuned" where the recipe does not test it)."""
    rows = []
    for claim_id, group in claims.groupby("claim", sort=False):
        first = group.iloc[0]
        spec = metric_spec(first["metric"])
        per = [claim_cell(group[group["recipe"] == recipe].iloc[0], spec)
               for recipe in recipes if (group["recipe"] == recipe).any()]
        tested = {p["recipe"]: p for p in per}
        grid = [tested.get(recipe) or untested_cell(recipe) for recipe in recipes]
        rows.append({"id": claim_id, "report": first["report"], "text": first["text"],
                     "their": first["their"] if isinstance(first["their"], str) and first["their"] else "—",
                     "metric": METRIC_LABELS.get(first["metric"], first["metric"]),
                     "expect": EXPECT_TEXT.get(first["expect"], first["expect"]),
                     "a": first["a"], "b": first["b"], "per": per, "grid": grid})
    return rows


def lab_figure(spec: dict) -> str:
    """``"83.92 % (Lab report 1, 50 ep)"`` per lab-report row with a figure, joined by "; "; else ``"—"``."""
    figures = []
    for row in lab_rows(spec):
        if row.get("accuracy") is None:
            continue
        bits = [row.get("report"), f"{row['epochs']} ep" if row.get("epochs") else None,
                f"{row['epoch_seconds']:g} s/epoch" if row.get("epoch_seconds") else None]
        extra = ", ".join(str(b) for b in bits if b)
        figures.append(f"{row['accuracy']:.2f} %" + (f" ({extra})" if extra else ""))
    return "; ".join(figures) or "—"


def result_rows(cfg: Config, variants: pd.DataFrame, dataset: str) -> list[dict]:
    """Display strings for one data set's table: one row per variant and recipe."""
    rows = []
    for _, r in variants[variants["dataset"] == dataset].iterrows():
        spec = cfg.variant(r["variant"])
        rows.append({
            "variant": r["variant"], "recipe": r["recipe"], "model": r["model"],
            "params": fmt(r["params_mean"], ",.0f"),
            "top1": mean_std(r["test_top1_mean"], r["test_top1_std"]),
            "top1_ci": _interval(r["test_top1_ci_low"], r["test_top1_ci_high"], ".2f") or "—",
            "images": int(r["test_images"]),
            "clean": " ".join(x for x in (mean_std(r.get("test_top1_clean_mean"), r.get("test_top1_clean_std")),
                                          _interval(r.get("test_top1_clean_ci_low"), r.get("test_top1_clean_ci_high"),
                                                    ".2f")) if x),
            "audited": _isnum(r.get("test_images_clean")),  # variants.csv of an older aggregate has no column
            "clean_images": (f"{int(r['test_images_clean']):,} of {int(r['test_images']):,}"
                             if _isnum(r.get("test_images_clean")) else "—"),
            "top5": mean_std(r["test_top5_mean"], r["test_top5_std"]),
            "kept": " ".join(x for x in (mean_std(r["top1_kept_mean"], r["top1_kept_std"]),
                                         _interval(r["top1_kept_ci_low"], r["top1_kept_ci_high"], ".2f")) if x),
            "n": int(r["n"]), "epochs": int(r["epochs"]),
            "epoch_s": mean_std(r["epoch_seconds_mean"], r["epoch_seconds_std"], spec=".3g"),
            "instability": fmt(r["instability_mean"]),
            "lab": lab_figure(spec),
        })
    return rows


def lab_rows_table(cfg: Config, variants: pd.DataFrame) -> list[dict]:
    """Each lab-report row next to this study's mean under every recipe."""
    rows = []
    for variant in cfg.variants:
        spec = cfg.variant(variant)
        for lab in lab_rows(spec):
            ours = []
            for recipe in cfg.recipes:
                r = variants[(variants["variant"] == variant) & (variants["recipe"] == recipe)]
                if r.empty:  # not trained under this recipe (tuned recipe, untuned variant): keep the columns
                    ours.append({"recipe": recipe, "top1": NOT_TUNED, "delta": "—", "epochs": None, "epoch_s": "—"})
                    continue
                r = r.iloc[0]
                delta = (f"{r['test_top1_mean'] - lab['accuracy']:+.2f}"
                         if lab.get("accuracy") is not None and _isnum(r["test_top1_mean"]) else "—")
                ours.append({"recipe": recipe, "top1": mean_std(r["test_top1_mean"], r["test_top1_std"], r["n"]),
                             "delta": delta, "epochs": int(r["epochs"]),
                             "epoch_s": fmt(r["epoch_seconds_mean"], ".3g")})
            rows.append({"variant": variant, "report": lab.get("report", "?"), "row": lab.get("row", "?"),
                         "lab_acc": fmt(lab.get("accuracy")), "lab_epochs": lab.get("epochs") or "—",
                         "lab_epoch_s": fmt(lab.get("epoch_seconds"), "g"), "claim": lab.get("claim") or "",
                         "ours": ours, "epochs": next((o["epochs"] for o in ours if o["epochs"] is not None), "—")})
    return rows


def _opt_text(train: TrainSpec, tuned=()) -> str:
    """The optimizer in words; a hyper-parameter of ``tuned`` (tuning's grid) is "tuned per variant"."""
    opt = train.optimizer
    bits = [opt.name, "lr tuned per variant" if "lr" in tuned else f"lr {opt.lr:g}"]
    if opt.name == "sgd":
        bits.append(f"momentum {opt.momentum:g}")
    bits.append("weight decay tuned per variant" if "weight_decay" in tuned else f"weight decay {opt.weight_decay:g}")
    if opt.name == "sgd" and opt.nesterov and opt.momentum > 0:
        bits.append("Nesterov")
    if opt.no_decay_norm_bias:
        bits.append("no weight decay on BN/bias")
    return ", ".join(bits)


def _schedule_text(train: TrainSpec) -> str:
    sched = train.schedule
    name = sched.name
    if sched.warmup_epochs:
        name += f" after {sched.warmup_epochs} warm-up epoch(s)"
    if sched.name == "step":
        name += f" (×{sched.gamma} every {sched.step_size} epochs)"
    return name


REFERENCES = [
    "Agarwal, Schwarzer, Castro, Courville, Bellemare (2021). Deep reinforcement learning at the edge of the "
    "statistical precipice. NeurIPS.",
    "Bouthillier, Delaunay, Bronzi, et al. (2021). Accounting for variance in machine learning benchmarks. MLSys.",
    "Dodge, Gururangan, Card, Schwartz, Smith (2019). Show your work: improved reporting of experimental results. "
    "EMNLP.",
    "Godbole, Dahl, Gilmer, Shallue, Nado (2023). Deep Learning Tuning Playbook. "
    "github.com/google-research/tuning_playbook.",
    "Dietterich (1998). Approximate statistical tests for comparing supervised classification learning "
    "algorithms. Neural Computation 10, 1895-1923.",
    "Dror, Baumer, Shlomov, Reichart (2018). The hitchhiker's guide to testing statistical significance in "
    "natural language processing. ACL.",
    "Holm (1979). A simple sequentially rejective multiple test procedure. Scandinavian Journal of Statistics 6, "
    "65-70.",
    "Owen (2007). The pigeonhole bootstrap. Annals of Applied Statistics 1, 386-411.",
    "Schuirmann (1987). A comparison of the two one-sided tests procedure and the power approach for assessing "
    "the equivalence of average bioavailability. J. Pharmacokinetics and Biopharmaceutics 15, 657-680.",
    "Welch (1947). The generalization of 'Student's' problem when several different population variances are "
    "involved. Biometrika 34, 28-35.",
]


def verdict_rule(rule: dict, tests: int) -> str:
    """The verdict rule in one sentence (shown under the verdict grid)."""
    return (f"each verdict is decided on its Holm-adjusted p-value over all {tests} tested claim × recipe pairs of "
            f"this study (family-wise α = {rule['alpha']:g}): “holds” when the adjusted p < α and the difference "
            f"has the claimed sign (or, for “about the same”, lies inside ±{rule['similar_margin']:g}), “does not "
            "hold” when it has the opposite sign (or lies outside), “inconclusive” otherwise. Accuracy differences "
            "count both the seeds' and the test set's noise; see Methods.")


def statistics_paragraphs(rule: dict, tests: int, seeds: list[int]) -> list[str]:
    """How each verdict was reached, in plain words (the Methods section's statistics)."""
    alpha, margin, boot = rule["alpha"], rule["similar_margin"], rule["bootstrap"]
    return [
        f"Error control. The study tests {tests} claim × recipe pairs. Tested one by one at {alpha:g}, about "
        f"{alpha * tests:.1f} of them would come out decided even if no claim were true. Holm's step-down "
        f"procedure (Holm 1979) keeps the chance of even one wrong verdict in the whole study below {alpha:g}, "
        "whatever the dependence between the tests (they share runs and test images, so procedures that need "
        "independence, such as Hochberg's, would not be safe). The claims table shows the raw and the adjusted p.",
        "Accuracy. A run's test accuracy varies with its training seed and with which images happen to be in "
        "the test set; the same test images score every run, so that second noise does not average out over "
        "seeds (Bouthillier et al. 2021). The difference of two variants' mean accuracies gets its standard error "
        "from each variant's seed-to-seed variance plus the test-set variance component estimated from the "
        "per-image predictions, paired over the images when both variants were scored on the same ones (Owen "
        "2007); the 95 % interval and the p-value use Welch-Satterthwaite degrees of freedom (Welch 1947).",
        "One training run per side. Nothing measures training noise; the verdict comes from the test set alone: "
        "McNemar's exact test on the images only one of the two networks classified correctly (Dietterich 1998; "
        "Dror et al. 2018), with a paired bootstrap interval over the images. It is labelled “one training run "
        "per side: test-set noise only; training noise unmeasured”: it says that these two trained networks "
        "differ on this test set, not that the variants would if trained again.",
        "Probability of improvement. P(a > b) is the chance that a run of a scores higher than a run of b (ties "
        f"count ½), with a 95 % interval from a two-level bootstrap that resamples the test images, then the runs "
        f"(Agarwal et al. 2021); {boot['draws']} draws from seed {boot['seed']}, so the numbers are reproducible.",
        f"“About the same”. Such a claim holds when two one-sided tests (Schuirmann 1987) show the difference "
        f"inside ±{margin:g} and does not hold when they show it outside; the p-value of whichever the data lean "
        "to enters the family.",
        "Time, instability, parameters. Seconds per epoch and instability have one value per run: Welch's t test "
        "over the runs. Seconds per epoch with one run on a side: Welch's t over the epochs after the first (the "
        "first holds warm-up), labelled “epoch-to-epoch timing noise only”; instability with one run per side is "
        "not tested. Parameter counts are the same for every seed and are compared exactly (not tested, not in "
        "the family).",
        f"Seeds needed. For every inconclusive claim the table gives the seeds per side at which its test would "
        f"reach {rule['power']:.0%} power, taking the observed difference and variances as true (noncentral t, at "
        f"Holm's strictest level α / {max(tests, 1)}), or says why no number would do: the observed difference "
        "lies outside the margin, the test set's own noise hides the effect (a larger test set is needed), or "
        f"training noise is unmeasured ({len(seeds)} seed(s) here; at least 2 per side are needed). "
        "`cnnbench plan-seeds` prints the plan and the `seeds` setting that covers it.",
    ]


TRAIN_STATS = "the training split's per-channel mean and std (manifest train_stats)"


def normalize_text(train: TrainSpec, train_stats: dict | None = None) -> str:
    """The normalisation a run applies: params.yaml's mean and std, or (train.normalize unset) the
    training split's own, with the values preprocess recorded when ``train_stats`` gives them."""
    norm = train.normalize
    if norm is not None:
        return f"mean {list(norm.mean)}, std {list(norm.std)}"
    stats = train_stats or {}
    if stats.get("mean") is None or stats.get("std") is None:
        return TRAIN_STATS
    values = lambda xs: "[" + ", ".join(f"{float(x):.4f}" for x in xs) + "]"  # noqa: E731
    return f"{TRAIN_STATS}: mean {values(stats['mean'])}, std {values(stats['std'])}"


def subset_text(cfg: Config, ds: str) -> str:
    """What a data set of kind ``subset`` is drawn from and why (params.yaml's ``why``); "" otherwise."""
    from .data.kinds import SUBSET

    settings = cfg.dataset(ds)
    if settings["kind"] != SUBSET:
        return ""
    parent, classes, limit = settings["of"], settings.get("classes"), settings.get("max_per_class")
    chosen = f"{len(classes)} of its classes ({', '.join(classes)})" if classes else "all its classes"
    drawn = (f"at most {limit} training images per class, drawn with seed {settings['seed']}" if limit
             else "every training image")
    text = (f"A subset of {dataset_title(cfg, parent)} (datasets.{parent}): {chosen}, {drawn}, and every "
            f"validation and test image of those classes.")
    why = str(settings.get("why") or "").strip()
    return text + (f" Why: {why}" + ("" if why.endswith(".") else ".") if why else "")


def dataset_facts(cfg: Config, ds: str) -> str:
    """The data set's facts for the methods section: image size (from its kind) and noisy classes when
    it lists some (what a subset is drawn from opens its results section: :func:`subset_text`)."""
    side = cfg.describe_dataset(ds).image_size
    facts = [f"images {side} × {side} px"]
    noisy = cfg.dataset(ds).get("noisy_classes") or []
    if noisy:
        facts.append(f"noisy classes (datasets.{ds}.noisy_classes), left out where a variant filters them: "
                     f"{', '.join(map(str, noisy))}")
    return "; ".join(facts)


def _recipe_rows(cfg: Config) -> list[dict]:
    """The Methods table: one row per recipe, its optimizer, schedule and extras."""
    recipes = []
    for recipe in cfg.recipes:
        tuned = cfg.tuning.grid if recipe in cfg.tuned_recipes else {}
        # a tuned recipe: its base recipe's values (tuning chooses the grid's per variant)
        spec = cfg.run(cfg.variants[0], recipe, chosen={}) if tuned else cfg.run(cfg.variants[0], recipe)
        train = spec.train
        extras = [f"tuned: {cfg.tuning.recipes[recipe]} with {', '.join(tuned)} chosen per variant"] if tuned else []
        if train.label_smoothing and "label_smoothing" not in tuned:
            extras.append(f"label smoothing {train.label_smoothing:g}")
        if train.ema:
            extras.append(f"EMA of weights {train.ema:g}")
        if train.tta_flip:
            extras.append("flip test-time augmentation")
        if train.zero_init_residual:
            extras.append("zero-initialised residual branches")
        recipes.append({"name": recipe, "optimizer": _opt_text(train, tuned), "schedule": _schedule_text(train),
                        "batch": train.batch_size, "extras": ", ".join(extras) or "—",
                        "precision": spec.execution.precision, "compile": spec.execution.compile})
    return recipes


def methods(cfg: Config, variants: pd.DataFrame, claims: pd.DataFrame, data: dict | None = None) -> dict:
    """The methods section, generated from params.yaml (as resolved for this profile); ``data``:
    report_context's data per data set (its ``train_stats`` give the normalisation of runs without
    train.normalize)."""
    recipes = _recipe_rows(cfg)
    datasets = []
    for ds in cfg.datasets:
        train = cfg.run(cfg.variants_of(ds)[0]).train
        aug = train.augment
        aug_bits = []
        if aug.crop == "pad":
            aug_bits.append(f"random crop with {aug.crop_padding} px padding")
        elif aug.crop == "resized":
            aug_bits.append(f"random resized crop (min scale {aug.min_scale})")
        if aug.flip:
            aug_bits.append("horizontal flip")
        epochs = sorted({int(e) for e in variants[variants["dataset"] == ds]["epochs"]})
        stats = ((data or {}).get(ds) or {}).get("train_stats")
        datasets.append({"title": dataset_title(cfg, ds), "augment": ", ".join(aug_bits) or "none",
                         "normalize": normalize_text(train, stats),
                         "epochs": ", ".join(map(str, epochs)), "extra": dataset_facts(cfg, ds),
                         "limit": train.train_limit, "max_batches": train.max_batches_per_epoch})
    profile = cfg.profile_block
    overrides = []
    if profile.get("train"):
        overrides.append("train: " + ", ".join(f"{k}={v}" for k, v in profile["train"].items()))
    if profile.get("model_args"):
        overrides.append("model args: " + ", ".join(f"{k}={v}" for k, v in profile["model_args"].items()))
    for ds, block in (profile.get("datasets") or {}).items():
        overrides.append(f"{ds}: " + ", ".join(f"{k}={v}" for k, v in block.items()))
    rule = cfg.raw["claims_rule"]
    tests = int(claims["p"].notna().sum())
    return {
        "design": (f"{len(cfg.variants)} variants × {len(cfg.recipes)} recipes ({', '.join(cfg.recipes)}) × "
                   f"{len(cfg.seeds)} seed(s) ({', '.join(map(str, cfg.seeds))}) = {len(cfg.runs)} training runs"
                   f"{_partial_recipes_text(cfg)}; "
                   "each run is trained and evaluated on its own, the claims compare the per-seed values."),
        "tuning": tuning_methods(cfg),
        "recipes": recipes,
        "datasets": datasets,
        "profile": cfg.profile,
        "profile_description": profile.get("description", ""),
        "overrides": overrides,
        "rule": verdict_rule(rule, tests),
        "statistics": statistics_paragraphs(rule, tests, cfg.seeds),
        "references": REFERENCES,
        "selection": "final epoch (EMA weights where the recipe keeps an EMA); the validation split is "
                     "monitored, never used to pick weights or stop early; the test split is used once, at evaluation.",
    }


def _partial_recipes_text(cfg: Config) -> str:
    """" (recipe tuned: the 7 tuned variants only)" where a recipe does not train every variant."""
    bits = [f"recipe {r}: the {n} tuned variant{'s' if n != 1 else ''} only" for r in cfg.recipes
            if (n := sum(cfg.runs_under(v, r) for v in cfg.variants)) < len(cfg.variants)]
    return f" ({'; '.join(bits)})" if bits else ""


def tuning_methods(cfg: Config) -> str | None:
    """The Methods paragraph on tuning, or None when the study tunes nothing."""
    if not cfg.tuned_recipes:
        return None
    t = cfg.tuning
    tuned = ", ".join(f"{r} (base {t.recipes[r]})" for r in cfg.tuned_recipes)
    return (f"Tuning. A tuned recipe is its base recipe with {', '.join(t.grid)} chosen per variant: {tuned}. Every "
            f"tuned variant trains every grid point with the same budget ({t.describe_budget()}, the schedule "
            f"compressed to them) for each of {len(t.seeds)} tuning seed(s) ({', '.join(map(str, t.seeds))}, not the "
            "study's seeds), on the training split; the point with the highest final validation accuracy, averaged "
            "over the tuning seeds, is chosen (the first in grid order on a tie; a diverged trial counts 0). Only "
            "the validation split is read: the test split is never seen by tuning or selection. The runs of the "
            "tuned recipe then train with the chosen values, the study's epochs and seeds, and every claim is "
            "tested under it with the same statistics as under the fixed recipes (Google's Deep Learning Tuning "
            "Playbook: compare architectures after tuning each with the same budget). After Dodge et al. (2019), "
            "the Tuning section gives the expected best validation accuracy as a function of the number of grid "
            "points tried, so a reader sees whether a ranking depends on the tuning budget.")


def run_facts(runs_root: Path, cfg: Config) -> dict:
    """Devices, precisions, versions and memory kinds over every run's metrics.json."""
    facts = {"devices": set(), "eval_devices": set(), "precisions": set(), "torch": set(), "memory": set()}
    for variant, recipe, seed in cfg.runs:
        path = run_dir(runs_root, variant, recipe, seed) / "metrics.json"
        if not path.is_file():
            continue
        m = json.loads(path.read_text())
        for key, field in (("devices", "device"), ("eval_devices", "eval_device"), ("precisions", "precision"),
                           ("torch", "torch_version"), ("memory", "memory_kind")):
            if m.get(field):
                facts[key].add(str(m[field]))
    return {k: sorted(v) for k, v in facts.items()}


# ---------------------------------------------------------------------------------------------
# tuning


TUNING_KINDS = ("tuning", "tuning_budget")
EDGE_ADVICE = ("A value chosen at the edge of the grid (its smallest or largest) may not be the best: the best "
               "may lie beyond it, so the grid should be widened past that end and the tuning rerun.")


def values_text(values: dict) -> str:
    """``"lr 0.1, weight_decay 0.0005"``."""
    return ", ".join(f"{k} {float(v):g}" for k, v in values.items())


def duration(seconds: float) -> str:
    """``"42.0 s"``, ``"12.5 min"`` or ``"3.20 h"``."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


def tuning_setup(cfg: Config) -> str:
    """What was tuned, in one sentence: recipes, grid, budget, seeds, metric, variants."""
    t = cfg.tuning
    grid = "; ".join(f"{k} ∈ {{{', '.join(f'{v:g}' for v in values)}}}" for k, values in t.grid.items())
    recipes = ", ".join(f"`{r}` (base `{t.recipes[r]}`)" for r in cfg.tuned_recipes)
    every = len(t.variants) == len(cfg.variants)
    return (f"Tuned recipe(s) {recipes}; grid {grid} ({len(t.points)} points); budget {t.describe_budget()} per "
            f"trial; tuning seed(s) {', '.join(map(str, t.seeds))}; selection metric {t.metric} (final validation "
            f"accuracy, mean over the tuning seeds); {len(t.variants)} variant(s) tuned"
            + (" (every variant of the study)." if every else f": {', '.join(t.variants)}."))


def tuning_rows(selected: dict) -> list[dict]:
    """The chosen values table: one row per (tuned variant, tuned recipe) with a selection."""
    rows = []
    for (variant, recipe), s in selected.items():
        edge = list(s["at_grid_edge"])
        rows.append({"variant": variant, "recipe": recipe, "chosen": values_text(s["chosen"]),
                     "val_acc": fmt(100 * s["chosen_val_acc"]),
                     "edge": f"yes: {', '.join(edge)} (widen the grid)" if edge else "no",
                     "trials": len(s["trials"]), "seconds": duration(float(s["tuning_seconds"]))})
    return rows


def training_seconds(runs: pd.DataFrame) -> float:
    """The study's runs' training time: seconds per epoch × epochs, summed over runs.csv."""
    return float((runs["epoch_seconds"].astype(float) * runs["epochs"].astype(float)).sum())


def tuning_compute(selected: dict, runs: pd.DataFrame) -> str:
    """What tuning cost next to the study's runs (training time only, both sides)."""
    trials = sum(len(s["trials"]) for s in selected.values())
    tuning = sum(float(s["tuning_seconds"]) for s in selected.values())
    study = training_seconds(runs)
    share = f", {100 * tuning / study:.0f} % of" if study > 0 else " beside"
    return (f"Tuning trained {trials} trials for {duration(tuning)} in all (the sum of their training seconds){share} "
            f"the {duration(study)} the study's {len(runs)} runs trained for (seconds per epoch × epochs, summed); "
            "both count training only, not evaluation or start-up.")


def tuning_section(cfg: Config, selected: dict, runs: pd.DataFrame, figures: list[dict],
                   tuning_root: Path | None) -> dict | None:
    """The report's Tuning section, or None when the study tunes nothing."""
    if not cfg.tuned_recipes:
        return None
    missing = [f"{v}/{r}" for r in cfg.tuned_recipes for v in cfg.tuning.variants if (v, r) not in selected]
    datasets = [{"key": ds, "title": dataset_title(cfg, ds),
                 "figures": [f for f in figures if f.get("dataset") == ds and f.get("kind") in TUNING_KINDS]}
                for ds in cfg.datasets]
    return {"setup": tuning_setup(cfg), "rows": tuning_rows(selected),
            "datasets": [d for d in datasets if d["figures"]],
            "edge": EDGE_ADVICE if any(s["at_grid_edge"] for s in selected.values()) else "",
            "compute": tuning_compute(selected, runs) if selected else "",
            "missing": (f"No selection under {tuning_root} for {', '.join(missing)} (run `cnnbench select`)."
                        if missing else "")}


# ---------------------------------------------------------------------------------------------
# rendering


def _md_cell(value) -> str:
    """Text safe inside a Markdown table cell."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def template_env() -> jinja2.Environment:
    """cnnbench/templates for the report and `cnnbench compare`: *.html.j2 autoescaped, `md` a table-cell filter."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cnnbench", "templates"),
        # HTML escaped, Markdown not (it would show "&amp;" literally).
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["md"] = _md_cell
    return env


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def png_data_uri(image) -> str:
    """An RGB uint8 H x W x 3 array as an inline PNG (``data:image/png;base64,...``), so the report
    stays one file."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


CLEAN_TEST = ("clean test = test images with no exact, mirrored or near-duplicate in the training images the model "
              "saw (the leak audit of `cnnbench preprocess`; ciFAIR reports CIFAR accuracy the same way); a model that "
              "memorised a training image gets its test copy right without having learned the class.")


def _quality_sections(quality) -> list[dict]:
    """context["data_quality"]: a list of `provenance.data_quality` sections (one per audited data set);
    a single section, as older callers pass it, is one item. Keys a caller left out get empty values."""
    if not quality:
        return []
    sections = [quality] if isinstance(quality, dict) else list(quality)
    empty = {"key": "", "title": "duplicates", "summary": "", "headers": [], "counts": [], "groups": [],
             "examples": [], "showing": "", "thumbnails": False, "thumbs_missing": False}
    return [{**empty, **q} for q in sections]


def load_figures(plots_dir: Path) -> list[dict]:
    """figures.json of `cnnbench plot`, each entry checked to exist."""
    figures = read_json(plots_dir / "figures.json", "cnnbench plot")
    for fig in figures:
        need_file(plots_dir / fig["file"], "cnnbench plot")
    return figures


def dataset_section(cfg: Config, variants: pd.DataFrame, figures: list[dict], ds: str, info: dict) -> dict:
    """One data set's results section: its table, the columns its runs have, its data and its figures
    (the tuning figures go to the Tuning section)."""
    rows = result_rows(cfg, variants, ds)
    own = variants[variants["dataset"] == ds]
    return {
        "key": ds, "title": dataset_title(cfg, ds), "rows": rows, "about": subset_text(cfg, ds),
        # columns the data set's runs have: top-5 (enough classes), top-1 on the kept classes (noisy ones listed)
        "top5": bool(own["test_top5_mean"].notna().any()),
        "kept": bool(own["top1_kept_mean"].notna().any()),
        "clean": any(r["audited"] for r in rows),  # some runs of it were scored on the clean test images
        "data": {"source": str(info.get("source") or "?"), "location": str(info.get("location") or "?"),
                 "sha256": str(info.get("sha256") or "?"), "counts": info.get("counts") or {}},
        "figures": [f for f in figures if f.get("dataset") == ds and f.get("kind") not in TUNING_KINDS],
    }


def runs_count(cfg: Config) -> str:
    """How the study's runs add up, e.g. "17 variants × 2 recipes + 7 tuned variants × 1 tuned recipe, × 1 seed(s)
    = 41 runs" (a tuned recipe trains only the variants tuning tunes)."""
    n = f"{len(cfg.runs)} runs"
    seeds = f"{len(cfg.seeds)} seed(s)"
    if all(cfg.runs_under(v, r) for v in cfg.variants for r in cfg.recipes):
        return f"{len(cfg.variants)} variants × {len(cfg.recipes)} recipes × {seeds} = {n}"
    fixed = len(cfg.recipes) - len(cfg.tuned_recipes)
    return (f"{len(cfg.variants)} variants × {fixed} recipes + {len(cfg.tuning.variants)} tuned variants × "
            f"{len(cfg.tuned_recipes)} tuned recipe(s), × {seeds} = {n}")


def build_report(cfg: Config, summary_dir: Path, plots_dir: Path, runs_root: Path, out_dir: Path,
                 context: dict, tuning_root: Path | None = None) -> tuple[Path, Path]:
    """Render ``report.html`` (self-contained: images inline, no external URL) and ``report.md``.

    ``context`` carries the provenance (profile, params_hash, git_commit, versions, command,
    generated, data, data_quality: the duplicate audit of each data set that has one). The Markdown
    refers to the PNGs by their path relative to ``out_dir`` and lists the duplicate groups as text.
    ``tuning_root``: where tuning's selections are (the Tuning section's chosen values and compute).
    Returns (html_path, md_path).
    """
    summary_dir, plots_dir, out_dir = Path(summary_dir), Path(plots_dir), Path(out_dir)
    variants = read_table(summary_dir / "variants.csv", "cnnbench aggregate")
    claims = read_table(summary_dir / "claims.csv", "cnnbench aggregate", keep_default_na=False, na_values=[""])
    figures = load_figures(plots_dir)
    selected = read_selections(cfg, tuning_root) if tuning_root is not None else {}
    runs = read_table(summary_dir / "runs.csv", "cnnbench aggregate") if cfg.tuned_recipes else None
    data = context.get("data") or {}
    datasets = [dataset_section(cfg, variants, figures, ds, data.get(ds) or {}) for ds in cfg.datasets]
    common = {
        "ctx": context,
        "banner": banner(cfg.profile),
        "recipes": cfg.recipes,
        "seeds": cfg.seeds,
        "runs_count": runs_count(cfg),
        "verdicts": verdict_summary(claims, cfg.recipes),
        "claims": claim_rows(claims, cfg.recipes),
        "lab": lab_rows_table(cfg, variants),
        "datasets": datasets,
        "other_figures": [f for f in figures if not f.get("dataset")],
        "tuning": tuning_section(cfg, selected, runs, figures, tuning_root),
        "methods": methods(cfg, variants, claims, data),
        "plan": plan_seeds(claims).sentence(),
        "facts": run_facts(runs_root, cfg),
        "quality": _quality_sections(context.get("data_quality")),
        "clean_test": CLEAN_TEST,
    }

    def rel(p: Path) -> str:
        link = Path(os.path.relpath(p.resolve(), out_dir.resolve())).as_posix()
        return f"<{link}>" if any(c in link for c in " ()") else link  # CommonMark link destination

    env = template_env()
    html = env.get_template("report.html.j2").render(
        src={f["file"]: _data_uri(plots_dir / f["file"]) for f in figures}, **common)
    md = env.get_template("report.md.j2").render(
        src={f["file"]: rel(plots_dir / f["file"]) for f in figures}, **common)
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    atomic_write_text(md_path, md)
    atomic_write_text(html_path, html)
    return html_path, md_path
