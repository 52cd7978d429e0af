"""SIGKILL a training process after its second epoch checkpoint, or while it writes one; rerun.

The kill is real (SIGKILL, uncatchable) and lands at an exact point: a ``sitecustomize`` hook
on the child's PYTHONPATH (tests/reliability/faulthook) wraps the checkpoint writer. The rerun
must resume after the last complete epoch and end bit-identical (weights, history, test metrics)
to an uninterrupted run in deterministic CPU mode (the smoke profile), through the CLI and
through the same Snakemake and DVC command.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

from relsupport import (
    MIRROR,
    RUN_OUTPUTS,
    VARIANT,
    checkpoint_dir,
    cli,
    describe,
    dvc_stage,
    env_for,
    git_commit,
    history_without_timing,
    make_project,
    metrics_without_timing,
    ok,
    read_params,
    run,
    run_args,
    run_dir,
    set_key,
    snakemake_target,
    train_log,
    state_dicts_equal,
    write_params,
)

EPOCHS = 4


def _project(dest: Path, git: bool = False) -> Path:
    make_project(dest)
    doc = read_params(dest)
    set_key(doc, "profiles.smoke.train.epochs", EPOCHS)
    write_params(dest, doc)
    if git:
        git_commit(dest, "study copy", init=True)
    return dest


def _fault(tmp: Path, **kinds: int) -> tuple[dict, Path]:
    log = tmp / "fault.log"
    fault = {"CNNBENCH_FAULT_LOG": str(log)}
    for kind, epoch in kinds.items():
        fault[f"CNNBENCH_FAULT_KILL_{kind.upper()}_CHECKPOINT"] = str(epoch)
    return env_for(MIRROR, fault), log


def _ckpt_epoch(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


@pytest.fixture(scope="module")
def project(tmp_path_factory, mirror_dir):
    """A smoke-profile project with cifar10 prepared and an uninterrupted reference run."""
    root = _project(tmp_path_factory.mktemp("kill-cli"))
    for stage in ("download", "preprocess"):
        rc, err = cli(root, "-q", stage, "--dataset", "cifar10")
        assert rc == 0, err
    env = env_for(MIRROR)
    ref = root / "reference"
    ok(["cnnbench", "-q", "train", *run_args(), "--out", str(ref), "--checkpoint-dir", str(root / "ref-ckpt")], root, env)
    ok(["cnnbench", "-q", "evaluate", *run_args(), "--run", str(ref)], root, env)
    return root, ref


def assert_identical_to_reference(run: Path, ref: Path) -> None:
    assert state_dicts_equal(run / "model.pt", ref / "model.pt"), "weights differ from the uninterrupted run"
    assert history_without_timing(run / "history.csv") == history_without_timing(ref / "history.csv")
    assert metrics_without_timing(run / "metrics.json") == metrics_without_timing(ref / "metrics.json")
    assert len(history_without_timing(run / "history.csv")) == EPOCHS


def assert_nothing_looks_complete(run: Path) -> None:
    present = [f for f in RUN_OUTPUTS if (run / f).exists()]
    assert present == [], f"a killed run left {present} in {run}"
    assert not (run / "dvclive" / "metrics.json").exists(), "a killed run left DVCLive metrics"


def test_cli_sigkill_after_second_epoch_resumes_bit_identical(project, tmp_path):
    root, ref = project
    env, log = _fault(tmp_path, after=2)
    cmd = ["cnnbench", "train", *run_args()]
    proc = run(cmd, root, env)
    assert proc.returncode == -signal.SIGKILL, describe(proc)
    assert "killed after checkpoint of epoch 2" in log.read_text()
    ckpt = checkpoint_dir(root) / "last.pt"
    assert _ckpt_epoch(ckpt) == 2
    assert_nothing_looks_complete(run_dir(root))

    proc = ok(cmd, root, env_for(MIRROR))  # the same command, no fault
    assert f"resuming {VARIANT} from" in proc.stderr and f"after epoch 2 of {EPOCHS}" in proc.stderr
    assert "epoch 1/" not in proc.stderr and "epoch 2/" not in proc.stderr  # completed epochs are not redone
    ok(["cnnbench", "-q", "evaluate", *run_args()], root, env_for(MIRROR))
    assert_identical_to_reference(run_dir(root), ref)
    assert not ckpt.exists(), "the checkpoint of a finished run is removed"
    assert (run_dir(root) / "dvclive" / "metrics.json").is_file()


def test_cli_sigkill_while_writing_checkpoint_keeps_the_previous_one(project, tmp_path):
    root, ref = project
    out, ckpt_dir = tmp_path / "run", tmp_path / "ckpt"
    cmd = ["cnnbench", "train", *run_args(), "--out", str(out), "--checkpoint-dir", str(ckpt_dir)]
    env, log = _fault(tmp_path, during=3)
    proc = run(cmd, root, env)
    assert proc.returncode == -signal.SIGKILL, describe(proc)
    assert "killed while writing checkpoint of epoch 3" in log.read_text()
    # The half-written file is a temporary; the checkpoint of epoch 2 survives intact.
    partial = [p for p in ckpt_dir.iterdir() if p.name != "last.pt"]
    assert len(partial) == 1 and partial[0].name.startswith(".last.pt.tmp-"), partial
    with pytest.raises(Exception):
        torch.load(partial[0], map_location="cpu", weights_only=True)
    ckpt = torch.load(ckpt_dir / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2
    assert_nothing_looks_complete(out)

    proc = ok(cmd, root, env_for(MIRROR))
    assert f"after epoch 2 of {EPOCHS}" in proc.stderr
    assert list(ckpt_dir.iterdir()) == [], "the partial file and the finished checkpoint are cleaned up"
    ok(["cnnbench", "-q", "evaluate", *run_args(), "--run", str(out)], root, env_for(MIRROR))
    assert_identical_to_reference(out, ref)


# --- the same through the drivers --------------------------------------------------------------
@pytest.mark.e2e
def test_snakemake_rerun_resumes_after_sigkill(project, tmp_path):
    _, ref = project
    root = _project(tmp_path / "smk")
    cmd = ["snakemake", "--cores", "2", snakemake_target()]
    env, log = _fault(tmp_path, after=2)
    proc = run(cmd, root, env)
    assert proc.returncode != 0, describe(proc, root)
    assert "killed after checkpoint of epoch 2" in log.read_text()
    assert _ckpt_epoch(checkpoint_dir(root) / "last.pt") == 2
    assert_nothing_looks_complete(run_dir(root))

    ok(cmd, root, env_for(MIRROR))
    log_text = train_log(root).read_text()
    assert f"after epoch 2 of {EPOCHS}" in log_text, log_text
    assert_identical_to_reference(run_dir(root), ref)


@pytest.mark.e2e
def test_dvc_rerun_resumes_after_sigkill(project, tmp_path):
    _, ref = project
    root = _project(tmp_path / "dvc", git=True)
    cmd = ["dvc", "repro", dvc_stage()]
    env, log = _fault(tmp_path, after=2)
    proc = run(cmd, root, env)
    assert proc.returncode != 0, describe(proc, root)
    assert "killed after checkpoint of epoch 2" in log.read_text()
    assert _ckpt_epoch(checkpoint_dir(root) / "last.pt") == 2
    assert_nothing_looks_complete(run_dir(root))

    proc = ok(cmd, root, env_for(MIRROR))
    assert f"after epoch 2 of {EPOCHS}" in proc.stdout + proc.stderr
    assert_identical_to_reference(run_dir(root), ref)
