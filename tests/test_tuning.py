"""Tuning: the params block, trials and their specs, the selection, and that the test split is never read."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from cnnbench import config as config_mod
from cnnbench import tuning
from cnnbench.cli import main
from cnnbench.config import ConfigError, from_raw, load
from cnnbench.data import packed
from cnnbench.errors import DataError
from cnnbench.pipeline import render_dvc_yaml
from cnnbench.train import run_trial

from test_train import CIFAR_CLASSES, make_prepared

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"


def raw_params() -> dict:
    return yaml.safe_load(PARAMS.read_text())


def smoke(edit=None) -> config_mod.Config:
    raw = raw_params()
    raw["profile"] = "smoke"
    if edit:
        edit(raw)
    return from_raw(raw, PARAMS)


# --- the params block ----------------------------------------------------------------------------
def test_grid_points_budget_and_trial_specs():
    cfg = load(PARAMS)  # full
    t = cfg.tuning
    assert t.grid == {"lr": [0.025, 0.05, 0.1, 0.2, 0.4]}  # {min: 0.025, max: 0.4, points: 5}, log-spaced
    assert [p.name for p in t.points] == ["lr0.025", "lr0.05", "lr0.1", "lr0.2", "lr0.4"]
    assert cfg.tuned_recipes == ["tuned"]
    assert len(cfg.trials) == len(cfg.variants) * 5 * 2
    trial = cfg.trial("cifar10-resnet18", "tuned", "lr0.2", 1000)
    base = cfg.run("cifar10-resnet18", "fast", 0)
    assert trial.train.optimizer.lr == 0.2
    assert trial.train.epochs == round(0.34 * base.train.epochs) == 17  # a third of its 50 epochs
    # everything else is the base recipe's
    assert trial.train.schedule == base.train.schedule and trial.train.label_smoothing == base.train.label_smoothing
    assert trial.recipe == "tuned" and trial.seed == 1000


def test_profile_replaces_grid_and_budget_as_a_whole():
    cfg = smoke()
    assert cfg.tuning.grid == {"lr": [0.05, 0.2]}
    assert cfg.tuning.budget == {"epochs": 1}
    assert cfg.trial("cifar10-resnet18", "tuned", "lr0.05", 1000).train.epochs == 1


def test_log_grid_and_point_names():
    assert tuning.log_grid({"min": 0.01, "max": 1.0, "points": 3}) == [0.01, 0.1, 1.0]
    assert tuning.point_name({"lr": 0.1, "weight_decay": 5e-4}) == "lr0.1-wd0.0005"
    t = tuning.Tuning(recipes={"tuned": "fast"}, grid={"lr": [0.1, 0.2], "weight_decay": [0.0, 1e-5]},
                      budget={"fraction": 0.5}, seeds=(0,), metric="final_val_acc", variants=())
    assert [p.name for p in t.points] == ["lr0.1-wd0", "lr0.1-wd1e-05", "lr0.2-wd0", "lr0.2-wd1e-05"]
    assert t.budget_epochs(5) == 2 and t.budget_epochs(1) == 1  # rounds, never below one epoch


def test_tuned_run_reads_the_chosen_values_and_its_identity_holds_them(tmp_path):
    cfg = smoke()
    cfg.tuning_root = tmp_path
    with pytest.raises(tuning.SelectionMissing, match="chosen.json: missing.*cnnbench select"):
        cfg.run("cifar10-resnet18", "tuned", 0)
    path = tuning.chosen_path(tmp_path, "cifar10-resnet18", "tuned")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"lr": 0.2}))
    first = cfg.run("cifar10-resnet18", "tuned", 0)
    assert first.train.optimizer.lr == 0.2 and first.train.epochs == cfg.run("cifar10-resnet18", "fast", 0).train.epochs
    path.write_text(json.dumps({"lr": 0.05}))
    assert cfg.run("cifar10-resnet18", "tuned", 0).hash != first.hash


def test_tuning_variants_limit_the_tuned_recipes_runs():
    cfg = load(PARAMS, profile="quick")
    assert set(cfg.tuning.variants) == set(cfg.variants_of("cifar10"))
    tuned_runs = {v for v, r, _ in cfg.runs if r == "tuned"}
    assert tuned_runs == set(cfg.variants_of("cifar10"))
    assert len(cfg.trials) == 7 * 3 * 1


# --- bad input: one line naming the key ---------------------------------------------------------
def _grid(values):
    def edit(raw):
        raw["tuning"]["grid"]["lr"] = values
        raw["profiles"]["smoke"].pop("tuning")
    return edit


@pytest.mark.parametrize("edit, message", [
    (_grid([]), r"tuning\.grid\.lr"),
    (_grid([0.1, -0.05]), r"tuning\.grid\.lr"),
    (_grid([0.0]), r"tuning\.grid\.lr"),
    (lambda raw: raw["tuning"].update(grid={}), r"tuning\.grid: must not be empty"),
    (lambda raw: raw["profiles"]["smoke"]["tuning"].update(budget={"epochs": 3}),
     r"tuning \(with profiles\.smoke\.tuning\)\.budget\.epochs: 3 is longer than the 2 epochs variant cifar10-resnet18"),
    (lambda raw: raw["tuning"]["recipes"]["tuned"].update(base="fastest"),
     r"tuning\.recipes\.tuned\.base: 'fastest' is not defined under recipes; allowed values: lab, fast"),
    (lambda raw: raw["tuning"].update(variants=["cifar10-resnet50"]),
     r"tuning\.variants\.0: 'cifar10-resnet50' is not a variant of the study"),
    (lambda raw: raw["tuning"]["recipes"].update(fast={"base": "lab"}),
     r"tuning\.recipes\.fast: 'fast' is already a recipe"),
    (lambda raw: raw.update(recipes_in_study=["lab", "tunned"]),
     r"recipes_in_study\.1: 'tunned' is not defined under recipes or tuning\.recipes"),
])
def test_bad_tuning_config_is_one_line_naming_the_key(edit, message):
    with pytest.raises(ConfigError, match=message) as info:
        smoke(edit)
    assert "\n" not in str(info.value)


def test_profile_tuning_without_a_tuning_block_is_refused():
    def edit(raw):
        raw.pop("tuning")
        raw["recipes_in_study"] = ["lab", "fast"]
    with pytest.raises(ConfigError, match=r"profiles\.quick\.tuning: params\.yaml has no top-level tuning block"):
        smoke(edit)


def test_a_study_without_tuning_has_no_trials_and_its_dvc_yaml_no_tuning_stages():
    def edit(raw):
        raw.pop("tuning")
        raw["recipes_in_study"] = ["lab", "fast"]
        for p in raw["profiles"].values():
            p.pop("tuning", None)
    cfg = smoke(edit)
    assert cfg.tuning is None and cfg.trials == [] and cfg.tuned_recipes == []
    text = render_dvc_yaml(cfg)
    stages = yaml.safe_load(text)["stages"]
    assert not [s for s in stages if s.startswith(("tune-", "select", "train-tuned-"))], list(stages)
    assert "recipe: ${recipes_in_study}" in text and "results/tuning" not in stages["plot"]["deps"]


# --- selection -----------------------------------------------------------------------------------
def _trial(point, values, seed, acc, diverged=False):
    return {"point": point, "values": values, "seed": seed, "val_acc": None if diverged else acc,
            "diverged": diverged, "epochs": 1, "seconds": 2.0}


def test_selection_takes_the_best_mean_over_seeds_and_scores_divergence_zero():
    t = tuning.Tuning(recipes={"tuned": "fast"}, grid={"lr": [0.05, 0.1, 0.4]}, budget={"epochs": 1},
                      seeds=(0, 1), metric="final_val_acc", variants=("v",))
    trials = [_trial("lr0.05", {"lr": 0.05}, 0, 0.50), _trial("lr0.05", {"lr": 0.05}, 1, 0.70),  # mean 0.60
              _trial("lr0.1", {"lr": 0.1}, 0, 0.64), _trial("lr0.1", {"lr": 0.1}, 1, 0.62),      # mean 0.63
              _trial("lr0.4", {"lr": 0.4}, 0, 0.99), _trial("lr0.4", {"lr": 0.4}, 1, None, diverged=True)]  # 0.495
    record = tuning.selection_record(t, "v", "tuned", trials)
    assert record["chosen"] == {"lr": 0.1} and record["chosen_point"] == "lr0.1"
    assert record["chosen_val_acc"] == pytest.approx(0.63)
    assert [p["mean_val_acc"] for p in record["points"]] == pytest.approx([0.60, 0.63, 0.495])
    assert record["at_grid_edge"] == [] and record["tuning_seconds"] == 12.0


def test_selection_breaks_ties_by_grid_order_and_flags_the_edge():
    t = tuning.Tuning(recipes={"tuned": "fast"}, grid={"lr": [0.05, 0.1]}, budget={"epochs": 1}, seeds=(0,),
                      metric="final_val_acc", variants=("v",))
    record = tuning.select(t, [_trial("lr0.05", {"lr": 0.05}, 0, 0.5), _trial("lr0.1", {"lr": 0.1}, 0, 0.5)])
    assert record["chosen_point"] == "lr0.05" and record["at_grid_edge"] == ["lr"]
    with pytest.raises(DataError, match="no trial of point lr0.1"):
        tuning.select(t, [_trial("lr0.05", {"lr": 0.05}, 0, 0.5)])


# --- trials on data: the test split is never read ------------------------------------------------
def _tune_all(cfg, prepared: Path, root: Path) -> dict:
    for variant, recipe, point, seed in cfg.trials:
        spec = cfg.trial(variant, recipe, point, seed)
        run_trial(spec, cfg.tuning.point(point).values, point, prepared,
                  tuning.trial_dir(root, variant, recipe, point, seed), root / ".ckpt" / point)
    return tuning.write_selection(cfg, "cifar10-resnet18", "tuned", root)


def _small_study(raw):
    raw["profiles"]["smoke"]["tuning"]["variants"] = ["cifar10-resnet18"]
    raw["profiles"]["smoke"]["train"].update(train_limit=None, max_batches_per_epoch=3, batch_size=32)


def test_tuning_never_reads_the_test_split(tmp_path, monkeypatch):
    cfg = smoke(_small_study)
    prepared = make_prepared(tmp_path / "clean", CIFAR_CLASSES)
    clean = _tune_all(cfg, prepared, tmp_path / "tuning-clean")

    # the same store with a test split of garbage: noise images, labels out of every range
    rng = np.random.default_rng(1)
    images = np.load(prepared / "test_images.npy")
    np.save(prepared / "test_images.npy", rng.integers(0, 256, size=images.shape, dtype=np.uint8))
    np.save(prepared / "test_labels.npy", np.full(len(images), 977, dtype=np.int64))
    opened = []
    real = packed.load_split
    monkeypatch.setattr(packed, "load_split", lambda d, split, **kw: opened.append(split) or real(d, split, **kw))
    garbage = _tune_all(cfg, prepared, tmp_path / "tuning-garbage")

    assert "test" not in opened and set(opened) == {"train", "val"}
    assert garbage["chosen"] == clean["chosen"]
    assert [t["val_acc"] for t in garbage["trials"]] == [t["val_acc"] for t in clean["trials"]]  # bit for bit
    assert all(0.0 <= t["val_acc"] <= 1.0 for t in clean["trials"])
    assert not list((tmp_path / "tuning-clean").rglob("model.pt"))  # a trial keeps no weights


def test_selection_refuses_a_trial_of_other_settings(tmp_path):
    cfg = smoke(_small_study)
    prepared = make_prepared(tmp_path / "data", CIFAR_CLASSES)
    _tune_all(cfg, prepared, tmp_path / "t")
    trial = tuning.trial_dir(tmp_path / "t", "cifar10-resnet18", "tuned", "lr0.2", 1000) / "trial.json"
    record = json.loads(trial.read_text())
    trial.write_text(json.dumps({**record, "settings_hash": "0" * 64}))
    with pytest.raises(DataError, match=r"lr0\.2/seed1000/trial\.json: a trial of other settings"):
        tuning.write_selection(cfg, "cifar10-resnet18", "tuned", tmp_path / "t")


def test_a_diverged_trial_is_recorded_not_failed(tmp_path):
    cfg = smoke(_small_study)
    prepared = make_prepared(tmp_path / "data", CIFAR_CLASSES)
    spec = cfg.trial("cifar10-resnet18", "tuned", "lr0.2", 1000)
    import dataclasses
    spec = dataclasses.replace(spec, train=dataclasses.replace(
        spec.train, optimizer=dataclasses.replace(spec.train.optimizer, lr=1e12)))
    record = run_trial(spec, {"lr": 1e12}, "lr1e+12", prepared, tmp_path / "trial", tmp_path / "ckpt")
    assert record["diverged"] is True and record["val_acc"] is None and "NaN or infinite" in record["why"]
    assert json.loads((tmp_path / "trial" / "trial.json").read_text())["diverged"] is True
    assert not (tmp_path / "ckpt" / "checkpoint.pt").exists()


# --- the CLI and dvc.yaml ------------------------------------------------------------------------
def test_tune_refuses_a_recipe_that_is_not_tuned(capsys):
    assert main(["--profile", "smoke", "tune", "--variant", "cifar10-resnet18", "--recipe", "lab", "--point", "lr0.2",
                 "--seed", "1000"]) == 2
    assert "--recipe lab: not a tuned recipe of recipes_in_study; allowed values: tuned" in capsys.readouterr().err


def test_dvc_yaml_has_one_tune_stage_per_point_and_adding_a_point_adds_only_its_stages():
    cfg = smoke()
    doc = yaml.safe_load(render_dvc_yaml(cfg))["stages"]
    tune = doc["tune-cifar10"]
    assert tune["matrix"]["point"] == ["lr0.05", "lr0.2"] and tune["matrix"]["seed"] == [1000]
    assert "results/tuning/cifar10-${item.variant}/${item.recipe}/chosen.json" in doc["train-tuned-cifar10"]["deps"]
    assert doc["train-cifar10"]["matrix"]["recipe"] == ["lab", "fast"]
    wider = smoke(lambda raw: raw["profiles"]["smoke"]["tuning"]["grid"].update(lr=[0.05, 0.1, 0.2]))
    doc2 = yaml.safe_load(render_dvc_yaml(wider))["stages"]
    assert doc2["tune-cifar10"]["matrix"]["point"] == ["lr0.05", "lr0.1", "lr0.2"]
    assert {k: v for k, v in doc2.items() if k not in ("tune-cifar10", "tune-cifar5", "tune-butterflies", "select")} \
        == {k: v for k, v in doc.items() if k not in ("tune-cifar10", "tune-cifar5", "tune-butterflies", "select")}
    assert "&id" not in render_dvc_yaml(cfg)  # no YAML anchors: each stage reads in full
    assert math.isclose(wider.tuning.grid["lr"][1], 0.1)


def test_the_report_header_adds_the_runs_up():
    from cnnbench.report import runs_count

    assert runs_count(load(PARAMS, profile="full")) == "17 variants × 3 recipes × 3 seed(s) = 153 runs"
    assert runs_count(load(PARAMS, profile="smoke")) == \
        "17 variants × 2 recipes + 6 tuned variants × 1 tuned recipe(s), × 1 seed(s) = 40 runs"
    assert runs_count(load(PARAMS, profile="quick")) == \
        "17 variants × 2 recipes + 7 tuned variants × 1 tuned recipe(s), × 1 seed(s) = 41 runs"


def test_a_tuned_runs_spec_file_ignores_what_tuning_replaces():
    """Under DVC a tuned run depends on its spec file and chosen.json: a variant's own lr (replaced by the
    grid) leaves the spec file as it is; its label smoothing changes it."""
    from cnnbench.pipeline import _run_doc

    def variant_train(**train):
        return lambda raw: raw["variants"]["cifar10"]["resnet18"].setdefault("train", {}).update(train)

    base = _run_doc(smoke(), "cifar10-resnet18", "tuned", 0)
    assert base["spec_before_tuning"]["train"]["optimizer"]["lr"] is None and base["tuned"] == ["lr"]
    assert _run_doc(smoke(variant_train(optimizer={"lr": 0.02})), "cifar10-resnet18", "tuned", 0) == base
    assert _run_doc(smoke(variant_train(label_smoothing=0.2)), "cifar10-resnet18", "tuned", 0) != base
