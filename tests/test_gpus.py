"""One GPU per concurrent job (cnnbench.gpus), with fake device lists: no GPU needed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cnnbench import gpus


@pytest.fixture(autouse=True)
def _release_claims():
    yield
    while gpus._held:
        gpus._held.pop().close()


def test_visible_devices_follow_cuda_visible_devices():
    assert gpus.visible_devices({"CUDA_VISIBLE_DEVICES": "3, 5,"}) == ["3", "5"]
    assert gpus.visible_devices({"CUDA_VISIBLE_DEVICES": ""}) == []


def test_each_claim_gets_its_own_device_until_released(tmp_path):
    first = gpus.claim(["0", "1"], tmp_path, wait=False)
    second = gpus.claim(["0", "1"], tmp_path, wait=False)
    assert {first[0], second[0]} == {"0", "1"}
    with pytest.raises(TimeoutError, match=r"all 2 GPUs .* --resources gpu=2"):
        gpus.claim(["0", "1"], tmp_path, wait=False)
    first[1].close()  # the job ends: its device is free again
    third = gpus.claim(["0", "1"], tmp_path, wait=False)
    assert third[0] == first[0]
    second[1].close()
    third[1].close()


def test_assign_gpu_sets_cuda_visible_devices_per_job(tmp_path):
    env_a = {"CUDA_VISIBLE_DEVICES": "2,7"}
    env_b = {"CUDA_VISIBLE_DEVICES": "2,7"}
    assert gpus.assign_gpu("auto", env_a, lock_dir=tmp_path) == "2"
    assert gpus.assign_gpu("cuda", env_b, lock_dir=tmp_path) == "7"
    assert (env_a["CUDA_VISIBLE_DEVICES"], env_b["CUDA_VISIBLE_DEVICES"]) == ("2", "7")


@pytest.mark.parametrize(
    "device, env",
    [
        ("cpu", {"CUDA_VISIBLE_DEVICES": "0,1"}),  # the settings say CPU
        ("cuda:1", {"CUDA_VISIBLE_DEVICES": "0,1"}),  # the user pinned a device
        ("auto", {"CUDA_VISIBLE_DEVICES": "0"}),  # nothing to choose
        ("auto", {"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_JOB_ID": "42"}),  # SLURM granted the GPUs
    ],
)
def test_assign_gpu_leaves_the_choice_alone(tmp_path, device, env):
    before = dict(env)
    assert gpus.assign_gpu(device, env, lock_dir=tmp_path) is None
    assert env == before
    assert not list(tmp_path.iterdir())


def test_a_killed_job_frees_its_device(tmp_path):
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from cnnbench import gpus
        dev, _ = gpus.claim(["0", "1"], Path({str(tmp_path)!r}), wait=False)
        print(dev, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        held = proc.stdout.readline().strip()
        mine = gpus.claim(["0", "1"], tmp_path, wait=False)
        assert mine[0] != held
        mine[1].close()
        proc.kill()
        proc.wait()
        again = [gpus.claim(["0", "1"], tmp_path, wait=False) for _ in range(2)]
        assert sorted(d for d, _ in again) == ["0", "1"]
        for _, handle in again:
            handle.close()
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(shutil.which("snakemake") is None and not (Path(sys.executable).parent / "snakemake").exists(),
                    reason="snakemake is not installed")
def test_snakemake_resources_gpu_gives_concurrent_jobs_distinct_devices(tmp_path):
    """Four jobs with gpu=1 under `--resources gpu=2` on a fake two-GPU machine: two run at a
    time and the two that overlap never share a device."""
    (tmp_path / "Snakefile").write_text(textwrap.dedent("""
        rule all:
            input: expand("out/{i}.json", i=range(4))

        rule job:
            output: "out/{i}.json"
            resources: gpu=1
            shell: "python -c 'from cnnbench.gpus import assign_gpu; import json, os, time; "
                   "t0 = time.time(); dev = assign_gpu(\\"auto\\"); time.sleep(1.5); "
                   "json.dump(dict(dev=dev, start=t0, end=time.time(), cvd=os.environ[\\"CUDA_VISIBLE_DEVICES\\"]), "
                   "open(\\"{output}\\", \\"w\\"))'"
    """))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="0,1", CNNBENCH_GPU_LOCK_DIR=str(tmp_path / "locks"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(["snakemake", "--cores", "4", "--resources", "gpu=2", "-q"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [json.loads((tmp_path / "out" / f"{i}.json").read_text()) for i in range(4)]
    assert all(r["dev"] == r["cvd"] and r["dev"] in ("0", "1") for r in runs)
    overlapping = [(a, b) for i, a in enumerate(runs) for b in runs[i + 1:]
                   if a["start"] < b["end"] and b["start"] < a["end"]]
    assert overlapping, "no two jobs ran at the same time; nothing was tested"
    assert all(a["dev"] != b["dev"] for a, b in overlapping)
