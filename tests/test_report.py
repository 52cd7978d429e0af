"""report stage on constructed run directories: self-contained HTML, Markdown, provenance, atomicity."""

from __future__ import annotations

import base64
import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_plots import VARIANTS, assert_png, make_runs  # tests/ is on sys.path (pytest rootdir-less import)

from cnnbench import report as report_mod
from cnnbench.plots import plot_all
from cnnbench.report import NOT_A_CHECKOUT, build_report, git_commit, lab_figure
from cnnbench.results import load_runs

CONTEXT = {
    "profile": "smoke",
    "params_hash": "ab" * 32,
    "git_commit": "deadbeef",
    "torch_version": "2.x",
    "command": "snakemake --cores 4 --config profile=smoke && dvc repro",
    "generated": "2026-01-01T00:00:00+00:00",
    "data": {"cifar10": {"source": "url", "location": "https://example.org/cifar-10-python.tar.gz",
                         "sha256": "cd" * 32, "counts": {"train": 9, "val": 1, "test": 5}},
             "butterflies": {"source": "kaggle", "location": "gpiosenka/butterflies", "sha256": "ef" * 32,
                             "counts": {"train": 9, "val": 1, "test": 5}}},
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Run directories and figures, made once for the module (plotting is the slow part)."""
    root = tmp_path_factory.mktemp("built")
    runs = load_runs(VARIANTS, make_runs(root))
    plot_all(runs, root / "plots")
    return runs, root / "plots"


def render(built, tmp_path, **overrides):
    runs, plots = built
    html_path, md_path = build_report(runs, plots, tmp_path / "report", dict(copy.deepcopy(CONTEXT), **overrides))
    return html_path.read_text(encoding="utf-8"), md_path.read_text(encoding="utf-8"), md_path


@pytest.mark.parametrize("profile", ["smoke", "quick", "full"])
def test_report_is_self_contained_and_complete(built, tmp_path, profile):
    html, md, md_path = render(built, tmp_path, profile=profile)
    for text in (html, md):
        for name in VARIANTS:
            assert name in text
        for needle in ("deadbeef", "ab" * 32, "cd" * 32, "ef" * 32, "cpu (x86_64, 2 threads)", "2.x",
                       "https://example.org/cifar-10-python.tar.gz", "gpiosenka/butterflies",
                       "2026-01-01T00:00:00+00:00", "train 9", "test 5", "fp32"):
            assert needle in text, needle
        assert "83.92 % (Lab report 1, 50 ep); 76.10 % (Lab report 2, 40 s/epoch)" in text
        assert "88.45 % (Lab report 1, 50 ep)" in text
        assert "fast, label smoothing 0.1, EMA 0.999, flip TTA" in text and "nesterov, no wd on BN/bias" in text
        for claim in ("ResNet-18, 7x7 stem", "ResNet-18, ImageNet stem", "slower than MobileNetV2", "-33.92", "-26.10"):
            assert claim in text, claim
        assert "11,000,000" in text and "11,000,003" in text
    # no external resource of any kind: links, images, stylesheets, scripts, CSS url()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert 'src="http' not in html and 'href="http' not in html
    assert "<script" not in html.lower() and "<link" not in html.lower() and "url(" not in html
    srcs = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]+)\"", html)
    assert len(srcs) == 3 == html.count("<img")
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert_png(base64.b64decode(src.split(",", 1)[1], validate=True))
    # HTML is escaped, Markdown is not
    assert "snakemake --cores 4 --config profile=smoke &amp;&amp; dvc repro" in html
    assert "snakemake --cores 4 --config profile=smoke && dvc repro" in md
    assert "Butterflies &amp; moths" in html and "Butterflies & moths" in md and "&amp;" not in md
    # Markdown: a results table per data set; top-5 only where measured; images resolve
    assert md.count("| variant | model |") == 2
    cifar, butterflies = md.split("## Butterflies")[0], md.split("## Butterflies")[1]
    assert "top-5 %" not in cifar and "top-5 %" in butterflies and "90.00" in butterflies
    assert "| 50.00 |" in cifar.replace("**", "")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 3
    for rel in links:
        assert not Path(rel).is_absolute()
        assert_png((md_path.parent / rel).read_bytes())
    assert [p.name for p in md_path.parent.iterdir()] and not list(md_path.parent.glob(".*"))


@pytest.mark.parametrize("profile, text", [
    ("smoke", "smoke data: not evidence"),
    ("quick", "quick profile: small data and few epochs — not evidence"),
    ("full", None),
])
def test_banner_only_outside_the_full_profile(built, tmp_path, profile, text):
    html, md, _ = render(built, tmp_path, profile=profile)
    if text is None:
        assert "not evidence" not in html and "not evidence" not in md
        assert 'class="banner"' not in html
    else:
        banner = re.search(r'<div class="banner"[^>]*>(.*?)</div>', html, re.S)
        assert banner and text in banner.group(1)
        assert text in md.split("## ")[0]  # above the first section


def test_report_embeds_extra_pngs_and_tolerates_missing_provenance(built, tmp_path):
    runs, plots = built
    extra_plots = tmp_path / "plots"
    shutil.copytree(plots, extra_plots)
    shutil.copy(plots / "accuracy.png", extra_plots / "confusion_cifar10.png")
    context = dict(CONTEXT, profile="full", data={})  # e.g. an older context without data entries
    html_path, md_path = build_report(runs, extra_plots, tmp_path / "report", context)
    html, md = html_path.read_text(), md_path.read_text()
    assert html.count('src="data:image/png;base64,') == 4
    assert "](../plots/confusion_cifar10.png)" in md
    assert "Test split: 5 images" not in md and "sha256 `?`" in md


def test_report_needs_plots(built, tmp_path):
    runs, _ = built
    with pytest.raises(FileNotFoundError, match="learning_curves_cifar10.png: missing; it is written by `cnnbench plot`"):
        build_report(runs, tmp_path / "noplots", tmp_path / "report", dict(CONTEXT))
    assert not (tmp_path / "report").exists()


def test_report_write_is_atomic(built, tmp_path, monkeypatch):
    html, _, _ = render(built, tmp_path, profile="full")
    out = tmp_path / "report"

    def boom(*a, **k):
        raise RuntimeError("render failed")

    monkeypatch.setattr(report_mod, "_data_uri", boom)
    with pytest.raises(RuntimeError, match="render failed"):
        render(built, tmp_path, profile="smoke")
    assert (out / "report.html").read_text() == html  # the previous complete report, untouched
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.md"]


def test_lab_figure_formats():
    assert lab_figure({"lab_report": None}) == "—"
    assert lab_figure({}) == "—"
    assert lab_figure({"lab_report": [{"report": "Lab report 2", "row": "MobileNetV2", "claim": "faster"}]}) == "—"
    assert lab_figure({"lab_report": {"report": "Lab report 2", "accuracy": 91.5, "epochs": 30,
                                      "epoch_seconds": 40}}) == "91.50 % (Lab report 2, 30 ep, 40 s/epoch)"
    assert lab_figure({"lab_report": [{"report": "A", "accuracy": 1}, {"report": "B", "accuracy": 2.345}]}) \
        == "1.00 % (A); 2.35 % (B)"


def test_claims_table_sits_beside_the_measurement(built, tmp_path):
    _, md, _ = render(built, tmp_path)
    claims = md.split("### The lab reports' claims next to this run")
    assert len(claims) == 2  # only CIFAR-10 variants have lab-report rows here
    table = [line for line in claims[1].split("\n\n")[1].splitlines() if line.startswith("| cifar10-")]
    assert len(table) == 4  # one line per lab-report row, not per variant
    assert table[0].startswith("| cifar10-a | Lab report 1 | ResNet-18, 7x7 stem | 83.92 | 50 | 50.00 | 3 | -33.92 |")
    assert table[2].endswith("| — | — | 50.00 | 3 | — | — | 1.50 | slower than MobileNetV2 |")


def test_missing_optional_metrics_render_as_dash(built, tmp_path):
    runs, plots = built
    runs = copy.deepcopy(runs)
    runs[0]["metrics"]["peak_memory_mb"] = None
    del runs[0]["metrics"]["mean_epoch_seconds"]
    html_path, md_path = build_report(runs, plots, tmp_path / "report", dict(CONTEXT))
    row = next(line for line in md_path.read_text().splitlines() if line.startswith("| cifar10-a |"))
    assert row.count("—") >= 2


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
