"""Test the lab reports' claims and decide each verdict under the rule in params.yaml ``claims_rule``.

A claim compares one metric of variant a with variant b ("greater", "less" or "similar") and is
tested under every recipe of the study. Every tested claim x recipe of a study is one hypothesis of
one family; the verdicts are decided on Holm-adjusted p-values (Holm 1979), so the chance that any
verdict of the study is wrong in direction stays below ``alpha`` whatever the number of claims.

How each kind of metric is tested (the numbers come from ``stats``):

* **accuracy** (``test_top1``; ``top1_kept``: the test images of the classes every variant keeps):
  from the per-image predictions, counting both sources of noise, seeds and test images
  (``stats.two_level_bootstrap``); paired over the images when both variants were scored on the
  same test images. With one run per side, from the test set alone (the exact McNemar/sign-flip
  test), labelled so.
* **one value per run** (``epoch_seconds``, ``instability``): Welch's t test over the runs
  (``stats.welch_values``). Seconds per epoch with one run on a side: over the epochs after the
  first (the first holds warm-up), labelled "epoch-to-epoch timing noise only".
* **exact** (``params``): the same for every seed by construction; compared as numbers, not tested
  and not counted in the family.

"similar" claims are tested against ±``similar_margin`` (two one-sided tests; ``stats.margin_tests``),
the claim's p-value being that of the verdict the data lean to (inside or outside the margin): the two
rejection regions are disjoint, so each claim can err at most one way. Inconclusive claims get the
number of seeds per side that would decide them at ``power`` (``stats.seeds_needed*``), planned at
Holm's strictest level alpha / m so the plan holds whatever the other claims do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import stats

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
ACCURACY_METRICS = ("test_top1", "top1_kept")
RUN_VALUE_METRICS = ("epoch_seconds", "instability")
EXACT_METRICS = ("params",)  # the same for every seed by construction
EPOCHS_ONLY = "one training run on a side: epoch-to-epoch timing noise only; run-to-run noise unmeasured"
CLAIM_COLUMNS = ["claim", "report", "text", "their", "metric", "expect", "recipe", "a", "b", "n_a", "n_b", "n_images",
                 "paired", "mean_a", "mean_b", "std_a", "std_b", "diff", "ci_low", "ci_high", "p", "p_adjusted",
                 "prob_improvement", "pi_low", "pi_high", "noise", "method", "verdict", "reason", "seeds_needed",
                 "seeds_needed_note"]


@dataclass(frozen=True)
class Rule:
    """``claims_rule`` of params.yaml."""

    alpha: float
    correction: str
    similar_margin: float
    power: float
    seed: int
    draws: int

    @classmethod
    def from_params(cls, block: dict) -> Rule:
        return cls(alpha=float(block["alpha"]), correction=block["correction"],
                   similar_margin=float(block["similar_margin"]), power=float(block["power"]),
                   seed=int(block["bootstrap"]["seed"]), draws=int(block["bootstrap"]["draws"]))


@dataclass(frozen=True)
class RunResult:
    """What one run contributes to the claims: its metrics and its per-image outcomes."""

    seed: int
    values: dict            # metric -> value (accuracies in percent), as in runs.csv
    actual: np.ndarray      # the true class of each test image, in test-split order
    correct: np.ndarray     # bool per test image
    epoch_seconds: np.ndarray
    kept: np.ndarray        # bool per test image: its class is kept by every variant (not a noisy class)
    clean: np.ndarray | None = None  # bool per test image: no duplicate in train (None: data set not audited)


@dataclass
class ClaimNumbers:
    """The numbers of one claim x recipe before the verdict (columns of claims.csv, plus what deciding
    and planning need)."""

    row: dict
    direction: str = ""        # similar claims: "inside" or "outside", the verdict the data lean to
    sd: tuple = (math.nan, math.nan)
    image_var: float = 0.0     # test-set component of Var(diff), in the metric's units squared
    exact: bool = False


# ---------------------------------------------------------------------------------------------
# testing one claim


def _side_scores(runs: list[RunResult], kept_only: bool) -> tuple[list[np.ndarray], np.ndarray | None]:
    """A side's per-image scores (one array per run) and its test images' classes."""
    if not runs:
        return [], None
    pick = [(r.kept if kept_only else np.ones(r.correct.size, dtype=bool)) for r in runs]
    return [r.correct[m].astype(float) for r, m in zip(runs, pick)], runs[0].actual[pick[0]]


def _sides(values_a, values_b) -> dict:
    """n, mean and standard deviation (ddof 1) of each side's values."""
    return {"n_a": len(values_a), "n_b": len(values_b), "mean_a": _mean(values_a), "mean_b": _mean(values_b),
            "std_a": _std(values_a), "std_b": _std(values_b)}


def _effect(r: stats.Effect, scale: float = 1.0) -> dict:
    """The difference with its interval, p and P(a > b) of a ``stats`` result, in the metric's units."""
    return {"diff": scale * r.diff, "ci_low": scale * r.ci_low, "ci_high": scale * r.ci_high, "p": r.p,
            "prob_improvement": r.prob_improvement, "pi_low": r.pi_low, "pi_high": r.pi_high}


def _accuracy(a: list[RunResult], b: list[RunResult], metric: str, expect: str, rule: Rule,
              rng: np.random.Generator) -> ClaimNumbers:
    scores_a, actual_a = _side_scores(a, metric == "top1_kept")
    scores_b, actual_b = _side_scores(b, metric == "top1_kept")
    paired = actual_a is not None and actual_b is not None and np.array_equal(actual_a, actual_b)
    r = stats.two_level_bootstrap(scores_a, scores_b, rng, rule.draws, paired_images=paired)
    row = {**_sides([100 * s.mean() for s in scores_a], [100 * s.mean() for s in scores_b]), **_effect(r, 100.0),
           "n_images": r.n_images_a if paired else math.nan, "paired": paired, "noise": r.noise, "method": r.method}
    if not (r.n_a and r.n_b):
        row["method"] = f"{r.noise}: not tested"
    elif not paired:
        row["n_images"] = f"{r.n_images_a} / {r.n_images_b}"
    numbers = ClaimNumbers(row, sd=(row["std_a"], row["std_b"]), image_var=100.0 ** 2 * r.image_var)
    if expect == "similar":
        _margin(numbers, 100.0 * r.se, r.df, rule)
    return numbers


def _epoch_seconds(runs: list[RunResult]) -> np.ndarray:
    """A side's epoch times, all runs, without each run's first epoch (warm-up) when it has more."""
    return np.concatenate([r.epoch_seconds[1:] if r.epoch_seconds.size > 1 else r.epoch_seconds for r in runs]
                          or [np.empty(0)])


def _run_values(a: list[RunResult], b: list[RunResult], metric: str, expect: str, rule: Rule,
                rng: np.random.Generator) -> ClaimNumbers:
    """One value per run; seconds per epoch with one run on a side: the epochs after the first (the
    means shown are then those of the epochs tested, the spreads still those of the runs)."""
    values_a, values_b = [r.values[metric] for r in a], [r.values[metric] for r in b]
    by_epoch = metric == "epoch_seconds" and 0 < min(len(a), len(b)) < 2
    sample_a, sample_b = (_epoch_seconds(a), _epoch_seconds(b)) if by_epoch else (values_a, values_b)
    r = stats.welch_values(sample_a, sample_b, rng, rule.draws)
    row = {**_sides(values_a, values_b), "mean_a": _mean(sample_a), "mean_b": _mean(sample_b), **_effect(r),
           "n_images": math.nan, "paired": False, "noise": EPOCHS_ONLY if by_epoch else "seeds (runs)",
           "method": (f"over {r.n_a} and {r.n_b} epochs: " if by_epoch else "over the runs: ") + r.method}
    numbers = ClaimNumbers(row, sd=(row["std_a"], row["std_b"]))
    if expect == "similar":
        _margin(numbers, r.se, r.df, rule)
    return numbers


def _exact(a: list[RunResult], b: list[RunResult], metric: str) -> ClaimNumbers:
    row = _sides([r.values[metric] for r in a], [r.values[metric] for r in b])
    diff = row["mean_a"] - row["mean_b"]
    row.update({"diff": diff, "ci_low": diff, "ci_high": diff, "p": math.nan, "prob_improvement": math.nan,
                "pi_low": math.nan, "pi_high": math.nan, "n_images": math.nan, "paired": False,
                "noise": "none: the same for every seed",
                "method": "exact comparison (not a test; not counted in the family)"})
    return ClaimNumbers(row, exact=True)


def _margin(numbers: ClaimNumbers, se: float, df: float, rule: Rule) -> None:
    """A similar claim: its interval (consistent with the margin tests) and the p of the leaning verdict."""
    row = numbers.row
    inside, outside = stats.margin_tests(row["diff"], se, df, rule.similar_margin)
    if math.isnan(inside):
        row["p"] = math.nan  # untestable (no spread measured): not a test of the margin either
        return
    row["p"] = min(inside, outside)
    numbers.direction = "inside" if inside <= outside else "outside"
    if se > 0:
        row["ci_low"], row["ci_high"], _ = stats.t_interval(row["diff"], se, df, stats.CONFIDENCE)
    row["method"] += f"; ±{rule.similar_margin:g}: two one-sided tests (scipy.stats.t), the interval diff ± t·SE"


def analyse_claim(claim: dict, recipe: str, a: list[RunResult], b: list[RunResult], rule: Rule) -> ClaimNumbers:
    """The numbers of one claim under one recipe (``a``/``b``: the runs of its two variants)."""
    metric, expect = claim["metric"], claim["expect"]
    rng = stats.rng_for(rule.seed, claim["id"], recipe)
    if metric in ACCURACY_METRICS:
        tested = _accuracy(a, b, metric, expect, rule, rng)
    elif metric in EXACT_METRICS:
        tested = _exact(a, b, metric)
    else:
        tested = _run_values(a, b, metric, expect, rule, rng)
    tested.row = {"claim": claim["id"], "report": claim["report"], "text": claim["text"],
                  "their": claim.get("their", ""), "metric": metric, "expect": expect, "recipe": recipe,
                  "a": claim["a"], "b": claim["b"], **tested.row}
    return tested


# ---------------------------------------------------------------------------------------------
# deciding the family


def _exact_verdict(row: dict, margin: float) -> tuple[str, str]:
    diff = row["diff"]
    if math.isnan(diff):
        return INCONCLUSIVE, "no values on one side"
    ok = abs(diff) <= margin if row["expect"] == "similar" else (diff > 0 if row["expect"] == "greater" else diff < 0)
    return (HOLDS if ok else FAILS), "exact: the same for every seed"


def _verdict(tested: ClaimNumbers, p_adjusted: float, rule: Rule, m: int) -> tuple[str, str]:
    row = tested.row
    if tested.exact:
        return _exact_verdict(row, rule.similar_margin)
    if math.isnan(p_adjusted):
        return INCONCLUSIVE, row["method"]  # says why it was not tested
    level = f"Holm-adjusted p = {p_adjusted:.3g} (raw {row['p']:.3g}, {m} tests)"
    if p_adjusted >= rule.alpha:
        if row["expect"] == "similar":
            return INCONCLUSIVE, f"{level} ≥ {rule.alpha:g}: neither inside nor outside ±{rule.similar_margin:g}"
        return INCONCLUSIVE, f"{level} ≥ {rule.alpha:g}"
    if row["expect"] == "similar":
        inside = tested.direction == "inside"
        return (HOLDS if inside else FAILS), (f"{level} < {rule.alpha:g}: the difference lies "
                                              f"{'inside' if inside else 'outside'} ±{rule.similar_margin:g}")
    claimed = 1 if row["expect"] == "greater" else -1
    if np.sign(row["diff"]) == claimed:
        return HOLDS, f"{level} < {rule.alpha:g}, claimed direction"
    return FAILS, f"{level} < {rule.alpha:g}, opposite direction"


def _plan(tested: ClaimNumbers, rule: Rule, m: int) -> stats.SeedPlan | None:
    """Seeds per side that would decide an inconclusive claim, at Holm's strictest level alpha / m."""
    row = tested.row
    if tested.exact or row["verdict"] != INCONCLUSIVE or math.isnan(row["diff"]):
        return None
    alpha = rule.alpha / max(m, 1)
    sd_a, sd_b = tested.sd
    if row["expect"] == "similar":
        return stats.seeds_needed_similar(row["diff"], sd_a, sd_b, rule.similar_margin, alpha, rule.power,
                                          image_var=tested.image_var)
    return stats.seeds_needed(row["diff"], sd_a, sd_b, alpha, rule.power, image_var=tested.image_var)


def decide(family: list[ClaimNumbers], rule: Rule) -> pd.DataFrame:
    """Holm across the family, then each verdict and, for inconclusive ones, the seeds needed."""
    p = np.array([t.row["p"] for t in family], dtype=float)
    adjusted = stats.holm(p) if len(p) else p
    m = int(np.sum(~np.isnan(p)))
    rows = []
    for tested, p_adj in zip(family, adjusted):
        row = tested.row
        row["p_adjusted"] = p_adj
        row["verdict"], row["reason"] = _verdict(tested, p_adj, rule, m)
        plan = _plan(tested, rule, m)
        row["seeds_needed"] = plan.n if plan is not None and plan.n is not None else math.nan
        row["seeds_needed_note"] = "" if plan is None else plan.reason
        rows.append(row)
    table = pd.DataFrame(rows, columns=CLAIM_COLUMNS)
    table["seeds_needed"] = table["seeds_needed"].astype("Int64")
    return table


def evaluate_claims(claims: list[dict], recipes: list[str], runs: dict, rule: Rule,
                    trained=None) -> tuple[pd.DataFrame, int]:
    """Every claim under every recipe; ``runs[(variant, recipe)]`` is that variant's list of RunResult.
    ``trained(variant, recipe)`` (e.g. ``Config.runs_under``) says whether the study trains a variant
    under a recipe: a claim is left out under a recipe that does not train both its variants (a tuned
    recipe tunes only ``tuning.variants``), so it has no row there and is not in the Holm family;
    None: every claim under every recipe (a missing run is then inconclusive).
    Returns claims.csv's table and the size of the tested family."""
    pairs = [(claim, recipe) for claim in claims for recipe in recipes
             if trained is None or (trained(claim["a"], recipe) and trained(claim["b"], recipe))]
    family = [analyse_claim(claim, recipe, runs.get((claim["a"], recipe), []), runs.get((claim["b"], recipe), []), rule)
              for claim, recipe in pairs]
    table = decide(family, rule)
    return table, int(table["p"].notna().sum())


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _std(values) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


# ---------------------------------------------------------------------------------------------
# the seeds plan (report and `cnnbench plan-seeds`)


@dataclass(frozen=True)
class SeedsPlan:
    """How many seeds per side would decide the inconclusive claims of a study."""

    rows: list            # one dict per inconclusive claim x recipe: claim, recipe, text, seeds (int or None), why
    covering: int | None  # seeds per side that give every claim with a number its power; 2 to measure training noise
    unmeasured: int       # claims whose training noise is unmeasured (one run per side)
    unreachable: int      # claims no number of seeds decides

    def setting(self) -> str:
        """The ``seeds`` list that covers the plan (YAML flow style)."""
        return "[" + ", ".join(str(s) for s in range(self.covering or 0)) + "]"

    def sentence(self) -> str:
        """One line for the report; empty when every claim is decided."""
        if not self.rows:
            return ""
        numbered = [r for r in self.rows if r["seeds"] is not None]
        bits = [f"{len(self.rows)} claim × recipe pair(s) are inconclusive."]
        if numbered:
            bits.append(f"{len(numbered)} would be decided with {self.covering} seeds per side "
                        f"(`seeds: {self.setting()}`; only the new seeds train).")
        if self.unmeasured:
            bits.append(f"{self.unmeasured} need at least 2 seeds per side before their training noise can be "
                        "measured and a number planned.")
        if self.unreachable:
            bits.append(f"{self.unreachable} cannot be decided by more seeds (see each claim's reason).")
        return " ".join(bits)


def plan_seeds(table: pd.DataFrame) -> SeedsPlan:
    """The seeds plan from claims.csv's table (its ``seeds_needed`` and ``seeds_needed_note`` columns)."""
    rows = []
    for _, r in table[table["verdict"] == INCONCLUSIVE].iterrows():
        seeds = int(r["seeds_needed"]) if pd.notna(r["seeds_needed"]) else None
        why = r["seeds_needed_note"] if isinstance(r["seeds_needed_note"], str) and r["seeds_needed_note"] else \
            r["reason"]
        rows.append({"claim": r["claim"], "recipe": r["recipe"], "text": r["text"], "seeds": seeds, "why": why})
    numbers = [r["seeds"] for r in rows if r["seeds"] is not None]
    unmeasured = sum(r["seeds"] is None and r["why"] == stats.UNMEASURED for r in rows)
    covering = max(numbers) if numbers else (2 if unmeasured else None)
    return SeedsPlan(rows, covering, unmeasured, len(rows) - len(numbers) - unmeasured)
