"""A learning rate that makes the loss NaN, and checkpoints that are data, not code.

- NaN: training stops in the step where the loss stopped being finite (or, after an epoch's last
  step, the weights), with an error naming the epoch and step; no model, history, summary or
  metrics (DVCLive's included) are written, and the last complete epoch's checkpoint stays
  loadable with ``weights_only=True`` and finite, wherever in an epoch the blow-up lands.
- Checkpoints and model.pt load with ``torch.load(weights_only=True)``: a file whose pickle would
  run code is refused (a marker file is never created), a corrupt one is named, and one from
  another variant or data set is refused with a clear message instead of being loaded.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from relsupport import (
    MIRROR,
    VARIANT,
    checkpoint_dir,
    cli,
    env_for,
    files_under,
    make_project,
    read_params,
    run,
    run_args,
    run_dir,
    set_key,
    variant_spec,
    write_params,
)

OTHER = "cifar10-mobilenet_v2"  # another variant of the same data set
BUTTERFLY = "butterflies-resnet18"  # a variant of the other data set


@pytest.fixture(scope="module")
def project(tmp_path_factory, mirror_dir):
    """cifar10 prepared from the mirror, one run of VARIANT trained and evaluated."""
    root = make_project(tmp_path_factory.mktemp("ckpt"))
    for stage in ("download", "preprocess"):
        rc, err = cli(root, "-q", stage, "--dataset", "cifar10")
        assert rc == 0, err
    rc, err = cli(root, "-q", "train", *run_args())
    assert rc == 0, err
    rc, err = cli(root, "-q", "evaluate", *run_args())
    assert rc == 0, err
    return root


def _error_line(err: str, stage: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith(f"cnnbench {stage}: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


class _RunsCode:
    """Pickles as a call of os.system: loading it with plain pickle would create the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# --- NaN ------------------------------------------------------------------------------------------
def test_nan_loss_stops_at_once_and_writes_no_result(tmp_path, mirror_dir):
    root = make_project(tmp_path / "p")
    for stage in ("download", "preprocess"):
        assert cli(root, "-q", stage, "--dataset", "cifar10")[0] == 0
    doc = read_params(root)
    # lr 10 at batch 8 blows up in the second epoch (deterministic smoke profile on the CPU).
    set_key(variant_spec(doc), "train", {"optimizer": {"lr": 10.0, "momentum": 0.9}})
    set_key(doc, "profiles.smoke.train.batch_size", 8)
    set_key(doc, "profiles.smoke.train.max_batches_per_epoch", None)
    set_key(doc, "profiles.smoke.train.epochs", 4)
    write_params(root, doc)

    rc, err = cli(root, "train", *run_args())
    assert rc == 1, err
    line = _error_line(err, "train")
    # the loss of a step, or the weights after an epoch's last step: whichever goes first
    m = re.search(r"(?:loss|the weights) became NaN or infinite at epoch (\d+), step (\d+); lower train.optimizer.lr "
                  r"\(now 10.0\); no model or metrics were written", line)
    assert m, line
    epoch, step = int(m.group(1)), int(m.group(2))
    assert 1 <= epoch <= 4 and 1 <= step <= 32
    # It stopped in that epoch: the last complete epoch's checkpoint is the one before it.
    ckpt_file = checkpoint_dir(root) / "last.pt"
    if epoch > 1:
        ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=True)
        assert ckpt["epoch"] == epoch - 1 and len(ckpt["history"]) == epoch - 1
        assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())
    # ... and it stopped in that step: the log names no later epoch.
    assert f"epoch {epoch}/4:" not in err
    assert files_under(run_dir(root)) == set(), files_under(run_dir(root))  # no model, metrics, DVCLive
    rc, err = cli(root, "evaluate", *run_args())
    assert rc == 1 and "no trained model" in _error_line(err, "evaluate")


# --- checkpoints and model files are data ----------------------------------------------------------
def test_checkpoints_and_models_load_with_weights_only(project):
    blob = torch.load(run_dir(project) / "model.pt", map_location="cpu", weights_only=True)
    assert blob["variant"] == VARIANT and blob["state_dict"]
    assert not checkpoint_dir(project).joinpath("last.pt").exists()  # removed when the run finished


def _save_as_checkpoint(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"variant": VARIANT, "dataset": "cifar10", "epoch": 1, "payload": _RunsCode(marker)}, path)


def test_checkpoint_that_would_run_code_is_refused(project, tmp_path):
    marker = tmp_path / "PWNED"
    ckpt_dir = tmp_path / "ckpt"
    _save_as_checkpoint(ckpt_dir / "last.pt", marker)
    out = tmp_path / "run"
    rc, err = cli(project, "train", *run_args(), "--out", str(out), "--checkpoint-dir", str(ckpt_dir))
    assert rc == 1, err
    line = _error_line(err, "train")
    assert f"{ckpt_dir / 'last.pt'}: refused to load this checkpoint" in line
    assert "nothing in it was run" in line and "Delete it" in line
    assert not marker.exists()
    assert files_under(out) == set()
    assert (ckpt_dir / "last.pt").exists()  # evidence is left for the user to inspect and delete


def test_model_file_that_would_run_code_is_refused(project, tmp_path):
    marker = tmp_path / "PWNED"
    run_path = tmp_path / "run"
    shutil.copytree(run_dir(project), run_path)
    blob = torch.load(run_path / "model.pt", map_location="cpu", weights_only=True)
    blob["payload"] = _RunsCode(marker)
    torch.save(blob, run_path / "model.pt")
    (run_path / "metrics.json").unlink()
    rc, err = cli(project, "evaluate", *run_args(), "--run", str(run_path))
    assert rc == 1, err
    line = _error_line(err, "evaluate")
    assert f"{run_path / 'model.pt'}: refused to load this trained model" in line and "Retrain it" in line
    assert not marker.exists() and not (run_path / "metrics.json").exists()


@pytest.mark.parametrize("garbage", [b"", b"not a checkpoint at all", "truncated"])
def test_corrupt_checkpoint_is_named(project, tmp_path, garbage):
    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    if garbage == "truncated":
        torch.save({"variant": VARIANT, "x": torch.zeros(10000)}, ckpt_dir / "full.pt")
        data = (ckpt_dir / "full.pt").read_bytes()
        (ckpt_dir / "full.pt").unlink()
        garbage = data[: len(data) // 2]
    (ckpt_dir / "last.pt").write_bytes(garbage)
    rc, err = cli(project, "train", *run_args(), "--out", str(tmp_path / "run"), "--checkpoint-dir", str(ckpt_dir))
    assert rc == 1, err
    line = _error_line(err, "train")
    assert f"{ckpt_dir / 'last.pt'}: not a readable checkpoint" in line and "Delete it" in line, line
    assert files_under(tmp_path / "run") == set()


def _checkpoint_of(project: Path, tmp_path: Path) -> Path:
    """A genuine mid-run checkpoint of VARIANT (epoch 1 of 2), from a run SIGKILLed right after it."""
    ckpt_dir = tmp_path / "genuine-ckpt"
    env = env_for(MIRROR, {"CNNBENCH_FAULT_KILL_AFTER_CHECKPOINT": "1"})
    proc = run(["cnnbench", "-q", "train", *run_args(), "--out", str(tmp_path / "killed"),
                "--checkpoint-dir", str(ckpt_dir), "--no-dvclive"], project, env)
    assert proc.returncode != 0 and (ckpt_dir / "last.pt").is_file(), proc.stderr
    return ckpt_dir / "last.pt"


@pytest.mark.parametrize("target", [OTHER, BUTTERFLY])
def test_checkpoint_of_another_variant_or_data_set_is_refused(project, tmp_path, target):
    genuine = _checkpoint_of(project, tmp_path)
    target_ckpt = checkpoint_dir(project, target) / "last.pt"
    target_ckpt.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(genuine, target_ckpt)
    try:
        rc, err = cli(project, "train", *run_args(target))
        assert rc == 1, err
        line = _error_line(err, "train")
        dataset = target.split("-")[0]
        assert (f"{checkpoint_dir(Path('.'), target) / 'last.pt'} belongs to variant '{VARIANT}' on 'cifar10', "
                f"not '{target}' on '{dataset}'") in line, line
        assert "delete it" in line
        assert files_under(run_dir(project, target)) == set()
        assert target_ckpt.read_bytes() == genuine.read_bytes()  # refused, not loaded, not touched
    finally:
        shutil.rmtree(target_ckpt.parent)


def test_model_of_another_variant_is_refused_by_evaluate(project, tmp_path):
    run_path = tmp_path / OTHER
    run_path.mkdir()
    for f in ("model.pt", "train.json"):
        shutil.copy2(run_dir(project) / f, run_path / f)
    rc, err = cli(project, "evaluate", *run_args(OTHER), "--run", str(run_path))
    assert rc == 1, err
    line = _error_line(err, "evaluate")
    assert f"holds variant '{VARIANT}' on 'cifar10', not '{OTHER}' on 'cifar10'" in line, line
    assert not (run_path / "metrics.json").exists()
