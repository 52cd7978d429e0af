"""Aggregation and the verdict rule, on constructed inputs whose answer is known."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cnnbench.aggregate import FAILS, HOLDS, INCONCLUSIVE, collect_runs, compare, instability
from cnnbench.cli import main
from cnnbench.errors import DataError
from study_fixture import make_study

RULE = {"alpha": 0.05, "margin": 2.0}


def test_welch_p_value_and_interval_match_the_textbook():
    # a = 1,2,3 and b = 4,5,6: t = -3 / sqrt(1/3 + 1/3) = -3.674 with 4 degrees of freedom, p = 0.0213
    r = compare([1, 2, 3], [4, 5, 6], "less", **RULE)
    assert r["diff"] == pytest.approx(-3.0)
    assert r["p"] == pytest.approx(0.02131, abs=1e-4)
    # 95 % CI: -3 +- t(0.975, 4) * 0.8165 = -3 +- 2.776 * 0.8165
    assert r["ci_low"] == pytest.approx(-3 - 2.7764 * 0.81650, abs=1e-3)
    assert r["ci_high"] == pytest.approx(-3 + 2.7764 * 0.81650, abs=1e-3)
    assert r["verdict"] == HOLDS and (r["n_a"], r["n_b"]) == (3, 3)


@pytest.mark.parametrize(
    "a, b, expect, verdict",
    [
        ([88.1, 88.5, 88.9], [83.5, 84.0, 84.2], "greater", HOLDS),
        ([88.1, 88.5, 88.9], [83.5, 84.0, 84.2], "less", FAILS),
        ([83.5, 84.0, 84.2], [88.1, 88.5, 88.9], "greater", FAILS),
        ([84.0, 86.0, 85.0], [85.5, 84.0, 84.9], "greater", INCONCLUSIVE),   # overlapping seeds
        ([84.0], [80.0], "greater", INCONCLUSIVE),                           # one seed: no variance
        ([84.0, 84.3], [80.0], "greater", INCONCLUSIVE),
        ([84.0, 84.2, 84.1], [84.1, 83.9, 84.0], "similar", HOLDS),          # CI inside +-2
        ([90.0, 90.2, 90.1], [80.1, 79.9, 80.0], "similar", FAILS),          # CI entirely outside
        ([84.0, 88.0, 80.0], [84.0, 84.5, 83.5], "similar", INCONCLUSIVE),   # CI overlaps the margin
        ([5.0, 5.0, 5.0], [4.0, 4.0, 4.0], "greater", HOLDS),                # no spread at all
        ([5.0, 5.0, 5.0], [5.0, 5.0, 5.0], "greater", INCONCLUSIVE),
    ],
)
def test_verdicts(a, b, expect, verdict):
    r = compare(a, b, expect, **RULE)
    assert r["verdict"] == verdict, r
    if len(a) < 2 or len(b) < 2:
        assert "fewer than 2 seeds" in r["reason"]


def test_exact_metric_is_decided_with_one_seed():
    assert compare([3.5e6], [11.2e6], "less", exact=True, **RULE)["verdict"] == HOLDS
    r = compare([11.2e6], [3.5e6], "less", exact=True, **RULE)
    assert r["verdict"] == FAILS and r["reason"].startswith("exact")


def test_nan_values_are_dropped_not_counted():
    r = compare([float("nan"), 1.0, 2.0, 3.0], [4, 5, 6], "less", **RULE)
    assert r["n_a"] == 3 and r["verdict"] == HOLDS


def test_instability_counts_only_drops():
    assert instability(pd.Series([0.1, 0.3, 0.2, 0.4])) == pytest.approx(10 / 3)  # one 10-point drop in 3 steps
    assert instability(pd.Series([0.1, 0.2, 0.3])) == 0.0                         # steady learning is stable
    assert pd.isna(instability(pd.Series([0.5])))


def test_study_claims_follow_the_constructed_numbers(tmp_path):
    # The small stem made clearly worse than the 7x7 stem under the fast recipe only.
    def accuracy(variant, recipe, seed, default):
        if variant == "cifar10-resnet18_small_stem" and recipe == "fast":
            return 70.0 + seed
        return default

    study = make_study(tmp_path, seeds=[0, 1, 2], accuracy=accuracy)
    claims = pd.read_csv(study.summary / "claims.csv")
    verdict = claims.set_index(["claim", "recipe"])["verdict"]
    assert verdict["small-stem", "lab"] == HOLDS          # 88.45 vs 83.92 +- seed noise
    assert verdict["small-stem", "fast"] == FAILS         # 71 vs 86.9
    assert verdict["mobilenet-smaller", "lab"] == FAILS   # the fixture gives later variants more parameters
    assert len(claims) == 2 * len(study.cfg.claims)
    runs = pd.read_csv(study.summary / "runs.csv")
    assert len(runs) == len(study.cfg.runs) == 17 * 2 * 3
    variants = pd.read_csv(study.summary / "variants.csv")
    row = variants[(variants["variant"] == "cifar10-resnet18_small_stem") & (variants["recipe"] == "fast")].iloc[0]
    assert row["n"] == 3 and row["test_top1_mean"] == pytest.approx(71.0) and row["test_top1_std"] == pytest.approx(1.0)
    summary = json.loads((study.summary / "summary.json").read_text())
    for recipe, counts in summary["verdicts"].items():
        assert counts == claims[claims["recipe"] == recipe]["verdict"].value_counts().to_dict()
    assert summary["seeds"] == [0, 1, 2] and summary["recipes"] == ["lab", "fast"]


def test_one_seed_leaves_every_seed_dependent_claim_inconclusive(tmp_path):
    study = make_study(tmp_path, seeds=[0])
    claims = pd.read_csv(study.summary / "claims.csv")
    decided = claims[claims["verdict"] != INCONCLUSIVE]
    assert set(decided["metric"]) == {"params"}  # only the exact comparison decides with n = 1
    assert (claims["n_a"] == 1).all()


def test_missing_or_foreign_run_is_named(tmp_path):
    study = make_study(tmp_path, seeds=[0], run_aggregate=False)
    run = study.runs / "cifar10-resnet18" / "fast" / "seed0"
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps(dict(metrics, seed=5)))
    with pytest.raises(DataError, match=r"seed0/metrics.json: holds run cifar10-resnet18/fast/seed5"):
        collect_runs(study.cfg, study.runs)
    (run / "metrics.json").unlink()
    with pytest.raises(DataError, match=r"cifar10-resnet18/fast/seed0/metrics.json: missing.*"
                                                r"cnnbench evaluate --variant cifar10-resnet18 --recipe fast --seed 0"):
        collect_runs(study.cfg, study.runs)


def test_aggregate_command(tmp_path, capsys):
    study = make_study(tmp_path, seeds=[0, 1], run_aggregate=False)
    out = tmp_path / "summary"
    assert main(["aggregate", "--params", str(study.params), "--runs", str(study.runs), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"runs.csv", "variants.csv", "claims.csv", "summary.json"}
    (study.runs / "cifar10-resnet18" / "lab" / "seed1" / "history.csv").unlink()
    assert main(["aggregate", "--params", str(study.params), "--runs", str(study.runs), "--out", str(out)]) == 1
    assert "history.csv: missing" in capsys.readouterr().err


def test_a_study_without_claims_still_aggregates_and_reports(tmp_path):
    def no_claims(doc):
        doc["claims"] = []

    study = make_study(tmp_path, seeds=[0, 1], edit=no_claims)
    claims = pd.read_csv(study.summary / "claims.csv")
    assert claims.empty and "verdict" in claims.columns
    assert json.loads((study.summary / "summary.json").read_text())["verdicts"] == {"lab": {}, "fast": {}}
