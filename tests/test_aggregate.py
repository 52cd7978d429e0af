"""Aggregation and the verdict rule, on constructed inputs whose answer is known."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cnnbench.aggregate import FAILS, HOLDS, INCONCLUSIVE, aggregate, collect_runs, instability
from cnnbench.stats import IMAGES_ONLY
from cnnbench.cli import main
from cnnbench.errors import DataError
from study_fixture import clean_top1, make_study

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
    assert len(claims) == len(study.cfg.recipes) * len(study.cfg.claims)  # smoke tunes every variant
    runs = pd.read_csv(study.summary / "runs.csv")
    assert len(runs) == len(study.cfg.runs) == 17 * 3 * 3  # variants x recipes (lab, fast, tuned) x seeds
    variants = pd.read_csv(study.summary / "variants.csv")
    row = variants[(variants["variant"] == "cifar10-resnet18_small_stem") & (variants["recipe"] == "fast")].iloc[0]
    assert row["n"] == 3 and row["test_top1_mean"] == pytest.approx(71.0) and row["test_top1_std"] == pytest.approx(1.0)
    summary = json.loads((study.summary / "summary.json").read_text())
    for recipe, counts in summary["verdicts"].items():
        assert counts == claims[claims["recipe"] == recipe]["verdict"].value_counts().to_dict()
    assert summary["seeds"] == [0, 1, 2] and summary["recipes"] == ["lab", "fast", "tuned"]


def test_one_seed_decides_accuracy_claims_from_the_test_set_alone(tmp_path):
    study = make_study(tmp_path, seeds=[0])
    claims = pd.read_csv(study.summary / "claims.csv", keep_default_na=False, na_values=[""])
    accuracy = claims[claims["metric"] == "test_top1"]
    assert (accuracy["noise"] == IMAGES_ONLY).all() and accuracy["paired"].all()
    # the fixture's test splits: 1000 images per class up to 10 classes (CIFAR-10: 10,000; cifar5: 5,000)
    sizes = {v: 1000 * len(study.cfg.dataset("cifar5")["classes"]) if v.startswith("cifar5-") else 10_000
             for v in accuracy["a"]}
    assert list(accuracy["n_images"]) == [sizes[v] for v in accuracy["a"]] and set(sizes.values()) == {5_000, 10_000}
    small_stem = accuracy.set_index(["claim", "recipe"]).loc[("small-stem", "lab")]
    assert small_stem["verdict"] == HOLDS                       # 88.45 vs 83.92 % on 10,000 images
    assert small_stem["diff"] == pytest.approx(88.45 - 83.92, abs=0.011)
    instability_claims = claims[claims["metric"] == "instability"]
    assert (instability_claims["verdict"] == INCONCLUSIVE).all()  # one value per side: no spread, not tested
    assert instability_claims["p_adjusted"].isna().all()
    assert (claims["n_a"] == 1).all()


def test_verdicts_use_holm_adjusted_p_over_the_whole_study(tmp_path):
    study = make_study(tmp_path, seeds=[0, 1, 2])
    claims = pd.read_csv(study.summary / "claims.csv", keep_default_na=False, na_values=[""])
    tested = claims[claims["p"].notna()]
    m = len(tested)
    assert m == json.loads((study.summary / "summary.json").read_text())["rule"]["tests"]
    smallest = tested.sort_values("p").iloc[0]
    assert smallest["p_adjusted"] == pytest.approx(min(1.0, m * smallest["p"]))  # Holm's first step
    assert (tested["p_adjusted"] >= tested["p"]).all()
    for _, row in claims.iterrows():  # a decided greater/less claim has an adjusted p below alpha
        if row["verdict"] != INCONCLUSIVE and row["metric"] != "params":
            assert row["p_adjusted"] < 0.05, row.to_dict()


def test_rerun_writes_byte_identical_files(tmp_path):
    study = make_study(tmp_path, seeds=[0, 1])
    first = {f: (study.summary / f).read_bytes() for f in ("claims.csv", "variants.csv", "summary.json")}
    aggregate(study.cfg, study.runs, study.summary)
    assert {f: (study.summary / f).read_bytes() for f in first} == first


def test_stale_predictions_are_named(tmp_path):
    study = make_study(tmp_path, seeds=[0], run_aggregate=False)
    run = study.runs / "cifar10-resnet18" / "lab" / "seed0"
    lines = (run / "predictions.csv").read_text().splitlines()
    (run / "predictions.csv").write_text("\n".join(lines[:-5]) + "\n")
    with pytest.raises(DataError, match=r"seed0/predictions.csv: 9995 images .* disagree with metrics.json"):
        collect_runs(study.cfg, study.runs)


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
    assert json.loads((study.summary / "summary.json").read_text())["verdicts"] == {r: {} for r in study.cfg.recipes}


def test_clean_test_top1_follows_the_constructed_leaks(tmp_path):
    # the fixture marks the easiest 10 % of the test images leaked, and every run gets those right
    study = make_study(tmp_path, seeds=[0, 1, 2], accuracy=lambda v, r, s, d: {0: 88.0, 1: 88.5, 2: 89.5}[s])
    variants = pd.read_csv(study.summary / "variants.csv")
    row = variants[(variants["variant"] == "cifar10-resnet18") & (variants["recipe"] == "lab")].iloc[0]
    # 8800, 8850 and 8950 of 10,000 right, 1000 of them leaked: 7800, 7850, 7950 of 9000 clean images
    assert row["test_images_clean"] == 9000 and row["test_images"] == 10_000
    assert row["test_top1_clean_mean"] == pytest.approx(100 * 7866.6667 / 9000, abs=1e-4)
    assert row["test_top1_clean_std"] == pytest.approx(100 * pd.Series([7800, 7850, 7950]).std() / 9000)
    assert row["test_top1_clean_ci_low"] < row["test_top1_clean_mean"] < row["test_top1_clean_ci_high"]
    assert row["test_top1_mean"] == pytest.approx(88.6667, abs=1e-4)
    runs = pd.read_csv(study.summary / "runs.csv")
    bf = runs[runs["dataset"] == "butterflies"].iloc[0]
    assert bf["test_images_clean"] == round(0.9 * bf["test_images"])
    assert bf["test_top1_clean"] == pytest.approx(clean_top1(bf["test_top1"], int(bf["test_images"])), abs=1e-9)
    # the count is written as an integer, not 9000.0
    assert ",9000," in (study.summary / "variants.csv").read_text()


def test_clean_numbers_are_empty_without_an_audit_or_for_some_seeds_only(tmp_path):
    study = make_study(tmp_path, seeds=[0, 1], audit=False)
    variants = pd.read_csv(study.summary / "variants.csv")
    assert variants["test_top1_clean_mean"].isna().all() and variants["test_images_clean"].isna().all()
    assert variants["test_top1_mean"].notna().all()
    # one seed re-evaluated after the audit: a mean over that seed alone would pass for the variant's
    run = study.runs / "cifar10-resnet18" / "lab" / "seed1"
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps(dict(metrics, test_images_clean=9999, test_top1_clean=metrics["test_top1"])))
    lines = (run / "predictions.csv").read_text().splitlines()
    (run / "predictions.csv").write_text("\n".join([lines[0] + ",clean", *(f"{x},{int(i > 0)}" for i, x in enumerate(lines[1:]))]) + "\n")
    with pytest.raises(DataError, match=r"seed1/predictions.csv: 9999 clean images at top-1 .* disagree with metrics.json"):
        collect_runs(study.cfg, study.runs)
    correct = [x.split(",")[0] == x.split(",")[1] for x in lines[2:]]
    (run / "metrics.json").write_text(json.dumps(dict(metrics, test_images_clean=9999,
                                                      test_top1_clean=sum(correct) / len(correct))))
    aggregate(study.cfg, study.runs, study.summary)
    runs = pd.read_csv(study.summary / "runs.csv").set_index(["variant", "recipe", "seed"])
    assert runs.loc[("cifar10-resnet18", "lab", 1), "test_images_clean"] == 9999
    assert pd.isna(runs.loc[("cifar10-resnet18", "lab", 0), "test_images_clean"])
    variants = pd.read_csv(study.summary / "variants.csv").set_index(["variant", "recipe"])
    assert pd.isna(variants.loc[("cifar10-resnet18", "lab"), "test_top1_clean_mean"])
    assert pd.isna(variants.loc[("cifar10-resnet18", "lab"), "test_images_clean"])


def test_stale_clean_column_is_named(tmp_path):
    study = make_study(tmp_path, seeds=[0], run_aggregate=False)
    run = study.runs / "cifar10-resnet18" / "lab" / "seed0"
    lines = (run / "predictions.csv").read_text().splitlines()
    (run / "predictions.csv").write_text("\n".join(x.rsplit(",", 1)[0] for x in lines) + "\n")  # no clean column
    with pytest.raises(DataError, match=r"seed0/predictions.csv: no `clean` column, but metrics.json counts 9000"):
        collect_runs(study.cfg, study.runs)
    (run / "predictions.csv").write_text("\n".join([lines[0], *(x[:-1] + "yes" for x in lines[1:])]) + "\n")
    with pytest.raises(DataError, match=r"seed0/predictions.csv: the `clean` column must hold 1 or 0"):
        collect_runs(study.cfg, study.runs)
