"""plot stage on constructed studies (tests/study_fixture.py): every variant x recipe x seed."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from PIL import Image
from study_fixture import make_study, tuning_score, write_selections

from cnnbench import plots as plots_mod
from cnnbench import selections as selections_mod
from cnnbench import stats
from cnnbench.errors import DataError
from cnnbench.plots import (best_model, curve_stats, pareto_frontier, plan_figures, plot_all, row_normalise,
                             unfiltered_variant)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BEST = ("butterflies-mobilenet_v2", "fast")  # made clearly the best butterfly model below
SEEDS = [0, 1, 2]
INDEX_KEYS = {"file", "dataset", "recipe", "kind", "title", "caption"}


def boost_best(variant, recipe, seed, default):
    return default + 25.0 if (variant, recipe) == BEST else default


def expected_files(cfg, filtering=("butterflies",)) -> list[str]:
    """Every data set's figures in display order; the filtering figure for the data sets ``filtering``."""
    names = []
    for ds in cfg.datasets:
        names += [f"learning_curves_{ds}_{r}.png" for r in cfg.recipes]
        names += [f"accuracy_{ds}.png", f"pareto_{ds}.png", f"confusion_{ds}.png", f"per_class_{ds}.png"]
        if ds in filtering:
            names.append(f"filtering_{ds}.png")
    return names


def assert_png(data: bytes, min_bytes: int = 8_000) -> None:
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
    with Image.open(io.BytesIO(data)) as im:
        assert 300 < im.width < 2500 and 250 < im.height < 2500
    assert b"Software" not in data and b"http" not in data and b"matplotlib" not in data.lower()


def plot_capturing(study, out):
    """plot_all, keeping every drawn matplotlib figure by file name (closed, still inspectable)."""
    figs = {}
    real = plots_mod._save

    def keep(fig, path):
        figs[path.name] = fig
        real(fig, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots_mod, "_save", keep)
        paths = plot_all(study.cfg, study.runs, study.summary, out)
    return paths, figs


@pytest.fixture(scope="module")
def study3(tmp_path_factory):
    study = make_study(tmp_path_factory.mktemp("study3"), seeds=SEEDS, accuracy=boost_best)
    paths, figs = plot_capturing(study, study.plots)
    study.paths, study.figs = paths, figs
    study.plan = plan_figures(study.cfg, study.runs, study.summary)
    return study


@pytest.fixture(scope="module")
def study1(tmp_path_factory):
    study = make_study(tmp_path_factory.mktemp("study1"), seeds=[0])
    paths, figs = plot_capturing(study, study.plots)
    study.paths, study.figs = paths, figs
    study.plan = plan_figures(study.cfg, study.runs, study.summary)
    return study


def error_bars(ax) -> int:
    """Bars of ``ax`` drawn with an error bar."""
    return sum(1 for c in ax.containers if getattr(c, "errorbar", None) is not None for _ in c)


def bands(fig) -> int:
    return sum(isinstance(c, PolyCollection) for ax in fig.axes for c in ax.collections)


# --- the whole stage ---------------------------------------------------------------------------


def test_plot_all_writes_every_figure_in_order(study3):
    cfg, out = study3.cfg, study3.plots
    assert cfg.datasets == ["cifar10", "cifar5", "butterflies"] and len(cfg.variants_of("butterflies")) == 5
    names = expected_files(cfg)
    assert names[:4] == ["learning_curves_cifar10_lab.png", "learning_curves_cifar10_fast.png",
                         "learning_curves_cifar10_tuned.png", "accuracy_cifar10.png"]
    assert study3.paths == [out / n for n in names]
    assert sorted(p.name for p in out.iterdir()) == sorted(names + ["figures.json"])
    for p in study3.paths:
        assert_png(p.read_bytes())
    # nothing left over beside the output (temporary or moved-aside directories)
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_figures_json_indexes_exactly_the_files_written(study3):
    index = json.loads((study3.plots / "figures.json").read_text())
    assert [e["file"] for e in index] == [p.name for p in study3.paths]
    for entry in index:
        assert set(entry) == INDEX_KEYS
        assert entry["title"].strip() and len(entry["caption"]) > 60
        assert entry["kind"] in plots_mod.KINDS
    by_file = {e["file"]: e for e in index}
    curves = by_file["learning_curves_butterflies_fast.png"]
    assert (curves["kind"], curves["dataset"], curves["recipe"]) == ("curves", "butterflies", "fast")
    assert "n = 3 seeds" in curves["title"] and "3 seeds" in curves["caption"]
    acc = by_file["accuracy_cifar10.png"]
    assert (acc["kind"], acc["dataset"], acc["recipe"]) == ("accuracy", "cifar10", None)
    assert "mean ± 1 standard deviation over 3 seeds" in acc["caption"]
    assert "diamonds" in acc["caption"] and "dots" in acc["caption"]
    assert "Pareto frontier" in by_file["pareto_cifar10.png"]["caption"]
    assert by_file["confusion_butterflies.png"]["kind"] == "confusion"
    assert "classes both" in by_file["filtering_butterflies.png"]["title"]
    assert [e["kind"] for e in index].count("curves") == len(study3.cfg.datasets) * len(study3.cfg.recipes)
    for kind in ("confusion", "per_class"):  # one of each per data set
        assert [e["dataset"] for e in index if e["kind"] == kind] == study3.cfg.datasets


def test_curves_have_a_band_per_variant_with_three_seeds(study3):
    fig = study3.figs["learning_curves_cifar10_lab.png"]
    variants = len(study3.cfg.variants_of("cifar10"))
    assert variants > 1 and bands(fig) == 2 * variants  # accuracy and loss panel, one band per variant
    assert "n = 3 seeds" in fig._suptitle.get_text()
    acc = study3.figs["accuracy_cifar10.png"].axes[0]
    assert error_bars(acc) == variants * len(study3.cfg.recipes)  # every bar: std over 3 seeds
    diamonds = [line for line in acc.lines if line.get_marker() == "D"]
    labs = [r for v in study3.cfg.variants_of("cifar10") for r in (study3.cfg.variant(v)["lab_report"] or [])
            if r.get("accuracy") is not None]
    assert labs and len(diamonds) == len(labs)


def test_one_seed_draws_no_band_and_no_error_bar(study1):
    for name, fig in study1.figs.items():
        if name.startswith("learning_curves_"):
            assert bands(fig) == 0, name
            assert "n = 1 seed" in fig._suptitle.get_text()
    acc = study1.figs["accuracy_cifar10.png"]
    assert error_bars(acc.axes[0]) == 0, "no error bars with one seed"
    index = json.loads((study1.plots / "figures.json").read_text())
    curves = [e for e in index if e["kind"] == "curves"]
    assert curves and all("no band" in e["caption"] for e in curves)
    assert all("no spread" in e["caption"] for e in index if e["kind"] in ("accuracy", "pareto"))
    # the planned data says the same: one run per variant, std undefined everywhere
    figure = next(f for f in study1.plan if f.kind == "curves")
    for c in figure.data["curves"].values():
        assert c["n"] == 1 and c["val_acc"]["std"].isna().all()


def test_plot_all_is_byte_stable_and_replaces_the_directory(study1, tmp_path):
    out = tmp_path / "plots"
    out.mkdir()
    (out / "stale.png").write_bytes(b"old")
    paths = plot_all(study1.cfg, study1.runs, study1.summary, out)
    assert "stale.png" not in {p.name for p in out.iterdir()}
    for new, old in zip(paths, study1.paths):
        assert new.read_bytes() == old.read_bytes(), new.name
    assert (out / "figures.json").read_text() == (study1.plots / "figures.json").read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --- helpers -----------------------------------------------------------------------------------


def test_curve_stats_mean_std_and_single_seed():
    h = lambda vals: pd.DataFrame({"epoch": range(1, len(vals) + 1), "val_acc": vals})  # noqa: E731
    one = curve_stats([h([0.1, 0.2, 0.3])], "val_acc", 100)
    assert list(one["epoch"]) == [1, 2, 3] and np.allclose(one["mean"], [10, 20, 30])
    assert one["std"].isna().all() and list(one["n"]) == [1, 1, 1]

    three = curve_stats([h([0.1, 0.2, 0.3]), h([0.3, 0.4, 0.5]), h([0.2, 0.3])], "val_acc", 100)
    assert list(three["n"]) == [3, 3, 2]
    assert np.allclose(three["mean"], [20, 30, 40])
    assert np.allclose(three["std"][:2], [10, 10])
    assert three["std"].iloc[2] == pytest.approx(np.std([30, 50], ddof=1))

    ragged = curve_stats([h([0.1, 0.2, 0.3]), h([0.3])], "val_acc")
    assert list(ragged["n"]) == [2, 1, 1] and not math.isnan(ragged["std"][0]) and ragged["std"][1:].isna().all()


def test_pareto_frontier_on_a_constructed_input():
    cost = [1, 2, 3, 4, 5, 2, 0.5, 6]
    acc = [50, 60, 55, 70, 65, 60, float("nan"), 70]
    # 2 and 4 are beaten by 1 and 3; 5 duplicates 1 (first kept); 6 has no accuracy; 7 ties 3 at a higher cost
    assert pareto_frontier(cost, acc) == [0, 1, 3]
    assert pareto_frontier([3, 2, 1], [1, 2, 3]) == [2]  # one point beats all
    assert pareto_frontier([1, 1, 2], [50, 60, 70]) == [1, 2]  # equal cost: only the more accurate
    assert pareto_frontier([], []) == []


def test_pareto_figure_uses_the_frontier_of_each_recipe(study3):
    figure = next(f for f in study3.plan if f.file == "pareto_cifar10.png")
    for recipe, data in figure.data["recipes"].items():
        pts = data["points"]
        assert [p["variant"] for p in pts] == study3.cfg.variants_of("cifar10")
        for key in ("params", "seconds"):
            front = data["frontier"][key]
            assert front == pareto_frontier([p[key] for p in pts], [p["acc"] for p in pts])
            # no point off the frontier beats a frontier point on both axes
            for i in front:
                assert not any(pts[j][key] <= pts[i][key] and pts[j]["acc"] > pts[i]["acc"] for j in range(len(pts)))
    # the fixture's cheapest CIFAR variant (params and time grow with the index) is always on it
    assert figure.data["recipes"]["lab"]["frontier"]["params"][0] == 0


def test_best_model_selection():
    frame = pd.DataFrame({"variant": ["x", "y", "z", "w"], "dataset": ["b", "b", "b", "c"],
                          "recipe": ["lab", "fast", "lab", "lab"], "test_top1_mean": [70.0, 80.0, float("nan"), 99.0]})
    assert best_model(frame, "b") == ("y", "fast")
    assert best_model(frame) == ("w", "lab")
    tie = frame.assign(test_top1_mean=[80.0, 80.0, 1.0, 1.0])
    assert best_model(tie, "b") == ("x", "lab")
    with pytest.raises(ValueError, match="no variant of nothing"):
        best_model(frame, "nothing")


def test_confusion_shows_the_best_butterfly_model_summed_over_seeds(study3):
    variants = pd.read_csv(study3.summary / "variants.csv")
    assert best_model(variants, "butterflies") == BEST
    figure = next(f for f in study3.plan if f.file == "confusion_butterflies.png")
    assert (figure.data["variant"], figure.data["recipe"], figure.data["n"]) == (*BEST, 3)
    assert "mobilenet_v2" in figure.title and "fast" in figure.title and "n = 3 seeds" in figure.title
    matrix = figure.data["matrix"]
    assert matrix.shape == (94, 94)  # a filtered model: the six noisy classes are gone
    assert (matrix.sum(axis=1) == 3 * 10).all()  # three seeds x 10 test images per class
    per_seed = [pd.read_csv(study3.runs / BEST[0] / BEST[1] / f"seed{s}" / "confusion.csv", index_col=0)
                for s in (0, 1, 2)]
    assert np.array_equal(matrix.to_numpy(), sum(m.to_numpy() for m in per_seed))
    fig = study3.figs["confusion_butterflies.png"]
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (94, 94) and np.allclose(np.asarray(image).sum(axis=1), 1.0)
    # 94 classes: too many to name (CONFUSION_NAMED), so the axes carry none and say so
    assert len(fig.axes[0].get_xticks()) == 0 and len(fig.axes[0].get_yticks()) == 0
    assert "94 classes in class order, not named" in fig.axes[0].get_xlabel()
    assert "too many to name" in figure.caption


def test_confusion_of_every_data_set_names_a_few_classes(study3):
    """CIFAR-10 gets its confusion matrix too: 10 classes, every one named and each cell's share written."""
    figure = next(f for f in study3.plan if f.file == "confusion_cifar10.png")
    assert figure.dataset == "cifar10" and figure.data["matrix"].shape == (10, 10)
    assert best_model(pd.read_csv(study3.summary / "variants.csv"), "cifar10") == (figure.data["variant"],
                                                                                   figure.data["recipe"])
    ax = study3.figs["confusion_cifar10.png"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"class {i}" for i in range(10)]
    shares = row_normalise(figure.data["matrix"]).to_numpy()
    assert len(ax.texts) == int((shares > 0).sum())  # a share in every non-empty cell
    assert "CIFAR-10" in figure.title and "every class named" in figure.caption


def test_per_class_highlights_exactly_the_noisy_classes(study3):
    cfg = study3.cfg
    noisy = set(cfg.dataset("butterflies")["noisy_classes"])
    assert len(noisy) == 6
    assert unfiltered_variant(cfg, "butterflies") == "butterflies-resnet18-unfiltered"
    assert unfiltered_variant(cfg, "cifar10") is None  # it lists no noisy class
    figure = next(f for f in study3.plan if f.file == "per_class_butterflies.png")
    assert figure.data["variant"] == "butterflies-resnet18-unfiltered" and not figure.data["fallback"]
    assert set(figure.data["highlighted"]) == noisy
    assert [p["recipe"] for p in figure.data["panels"]] == cfg.recipes
    for panel in figure.data["panels"]:
        assert len(panel["values"]) == 100 and panel["n"] == 3
        assert list(panel["values"]) == sorted(panel["values"])
    # what is drawn: every class named (100 <= LABELLED_CLASSES), worst at the top; the red bars and
    # the red names are the noisy classes, per panel
    fig = study3.figs["per_class_butterflies.png"]
    panels = [ax for ax in fig.axes if ax.patches]
    assert len(panels) == len(cfg.recipes)
    for ax, panel in zip(panels, figure.data["panels"]):
        labels = ax.get_yticklabels()
        assert [t.get_text() for t in labels] == list(panel["values"].index)
        assert {t.get_text() for t in labels if t.get_color() == plots_mod.HIGHLIGHT} == noisy
        red = [p for p in ax.patches if p.get_facecolor()[:3] == pytest.approx((0.839, 0.153, 0.157), abs=0.01)]
        assert len(red) == 6
        assert ax.get_ylim()[0] > ax.get_ylim()[1]  # inverted: the first (worst) class on top
    assert "datasets.butterflies.noisy_classes" in figure.caption and "left out" not in figure.caption


def test_per_class_of_a_data_set_without_noisy_classes_is_the_best_model(study3):
    figure = next(f for f in study3.plan if f.file == "per_class_cifar10.png")
    assert figure.data["fallback"] and figure.data["highlighted"] == [] and figure.data["noisy"] == []
    assert (figure.data["variant"], figure.recipe) == best_model(pd.read_csv(study3.summary / "variants.csv"),
                                                                 "cifar10")
    assert "noisy" not in figure.caption and "best model" in figure.caption
    assert len(figure.data["panels"][0]["values"]) == 10


def test_per_class_layout_grows_with_the_classes_and_drops_names_beyond_150():
    small, hundred, most, many = (plots_mod.per_class_layout(n, 2) for n in (10, 100, 150, 300))
    assert small["named"] and hundred["named"] and most["named"] and not many["named"]
    assert small["font"] > hundred["font"] >= most["font"] >= 5 and many["font"] is None
    assert small["height"] < hundred["height"] < most["height"]
    # a row per class at least as tall as its name, and the figure under 2,500 px at the plots' DPI
    assert most["height"] * 72 / 150 >= most["font"] and most["height"] * plots_mod.DPI < 2500
    assert many["height"] * plots_mod.DPI < 2500


def test_per_class_with_hundreds_of_classes_names_only_the_noisy_ones(tmp_path):
    classes = [f"c{i:03d}" for i in range(300)]
    values = pd.Series(np.linspace(0, 100, 300), index=classes)
    figure = plots_mod.Figure("per_class_big.png", "per_class", "big", "lab", "big: per-class test accuracy",
                              "caption", {"panels": [{"recipe": "lab", "values": values, "n": 1}],
                                          "highlighted": ["c007", "c250"]})
    captured = {}
    with pytest.MonkeyPatch.context() as mp:
        real = plots_mod._save
        mp.setattr(plots_mod, "_save", lambda fig, path: (captured.setdefault("fig", fig), real(fig, path)))
        plots_mod.draw(figure, tmp_path / figure.file)
    ax = captured["fig"].axes[0]
    assert len(ax.get_yticks()) == 0 and "300 classes, not named" in ax.get_ylabel()
    assert {t.get_text() for t in ax.texts} == {"c007", "c250"}
    assert_png((tmp_path / figure.file).read_bytes())


def test_filtering_figure_reads_top1_kept_per_recipe(study3):
    figure = next(f for f in study3.plan if f.kind == "filtering")
    runs = pd.read_csv(study3.summary / "runs.csv")
    (panel,) = figure.data["panels"]
    assert panel["claim"]["id"] == "butterfly-filtering"
    assert [p["recipe"] for p in panel["recipes"]] == study3.cfg.recipes
    for per in panel["recipes"]:
        for side in ("a", "b"):
            want = runs[(runs["variant"] == per[side]["variant"]) & (runs["recipe"] == per["recipe"])]
            assert per[side]["seeds"] == pytest.approx(list(want.sort_values("seed")["top1_kept"]))
            assert per[side]["mean"] == pytest.approx(want["top1_kept"].mean())
            assert per[side]["std"] == pytest.approx(want["top1_kept"].std(ddof=1))
    assert "classes both" in figure.title


# --- failures and smaller studies --------------------------------------------------------------


def test_an_interrupted_plot_leaves_no_output(study1, tmp_path, monkeypatch):
    drawn = []
    real = plots_mod.draw_curves

    def once_then_boom(figure, path):  # the first figure is written, the second fails
        if drawn:
            raise RuntimeError("disk full")
        drawn.append(path.name)
        real(figure, path)

    monkeypatch.setattr(plots_mod, "draw_curves", once_then_boom)
    out = tmp_path / "plots"
    with pytest.raises(RuntimeError, match="disk full"):
        plot_all(study1.cfg, study1.runs, study1.summary, out)
    assert drawn == ["learning_curves_cifar10_lab.png"], "the first figure is drawn before the failure"
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []
    # an existing output stays as it was
    out.mkdir()
    (out / "old.png").write_bytes(b"old")
    drawn.clear()
    with pytest.raises(RuntimeError, match="disk full"):
        plot_all(study1.cfg, study1.runs, study1.summary, out)
    assert [p.name for p in out.iterdir()] == ["old.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["plots"]


def test_a_stale_summary_is_refused(study3, tmp_path):
    summary = tmp_path / "summary"
    summary.mkdir()
    runs = pd.read_csv(study3.summary / "runs.csv")
    runs.iloc[1:].to_csv(summary / "runs.csv", index=False)
    (summary / "variants.csv").write_text((study3.summary / "variants.csv").read_text())
    with pytest.raises(DataError, match=r"no row for cifar10-resnet18/lab/seed0.*cnnbench aggregate"):
        plot_all(study3.cfg, study3.runs, summary, tmp_path / "plots")
    with pytest.raises(DataError, match="cnnbench aggregate"):
        plot_all(study3.cfg, study3.runs, tmp_path / "nowhere", tmp_path / "plots")
    assert not (tmp_path / "plots").exists()


def _drop_butterflies(doc):
    del doc["variants"]["butterflies"]
    doc["claims"] = [c for c in doc["claims"] if not c["a"].startswith("butterflies-")]


def test_no_butterfly_variants_no_butterfly_figures(tmp_path):
    study = make_study(tmp_path, seeds=[0], edit=_drop_butterflies)
    assert study.cfg.variants_of("butterflies") == []
    paths = plot_all(study.cfg, study.runs, study.summary, study.plots)
    names = [p.name for p in paths]
    assert names == expected_files(study.cfg, filtering=())
    assert not any("butterflies" in n for n in names)
    assert sorted(p.name for p in study.plots.iterdir()) == sorted(names + ["figures.json"])
    index = json.loads((study.plots / "figures.json").read_text())
    assert [e["file"] for e in index] == names and {e["dataset"] for e in index} == {"cifar10", "cifar5"}
    for p in paths:
        assert_png(p.read_bytes())


def test_no_filtering_claim_and_no_unfiltered_variant(tmp_path):
    def edit(doc):
        del doc["variants"]["butterflies"]["resnet18-unfiltered"]
        doc["claims"] = [c for c in doc["claims"] if c["metric"] != "top1_kept"]

    best = ("butterflies-resnet18_deep_stem", "lab")
    study = make_study(tmp_path, seeds=[0, 1], edit=edit,
                       accuracy=lambda v, r, s, d: d + (10.0 if (v, r) == best else 0.0))
    figures = plan_figures(study.cfg, study.runs, study.summary)
    assert [f.file for f in figures] == expected_files(study.cfg, filtering=())
    per_class = next(f for f in figures if f.file == "per_class_butterflies.png")
    # no variant keeps every class: the best model's per-class accuracy, nothing noisy to highlight
    assert unfiltered_variant(study.cfg, "butterflies") is None
    assert per_class.data["fallback"] and per_class.data["variant"] == "butterflies-resnet18_deep_stem"
    assert per_class.recipe == "lab" and per_class.data["highlighted"] == []
    assert len(per_class.data["panels"][0]["values"]) == 94


def test_without_a_filtering_claim_the_unfiltered_variant_meets_its_filtered_twin(tmp_path):
    """A data set with noisy classes and a variant that keeps them gets its filtering figure even when
    no claim compares them: beside the filtered variant of the same model."""
    def edit(doc):
        doc["claims"] = [c for c in doc["claims"] if c["metric"] != "top1_kept"]

    study = make_study(tmp_path, seeds=[0, 1], edit=edit)
    figure = next(f for f in plan_figures(study.cfg, study.runs, study.summary) if f.kind == "filtering")
    assert figure.file == "filtering_butterflies.png" and figure.dataset == "butterflies"
    (panel,) = figure.data["panels"]
    assert (panel["claim"]["a"], panel["claim"]["b"]) == ("butterflies-resnet18", "butterflies-resnet18-unfiltered")
    assert [(p["a"]["filtered"], p["b"]["filtered"]) for p in panel["recipes"]] == [(True, False)] * len(study.cfg.recipes)
    assert "no claim compares them" in figure.caption and "datasets.butterflies.noisy_classes" in figure.caption


# --- tuning ------------------------------------------------------------------------------------


def mobilenet_best_at_02(variant: str) -> float:
    return 0.2 if "mobilenet" in variant else 0.1


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """The quick profile (it tunes the CIFAR-10 variants only) with every selection written, 2 tuning seeds."""
    root = tmp_path_factory.mktemp("tuned")
    study = make_study(root, profile="quick", seeds=[0, 1])
    study.tuning = root / "results" / "tuning"
    study.selected = write_selections(study.cfg, study.tuning, best_lr=mobilenet_best_at_02)
    paths, figs = plot_capturing_tuning(study)
    study.paths, study.figs = paths, figs
    study.plan = {f.file: f for f in plan_figures(study.cfg, study.runs, study.summary, study.tuning)}
    return study


def plot_capturing_tuning(study):
    figs, real = {}, plots_mod._save

    def keep(fig, path):
        figs[path.name] = fig
        real(fig, path)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots_mod, "_save", keep)
        paths = plot_all(study.cfg, study.runs, study.summary, study.plots, tuning_root=study.tuning)
    return paths, figs


def test_tuning_figures_of_the_tuned_data_set_only(tuned):
    names = [p.name for p in tuned.paths]
    assert names.index("tuning_cifar10.png") == names.index("per_class_cifar10.png") + 1
    assert names.index("tuning_budget_cifar10.png") == names.index("tuning_cifar10.png") + 1
    assert not [n for n in names if n.startswith("tuning") and "cifar10" not in n]  # cifar5, butterflies: not tuned
    for name in ("tuning_cifar10.png", "tuning_budget_cifar10.png"):
        assert_png((tuned.plots / name).read_bytes())
    index = {e["file"]: e for e in json.loads((tuned.plots / "figures.json").read_text())}
    assert index["tuning_cifar10.png"]["kind"] == "tuning" and index["tuning_cifar10.png"]["recipe"] == "tuned"
    assert index["tuning_budget_cifar10.png"]["kind"] == "tuning_budget"


def test_tuning_sweep_is_the_mean_over_the_tuning_seeds_with_the_chosen_point(tuned):
    figure = tuned.plan["tuning_cifar10.png"]
    panel = figure.data["panels"]["tuned"]
    assert list(panel) == list(tuned.cfg.tuning.variants)
    mobile = panel["cifar10-mobilenet_v2"]
    lr = [0.05, 0.1, 0.2]  # the quick profile's grid
    assert [p["x"] for p in mobile["sweep"]] == lr
    want = [100 * np.mean([tuning_score("cifar10-mobilenet_v2", {"lr": x}, s, mobilenet_best_at_02)
                           for s in (1000, 1001)]) for x in lr]
    assert [p["mean"] for p in mobile["sweep"]] == pytest.approx(want)
    assert [p["max"] - p["min"] for p in mobile["sweep"]] == pytest.approx([1.0] * 3)  # the seeds differ by 1 point
    assert (mobile["x"], mobile["edge"]) == (0.2, True) and panel["cifar10-resnet18"]["x"] == 0.1
    assert not panel["cifar10-resnet18"]["edge"]
    assert "2 tuning seeds" in figure.title and "log scale" in figure.caption and "test split" in figure.caption
    ax = tuned.figs["tuning_cifar10.png"].axes[0]
    assert ax.get_xscale() == "log"
    assert sum(isinstance(c, PolyCollection) for c in ax.collections) == len(panel)  # a seed band per variant


def test_tuning_budget_is_the_expected_best_of_the_grid_points(tuned):
    figure = tuned.plan["tuning_budget_cifar10.png"]
    curve = figure.data["panels"]["tuned"]["cifar10-resnet18"]
    points = [100 * p["mean_val_acc"] for p in tuned.selected[("cifar10-resnet18", "tuned")]["points"]]
    assert curve.n.tolist() == [1, 2, 3]
    assert curve.mean[0] == pytest.approx(np.mean(points))  # one point tried: the mean point
    assert curve.mean[2] == pytest.approx(stats.expected_max(points, 3))
    assert "Dodge et al. 2019" in figure.title and "3 grid points" in figure.caption


def test_existing_figures_leave_out_what_a_tuned_recipe_does_not_train(tuned):
    names = [p.name for p in tuned.paths]
    assert "learning_curves_cifar10_tuned.png" in names
    assert "learning_curves_butterflies_tuned.png" not in names and "learning_curves_cifar5_tuned.png" not in names
    accuracy = tuned.plan["accuracy_butterflies.png"]
    assert accuracy.data["recipes"] == ["lab", "fast"] and "only the variants tuning tunes" in accuracy.caption
    assert set(tuned.plan["pareto_butterflies.png"].data["recipes"]) == {"lab", "fast"}
    assert [p["recipe"] for p in tuned.plan["per_class_butterflies.png"].data["panels"]] == ["lab", "fast"]
    assert tuned.plan["accuracy_cifar10.png"].data["recipes"] == ["lab", "fast", "tuned"]


def test_no_selection_no_tuning_figure(study1, tmp_path):
    paths = plot_all(study1.cfg, study1.runs, study1.summary, tmp_path / "plots", tuning_root=tmp_path / "none")
    assert not [p for p in paths if p.name.startswith("tuning")]
    assert [p.name for p in paths] == [p.name for p in study1.paths]


def test_sweep_takes_the_best_point_over_the_other_hyper_parameters():
    def point(lr, wd, mean):
        return {"point": f"lr{lr}-wd{wd}", "values": {"lr": lr, "weight_decay": wd}, "n": 1,
                "mean_val_acc": mean, "min_val_acc": mean, "max_val_acc": mean}

    selection = {"grid": {"lr": [0.1, 0.2], "weight_decay": [0.0, 5e-4]},
                 "points": [point(0.1, 0.0, 0.5), point(0.1, 5e-4, 0.6), point(0.2, 0.0, 0.7), point(0.2, 5e-4, 0.4)]}
    assert [(p["x"], p["point"]) for p in selections_mod.sweep(selection)] == [(0.1, "lr0.1-wd0.0005"),
                                                                                (0.2, "lr0.2-wd0.0")]
    assert selections_mod.point_scores(selection).tolist() == pytest.approx([50, 60, 70, 40])


def test_a_broken_selection_is_named(tmp_path):
    path = tmp_path / "selection.json"
    path.write_text('{"variant": "x"}')
    with pytest.raises(DataError, match=r"selection.json: no recipe, base.*cnnbench select"):
        selections_mod.read_selection(path)
