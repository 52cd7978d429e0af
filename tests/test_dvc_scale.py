"""Beyond one machine with DVC: a shared artifact cache (a directory remote between two clones)
and a parameter sweep through the experiment queue (`dvc exp run --queue`, `dvc queue start -j 2`).

Both run on the smoke profile with a single variant, so the whole module costs one small
`dvc repro` plus two queued experiments that retrain only that variant.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest
import yaml

from study_layout import keep_variants, run_dir, stage, variant_param
from test_e2e import copy_repo, env_for, sh

pytestmark = pytest.mark.e2e

VARIANT = "cifar10-resnet18"
SWEEP_LRS = ["0.02", "0.05"]


@pytest.fixture(scope="module")
def dvc_base(tmp_path_factory, request):
    """A git + DVC copy of the study with one variant, reproduced once and committed."""
    mirror = request.getfixturevalue("mirror_dir")
    base = tmp_path_factory.mktemp("dvc-scale")
    repo = base / "first"
    repo.mkdir()
    copy_repo(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(keep_variants(params, [VARIANT], recipes=["lab"]), sort_keys=False))
    env = env_for(mirror)
    sh(["cnnbench", "dvc-yaml"], repo, env)  # the stages of the data sets that still have variants
    t0 = time.perf_counter()
    sh(["dvc", "repro"], repo, env)
    print(f"\none-variant smoke study under dvc repro: {time.perf_counter() - t0:.1f} s wall")
    sh(["git", "add", "-A"], repo, env)
    sh(["git", "commit", "-qm", "one-variant study, reproduced"], repo, env)
    return base, repo, env


def test_second_clone_pulls_models_and_metrics_from_the_shared_remote(dvc_base):
    base, repo, env = dvc_base
    # The remote is the one .dvc/config ships: a directory beside the checkout.
    remote = base / "cnnbench-dvc-remote"
    sh(["dvc", "push"], repo, env)
    assert remote.is_dir() and any(remote.rglob("*")), "dvc push wrote nothing to the shared remote"

    clone = base / "second"
    sh(["git", "clone", "-q", str(repo), str(clone)], base, env)
    assert not run_dir(clone, VARIANT).exists()
    sh(["dvc", "pull"], clone, env)
    for name in ("model.pt", "metrics.json", "history.csv", "confusion.csv"):
        assert (run_dir(clone, VARIANT) / name).read_bytes() == (run_dir(repo, VARIANT) / name).read_bytes(), name
    assert (clone / "results/report/report.html").is_file()

    status = sh(["dvc", "status", "--json"], clone, env)
    assert json.loads(status.stdout) == {}, status.stdout
    # Nothing retrains: every stage is up to date in the second clone.
    out = sh(["dvc", "repro"], clone, env).stdout
    assert "Running stage" not in out, out


def test_queued_sweep_runs_two_at_a_time_and_shows_in_exp_show(dvc_base):
    _, repo, env = dvc_base
    key = variant_param(VARIANT, "train.optimizer.lr")
    # `++`: set the key whether or not the variant already overrides the learning rate.
    sh(["dvc", "exp", "run", "--queue", "-S", f"++{key}={','.join(SWEEP_LRS)}"], repo, env)
    queued = sh(["dvc", "queue", "status"], repo, env).stdout
    assert queued.count("Queued") == len(SWEEP_LRS), queued

    sh(["dvc", "queue", "start", "-j", "2"], repo, env)
    deadline = time.monotonic() + 600
    while True:
        status = sh(["dvc", "queue", "status"], repo, env).stdout
        if "Queued" not in status and "Running" not in status:
            break
        assert time.monotonic() < deadline, f"queue did not finish in 600 s:\n{status}"
        time.sleep(3)
    assert status.count("Success") == len(SWEEP_LRS), status

    table = list(csv.DictReader(io.StringIO(sh(["dvc", "exp", "show", "--csv"], repo, env).stdout)))
    lr_col = next(c for c in table[0] if c.endswith(key))
    acc_col = next(c for c in table[0] if c.endswith("test_top1"))
    runs = {row[lr_col]: row for row in table if row["Experiment"]}
    assert sorted(runs) == sorted(SWEEP_LRS), table
    assert all(row[acc_col] not in ("", "-") for row in runs.values())
    # Each experiment retrained only the swept variant: the data stages came from the cache.
    for name in (row["Experiment"] for row in runs.values()):
        logs = sh(["dvc", "queue", "logs", name], repo, env).stdout
        assert f"Running stage '{stage('train', VARIANT)}'" in logs, logs[-2000:]
        assert "Stage 'preprocess@cifar10' didn't change, skipping" in logs, logs[-2000:]
