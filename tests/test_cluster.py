"""Beyond one machine with Snakemake: job resources from params.yaml, and the smoke study run
through a real single-node SLURM cluster (scripts/slurm-local.sh) with the SLURM executor plugin.

The SLURM test needs the Debian packages slurm-wlm and munge (`make test` installs them as
root) and root or a free /etc/slurm/slurm.conf; it checks that every preprocess/train/evaluate
job went through SLURM (job ids in Snakemake's log, each job COMPLETED in `scontrol`), that download,
plot and report ran locally, that no job asked for a GPU, and that the metrics equal those of
a local deterministic CPU run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from study_layout import keep_variants, run_dir
from test_e2e import REPO, copy_repo, env_for, sh

# Two variants under one recipe keep the study small (one data set, 1 preprocess + 2 train + 2 evaluate jobs).
SLURM_VARIANTS = ["cifar10-resnet18", "cifar10-mobilenet_v2"]
SLURM_SCRIPT = REPO / "scripts" / "slurm-local.sh"


def dry_run_resources(profile: str) -> dict[str, str]:
    """rule -> its `resources:` line in `snakemake -n` of the real repository."""
    env = env_for(REPO)
    # --forceall: plan every job of the target, whatever this checkout already has in data/ or results/
    proc = subprocess.run(["snakemake", "-n", "--forceall", "--config", f"profile={profile}", "--cores", "8",
                           "results/runs/cifar10-resnet18/lab/seed0/metrics.json"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out, rule, found = proc.stdout + proc.stderr, None, {}
    for line in out.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):", line):
            rule = m.group(1)
        elif rule and line.strip().startswith("resources:"):
            found[rule] = line.strip()
        elif rule and line.strip().startswith("threads:"):
            found[f"{rule}.threads"] = line.split(":")[1].strip()
    return found


def test_full_profile_train_asks_for_a_gpu_preprocess_does_not():
    res = dry_run_resources("full")
    assert "gpu=1" in res["train"] and "gpu=1" in res["evaluate"]
    assert "runtime=240" in res["train"] and "mem_mb=16000" in res["train"]
    assert "gpu" not in res["preprocess"] and "mem_mb=16000" in res["preprocess"]
    assert res["train.threads"] == "4"


def test_smoke_profile_asks_for_no_gpu():
    res = dry_run_resources("smoke")
    assert all("gpu" not in res[r] for r in ("preprocess", "train", "evaluate"))
    assert "mem_mb=2000" in res["train"] and res.get("train.threads", "1") == "1"  # 1 thread is not printed


def test_resources_profiles_must_name_a_profile(tmp_path):
    from cnnbench.config import ConfigError, load

    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    doc["resources"]["profiles"]["tiny"] = {"train": {"gpu": 0}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "workflow").symlink_to(REPO / "workflow")
    with pytest.raises(ConfigError, match=r"resources\.profiles\.tiny: 'tiny' is not defined under profiles"):
        load(tmp_path / "params.yaml")
    doc["resources"]["profiles"] = {"smoke": {"train": {"gpus": 1}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"resources\.profiles\.smoke\.train: unknown key 'gpus'"):
        load(tmp_path / "params.yaml")


# --- a real SLURM cluster ------------------------------------------------------------------------
def _slurm_missing() -> str | None:
    for cmd in ("munged", "slurmctld", "slurmd", "sbatch"):
        if shutil.which(cmd) is None:
            return (f"{cmd} not found: install slurm-wlm and munge "
                    "(apt-get install slurm-wlm munge; make test does as root)")
    return None


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    why = _slurm_missing()
    if why:
        pytest.skip(why)
    state = tmp_path_factory.mktemp("slurm")
    env = dict(os.environ, SLURM_LOCAL_DIR=str(state / "cluster"))
    subprocess.run([str(SLURM_SCRIPT), "start"], env=env, check=True, timeout=120)
    try:
        yield {"SLURM_CONF": str(state / "cluster" / "slurm.conf"), "SLURM_LOCAL_DIR": env["SLURM_LOCAL_DIR"]}
    finally:
        subprocess.run([str(SLURM_SCRIPT), "stop"], env=env, check=True, timeout=120)
        # Every daemon the script started is gone with its pid files' processes.
        assert not (state / "cluster").exists()


@pytest.mark.e2e
def test_smoke_study_through_slurm_matches_a_local_run(slurm_cluster, mirror_dir, tmp_path):
    repo = copy_repo(tmp_path / "study")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(keep_variants(params, SLURM_VARIANTS, recipes=["lab"]), sort_keys=False))
    env = dict(env_for(mirror_dir), SLURM_CONF=slurm_cluster["SLURM_CONF"])

    t0 = time.perf_counter()
    proc = sh(["snakemake", "--profile", "workflow/profiles/slurm", "--verbose",
               "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
               "--slurm-no-account", "--jobs", "4", "--latency-wait", "5"], repo, env, timeout=900)
    print(f"\nsmoke study ({len(SLURM_VARIANTS)} variants) through SLURM: {time.perf_counter() - t0:.1f} s wall")
    log = proc.stdout + proc.stderr

    # Every cluster job went through SLURM and completed there; the small ones ran locally.
    submitted = re.findall(r"submitted with SLURM jobid (\d+) \(log: [^)]*/rule_(\w+)/", log)
    rules = sorted(rule for _, rule in submitted)
    assert rules == sorted(["preprocess"] + ["train", "evaluate"] * len(SLURM_VARIANTS)), log[-3000:]
    for job_id, rule in submitted:
        info = subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True, text=True,
                              check=True).stdout
        assert "JobState=COMPLETED" in info and "ExitCode=0:0" in info, info
        assert f"WorkDir={repo}" in info
        assert "gres/gpu" not in info  # the smoke profile asks for no GPU
    history = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %j"], env=env, capture_output=True, text=True,
                             check=True).stdout.split()
    assert {job_id for job_id, _ in submitted} <= set(history)
    sbatch_calls = [line for line in log.splitlines() if "sbatch call:" in line]
    assert len(sbatch_calls) == len(submitted) and not any("--gpus" in c or "--gres" in c for c in sbatch_calls)
    assert all("--mem 2000" in c and "--cpus-per-task=1" in c for c in sbatch_calls if "rule_train" in c)
    assert not re.search(r"submitted with SLURM jobid \d+ \(log: [^)]*/rule_(download|aggregate|plot|report)/", log)
    assert (repo / "results/report/report.html").is_file()

    # The same variants trained and evaluated locally (deterministic CPU mode) give the same numbers.
    local = tmp_path / "local"
    for variant in SLURM_VARIANTS:
        out = run_dir(local, variant)
        sh(["cnnbench", "train", "--variant", variant, "--out", str(out), "--no-dvclive",
            "--checkpoint-dir", str(local / "ckpt" / variant)], repo, env)
        sh(["cnnbench", "evaluate", "--variant", variant, "--run", str(out)], repo, env)
        a = json.loads((run_dir(repo, variant) / "metrics.json").read_text())
        b = json.loads((out / "metrics.json").read_text())
        for key in ("test_top1", "test_loss"):
            assert a[key] == b[key], f"{variant}: {key} {a[key]} under SLURM, {b[key]} locally"
        curves = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"]  # not seconds or memory
        assert _columns(run_dir(repo, variant) / "history.csv", curves) == _columns(out / "history.csv", curves)


def _columns(path: Path, names: list[str]) -> list[list[str]]:
    import csv

    with open(path, newline="") as fh:
        return [[row[n] for n in names] for row in csv.DictReader(fh)]
