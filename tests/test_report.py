"""report stage: self-contained HTML + Markdown from a constructed study (aggregate output, figures)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from markupsafe import escape
from PIL import Image

from cnnbench import report as report_mod
from cnnbench.cli import main, reproduce_command
from cnnbench.errors import DataError
from cnnbench.plots import plot_all
from cnnbench.provenance import report_context
from cnnbench.report import NOT_A_CHECKOUT, build_report, git_commit, lab_figure, mean_std
from study_fixture import (TRIAL_SECONDS, USER_NOISY, add_user_dataset, clean_top1, make_study, titled_by_name,
                           write_audit, write_selections)
from study_layout import keep_variants


def fake_figures(plots: Path, datasets=("cifar10", "butterflies")) -> list[dict]:
    """Small PNGs and the figures.json index `cnnbench plot` writes (the report only embeds them)."""
    plots.mkdir(parents=True, exist_ok=True)
    index = []
    for i, ds in enumerate([*datasets, None]):
        name = f"fig_{ds or 'all'}.png"
        Image.new("RGB", (60, 40), (40 * i, 120, 200)).save(plots / name)
        index.append({"file": name, "dataset": ds, "recipe": None, "kind": "accuracy",
                      "title": f"Figure of {ds or 'everything'}", "caption": f"caption {i}"})
    (plots / "figures.json").write_text(json.dumps(index))
    return index


def build(study, profile_command="x", quality=...):
    """report.html and report.md of ``study``; ``quality`` replaces the data-quality sections that
    report_context found in the prepared data (the leak audits)."""
    ctx = report_context(study.cfg, study.prepared, command=profile_command)
    if quality is not ...:
        ctx["data_quality"] = quality
    return build_report(study.cfg, study.summary, study.plots, study.runs, study.report, ctx)


@pytest.fixture
def study(tmp_path):
    s = make_study(tmp_path, seeds=[0, 1, 2])
    fake_figures(s.plots)
    return s


def test_report_is_self_contained_and_complete(study):
    html_path, md_path = build(study)
    html, md = html_path.read_text(), md_path.read_text()
    # self-contained: every image inline, nothing fetched from elsewhere
    assert not re.search(r"""(src|href)=["'](https?:|//)""", html)
    srcs = re.findall(r'<img src="([^"]+)"', html)
    # the 3 figures, and the thumbnails of the duplicates that span splits: 24 groups shown of CIFAR-10's
    # 30, 3 of every other data set (the fixture's audits), 2 images each
    shown = sum(24 if ds == "cifar10" else 3 for ds in study.cfg.datasets)
    assert len(srcs) == 3 + 2 * shown and all(s.startswith("data:image/png;base64,") for s in srcs)
    for s in srcs:
        assert base64.b64decode(s.split(",", 1)[1]).startswith(b"\x89PNG")
    # every claim, every recipe, every variant appears
    for claim in study.cfg.claims:
        assert claim["text"] in html and claim["text"] in md
    for variant in study.cfg.variants:
        assert variant in html and variant in md
    assert html.count('class="badge holds"') >= 1 and "Welch" in html
    # verdicts at the top: the summary comes before the claims table and the per-data-set tables
    assert html.index('id="verdicts"') < html.index('id="claims"') < html.index('id="results-cifar10"')
    # mean +- std (n) of a known run set: fixture accuracies 88.45 + (-0.4, 0.1, 0.3)
    assert "88.45 ± 0.36 (n=3)" in md
    # the methods section is generated from params
    assert "Nesterov" in html and "one" in html and "label smoothing 0.1" in html
    assert "zero-initialised residual branches" in html
    assert "17 variants × 3 recipes (lab, fast, tuned) × 3 seed(s)" in md
    for fig in json.loads((study.plots / "figures.json").read_text()):
        assert fig["caption"] in html and f"]({'../plots/' + fig['file']})" in md


def test_smoke_banner_and_verdict_counts(study):
    html, md = (p.read_text() for p in build(study))
    assert "smoke data: not evidence" in html and "smoke data: not evidence" in md
    summary = json.loads((study.summary / "summary.json").read_text())
    for recipe, counts in summary["verdicts"].items():
        for verdict, n in counts.items():
            assert f"{n} {verdict}" in md


@pytest.mark.parametrize("profile, text", [("full", None), ("quick", "quick profile"), ("smoke", "smoke data")])
def test_banner_only_outside_the_full_profile(tmp_path, profile, text):
    s = make_study(tmp_path, profile=profile, seeds=[0])
    fake_figures(s.plots)
    html = build(s)[0].read_text()
    if text is None:
        assert 'id="not-evidence"' not in html
    else:
        assert 'id="not-evidence"' in html and text in html


def test_report_needs_aggregate_and_figures(study):
    (study.plots / "fig_cifar10.png").unlink()
    with pytest.raises(DataError, match="fig_cifar10.png: missing; it is written by `cnnbench plot`"):
        build(study)
    (study.summary / "claims.csv").unlink()
    with pytest.raises(DataError, match="claims.csv: missing; it is written by `cnnbench aggregate`"):
        build(study)


def test_report_write_is_atomic(study, monkeypatch):
    html, md = build(study)
    before = html.read_text()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_mod.os, "replace", boom)
    with pytest.raises(RuntimeError):
        build(study)
    assert html.read_text() == before
    assert not list(study.report.glob(".*tmp*"))


def test_data_quality_section_renders_when_given(study):
    quality = {"title": "Butterflies duplicates", "summary": "3 duplicate groups", "headers": ["pair", "count"],
               "counts": [["train-test", 2], ["train-valid", 1]], "examples": ["train/A/1.jpg = test/A/2.jpg"]}
    html, md = (p.read_text() for p in build(study, quality=quality))
    assert 'id="data-quality"' in html and "train/A/1.jpg = test/A/2.jpg" in html and "| train-test | 2 |" in md


def test_number_formats():
    assert mean_std(84.1, 0.35, 3) == "84.10 ± 0.35 (n=3)"
    assert mean_std(84.1, float("nan"), 1) == "84.10 (n=1)"
    assert mean_std(None, None) == "—"
    assert lab_figure({"lab_report": [{"report": "Lab report 2", "row": "r", "accuracy": 76.1, "epoch_seconds": 40}]}) \
        == "76.10 % (Lab report 2, 40 s/epoch)"
    assert lab_figure({}) == "—"


def test_report_command_and_reproduce_line(tmp_path):
    study = make_study(tmp_path, seeds=[0, 1])  # not the top-level seeds: exp-run sets them for DVC
    fake_figures(study.plots)
    assert main(["report", "--params", str(study.params), "--summary", str(study.summary), "--plots",
                 str(study.plots), "--runs", str(study.runs), "--prepared", str(study.prepared), "--out",
                 str(study.report), "--driver", "dvc"]) == 0
    html = (study.report / "report.html").read_text()
    assert "cnnbench --profile smoke exp-run" in html
    assert reproduce_command(study.cfg, "snakemake") == "snakemake --cores 4 --config profile=smoke"


# --- provenance --------------------------------------------------------------------------------


def test_git_commit_outside_a_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.delenv("GIT_DIR", raising=False)
    assert git_commit(tmp_path) == NOT_A_CHECKOUT == "unknown (not a git checkout)"
    assert git_commit(tmp_path / "does-not-exist") == NOT_A_CHECKOUT


def test_git_commit_without_git(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable anywhere
    assert git_commit(tmp_path) == NOT_A_CHECKOUT


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_git_commit_in_a_checkout_and_dirty(tmp_path, monkeypatch):
    monkeypatch.delenv("GIT_DIR", raising=False)

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *args],
                       cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.txt").write_text("1\n")
    git("add", "a.txt")
    git("commit", "-q", "-m", "init")
    clean = git_commit(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{40}", clean)
    (tmp_path / "untracked.txt").write_text("x\n")  # untracked files do not make it dirty
    assert git_commit(tmp_path) == clean
    (tmp_path / "a.txt").write_text("2\n")
    assert git_commit(tmp_path) == clean + " (dirty)"


def test_duplicates_found_by_preprocess_reach_the_report(study):
    dup = {"format": "cnnbench-duplicates-v1", "group_count": 1, "images_in_groups": 2, "label_conflict_groups": 1,
           "images_hashed": {"train": 100, "val": 10, "test": 50}, "train_duplicates_of_eval": 1,
           "drop_train_duplicates_of_eval": True, "dropped_train": 1, "method": "SHA-1 of pixels",
           "pairs": [{"splits": "train-test", "kind": "flip", "same_class": 0, "different_class": 1},
                     {"splits": "train-train", "kind": "exact", "same_class": 0, "different_class": 0}],
           "groups": [{"id": 0, "label_conflict": True, "members": [
               {"split": "train", "file": "train/A/1.jpg", "class": "A", "mirrored": False, "dropped": True},
               {"split": "test", "file": "test/B/2.jpg", "class": "B", "mirrored": True}]}]}
    (study.prepared / "butterflies" / "duplicates.json").write_text(json.dumps(dup))
    (study.prepared / "butterflies" / "duplicate_thumbs.npy").unlink()  # v1 had none
    ctx = report_context(study.cfg, study.prepared, command="x")
    html, md = (p.read_text() for p in build_report(study.cfg, study.summary, study.plots, study.runs, study.report, ctx))
    html, md = html_section(html, "butterflies"), md_section(md, "Butterflies & moths")
    assert "1 group(s) of identical or mirrored images" in md and "were dropped from train" in md
    assert "accuracy on the clean test images is unknown" in md and "<img" not in html
    assert "| train-test | flip | 0 | 1 |" in md and "train-train" not in md  # empty rows left out
    assert "LABEL CONFLICT: train/A/1.jpg (A, dropped) = test/B/2.jpg (B, mirrored)" in md
    assert "showing 1 of 1 groups that span splits" in html and html.count("<li><code>") == 1


def html_section(html: str, dataset: str) -> str:
    """The data-quality section of one data set in report.html."""
    start = html.index(f'<section id="data-quality-{dataset}">')
    return html[start:html.index("</section>", start)]


def md_section(md: str, title: str) -> str:
    """The data-quality section of one data set in report.md."""
    start = md.index(f"### Duplicates in {title}")
    ends = [i for i in (md.find("\n### ", start + 4), md.find("\n## ", start)) if i > 0]
    return md[start:min(ends)]


def test_leak_audit_of_every_data_set_reaches_the_report(study):
    # the fixture's audits (study_fixture.write_audit): CIFAR-10 with 30 groups spanning train and test,
    # the butterflies with 3; the first group of each is a label conflict
    html, md = (p.read_text() for p in build(study))
    assert html.count('id="data-quality"') == 1
    cifar, butterflies = html_section(html, "cifar10"), html_section(html, "butterflies")
    assert cifar.count("<img ") == 2 * 24 and "showing 24 of 30 groups that span splits" in cifar
    assert butterflies.count("<img ") == 2 * 3 and "showing 3 of 3 groups that span splits" in butterflies
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'<img src="([^"]+)"', cifar))
    # thumbnail row k of the file is the flat colour (k, 255 - k, 100): group 1's test image is row 3
    group1 = cifar[cifar.index("<strong>group 1</strong>"):cifar.index("<strong>group 2</strong>")]
    src = re.findall(r'<img src="data:image/png;base64,([^"]+)"', group1)[1]
    with Image.open(io.BytesIO(base64.b64decode(src))) as thumb:
        assert thumb.size == (64, 64) and thumb.getpixel((10, 10)) == (3, 252, 100)
    assert "dropped" not in cifar  # drop_train_duplicates_of_eval: false
    assert "test_batch[4] (#4)" in group1 and "near duplicate, distance 0.010" in group1
    assert cifar.count("label conflict</span>") == 1 and "mirror image" in cifar
    assert "train/cat/11.jpg" in butterflies  # butterfly files are paths
    for text in (cifar, md_section(md, "CIFAR-10")):
        assert "31 group(s) of identical, mirrored or near-duplicate images" in text
        assert "30 span splits" in text and "30 train image(s) duplicate a validation or test image and were kept" in text
        assert "20 of 50 test images are clean" in text  # 30 test copies of kept train images leaked
        assert "near duplicates below a distance of 0.25" in text
    cifar_md = md_section(md, "CIFAR-10")
    assert "| train-test | flip | 0 | 1 |" in cifar_md and "| train-test | near | 29 | 0 |" in cifar_md
    assert "| train-train | exact | 1 | 0 |" in cifar_md and "val-test" not in cifar_md  # rows of zeros left out
    assert "Groups that span splits (showing 24 of 30 groups that span splits):" in cifar_md
    assert cifar_md.count("\n- `") == 24
    assert "- `LABEL CONFLICT: train data_batch_1[7] (cat) = test test_batch[3] (dog) [mirror image]`" in cifar_md
    assert "- `train data_batch_1[11] (cat) = test test_batch[4] (cat) [near duplicate 0.010]`" in cifar_md


def test_dropped_train_copies_are_marked(study):
    write_audit(study.prepared / "butterflies", "butterflies", cross_split=3, drop=True)
    html, md = (p.read_text() for p in build(study))
    section = html_section(html, "butterflies")
    assert section.count('<figure class="dup dropped">') == 3 and section.count("<strong>dropped from train</strong>") == 3
    assert section.count('<figure class="dup">') == 3  # the test images
    text = md_section(md, "Butterflies & moths")
    assert "3 were dropped from train (drop_train_duplicates_of_eval: true)" in text
    assert "50 of 50 test images are clean" in text
    assert "- `train train/cat/11.jpg (cat, dropped) = test test/cat/4.jpg (cat) [near duplicate 0.010]`" in text


def test_report_shows_clean_test_top1_beside_test_top1(study):
    html, md = (p.read_text() for p in build(study))
    # cifar10-resnet18_small_stem under lab: 88.45 + (-0.4, 0.1, 0.3) % of 10,000 images, 1000 of them leaked
    expected = [clean_top1(88.45 + noise, 10_000) for noise in (-0.4, 0.1, 0.3)]
    mean, std = pd.Series(expected).mean(), pd.Series(expected).std()
    row = next(line for line in md.splitlines() if line.startswith("| cifar10-resnet18_small_stem | lab |"))
    assert "**88.45 ± 0.36** |" in row and f"| {mean:.2f} ± {std:.2f} [" in row and "| 9,000 of 10,000 |" in row
    assert "clean test top-1 % [95 % CI] | clean test images |" in md
    clean_test = ("clean test = test images with no exact, mirrored or near-duplicate in the training images the "
                  "model saw")
    audited = len(study.cfg.datasets)  # the fixture audits every data set
    assert md.count(clean_test) == audited and html.count(clean_test) == audited  # under each data set's table


def test_report_without_a_leak_audit(tmp_path):
    s = make_study(tmp_path, seeds=[0, 1], audit=False)
    fake_figures(s.plots)
    html, md = (p.read_text() for p in build(s))
    assert 'id="data-quality"' not in html and "clean test" not in md and "clean test" not in html
    assert len(re.findall(r"<img ", html)) == 3


def test_missing_thumbnails_leave_the_groups_as_text(study):
    (study.prepared / "cifar10" / "duplicate_thumbs.npy").unlink()
    html = build(study)[0].read_text()
    cifar = html_section(html, "cifar10")
    assert "<img " not in cifar and "the thumbnails file is missing: text only" in cifar
    assert cifar.count("<li><code>") == 24 and "test_batch[4]" in cifar
    assert html_section(html, "butterflies").count("<img ") == 6


def test_thumbnail_row_outside_the_file_is_named(study):
    audit = write_audit(study.prepared / "cifar10", "cifar10", cross_split=2)
    audit["groups"][0]["members"][0]["thumb"] = 99
    (study.prepared / "cifar10" / "duplicates.json").write_text(json.dumps(audit))
    with pytest.raises(DataError, match=r"cifar10/duplicates.json: group 0 names thumbnail row 99, but "
                                        r"duplicate_thumbs.npy has 4 rows; re-run `cnnbench preprocess`"):
        report_context(study.cfg, study.prepared)


def test_report_explains_its_statistics_and_names_every_n(study):
    html, md = (p.read_text() for p in build(study))
    claims = pd.read_csv(study.summary / "claims.csv", keep_default_na=False, na_values=[""])
    tests = int(claims["p"].notna().sum())
    for text in (html, md):
        assert f"Holm-adjusted p-value over all {tests} tested claim × recipe pairs" in text
        assert "Holm (1979)" in text and "Bouthillier" in text and "McNemar" in text  # Methods, with references
        assert "p (Holm)" in text and ("P(a &gt; b)" if text is html else "P(a > b)") in text
        assert "3 + 3 seed(s) × 10000 test images (paired)" in text  # n of an accuracy claim on CIFAR-10
    small_stem = claims[(claims["claim"] == "small-stem") & (claims["recipe"] == "lab")].iloc[0]
    assert f"{small_stem['p_adjusted']:.3g}" in md and f"{small_stem['prob_improvement']:.2f}" in md
    # the grid comes first and shows each verdict's adjusted p and n
    grid = html[html.index('id="verdict-grid"'):html.index('id="claims"')]
    assert "adj. p" in grid and "seed(s)" in grid


def test_report_states_the_seeds_plan_of_inconclusive_claims(tmp_path):
    s = make_study(tmp_path, seeds=[0, 1, 2])
    fake_figures(s.plots)
    html, md = (p.read_text() for p in build(s))
    claims = pd.read_csv(s.summary / "claims.csv", keep_default_na=False, na_values=[""])
    open_ = claims[claims["verdict"] == "inconclusive"]
    assert len(open_) > 0  # the fixture's 0.5-point seed noise leaves some claims open
    assert f"{len(open_)} claim × recipe pair(s) are inconclusive" in md and 'id="seeds-plan"' in html
    numbered = open_["seeds_needed"].dropna()
    if len(numbered):
        assert f"with {int(numbered.max())} seeds per side" in md


KIND_WORDS = re.compile(r"(?i)butterfl|moth|cifar")  # what a kind's title or a name branch would leak
MINE_FIGURES = ["learning_curves_mine_lab.png", "accuracy_mine.png", "pareto_mine.png", "confusion_mine.png",
                "per_class_mine.png", "filtering_mine.png"]


def _three_data_sets(doc):
    add_user_dataset(doc)
    keep = ["cifar10-resnet18", "butterflies-resnet18", "butterflies-resnet18-unfiltered",
            "mine-small", "mine-mobile", "mine-small-all"]
    doc.update(keep_variants(doc, keep, recipes=["lab"]))


def results_section(md: str, title: str) -> str:
    start = md.index(f"\n## {title}\n")
    return md[start:md.index("\n## ", start + 4)]


def test_a_data_set_of_the_users_naming_gets_its_figures_and_section(tmp_path, monkeypatch):
    """A third data set, `mine` (kind cifar100, 20 classes, two noisy; titled by its name as a folder of
    one's own images is): its figures, its results table and its methods line, none in another's words."""
    titled_by_name(monkeypatch)
    study = make_study(tmp_path, seeds=[0, 1], edit=_three_data_sets)
    cfg = study.cfg
    assert cfg.datasets == ["cifar10", "butterflies", "mine"] and cfg.run("mine-small").train.normalize is None
    paths = plot_all(cfg, study.runs, study.summary, study.plots)
    assert [p.name for p in paths][-len(MINE_FIGURES):] == MINE_FIGURES
    names = {p.name for p in paths}
    assert "filtering_butterflies.png" in names and "filtering_cifar10.png" not in names
    index = {e["file"]: e for e in json.loads((study.plots / "figures.json").read_text())}
    for name in MINE_FIGURES:
        entry = index[name]
        assert entry["dataset"] == "mine" and entry["title"].startswith("mine")
        assert not KIND_WORDS.search(entry["title"] + entry["caption"]), name
    assert "20 classes, every class named" in index["confusion_mine.png"]["caption"]
    assert "mine-small-all (the unfiltered variant" in index["per_class_mine.png"]["caption"]
    assert "datasets.mine.noisy_classes" in index["per_class_mine.png"]["caption"]
    assert "mine-small (filtered) vs mine-small-all (unfiltered)" in index["filtering_mine.png"]["caption"]

    html, md = (p.read_text() for p in build(study))
    section = results_section(md, "mine")
    # the clean-test note is the same under every audited data set (it cites ciFAIR's CIFAR numbers)
    assert section.count(report_mod.CLEAN_TEST) == 1
    assert not KIND_WORDS.search(section.replace(report_mod.CLEAN_TEST, ""))
    for name in MINE_FIGURES:
        assert f"](../plots/{name})" in section
    # the columns follow what the runs have: top-5 (20 classes), top-1 on the kept classes (noisy ones listed)
    assert "| top-5 % | top-1 % on kept classes |" in section
    assert "| top-5 % | top-1 % on kept classes |" in results_section(md, "Butterflies & moths")
    cifar = results_section(md, "CIFAR-10")
    assert "top-5" not in cifar and "kept classes" not in cifar
    methods = next(line for line in md.splitlines() if line.startswith("- **mine**"))
    assert "normalisation the training split's per-channel mean and std (manifest train_stats): mean " \
           "[0.5071, 0.4865, 0.4409], std [0.2673, 0.2564, 0.2762]" in methods
    assert "images 32 × 32 px" in methods
    assert f"noisy classes (datasets.mine.noisy_classes), left out where a variant filters them: " \
           f"{', '.join(USER_NOISY)}" in methods
    assert not KIND_WORDS.search(methods)
    cifar_methods = next(line for line in md.splitlines() if line.startswith("- **CIFAR-10**"))
    assert "noisy" not in cifar_methods and "mean [0.5, 0.5, 0.5]" in cifar_methods
    # the HTML: its own section with its figures inline
    start = html.index('<h2 id="results-mine">mine</h2>')
    part = html[start:html.index("<h2", start + 4)]
    assert part.count('<img src="data:image/png;base64,') == len(MINE_FIGURES)
    assert not KIND_WORDS.search(part.replace(str(escape(report_mod.CLEAN_TEST)), ""))


def test_a_subset_says_what_it_is_drawn_from_and_why(study, monkeypatch):
    """A data set of kind subset gets a sentence that names its parent and params.yaml's `why`."""
    cfg = study.cfg
    cfg.raw["datasets"]["five"] = {"kind": "subset", "of": "butterflies", "seed": 3, "max_per_class": 300,
                                   "classes": ["A", "B", "C", "D", "E"],
                                   "why": "the ResNeXt ablation ran on a small set"}
    text = report_mod.subset_text(cfg, "five")
    assert text == ("A subset of Butterflies & moths (datasets.butterflies): 5 of its classes (A, B, C, D, E), at "
                    "most 300 training images per class, drawn with seed 3, and every validation and test image of "
                    "those classes. Why: the ResNeXt ablation ran on a small set.")
    cfg.raw["datasets"]["five"].update(classes=None, max_per_class=None, why="")
    assert report_mod.subset_text(cfg, "five").startswith("A subset of Butterflies & moths (datasets.butterflies): "
                                                          "all its classes, every training image,")
    assert "Why" not in report_mod.subset_text(cfg, "five")
    assert report_mod.subset_text(cfg, "butterflies") == ""
    # the sentence opens the data set's results section, in both renderings
    monkeypatch.setattr(report_mod, "subset_text", lambda c, ds: "A subset of something. Why: tests." if ds == "cifar10"
                        else "")
    html, md = (p.read_text() for p in build(study))
    assert "## CIFAR-10\n\nA subset of something. Why: tests.\n\nTest split:" in md and md.count("A subset of") == 1
    assert '<h2 id="results-cifar10">CIFAR-10</h2>\n<p>A subset of something. Why: tests.</p>' in html


# --- tuning ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tuned_report(tmp_path_factory):
    """A quick-profile study (it tunes the CIFAR-10 variants only) with its selections, figures and report."""
    root = tmp_path_factory.mktemp("tuned")
    study = make_study(root, profile="quick", seeds=[0, 1])
    study.tuning = root / "results" / "tuning"
    study.selected = write_selections(study.cfg, study.tuning,
                                      best_lr=lambda v: 0.2 if "mobilenet" in v else 0.1)
    plot_all(study.cfg, study.runs, study.summary, study.plots, tuning_root=study.tuning)
    ctx = report_context(study.cfg, study.prepared, command="x")
    html, md = build_report(study.cfg, study.summary, study.plots, study.runs, study.report, ctx,
                            tuning_root=study.tuning)
    study.html, study.md = html.read_text(), md.read_text()
    return study


def test_tuning_section_shows_the_choices_the_figures_and_the_compute(tuned_report):
    md, html = tuned_report.md, tuned_report.html
    section = md[md.index("## Tuning"):md.index("## Each lab-report row")]
    assert "grid lr ∈ {0.05, 0.1, 0.2}" in section and "base `fast`" in section and "7 variant(s) tuned" in section
    assert "| cifar10-resnet18 | tuned | lr 0.1 | 60.50 | no | 6 |" in section  # 3 points x 2 seeds
    assert "| cifar10-mobilenet_v2 | tuned | lr 0.2 | 60.50 | yes: lr (widen the grid) |" in section
    assert "widened" in section
    trials = 7 * 6
    runs = pd.read_csv(tuned_report.summary / "runs.csv")
    study_seconds = float((runs["epoch_seconds"] * runs["epochs"]).sum())
    share = round(100 * trials * TRIAL_SECONDS / study_seconds)
    assert f"Tuning trained {trials} trials for {trials * TRIAL_SECONDS:.1f} s" in section
    assert f"{share} % of" in section and f"the study's {len(runs)} runs" in section
    assert "](../plots/tuning_cifar10.png)" in section and "](../plots/tuning_budget_cifar10.png)" in section
    # the tuning figures sit in this section only, not again under the data set's results
    assert md.count("](../plots/tuning_cifar10.png)") == 1
    assert 'id="tuning"' in html and html.count('id="fig-tuning_cifar10"') == 1 and 'id="tuning-method"' in html
    assert "Tuning. A tuned recipe is its base recipe with lr chosen per variant" in md
    assert "lr tuned per variant" in md  # the methods table's optimizer of the tuned recipe


def test_verdict_grid_marks_claims_a_tuned_recipe_does_not_test(tuned_report):
    md, cfg = tuned_report.md, tuned_report.cfg
    claims = pd.read_csv(tuned_report.summary / "claims.csv")
    tuned_variants = set(cfg.tuning.variants)
    untested = [c for c in cfg.claims if not {c["a"], c["b"]} <= tuned_variants]
    assert untested and len(untested) < len(cfg.claims)  # the butterfly and CIFAR-5 claims
    assert set(claims[claims["recipe"] == "tuned"]["claim"]) == {c["id"] for c in cfg.claims} - {c["id"] for c in untested}
    assert f"({len(untested)} not tested: their variants are not tuned)" in md
    grid = md[md.index("| claim | source | lab | fast | tuned |"):md.index("Rule:")]
    for c in cfg.claims:
        row = next(line for line in grid.splitlines() if line.startswith(f"| {c['text']} |"))
        assert row.count(" | ") == 4  # every row has a cell per recipe
        assert row.endswith("| not tuned |") == (c in untested)
    html_grid = tuned_report.html[tuned_report.html.index('id="verdict-grid"'):]
    assert html_grid.count('class="badge untested"') == len(untested)


def test_a_study_without_tuning_has_no_tuning_section(tmp_path):
    def no_tuning(doc):
        doc.pop("tuning")
        doc["recipes_in_study"] = ["lab", "fast"]
        for block in doc["profiles"].values():
            block.pop("tuning", None)

    plain = make_study(tmp_path, seeds=[0, 1], edit=no_tuning)
    fake_figures(plain.plots)
    html_path, md_path = build(plain)
    md, html = md_path.read_text(), html_path.read_text()
    assert "## Tuning" not in md and 'id="tuning"' not in html and "not tuned" not in md
    assert "| claim | source | lab | fast |" in md


def test_plot_and_report_commands_read_the_selections_given_by_tuning(tuned_report, tmp_path):
    s = tuned_report
    common = ["--params", str(s.params), "--summary", str(s.summary), "--runs", str(s.runs), "--tuning", str(s.tuning)]
    assert main(["plot", *common, "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "tuning_budget_cifar10.png").is_file()
    assert main(["report", *common, "--plots", str(tmp_path / "plots"), "--prepared", str(s.prepared),
                 "--out", str(tmp_path / "report")]) == 0
    assert "| cifar10-mobilenet_v2 | tuned | lr 0.2 |" in (tmp_path / "report" / "report.md").read_text()
