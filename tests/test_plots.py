"""results + plot stage on constructed run directories (2 data sets x 2 variants)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from cnnbench import plots as plots_mod
from cnnbench.plots import plot_all
from cnnbench.results import load_runs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

VARIANTS = {
    # lab_report as params.yaml writes it (a list of rows) and as a single dict: both are accepted
    "cifar10-a": {"dataset": "cifar10", "model": "resnet18",
                  "lab_report": [{"report": "Lab report 1", "row": "ResNet-18, 7x7 stem", "accuracy": 83.92, "epochs": 50},
                                 {"report": "Lab report 2", "row": "ResNet-18, ImageNet stem", "accuracy": 76.1,
                                  "epoch_seconds": 40},
                                 {"report": "Lab report 2", "row": "ResNet-18 (vs MobileNetV2)",
                                  "claim": "slower than MobileNetV2"}]},
    "cifar10-b": {"dataset": "cifar10", "model": "resnet18_small_stem",
                  "lab_report": {"report": "Lab report 1", "row": "ResNet-18, small 3x3 stem", "accuracy": 88.45,
                                 "epochs": 50},
                  "train": {"epochs": 3, "batch_size": 128, "seed": 0,
                            "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4},
                            "schedule": {"name": "constant"}}},
    "butterflies-a": {"dataset": "butterflies", "model": "resnet18", "filter_noisy": True, "recipe": "fast",
                      "train": {"label_smoothing": 0.1, "tta_flip": True, "ema": 0.999,
                                "optimizer": {"name": "sgd", "lr": 0.2, "nesterov": True, "no_decay_norm_bias": True}}},
    "butterflies-b": {"dataset": "butterflies", "model": "resnet18", "filter_noisy": False},
}
CLASSES = ["c0", "c1", "c,2"]  # a comma: class names are quoted in confusion.csv


def make_runs(root: Path, variants: dict[str, dict] = VARIANTS, epochs: int = 3) -> Path:
    """Write history.csv, metrics.json and confusion.csv for each variant under ``root/runs``."""
    runs = root / "runs"
    for i, (name, spec) in enumerate(variants.items()):
        run = runs / name
        run.mkdir(parents=True)
        rows = ["epoch,train_loss,train_acc,val_loss,val_acc,lr,seconds,peak_memory_mb"]
        for e in range(1, epochs + 1):
            rows.append(f"{e},{2.3 / (e + i * 0.3):.4f},{min(0.95, 0.12 * e + 0.05 * i):.4f},"
                        f"{2.4 / (e + i * 0.2):.4f},{min(0.9, 0.1 * e + 0.04 * i):.4f},0.01,{1.5 + i},500")
        (run / "history.csv").write_text("\n".join(rows) + "\n")
        metrics = {"variant": name, "dataset": spec["dataset"], "model": spec["model"], "num_classes": 3,
                   "test_top1": 0.5 + 0.1 * i, "test_loss": 1.0,
                   "per_class_accuracy": dict.fromkeys(CLASSES, 0.5),
                   "params": 11_000_000 + i, "mean_epoch_seconds": 1.5 + i, "peak_memory_mb": 500.0,
                   "device": "cpu (x86_64, 2 threads)", "epochs": epochs, "precision": "fp32",
                   "torch_version": "2.x", "seed": 0}
        if spec["dataset"] == "butterflies":
            metrics["test_top5"] = 0.9
        (run / "metrics.json").write_text(json.dumps(metrics))
        (run / "confusion.csv").write_text('true\\predicted,c0,c1,"c,2"\nc0,1,0,0\nc1,0,1,0\n"c,2",0,0,1\n')
    return runs


def assert_png(data: bytes) -> None:
    import io

    assert data[:8] == PNG_MAGIC
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
    with Image.open(io.BytesIO(data)) as im:
        assert im.width > 100 and im.height > 100


@pytest.fixture
def runs(tmp_path):
    return load_runs(VARIANTS, make_runs(tmp_path))


# --- load_runs ---------------------------------------------------------------------------------


def test_load_runs_reads_every_variant_in_order(runs):
    assert [r["variant"] for r in runs] == list(VARIANTS)
    assert [r["dataset"] for r in runs] == ["cifar10", "cifar10", "butterflies", "butterflies"]
    run = runs[0]
    assert run["spec"] is VARIANTS["cifar10-a"]
    assert list(run["history"]["epoch"]) == [1, 2, 3]
    assert run["metrics"]["params"] == 11_000_000
    assert list(run["confusion"].columns) == CLASSES and list(run["confusion"].index) == CLASSES
    assert run["confusion"].loc["c,2", "c,2"] == 1


@pytest.mark.parametrize("missing, stage", [("history.csv", "cnnbench train --variant cifar10-b"),
                                            ("metrics.json", "cnnbench evaluate --variant cifar10-b"),
                                            ("confusion.csv", "cnnbench evaluate --variant cifar10-b")])
def test_load_runs_names_the_missing_file_and_its_stage(tmp_path, missing, stage):
    runs_dir = make_runs(tmp_path)
    (runs_dir / "cifar10-b" / missing).unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_runs(VARIANTS, runs_dir)
    assert str(runs_dir / "cifar10-b" / missing) in str(err.value)
    assert f"`{stage}`" in str(err.value)


def test_load_runs_rejects_a_stale_or_partial_run(tmp_path):
    runs_dir = make_runs(tmp_path)
    moved = dict(VARIANTS, **{"cifar10-a": dict(VARIANTS["cifar10-a"], dataset="butterflies")})
    with pytest.raises(ValueError, match="evaluated on 'cifar10' but variant 'cifar10-a' now uses 'butterflies'"):
        load_runs(moved, runs_dir)
    (runs_dir / "cifar10-b" / "history.csv").write_text("epoch,train_loss\n1,2.0\n")
    with pytest.raises(ValueError, match=r"cifar10-b/history.csv: no column\(s\) train_acc, val_loss, val_acc"):
        load_runs(VARIANTS, runs_dir)


# --- plot_all ----------------------------------------------------------------------------------


def test_plot_all_writes_valid_pngs(runs, tmp_path):
    out = tmp_path / "plots"
    paths = plot_all(runs, out)
    assert paths == [out / "learning_curves_cifar10.png", out / "learning_curves_butterflies.png",
                     out / "accuracy.png"]
    assert sorted(out.iterdir()) == sorted(paths)
    for p in paths:
        data = p.read_bytes()
        assert_png(data)
        assert b"http" not in data  # no Software/URL text chunk
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_plot_all_replaces_an_existing_directory(runs, tmp_path):
    out = tmp_path / "plots"
    out.mkdir()
    (out / "stale.png").write_bytes(b"old")
    plot_all(runs[:2], out)
    assert sorted(p.name for p in out.iterdir()) == ["accuracy.png", "learning_curves_cifar10.png"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_plot_all_is_atomic(runs, tmp_path, monkeypatch):
    calls = []
    real = plots_mod.learning_curves

    def once_then_boom(*args, **kwargs):  # the first figure is written, the second fails
        if calls:
            raise RuntimeError("disk full")
        calls.append(args)
        real(*args, **kwargs)

    monkeypatch.setattr(plots_mod, "learning_curves", once_then_boom)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_all(runs, tmp_path / "plots")
    assert calls, "the first figure should have been drawn before the failure"
    assert not (tmp_path / "plots").exists()
    assert list(tmp_path.glob(".plots*")) == []


def test_plot_all_long_history_and_single_variant(tmp_path):
    variants = {"only": {"dataset": "cifar10", "model": "resnet18"}}
    runs = load_runs(variants, make_runs(tmp_path, variants, epochs=60))
    paths = plot_all(runs, tmp_path / "plots")
    for p in paths:
        assert_png(p.read_bytes())


def test_plot_all_needs_runs(tmp_path):
    with pytest.raises(ValueError, match="no runs"):
        plot_all([], tmp_path / "plots")
    assert not (tmp_path / "plots").exists()
