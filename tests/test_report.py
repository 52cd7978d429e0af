"""plot and report stages on constructed run directories."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from cnnbench import plots as plots_mod
from cnnbench.plots import plot_all
from cnnbench.report import build_report, git_commit
from cnnbench.results import load_runs

VARIANTS = {
    "cifar10-a": {"dataset": "cifar10", "model": "resnet18",
                  "lab_report": {"report": "Lab report 1", "row": "x", "accuracy": 83.92, "epochs": 50}},
    "cifar10-b": {"dataset": "cifar10", "model": "resnet18_small_stem", "lab_report": None},
    "butterflies-a": {"dataset": "butterflies", "model": "resnet18"},
    "butterflies-b": {"dataset": "butterflies", "model": "resnet18"},
}


def make_runs(root: Path) -> Path:
    runs = root / "runs"
    for i, (name, spec) in enumerate(VARIANTS.items()):
        run = runs / name
        run.mkdir(parents=True)
        rows = ["epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds,peak_memory_mb"]
        rows += [f"{e},{2.3 - 0.2 * e},{0.1 * e},{2.2 - 0.1 * e},{0.08 * e},0.01,{1.5 + i},500" for e in range(1, 4)]
        (run / "history.csv").write_text("\n".join(rows) + "\n")
        classes = ["c0", "c1", "c,2"]
        metrics = {"variant": name, "dataset": spec["dataset"], "model": spec["model"], "num_classes": 3,
                   "test_top1": 0.5 + 0.1 * i, "test_loss": 1.0, "per_class_accuracy": dict.fromkeys(classes, 0.5),
                   "params": 11_000_000 + i, "mean_epoch_seconds": 1.5 + i, "peak_memory_mb": 500.0,
                   "device": "cpu (x86_64, 2 threads)", "epochs": 3, "precision": "fp32", "seed": 0}
        if spec["dataset"] == "butterflies":
            metrics["test_top5"] = 0.9
        (run / "metrics.json").write_text(json.dumps(metrics))
        (run / "confusion.csv").write_text('true\\predicted,c0,c1,"c,2"\nc0,1,0,0\nc1,0,1,0\n"c,2",0,0,1\n')
    return runs


CONTEXT = {
    "params_hash": "ab" * 32, "git_commit": "deadbeef", "torch_version": "2.x", "command": "snakemake --cores 4",
    "generated": "2026-01-01T00:00:00+00:00",
    "data": {"cifar10": {"source": "mirror", "location": "/m/c.tar.gz", "sha256": "cd" * 32,
                         "counts": {"train": 9, "val": 1, "test": 5}},
             "butterflies": {"source": "kaggle", "location": "x/y", "sha256": "ef" * 32,
                             "counts": {"train": 9, "val": 1, "test": 5}}},
}


@pytest.fixture
def runs(tmp_path):
    return load_runs(VARIANTS, make_runs(tmp_path))


def test_plot_all_writes_valid_pngs(runs, tmp_path):
    paths = plot_all(runs, tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["accuracy.png", "learning_curves_butterflies.png",
                                             "learning_curves_cifar10.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(p) as im:
            assert im.width > 100 and im.height > 100
    assert not list(tmp_path.glob(".plots.tmp-*"))


def test_plot_all_is_atomic(runs, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(plots_mod, "accuracy_chart", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_all(runs, tmp_path / "plots")
    assert not (tmp_path / "plots").exists()
    assert not list(tmp_path.glob(".plots.tmp-*"))


@pytest.mark.parametrize("profile", ["smoke", "full"])
def test_report_is_self_contained_and_complete(runs, tmp_path, profile):
    plot_all(runs, tmp_path / "plots")
    html_path, md_path = build_report(runs, tmp_path / "plots", tmp_path / "report", dict(CONTEXT, profile=profile))
    html, md = html_path.read_text(), md_path.read_text()
    for name in VARIANTS:
        assert name in html and name in md
    assert not re.search(r'(src|href)="(https?:)?//', html)
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) == 3
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            im.verify()
    assert ("not evidence" in html) == (profile != "full")
    assert md.count("| variant | model |") == 2
    assert "top-5 %" in md and "90.00" in md          # butterflies table has top-5
    assert "83.92 % (Lab report 1, 50 ep)" in html
    assert "11,000,000" in html
    for needle in ("deadbeef", "ab" * 32, "cd" * 32, "snakemake --cores 4", "cpu (x86_64, 2 threads)"):
        assert needle in html and needle in md
    for rel in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (md_path.parent / rel).is_file()


def test_report_needs_plots(runs, tmp_path):
    with pytest.raises(FileNotFoundError, match="learning_curves_cifar10.png: missing; it is written by `cnnbench plot`"):
        build_report(runs, tmp_path / "noplots", tmp_path / "report", dict(CONTEXT, profile="smoke"))


def test_load_runs_names_missing_file(tmp_path):
    runs = make_runs(tmp_path)
    (runs / "cifar10-b" / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"cifar10-b/metrics.json: missing; .*cnnbench evaluate --variant cifar10-b"):
        load_runs(VARIANTS, runs)


def test_git_commit_outside_a_checkout(tmp_path):
    assert git_commit(tmp_path).startswith("unknown")
