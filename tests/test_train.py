"""The training engine and evaluation on small synthetic packed data."""

from __future__ import annotations

import csv
import json
import platform
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnbench import engine as engine_mod
from cnnbench import train as train_mod
from cnnbench.config import load
from cnnbench.data import packed
from cnnbench.errors import DataError
from cnnbench.evaluate import ModelMismatch, evaluate_variant
from cnnbench.spec import OptimizerSpec, ScheduleSpec
from cnnbench.checkpoint import CheckpointMismatch
from cnnbench.train import TrainingDiverged, lr_factor, train_variant

REPO = Path(__file__).resolve().parents[1]
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_prepared(root: Path, classes: list[str], n=(160, 40, 40), size=32, seed=0, noisy=()) -> Path:
    """A packed store whose classes are separable by colour, so a few steps learn something
    (``noisy``: the noisy classes its manifest records, as butterfly preprocessing does)."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, count in zip(packed.SPLITS, n):
        labels = np.arange(count) % len(classes)
        images = rng.integers(0, 60, size=(count, size, size, 3), dtype=np.uint8)
        images[..., 0] += (labels * (190 // len(classes))).astype(np.uint8)[:, None, None]
        splits[split] = (images, labels.astype(np.int64))
    manifest = {"dataset": "synthetic", "source": {"source": "test", "sha256": "0" * 64},
                "noisy_classes": list(noisy), "excluded": [], "notes": []}
    out = root / "prepared"
    packed.write_prepared(out, splits, classes, manifest)
    return out


@pytest.fixture
def cfg():
    c = load(REPO / "params.yaml", profile="smoke")
    c.raw["profiles"]["smoke"]["train"].update(train_limit=None, max_batches_per_epoch=None, batch_size=32)
    return c


@pytest.fixture
def prepared(tmp_path):
    return make_prepared(tmp_path, CIFAR_CLASSES)


def run(cfg, prepared, out: Path, name="cifar10-resnet18", recipe=None, seed=None):
    return train_variant(cfg, name, prepared, out, out.parent / (out.name + "-ckpt"), use_dvclive=False,
                         recipe=recipe, seed=seed)


def kill_after_first_epoch(cfg, prepared, out: Path, monkeypatch, name="cifar10-resnet18", recipe=None) -> None:
    """Run until the validation of epoch 2, then interrupt it as Ctrl-C would: epoch 1's
    checkpoint is on disk, no model.pt is. ``predict`` is the real one again afterwards."""
    real_predict = train_mod.predict
    calls = {"n": 0}

    def dying_predict(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # validation of epoch 2: epoch 1's checkpoint is on disk
            raise KeyboardInterrupt
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(train_mod, "predict", dying_predict)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, prepared, out, name, recipe=recipe)
    monkeypatch.setattr(train_mod, "predict", real_predict)


def read_history(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_train_writes_outputs_and_removes_checkpoint(cfg, prepared, tmp_path):
    summary = run(cfg, prepared, tmp_path / "run")
    out = tmp_path / "run"
    assert summary["augment_kernel"] == "torch (pad crop)"
    hist = read_history(out / "history.csv")
    assert [int(r["epoch"]) for r in hist] == [1, 2]
    assert set(train_mod.HISTORY_COLUMNS) == set(hist[0])
    assert all(0 <= float(r["val_acc"]) <= 1 and float(r["seconds"]) > 0 for r in hist)
    assert summary["train_images"] == 160 and summary["val_images"] == 40
    blob = torch.load(out / "model.pt", weights_only=True)
    assert blob["variant"] == "cifar10-resnet18" and blob["classes"] == CIFAR_CLASSES
    assert json.loads((out / "train.json").read_text())["params"] == summary["params"]
    assert not (tmp_path / "run-ckpt" / "last.pt").exists()


def test_deterministic_runs_are_bit_identical(cfg, prepared, tmp_path):
    run(cfg, prepared, tmp_path / "a")
    run(cfg, prepared, tmp_path / "b")
    a = torch.load(tmp_path / "a/model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b/model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    cols = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
    ha, hb = read_history(tmp_path / "a/history.csv"), read_history(tmp_path / "b/history.csv")
    assert [[r[c] for c in cols] for r in ha] == [[r[c] for c in cols] for r in hb]


def test_interrupted_run_resumes_to_identical_result(cfg, prepared, tmp_path, monkeypatch):
    run(cfg, prepared, tmp_path / "ref")
    kill_after_first_epoch(cfg, prepared, tmp_path / "resumed", monkeypatch)
    ckpt = torch.load(tmp_path / "resumed-ckpt/last.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    assert not (tmp_path / "resumed/model.pt").exists()
    run(cfg, prepared, tmp_path / "resumed")
    a = torch.load(tmp_path / "ref/model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "resumed/model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_stale_checkpoint_is_set_aside(cfg, prepared, tmp_path, monkeypatch):
    ckpt_dir = tmp_path / "run-ckpt"
    ckpt_dir.mkdir()
    torch.save({"variant": "cifar10-resnet18", "dataset": "cifar10", "settings_hash": "old" * 10, "epoch": 1},
               ckpt_dir / "last.pt")
    run(cfg, prepared, tmp_path / "run")
    assert list(ckpt_dir.glob("stale-*.pt"))
    assert len(read_history(tmp_path / "run/history.csv")) == 2


def test_checkpoint_of_another_variant_is_refused(cfg, prepared, tmp_path):
    ckpt_dir = tmp_path / "run-ckpt"
    ckpt_dir.mkdir()
    torch.save({"variant": "butterflies-resnet18", "dataset": "butterflies", "settings_hash": "x", "epoch": 1},
               ckpt_dir / "last.pt")
    with pytest.raises(CheckpointMismatch, match="belongs to variant 'butterflies-resnet18'"):
        run(cfg, prepared, tmp_path / "run")


def test_nan_loss_stops_with_epoch_and_step_and_writes_nothing(cfg, prepared, tmp_path):
    cfg.raw["profiles"]["smoke"]["train"]["optimizer"] = {"lr": 10.0, "momentum": 0.99}
    cfg.raw["profiles"]["smoke"]["train"]["epochs"] = 50
    with pytest.raises(TrainingDiverged, match=r"NaN or infinite at epoch \d+, step \d+; lower train.optimizer.lr"):
        run(cfg, prepared, tmp_path / "run")
    assert not (tmp_path / "run/model.pt").exists()
    assert not (tmp_path / "run/metrics.json").exists()


@pytest.mark.parametrize("ema", [None, 0.9])
def test_weights_that_diverge_in_an_epochs_last_step_never_reach_a_checkpoint(cfg, prepared, tmp_path, monkeypatch,
                                                                             ema):
    """The loss of an epoch's last step is computed before its update: weights that update makes
    non-finite are caught before that epoch's checkpoint, which stays the previous epoch's."""
    cfg.raw["profiles"]["smoke"]["train"].update(epochs=3, ema=ema)
    steps = 160 // 32  # 160 training images, batch 32
    real_step, calls = train_mod.Trainer.step, []

    def poisoned_step(self, x, y):
        result = real_step(self, x, y)
        calls.append(1)
        if len(calls) == 2 * steps:  # the last step of epoch 2: its loss is finite, the weights it leaves are not
            with torch.no_grad():
                next(self.model.parameters()).view(-1)[0] = float("inf")
        return result

    monkeypatch.setattr(train_mod.Trainer, "step", poisoned_step)
    with pytest.raises(TrainingDiverged, match=rf"the weights became NaN or infinite at epoch 2, step {steps}; "
                                               r"lower train.optimizer.lr"):
        run(cfg, prepared, tmp_path / "run")
    assert len(calls) == 2 * steps  # stopped there, not in a later step
    ckpt = torch.load(tmp_path / "run-ckpt/last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and len(ckpt["history"]) == 1
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())
    assert not (tmp_path / "run/model.pt").exists() and not (tmp_path / "run/history.csv").exists()


def test_batch_larger_than_dataset_is_an_error(cfg, prepared, tmp_path):
    cfg.raw["profiles"]["smoke"]["train"]["batch_size"] = 1000
    with pytest.raises(DataError, match="batch_size 1000 is larger than the 160 training images"):
        run(cfg, prepared, tmp_path / "run")


def _sched(name: str, warmup_epochs: int = 0, step_size: int = 10, gamma: float = 0.1) -> ScheduleSpec:
    return ScheduleSpec(name=name, warmup_epochs=warmup_epochs, step_size=step_size, gamma=gamma)


def test_lr_schedules():
    assert lr_factor(50, 100, 10, _sched("constant")) == 1.0
    assert lr_factor(0, 100, 10, _sched("cosine", warmup_epochs=1)) == pytest.approx(0.1)
    assert lr_factor(99, 100, 10, _sched("cosine")) < 0.01
    assert lr_factor(25, 100, 10, _sched("step", step_size=2, gamma=0.1)) == pytest.approx(0.1)
    assert lr_factor(45, 100, 10, _sched("step", step_size=2, gamma=0.1)) == pytest.approx(0.01)
    assert lr_factor(55, 100, 10, _sched("onecycle", warmup_epochs=1)) == pytest.approx(0.5)


def test_evaluate_writes_metrics_and_confusion(cfg, prepared, tmp_path):
    out = tmp_path / "run"
    run(cfg, prepared, out)
    metrics = evaluate_variant(cfg, "cifar10-resnet18", prepared, out)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == metrics
    for key in ("test_top1", "test_loss", "params", "mean_epoch_seconds", "peak_memory_mb", "device", "per_class_accuracy"):
        assert key in saved
    assert "test_top5" not in saved
    assert set(saved["per_class_accuracy"]) == set(CIFAR_CLASSES)
    lines = (out / "confusion.csv").read_text().splitlines()
    counts = [list(map(int, line.split(",")[1:])) for line in lines[1:]]
    assert sum(map(sum, counts)) == 40 == saved["test_images"]
    diag = sum(counts[i][i] for i in range(10))
    assert saved["test_top1"] == pytest.approx(diag / 40)
    # no leak audit: clean accuracy unknown, predictions.csv as before
    assert saved["test_images_clean"] is None and saved["test_top1_clean"] is None
    assert (out / "predictions.csv").read_text().splitlines()[0] == "actual,predicted"


def test_evaluate_scores_the_clean_test_images(cfg, prepared, tmp_path):
    from cnnbench.aggregate import _read_predictions

    out = tmp_path / "run"
    run(cfg, prepared, out)
    leaked = [0, 5, 6, 39]
    (prepared / "duplicates.json").write_text(json.dumps(
        {"format": "cnnbench-duplicates-v2", "test_leaked": leaked, "test_clean_count": 36, "groups": []}))
    metrics = evaluate_variant(cfg, "cifar10-resnet18", prepared, out)
    with open(out / "predictions.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["actual", "predicted", "clean"]
    assert [r["clean"] for r in rows] == ["0" if i in leaked else "1" for i in range(40)]
    right = [r["actual"] == r["predicted"] for r in rows]
    assert metrics["test_images_clean"] == 36 and metrics["test_images"] == 40
    assert metrics["test_top1_clean"] == pytest.approx(sum(ok for i, ok in enumerate(right) if i not in leaked) / 36)
    # aggregate reads the same per-image outcomes and agrees with metrics.json
    _, correct, clean = _read_predictions(out / "predictions.csv", "evaluate", metrics)
    assert clean.tolist() == [i not in leaked for i in range(40)] and correct.tolist() == right
    # every test image leaked: nothing to score, but the count is known
    (prepared / "duplicates.json").write_text(json.dumps({"test_leaked": list(range(40))}))
    metrics = evaluate_variant(cfg, "cifar10-resnet18", prepared, out)
    assert metrics["test_images_clean"] == 0 and metrics["test_top1_clean"] is None
    assert _read_predictions(out / "predictions.csv", "evaluate", metrics)[2].sum() == 0


def test_evaluate_csv_files_are_valid_csv_for_any_class_name(cfg, tmp_path):
    """Class names with commas, quotes and line breaks survive confusion.csv and predictions.csv."""
    import pandas as pd

    classes = ["plain", "with, comma", 'with "quotes"', 'both, "quoted", and comma', '"', ",", "two\nlines",
               "  padded  ", "ünïcode", "last"]
    prepared = make_prepared(tmp_path, classes)
    out = tmp_path / "run"
    run(cfg, prepared, out)
    metrics = evaluate_variant(cfg, "cifar10-resnet18", prepared, out)

    with open(out / "confusion.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["true\\predicted", *classes]
    assert [r[0] for r in rows[1:]] == classes and all(len(r) == 1 + len(classes) for r in rows)
    assert sum(int(v) for r in rows[1:] for v in r[1:]) == metrics["test_images"] == 40
    frame = pd.read_csv(out / "confusion.csv", index_col=0)  # as aggregate, plot and report read it
    assert list(frame.index) == classes and list(frame.columns) == classes
    assert int(frame.to_numpy().trace()) == round(metrics["test_top1"] * 40)

    with open(out / "predictions.csv", newline="", encoding="utf-8") as fh:
        preds = list(csv.DictReader(fh))
    labels = packed.load_split(prepared, "test")[1]
    assert [p["actual"] for p in preds] == [classes[i] for i in labels]
    assert {p["predicted"] for p in preds} <= set(classes)
    frame = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert list(frame.columns) == ["actual", "predicted"] and list(frame["actual"]) == [classes[i] for i in labels]


def test_butterfly_variant_filters_classes_and_reports_top5(cfg, tmp_path):
    noisy = cfg.raw["datasets"]["butterflies"]["noisy_classes"]
    # 26 classes, 20 kept: top-5 is reported from evaluate.TOP5_MIN_CLASSES classes of the data set on
    classes = sorted(noisy + [f"CLASS {i:02d}" for i in range(20)])
    prepared = make_prepared(tmp_path, classes, n=(160, 32, 32), noisy=noisy)
    out = tmp_path / "bf"
    summary = train_variant(cfg, "butterflies-resnet18", prepared, out, tmp_path / "ck", use_dvclive=False)
    assert summary["num_classes"] == 20 and not set(noisy) & set(summary["classes"])
    # on the CPU the resized crop runs in the fused numba kernel, and the run says so
    assert json.loads((out / "train.json").read_text())["augment_kernel"] == "numba (resized crop)"
    metrics = evaluate_variant(cfg, "butterflies-resnet18", prepared, out)
    assert 0 <= metrics["test_top1"] <= metrics["test_top5"] <= 1
    assert metrics["num_classes"] == 20
    # filtered: every test image is of a kept class, so top-1 on the kept classes is top-1
    assert metrics["test_top1_kept"] == metrics["test_top1"] and metrics["test_images_kept"] == metrics["test_images"]
    preds = (out / "predictions.csv").read_text().splitlines()
    assert preds[0] == "actual,predicted" and len(preds) == 1 + metrics["test_images"]
    # unfiltered: the noisy classes' test images are left out of top1_kept
    out2 = tmp_path / "bf-all"
    train_variant(cfg, "butterflies-resnet18-unfiltered", prepared, out2, tmp_path / "ck2", use_dvclive=False)
    m2 = evaluate_variant(cfg, "butterflies-resnet18-unfiltered", prepared, out2)
    assert m2["num_classes"] == 26 and m2["test_images_kept"] < m2["test_images"]
    rows = [line.split(",") for line in (out2 / "predictions.csv").read_text().splitlines()[1:]]
    kept = [(a, b) for a, b in rows if a not in noisy]
    assert len(kept) == m2["test_images_kept"]
    assert m2["test_top1_kept"] == pytest.approx(sum(a == b for a, b in kept) / len(kept))
    # the leak audit lists positions in the stored test split (all 26 classes): the filtered variant
    # sees only those of its 20 classes, in the order load_split keeps them
    labels = packed.load_split(prepared, "test")[1]
    leaked = [i for i in range(len(labels)) if i % 3 == 0]
    (prepared / "duplicates.json").write_text(json.dumps({"test_leaked": leaked}))
    m1 = evaluate_variant(cfg, "butterflies-resnet18", prepared, out)
    m2 = evaluate_variant(cfg, "butterflies-resnet18-unfiltered", prepared, out2)
    assert m2["test_images_clean"] == len(labels) - len(leaked)
    assert m1["test_images_clean"] == sum(1 for i, y in enumerate(labels) if i % 3 and classes[y] not in noisy)
    rows = [line.split(",") for line in (out / "predictions.csv").read_text().splitlines()[1:]]
    clean = [(a, b) for a, b, c in rows if c == "1"]
    assert len(clean) == m1["test_images_clean"]
    assert m1["test_top1_clean"] == pytest.approx(sum(a == b for a, b in clean) / len(clean))


@pytest.mark.parametrize("n_classes, noisy, filtered, want", [
    (10, [], False, set()),                                                  # CIFAR-10 sized: neither
    (10, ["c1"], False, {"test_top1_kept", "test_images_kept"}),             # few classes, one noisy
    (20, [], False, {"test_top5"}),                                          # enough classes for top-5
    (25, ["c0", "c3"], False, {"test_top5", "test_top1_kept", "test_images_kept"}),
    (20, ["c1", "c3"], True, {"test_top5", "test_top1_kept", "test_images_kept"}),  # a model of 18 of the 20
])
def test_class_metrics_follow_the_data_set_not_its_name(tmp_path, n_classes, noisy, filtered, want):
    """Top-5 from TOP5_MIN_CLASSES classes of the data set (the manifest's, before a variant drops its
    noisy classes); top-1 on the kept classes wherever the manifest lists noisy ones."""
    from cnnbench.evaluate import TOP5_MIN_CLASSES, _class_metrics

    assert TOP5_MIN_CLASSES == 20
    stored = [f"c{i}" for i in range(n_classes)]
    (tmp_path / "manifest.json").write_text(json.dumps({"dataset": "mine", "classes": stored,
                                                        "noisy_classes": noisy}))
    classes = [c for c in stored if not (filtered and c in noisy)]
    k = len(classes)
    labels = torch.arange(2 * k) % k
    logits = torch.zeros(len(labels), k)
    logits[torch.arange(len(labels)), labels] = 1.0  # right on every image ...
    logits[0, 1] = 2.0  # ... but the first (of c0), whose class comes second
    out = _class_metrics(logits, labels, classes, tmp_path)
    assert set(out) == want
    if "test_top5" in out:
        assert out["test_top5"] == 1.0  # the first image's class is second: in its top 5
    if noisy:
        kept = [i for i, y in enumerate(labels.tolist()) if classes[y] not in noisy]
        assert out["test_images_kept"] == len(kept)
        assert out["test_top1_kept"] == pytest.approx(sum(i != 0 for i in kept) / len(kept))


def test_evaluate_refuses_model_of_other_settings(cfg, prepared, tmp_path):
    out = tmp_path / "run"
    run(cfg, prepared, out)
    with pytest.raises(ModelMismatch, match="trained with other settings"):
        evaluate_variant(cfg, "cifar10-resnet18", prepared, out, seed=7)  # another seed's run
    cfg.raw["variants"]["cifar10"]["resnet18"]["train"]["optimizer"] = {"lr": 0.5}
    with pytest.raises(ModelMismatch, match="trained with other settings"):
        evaluate_variant(cfg, "cifar10-resnet18", prepared, out)


def test_dvclive_logs_without_touching_dvc_yaml(cfg, prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    train_variant(cfg, "cifar10-resnet18", prepared, out, tmp_path / "ck", use_dvclive=True)
    metrics = json.loads((out / "dvclive" / "metrics.json").read_text())
    assert metrics["step"] == 1 and "val_acc" in metrics
    assert not (tmp_path / "dvc.yaml").exists() and not (out / "dvclive" / "dvc.yaml").exists()


def test_no_weight_decay_on_norm_and_bias():
    from cnnbench.models import build_model
    from cnnbench.train import build_optimizer

    model = build_model("resnet18", 10, width_mult=0.125)
    opt = build_optimizer(model, OptimizerSpec(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4,
                                               nesterov=True, no_decay_norm_bias=True))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert opt.defaults["nesterov"] is True
    flat = build_optimizer(model, OptimizerSpec(name="sgd", lr=0.1, momentum=0.0, weight_decay=5e-4,
                                                nesterov=False, no_decay_norm_bias=False))
    assert len(flat.param_groups) == 1 and flat.param_groups[0]["weight_decay"] == 5e-4


def test_fused_optimizer_takes_the_same_steps_as_the_default_one():
    from cnnbench.models import build_model
    from cnnbench.train import build_optimizer, optimizer_impl

    settings = OptimizerSpec(name="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True,
                             no_decay_norm_bias=True)
    models, opts = [], []
    for fused in (False, True):
        torch.manual_seed(0)
        models.append(build_model("resnet18", 10, width_mult=0.125))
        opts.append(build_optimizer(models[-1], settings, fused=fused))
    assert [optimizer_impl(o) for o in opts] == ["default", "fused"]
    start = [p.detach().clone() for p in models[0].parameters()]
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    for _ in range(3):
        for model, opt in zip(models, opts):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not all(torch.equal(a, b) for a, b in zip(start, models[0].parameters()))  # they did move


def _large_block_gets_its_own_mapping() -> tuple[str, bool]:
    """In a fresh process: let the engine tune the allocator, then malloc 100 MiB and ask glibc
    (mallinfo2) whether that block got a mapping of its own (returned to the kernel when freed)."""
    import ctypes

    from cnnbench.engine import Engine

    state = Engine.plain(torch.device("cpu")).allocator

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype, libc.malloc.restype = MallInfo2, ctypes.c_void_p
    before = libc.mallinfo2().hblks
    block = libc.malloc(100 * 2**20)
    mapped = libc.mallinfo2().hblks > before
    libc.free(ctypes.c_void_p(block))
    return state, mapped


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator tuning is glibc's mallopt")
def test_cpu_engine_keeps_freed_memory_in_the_process_unless_told_not_to(monkeypatch):
    from cnnbench.bench import in_fresh_process

    # glibc's default maps a 100 MiB block on its own; the CPU engine's settings keep it in the heap
    assert in_fresh_process(_large_block_gets_its_own_mapping) == ("glibc, tuned", False)
    monkeypatch.setenv(engine_mod.MALLOC_ENV, "0")
    assert in_fresh_process(_large_block_gets_its_own_mapping) == ("default", True)


def test_fast_recipe_with_ema_tta_and_bf16_trains_resumes_and_evaluates(cfg, prepared, tmp_path, monkeypatch):
    cfg.raw["recipes"]["fast"].update(ema=0.9, precision="bf16")
    cfg.raw["profiles"]["smoke"]["train"]["batch_size"] = 32
    name = "cifar10-resnet18"
    summary = run(cfg, prepared, tmp_path / "ref", name, recipe="fast")
    assert summary["precision"] == "bf16 autocast" and summary["recipe"] == "fast"
    assert "EMA" in summary["selection"] and summary["tta_flip"] is True
    metrics = evaluate_variant(cfg, name, prepared, tmp_path / "ref", recipe="fast")
    assert metrics["recipe"] == "fast" and metrics["tta_flip"] is True and 0 <= metrics["test_top1"] <= 1
    # killed after epoch 1 and resumed: the EMA state comes back too, so the result is bit-identical
    kill_after_first_epoch(cfg, prepared, tmp_path / "resumed", monkeypatch, name, recipe="fast")
    run(cfg, prepared, tmp_path / "resumed", name, recipe="fast")
    a = torch.load(tmp_path / "ref/model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "resumed/model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_tta_flip_averages_an_image_and_its_mirror():
    from cnnbench.engine import DeviceData
    from cnnbench.train import predict

    class LeftBright(torch.nn.Module):  # logits depend on which half is brighter: flip-sensitive
        def forward(self, x):
            left, right = x[..., : x.shape[-1] // 2].mean((1, 2, 3)), x[..., x.shape[-1] // 2 :].mean((1, 2, 3))
            return torch.stack([left - right, right - left], 1) * 10

    imgs = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    imgs[0, :, :4] = 255
    data = DeviceData(imgs, np.array([0, 1]), torch.device("cpu"))
    mean, std = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    plain, _ = predict(LeftBright(), data, mean, std, 2)
    tta, _ = predict(LeftBright(), data, mean, std, 2, tta_flip=True)
    assert plain[0].argmax() == 0
    assert torch.allclose(tta.exp().sum(1), torch.ones(2))
    assert torch.allclose(tta[0, 0], tta[0, 1])  # the image and its mirror disagree equally


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_a_gpu_run_where_there_is_no_cuda_stops_instead_of_training_on_the_cpu():
    from cnnbench.config import ConfigError
    from cnnbench.engine import select_device

    spec = load(REPO / "params.yaml", profile="full").run("cifar10-resnet18")  # its train jobs ask for a GPU
    assert spec.execution.device == "cuda"
    with pytest.raises(ConfigError, match=r"the run's device is 'cuda' .* CUDA is not available: .*--profile quick"):
        select_device(spec.execution.device)
