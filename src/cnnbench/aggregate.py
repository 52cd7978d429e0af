"""Aggregate the study: every run's numbers, mean ± std per (variant, recipe), and each lab-report
claim tested over the seeds with a stated rule.

The verdict rule (``claims_rule`` in params.yaml), for a claim "metric of a is greater/less than
metric of b" with per-seed values A and B:

* **holds** when Welch's t-test gives p < alpha and the difference has the claimed sign;
* **does not hold** when p < alpha and the difference has the opposite sign;
* **inconclusive** otherwise, and always when a side has fewer than 2 seeds (no variance estimate).

For "a is similar to b" the 95 % confidence interval of mean(A) - mean(B) (Welch) decides: inside
±similar_margin holds, entirely outside it does not hold, otherwise inconclusive.
Parameter counts do not vary with the seed, so they are compared exactly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .atomic import atomic_write_text
from .config import Config, run_dir
from .errors import DataError
from .results import read_history, read_json

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
METRIC_LABELS = {
    "test_top1": "test top-1 (%)",
    "top1_kept": "test top-1 on the kept classes (%)",
    "epoch_seconds": "seconds per epoch",
    "params": "parameters",
    "instability": "instability (mean drop of validation accuracy per epoch, points)",
}
EXACT_METRICS = {"params"}  # the same for every seed by construction
CLAIM_COLUMNS = ["claim", "report", "text", "their", "metric", "expect", "recipe", "a", "b", "n_a", "n_b", "mean_a",
                 "mean_b", "std_a", "std_b", "diff", "ci_low", "ci_high", "p", "verdict", "reason"]
RUN_COLUMNS = ["variant", "dataset", "model", "recipe", "seed", "test_top1", "test_top5", "top1_kept",
               "epoch_seconds", "params", "instability", "epochs", "peak_memory_mb", "device"]


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


def collect_runs(cfg: Config, runs_root: Path) -> pd.DataFrame:
    """One row per (variant, recipe, seed) of the study, read from its run directory."""
    rows = []
    for variant, recipe, seed in cfg.runs:
        run = run_dir(runs_root, variant, recipe, seed)
        where = f"cnnbench evaluate --variant {variant} --recipe {recipe} --seed {seed}"
        metrics_path = run / "metrics.json"
        m = read_json(metrics_path, where)
        if (m.get("variant"), m.get("recipe"), m.get("seed")) != (variant, recipe, seed):
            raise DataError(f"{metrics_path}: holds run {m.get('variant')}/{m.get('recipe')}/seed{m.get('seed')}, "
                            f"not {variant}/{recipe}/seed{seed}; re-run `{where}`")
        history = read_history(run / "history.csv", variant)
        kept = m.get("test_top1_kept")
        rows.append({
            "variant": variant, "dataset": m["dataset"], "model": m["model"], "recipe": recipe, "seed": seed,
            "test_top1": 100 * m["test_top1"],
            "test_top5": 100 * m["test_top5"] if m.get("test_top5") is not None else float("nan"),
            "top1_kept": 100 * kept if kept is not None else float("nan"),
            "epoch_seconds": m["mean_epoch_seconds"], "params": m["params"],
            "instability": instability(history["val_acc"]), "epochs": m["epochs"],
            "peak_memory_mb": m.get("peak_memory_mb", float("nan")), "device": m.get("device", ""),
        })
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation (ddof 1; NaN for one seed) and n per (variant, recipe)."""
    metrics = ["test_top1", "test_top5", "top1_kept", "epoch_seconds", "params", "instability", "peak_memory_mb"]
    out = []
    for (variant, recipe), group in runs.groupby(["variant", "recipe"], sort=False):
        row = {"variant": variant, "dataset": group["dataset"].iloc[0], "model": group["model"].iloc[0],
               "recipe": recipe, "n": len(group), "seeds": " ".join(str(s) for s in group["seed"]),
               "epochs": int(group["epochs"].iloc[0])}
        for metric in metrics:
            values = group[metric].astype(float)
            row[f"{metric}_mean"] = values.mean()
            row[f"{metric}_std"] = values.std(ddof=1) if len(values) > 1 else float("nan")
        out.append(row)
    return pd.DataFrame(out)


def compare(a: list[float], b: list[float], expect: str, *, alpha: float, margin: float,
            exact: bool = False) -> dict:
    """Test one claim on per-seed values ``a`` and ``b``; returns numbers, verdict and reason."""
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a_arr, b_arr = a_arr[~np.isnan(a_arr)], b_arr[~np.isnan(b_arr)]
    res = {"n_a": len(a_arr), "n_b": len(b_arr), "mean_a": _mean(a_arr), "mean_b": _mean(b_arr),
           "std_a": _std(a_arr), "std_b": _std(b_arr), "diff": float("nan"), "ci_low": float("nan"),
           "ci_high": float("nan"), "p": float("nan")}
    if len(a_arr) == 0 or len(b_arr) == 0:
        return {**res, "verdict": INCONCLUSIVE, "reason": "no values on one side"}
    diff = res["mean_a"] - res["mean_b"]
    res["diff"] = diff
    if exact:
        res["ci_low"] = res["ci_high"] = diff
        if expect == "similar":
            ok = abs(diff) <= margin
        else:
            ok = diff > 0 if expect == "greater" else diff < 0
        return {**res, "verdict": HOLDS if ok else FAILS, "reason": "exact: the same for every seed"}
    if len(a_arr) < 2 or len(b_arr) < 2:
        return {**res, "verdict": INCONCLUSIVE, "reason": "fewer than 2 seeds per side: no variance estimate"}
    if res["std_a"] == 0 and res["std_b"] == 0:
        # No spread at all: the t statistic is undefined; the difference is what it is.
        res["ci_low"] = res["ci_high"] = diff
        res["p"] = 0.0 if diff != 0 else 1.0
    else:
        test = stats.ttest_ind(a_arr, b_arr, equal_var=False)
        ci = test.confidence_interval(0.95)
        res["p"], res["ci_low"], res["ci_high"] = float(test.pvalue), float(ci.low), float(ci.high)
    if expect == "similar":
        if -margin <= res["ci_low"] and res["ci_high"] <= margin:
            return {**res, "verdict": HOLDS, "reason": f"95 % CI of the difference inside ±{margin:g}"}
        if res["ci_low"] > margin or res["ci_high"] < -margin:
            return {**res, "verdict": FAILS, "reason": f"95 % CI of the difference outside ±{margin:g}"}
        return {**res, "verdict": INCONCLUSIVE, "reason": f"95 % CI of the difference overlaps ±{margin:g}"}
    claimed_sign = 1 if expect == "greater" else -1
    if res["p"] < alpha:
        if np.sign(diff) == claimed_sign:
            return {**res, "verdict": HOLDS, "reason": f"Welch p = {res['p']:.3g} < {alpha:g}, claimed direction"}
        return {**res, "verdict": FAILS, "reason": f"Welch p = {res['p']:.3g} < {alpha:g}, opposite direction"}
    return {**res, "verdict": INCONCLUSIVE, "reason": f"Welch p = {res['p']:.3g} ≥ {alpha:g}"}


def evaluate_claims(cfg: Config, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (claim, recipe): the lab report's figure beside ours and the verdict."""
    rule = cfg.raw["claims_rule"]
    rows = []
    for claim in cfg.claims:
        metric = claim["metric"]
        for recipe in cfg.recipes:
            pick = lambda v: runs[(runs["variant"] == v) & (runs["recipe"] == recipe)].sort_values("seed")[metric]
            result = compare(list(pick(claim["a"])), list(pick(claim["b"])), claim["expect"], alpha=rule["alpha"],
                             margin=rule["similar_margin"], exact=metric in EXACT_METRICS)
            rows.append({"claim": claim["id"], "report": claim["report"], "text": claim["text"],
                         "their": claim.get("their", ""), "metric": metric, "expect": claim["expect"],
                         "recipe": recipe, "a": claim["a"], "b": claim["b"], **result})
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if len(x) else float("nan")


def _std(x: np.ndarray) -> float:
    return float(x.std(ddof=1)) if len(x) > 1 else float("nan")


def _clean(value):
    """JSON-safe: NaN and inf become null."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return _clean(value.item())
    return value


def aggregate(cfg: Config, runs_root: Path, out_dir: Path) -> dict:
    """Write runs.csv, variants.csv, claims.csv and summary.json into ``out_dir``."""
    runs = collect_runs(cfg, runs_root)
    variants = summarize(runs)
    claims = evaluate_claims(cfg, runs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # DataFrames: pandas' to_csv quotes like the csv module (atomic.csv_text) and writes NaN as an empty
    # field, which plot and report read back as missing
    atomic_write_text(out_dir / "runs.csv", runs.to_csv(index=False))
    atomic_write_text(out_dir / "variants.csv", variants.to_csv(index=False))
    atomic_write_text(out_dir / "claims.csv", claims.to_csv(index=False))
    verdicts = {recipe: claims[claims["recipe"] == recipe]["verdict"].value_counts().to_dict() for recipe in cfg.recipes}
    summary = {
        "profile": cfg.profile,
        "seeds": cfg.seeds,
        "recipes": cfg.recipes,
        "rule": cfg.raw["claims_rule"],
        "verdicts": verdicts,
        "claims": [{k: _clean(v) for k, v in row.items()} for row in claims.to_dict("records")],
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary
