"""`cnnbench bench`: the measurements are made, named and written (speed targets live in docs)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnbench import bench
from cnnbench.cli import main
from cnnbench.config import load

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def cfg():
    return load(REPO / "params.yaml", profile="smoke")


def jpeg_zip(path: Path, classes=("ADONIS", "ZEBRA"), per_class=6) -> Path:
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        for split in ("train", "valid"):
            for c in classes:
                for i in range(per_class):
                    im = Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8))
                    import io

                    buf = io.BytesIO()
                    im.save(buf, "JPEG")
                    zf.writestr(f"{split}/{c}/{i:03d}.jpg", buf.getvalue())
        zf.writestr("butterflies and moths.csv", "class id,filepaths,labels,data set\n")
    return path


def test_timed_windows_and_rate():
    calls = []
    windows = bench.timed_windows(lambda: calls.append(1), torch.device("cpu"), warmup=2, windows=3, steps=4)
    assert len(windows) == 3 and len(calls) == 2 + 3 * 4
    r = bench.rate([1.0, 2.0, 4.0], 8)
    assert r == {"median": 4.0, "min": 2.0, "max": 8.0, "windows": 3}


def test_bench_variant_engine_vs_reference_on_synthetic_data(cfg, tmp_path):
    r = bench.bench_variant(cfg, "cifar10-resnet18", tmp_path, batch_size=16, warmup=1, windows=2, steps=2,
                            workers=0, device=torch.device("cpu"))
    assert r["data"].startswith("synthetic") and r["batch_size"] == 16 and r["image_size"] == 32
    eng, ref = r["engine_train_images_per_s"]["median"], r["reference_train_images_per_s"]["median"]
    assert eng > 0 and ref > 0 and r["speedup"] == pytest.approx(eng / ref)
    assert r["eval_images_per_s"]["median"] > 0
    assert r["model_only_train_images_per_s"]["median"] > 0
    text = bench.format_report({"device": "cpu", "torch_version": "x", "variants": [r]})
    assert "model alone (one fixed batch, no data work)" in text and "cannot exceed" in text
    assert r["engine"]["precision"] == "fp32" and r["reference"]["precision"] == "fp32"
    # the engine steps with torch's fused SGD; the reference with the default one, as the lab reports did
    assert r["engine"]["optimizer"] == "fused" and r["reference"]["optimizer"] == "default"
    # the reference runs as a script of its own: a fresh process, none of the engine's process settings
    assert r["reference"]["process"] == "its own (spawned)" and r["reference"]["allocator"] == "default"
    assert r["engine"]["allocator"] == bench.allocator_state()


def test_the_engine_is_timed_through_the_studys_own_step(cfg, tmp_path, monkeypatch):
    """bench times train.Trainer.step, the step a study's runs take (scheduler and EMA included)."""
    from cnnbench import train

    cfg.raw["recipes"]["fast"]["ema"] = 0.9
    real, calls = train.Trainer.step, []

    def counted(self, x, y):
        calls.append((self.ema is not None, self.scheduler.last_epoch))
        return real(self, x, y)

    monkeypatch.setattr(train.Trainer, "step", counted)
    bench.bench_variant(cfg, "cifar10-resnet18", tmp_path, batch_size=16, warmup=1, windows=2, steps=2, workers=0,
                        device=torch.device("cpu"), reference=False, recipe="fast")
    # warm-up + timed windows for the engine, then the same for the model alone on one fixed batch
    assert len(calls) == 2 * (1 + 2 * 2)
    assert all(has_ema for has_ema, _ in calls) and [step for _, step in calls] == list(range(len(calls)))


def _start_method() -> str:
    import multiprocessing

    return multiprocessing.get_start_method()


def test_in_fresh_process_returns_the_answer_or_the_child_error():
    import multiprocessing
    import os

    assert bench.in_fresh_process(os.getpid) != os.getpid()
    # its DataLoader workers start as a script's would (fork on Linux), not as the spawned child itself
    assert bench.in_fresh_process(_start_method) == multiprocessing.get_all_start_methods()[0]
    assert bench.in_fresh_process(np.sum, np.array([3, 4])) == 7
    with pytest.raises(RuntimeError, match=r"int failed in its own process: ValueError"):
        bench.in_fresh_process(int, "seven")


def test_reference_transform_is_the_reports_pipeline(cfg):
    t = bench.reference_transform(cfg.run("cifar10-resnet18").train, 32)
    names = [type(x).__name__ for x in t.transforms]
    assert names == ["RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    t = bench.reference_transform(cfg.run("butterflies-resnet18").train, 224)
    assert [type(x).__name__ for x in t.transforms][0] == "RandomResizedCrop"


def test_data_path_packed_store_vs_imagefolder(cfg, tmp_path):
    folder = bench.extract_split(jpeg_zip(tmp_path / "b.zip"), "train", tmp_path / "x")
    assert sorted(p.name for p in folder.iterdir()) == ["ADONIS", "ZEBRA"]
    assert len(list(folder.rglob("*.jpg"))) == 12
    d = bench.bench_data_path(cfg, folder, batch_size=4, warmup=1, windows=2, steps=2, workers=0,
                              device=torch.device("cpu"), tiles=[1, 4])
    assert d["images"] == 12 and d["image_size"] == 224
    assert d["tile"] == 2  # two 224 px images fit augment.CPU_TILE_BYTES
    assert d["kernel"] == "numba" and d["packed_batches_per_s_torch_kernel"]["median"] > 0
    assert sorted(d["packed_batches_per_s_by_tile"]) == ["1", "4"]
    assert all(r["median"] > 0 for r in d["packed_batches_per_s_by_tile"].values())
    text = bench.format_report({"device": "cpu", "torch_version": "x", "variants": [], "data_path": d})
    assert "torch kernel in tiles of 4 images" in text and "(resized crop: numba kernel)" in text
    assert d["packed_batches_per_s"]["median"] > 0 and d["imagefolder_batches_per_s"]["median"] > 0
    assert d["imagefolder_process"] == "its own (spawned)"
    assert d["speedup"] == pytest.approx(d["packed_batches_per_s"]["median"] / d["imagefolder_batches_per_s"]["median"])


def test_cli_bench_writes_json_and_table(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "workflow/schemas").mkdir(parents=True)
    (tmp_path / "workflow/schemas/params.schema.yaml").write_text((REPO / "workflow/schemas/params.schema.yaml").read_text())
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    folder = bench.extract_split(jpeg_zip(tmp_path / "b.zip"), "train", tmp_path / "imgs")
    rc = main(["bench", "--profile", "smoke", "--windows", "2", "--steps", "1", "--warmup", "1", "--workers", "0",
               "--batch-size", "8", "--images", str(folder), "--out", "out/bench.json"])
    assert rc == 0
    report = json.loads((tmp_path / "out/bench.json").read_text())
    assert report["device"].startswith("cpu") and report["variants"][0]["variant"] == "cifar10-resnet18"
    assert "data_path" in report
    out = capsys.readouterr().out
    assert "engine img/s" in out and "ImageFolder+PIL" in out
    assert main(["bench", "--profile", "smoke", "--variants", "nope"]) == 2
    for flag, bad, says in (("--tiles", "1,x", "not a comma-separated list of integers"),
                            ("--tiles", "0", "at least 1"), ("--seeds", "0,-1", "at least 0")):
        with pytest.raises(SystemExit) as exc:
            main(["bench", flag, bad])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and says in err and flag in err


def test_accuracy_budget_trains_each_variant_per_seed(cfg, tmp_path):
    from test_train import CIFAR_CLASSES, make_prepared

    prepared = make_prepared(tmp_path, CIFAR_CLASSES, n=(128, 20, 20))
    root = tmp_path / "root"
    root.mkdir()
    prepared.rename(root / "cifar10")
    cfg.raw["profiles"]["smoke"]["train"].update(train_limit=None, batch_size=32)
    result = bench.bench_accuracy(cfg, ["cifar10-resnet18"], root, epochs=1, seeds=[0, 1], work_dir=tmp_path / "w",
                                  recipes=["lab", "fast"])
    assert [(r["variant"], r["recipe"], r["seed"], r["epochs"]) for r in result["runs"]] == [
        ("cifar10-resnet18", "lab", 0, 1), ("cifar10-resnet18", "lab", 1, 1),
        ("cifar10-resnet18", "fast", 0, 1), ("cifar10-resnet18", "fast", 1, 1)]
    assert result["mean_test_top1"]["cifar10-resnet18/lab"] == pytest.approx(
        (result["runs"][0]["test_top1"] + result["runs"][1]["test_top1"]) / 2)
    assert result["mean_val_top1"]["cifar10-resnet18/fast"] == pytest.approx(
        (result["runs"][2]["val_top1"] + result["runs"][3]["val_top1"]) / 2)
    # val_top1 is the last epoch's validation accuracy, as the run's history.csv records it
    for r in result["runs"]:
        history = (tmp_path / "w" / r["variant"] / r["recipe"] / f"seed{r['seed']}" / "history.csv").read_text()
        assert r["val_top1"] == pytest.approx(float(history.splitlines()[-1].split(",")[4]))
    assert result["runs"][0]["test_top1"] != result["runs"][1]["test_top1"] or \
        result["runs"][0]["test_top1"] != result["runs"][2]["test_top1"]  # seeds and recipes really differ
