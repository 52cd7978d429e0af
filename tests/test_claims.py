"""The claims' verdicts on constructed runs whose answer is known: each rule of ``claims`` against an
independent computation (scipy), the family-wise correction, and the seeds plan."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from cnnbench import stats
from cnnbench.claims import (EPOCHS_ONLY, FAILS, HOLDS, INCONCLUSIVE, Rule, RunResult, evaluate_claims,
                             plan_seeds)
from cnnbench.cli import main

RULE = Rule(alpha=0.05, correction="holm", similar_margin=2.0, power=0.8, seed=0, draws=2000)
CLASSES = np.array([f"c{i}" for i in range(10)])


def run(seed: int, correct, *, values: dict | None = None, seconds=(1.0, 1.0)) -> RunResult:
    correct = np.asarray(correct, dtype=bool)
    actual = np.resize(CLASSES, correct.size)
    values = {"test_top1": 100 * correct.mean(), "top1_kept": math.nan, **(values or {})}
    return RunResult(seed=seed, values=values, actual=actual, correct=correct,
                     epoch_seconds=np.asarray(seconds, dtype=float), kept=np.ones(correct.size, dtype=bool))


def claim(cid: str, metric: str = "test_top1", expect: str = "greater", a: str = "A", b: str = "B") -> dict:
    return {"id": cid, "report": "test", "text": cid, "metric": metric, "a": a, "b": b, "expect": expect}


def table(claims: list[dict], runs: dict, rule: Rule = RULE) -> pd.DataFrame:
    out, _ = evaluate_claims(claims, ["lab"], runs, rule)
    return out.set_index("claim")


def value_runs(metric: str, values: list[float]) -> list[RunResult]:
    return [run(i, [1, 0], values={metric: v}, seconds=(v, v)) for i, v in enumerate(values)]


def test_one_run_per_side_is_mcnemars_exact_test():
    # a right where b is wrong on 12 images, b right where a is wrong on 3; 85 images agree
    a = np.array([1] * 60 + [1] * 12 + [0] * 3 + [0] * 25)
    b = np.array([1] * 60 + [0] * 12 + [1] * 3 + [0] * 25)
    row = table([claim("x")], {("A", "lab"): [run(0, a)], ("B", "lab"): [run(0, b)]}).loc["x"]
    assert row["p"] == pytest.approx(sps.binomtest(12, 15, 0.5).pvalue)
    assert row["diff"] == pytest.approx(9.0) and row["n_images"] == 100 and row["paired"]
    assert row["noise"] == stats.IMAGES_ONLY and row["verdict"] == HOLDS
    assert row["p_adjusted"] == row["p"]  # a family of one


def test_family_wise_correction_is_holm():
    # three claims on run values with known Welch p-values; Holm on them by hand (Holm 1979)
    runs = {("A", "lab"): value_runs("instability", [1.0, 2.0, 3.0]),
            ("B", "lab"): value_runs("instability", [4.0, 5.0, 6.0]),
            ("C", "lab"): value_runs("instability", [2.9, 3.4, 3.9]),
            ("D", "lab"): value_runs("instability", [2.0, 3.0, 4.0])}
    claims = [claim("ab", "instability", "less", "A", "B"), claim("ac", "instability", "less", "A", "C"),
              claim("ad", "instability", "less", "A", "D")]
    out = table(claims, runs)
    raw = [sps.ttest_ind([1.0, 2.0, 3.0], [r.values["instability"] for r in runs[(x, "lab")]],
                         equal_var=False).pvalue for x in "BCD"]
    assert list(out["p"]) == pytest.approx(raw)
    order = np.argsort(raw)
    expected = np.empty(3)
    running = 0.0
    for step, i in enumerate(order):
        running = max(running, min(1.0, (3 - step) * raw[i]))
        expected[i] = running
    assert list(out["p_adjusted"]) == pytest.approx(expected)
    decided = out["p_adjusted"] < 0.05
    assert list(out["verdict"]) == [HOLDS if d else INCONCLUSIVE for d in decided]
    assert (out["p"] < 0.05).sum() > decided.sum()  # a raw p below alpha that the correction does not let through
    assert all("3 tests" in reason for reason in out["reason"])


@pytest.mark.parametrize(
    "a, b, expect, verdict",
    [
        ([88.1, 88.5, 88.9], [83.5, 84.0, 84.2], "greater", HOLDS),
        ([88.1, 88.5, 88.9], [83.5, 84.0, 84.2], "less", FAILS),
        ([84.0, 86.0, 85.0], [85.5, 84.0, 84.9], "greater", INCONCLUSIVE),   # overlapping seeds
        ([84.0], [80.0], "greater", INCONCLUSIVE),                           # one run: no spread, not tested
        ([84.0, 84.2, 84.1], [84.1, 83.9, 84.0], "similar", HOLDS),          # inside +-2
        ([90.0, 90.2, 90.1], [80.1, 79.9, 80.0], "similar", FAILS),          # entirely outside
        ([84.0, 88.0, 80.0], [84.0, 84.5, 83.5], "similar", INCONCLUSIVE),   # overlaps the margin
        ([5.0, 5.0, 5.0], [4.0, 4.0, 4.0], "greater", HOLDS),                # no spread at all
        ([5.0, 5.0, 5.0], [5.0, 5.0, 5.0], "greater", INCONCLUSIVE),
    ],
)
def test_run_value_verdicts(a, b, expect, verdict):
    out = table([claim("x", "instability", expect)],
                {("A", "lab"): value_runs("instability", a), ("B", "lab"): value_runs("instability", b)})
    row = out.loc["x"]
    assert row["verdict"] == verdict, row.to_dict()
    if len(a) > 1 and np.std(a) + np.std(b) > 0 and expect != "similar":
        assert row["p"] == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue)


def test_epoch_seconds_with_one_run_per_side_uses_the_epochs_after_the_first():
    fast = [run(0, [1, 0], values={"epoch_seconds": 2.0}, seconds=[9.0, 1.9, 2.0, 2.1])]
    slow = [run(0, [1, 0], values={"epoch_seconds": 3.0}, seconds=[9.0, 2.9, 3.0, 3.1])]
    row = table([claim("t", "epoch_seconds", "less")], {("A", "lab"): fast, ("B", "lab"): slow}).loc["t"]
    assert row["noise"] == EPOCHS_ONLY and row["verdict"] == HOLDS
    assert row["p"] == pytest.approx(sps.ttest_ind([1.9, 2.0, 2.1], [2.9, 3.0, 3.1], equal_var=False).pvalue)


def test_exact_parameter_counts_are_not_in_the_family():
    runs = {("A", "lab"): value_runs("params", [3.5e6]), ("B", "lab"): value_runs("params", [11.2e6])}
    out, family = evaluate_claims([claim("p", "params", "less")], ["lab"], runs, RULE)
    assert out.iloc[0]["verdict"] == HOLDS and out.iloc[0]["reason"].startswith("exact") and family == 0


def test_missing_runs_and_one_class_predictions():
    everything_one_class = run(0, np.zeros(200))            # predicted the same class for every image: 10 % right
    everything_one_class.correct[::10] = True
    good = run(0, np.r_[np.ones(150), np.zeros(50)])
    out = table([claim("gone", b="nowhere"), claim("flat")],
                {("A", "lab"): [good], ("B", "lab"): [everything_one_class]})
    assert out.loc["gone", "verdict"] == INCONCLUSIVE and "no runs on side b" in out.loc["gone", "reason"]
    assert math.isnan(out.loc["gone", "p_adjusted"])
    assert out.loc["flat", "verdict"] == HOLDS and out.loc["flat", "diff"] == pytest.approx(65.0)


def test_a_claim_is_left_out_under_a_recipe_that_does_not_train_both_its_variants():
    good, poor = run(0, np.r_[np.ones(150), np.zeros(50)]), run(0, np.r_[np.ones(50), np.zeros(150)])
    runs = {("A", "lab"): [good], ("B", "lab"): [poor], ("C", "lab"): [poor],
            ("A", "tuned"): [good], ("C", "tuned"): [poor]}  # B is not tuned
    trained = lambda v, r: (v, r) in runs  # noqa: E731
    out, family = evaluate_claims([claim("ab"), claim("ac", b="C")], ["lab", "tuned"], runs, RULE, trained=trained)
    assert list(zip(out["claim"], out["recipe"])) == [("ab", "lab"), ("ac", "lab"), ("ac", "tuned")]
    assert family == 3  # the untrained pair is not in Holm's family
    everything, m = evaluate_claims([claim("ab")], ["lab", "tuned"], runs, RULE)  # no predicate: tested, no runs
    assert m == 1 and everything.iloc[1]["verdict"] == INCONCLUSIVE


def test_seeds_needed_is_the_plan_at_holms_strictest_level():
    g = np.random.default_rng(3)
    base = g.random(5000) < 0.8
    a = [run(s, base ^ (g.random(5000) < 0.02)) for s in range(3)]
    b = [run(s, base ^ (g.random(5000) < 0.021)) for s in range(3)]
    row = table([claim("x"), claim("y", a="B", b="A")], {("A", "lab"): a, ("B", "lab"): b}).loc["x"]
    assert row["verdict"] == INCONCLUSIVE  # 3 seeds, a difference of a few tenths of a point
    expected = stats.seeds_needed(row["diff"], row["std_a"], row["std_b"], 0.05 / 2, 0.8, image_var=_image_var(a, b))
    assert row["seeds_needed_note"] == expected.reason
    assert (pd.isna(row["seeds_needed"]) and expected.n is None) or row["seeds_needed"] == expected.n


def _image_var(a: list[RunResult], b: list[RunResult]) -> float:
    r = stats.two_level_bootstrap([x.correct.astype(float) for x in a], [x.correct.astype(float) for x in b],
                                  np.random.default_rng(0), 10)
    return 100 ** 2 * r.image_var


def test_plan_seeds_covers_every_claim_with_a_number():
    rows = pd.DataFrame([
        {"claim": "a", "recipe": "lab", "text": "a", "verdict": INCONCLUSIVE, "seeds_needed": 5,
         "seeds_needed_note": "Welch", "reason": "p"},
        {"claim": "b", "recipe": "lab", "text": "b", "verdict": INCONCLUSIVE, "seeds_needed": 12,
         "seeds_needed_note": "Welch", "reason": "p"},
        {"claim": "c", "recipe": "lab", "text": "c", "verdict": INCONCLUSIVE, "seeds_needed": None,
         "seeds_needed_note": stats.UNMEASURED, "reason": "p"},
        {"claim": "d", "recipe": "lab", "text": "d", "verdict": INCONCLUSIVE, "seeds_needed": None,
         "seeds_needed_note": "not reachable: ...", "reason": "p"},
        {"claim": "e", "recipe": "lab", "text": "e", "verdict": HOLDS, "seeds_needed": None,
         "seeds_needed_note": "", "reason": "p"},
    ])
    plan = plan_seeds(rows)
    assert (plan.covering, plan.unmeasured, plan.unreachable, len(plan.rows)) == (12, 1, 1, 4)
    assert plan.setting() == "[" + ", ".join(map(str, range(12))) + "]"
    only_unmeasured = plan_seeds(rows[rows["claim"] == "c"])
    assert only_unmeasured.covering == 2 and "at least 2 seeds per side" in only_unmeasured.sentence()


def test_plan_seeds_command(tmp_path, capsys):
    from study_fixture import make_study

    study = make_study(tmp_path, seeds=[0])
    assert main(["plan-seeds", "--params", str(study.params), "--summary", str(study.summary)]) == 0
    out = capsys.readouterr().out
    claims = pd.read_csv(study.summary / "claims.csv", keep_default_na=False, na_values=[""])
    for _, r in claims[claims["verdict"] == INCONCLUSIVE].iterrows():
        assert r["claim"] in out
    assert "set in params.yaml: profiles.smoke.seeds: [0, 1]" in out  # one seed: measure training noise first
    assert main(["plan-seeds", "--params", str(study.params), "--summary", str(tmp_path / "nowhere")]) == 1
    assert "claims.csv: missing; it is written by `cnnbench aggregate`" in capsys.readouterr().err
