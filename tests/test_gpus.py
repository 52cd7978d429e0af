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
        ("auto", {"CUDA_VISIBLE_DEVICES": ""}),  # no GPU at all
        ("cuda", {"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_ID": "42"}),  # SLURM gave this job its own GPU
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


# --- devices as nvidia-smi -L lists them (recorded output) -----------------------------------------------
SMI_ONE = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-6f5e8a1c-2b3d-4e5f-8a9b-0c1d2e3f4a5b)\n"
SMI_FOUR = "".join(f"GPU {i}: NVIDIA A100-SXM4-80GB (UUID: GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd)\n"
                   for i in range(4))
SMI_MIG_MIXED = """\
GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77)
  MIG 1g.5gb      Device  0: (UUID: MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f)
  MIG 1g.5gb      Device  1: (UUID: MIG-cba663e8-9bed-5b25-b243-5985ef7c9beb)
  MIG 2g.10gb     Device  2: (UUID: MIG-1e099852-3624-56c0-8064-c5db1211e44f)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-b9a3c6d4-1111-2222-3333-444455556666)
"""
# Drivers before R470 named MIG instances by GPU UUID and instance ids.
SMI_MIG_OLD = """\
GPU 0: A100-SXM4-40GB (UUID: GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77)
  MIG 3g.20gb Device 0: (UUID: MIG-GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77/1/0)
  MIG 3g.20gb Device 1: (UUID: MIG-GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77/2/0)
"""


def test_plain_and_several_gpus_are_claimed_by_uuid():
    assert gpus.claimable_devices(SMI_ONE) == ["GPU-6f5e8a1c-2b3d-4e5f-8a9b-0c1d2e3f4a5b"]
    assert gpus.claimable_devices(SMI_FOUR) == [f"GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd" for i in range(4)]
    assert gpus.claimable_devices("GPU 0: Tesla K80\nGPU 1: Tesla K80\n") == ["0", "1"]  # no UUID shown: the index


def test_a_gpu_split_into_mig_instances_offers_the_instances_not_itself():
    assert [(i, u, len(m)) for i, u, m in gpus.parse_smi_list(SMI_MIG_MIXED)] == [
        ("0", "GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77", 3), ("1", "GPU-b9a3c6d4-1111-2222-3333-444455556666", 0)]
    assert gpus.claimable_devices(SMI_MIG_MIXED) == [
        "MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f", "MIG-cba663e8-9bed-5b25-b243-5985ef7c9beb",
        "MIG-1e099852-3624-56c0-8064-c5db1211e44f", "GPU-b9a3c6d4-1111-2222-3333-444455556666"]
    assert gpus.claimable_devices(SMI_MIG_OLD) == [
        "MIG-GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77/1/0", "MIG-GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77/2/0"]


def test_old_style_mig_ids_claim_and_set_cuda_visible_devices_as_listed(tmp_path):
    devices = gpus.claimable_devices(SMI_MIG_OLD)
    env_a, env_b = {}, {}
    got = {gpus.assign_gpu("cuda", env, devices=devices, lock_dir=tmp_path) for env in (env_a, env_b)}
    assert got == set(devices) and {env_a["CUDA_VISIBLE_DEVICES"], env_b["CUDA_VISIBLE_DEVICES"]} == set(devices)


@pytest.fixture
def fake_smi(tmp_path, monkeypatch):
    """Put an `nvidia-smi` on PATH that prints the given `-L` listing and, for
    `--query-gpu=memory.free ... -i ID`, the free MiB of ``free[ID]``; returns the call log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "smi-calls.txt"

    def install(listing: str, free: dict[str, int] | None = None) -> Path:
        (tmp_path / "smi.json").write_text(json.dumps({"listing": listing, "free": free or {}}))
        script = bin_dir / "nvidia-smi"
        script.write_text(textwrap.dedent(f"""\
            #!{sys.executable}
            import json, sys
            data = json.load(open({str(tmp_path / "smi.json")!r}))
            open({str(calls)!r}, "a").write(" ".join(sys.argv[1:]) + "\\n")
            if sys.argv[1:] == ["-L"]:
                sys.stdout.write(data["listing"])
            elif "--query-gpu=memory.free" in sys.argv:
                dev = sys.argv[sys.argv.index("-i") + 1]
                if dev not in data["free"]:
                    sys.exit("No devices were found")
                print(data["free"][dev])
            else:
                sys.exit(2)
        """))
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        return calls

    return install


def test_visible_devices_without_cuda_visible_devices_ask_nvidia_smi(fake_smi):
    fake_smi(SMI_MIG_MIXED)
    assert gpus.visible_devices({}) == gpus.claimable_devices(SMI_MIG_MIXED)
    # CUDA_VISIBLE_DEVICES wins, its entries as written (here MIG UUIDs), never re-numbered
    assert gpus.visible_devices({"CUDA_VISIBLE_DEVICES": "MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f,GPU-b9a3"}) == [
        "MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f", "GPU-b9a3"]


def test_inside_slurm_only_the_granted_gpus_count(fake_smi):
    fake_smi(SMI_FOUR)
    uuid = "GPU-0000000{}-aaaa-bbbb-cccc-dddddddddddd".format
    assert gpus.visible_devices({"SLURM_JOB_ID": "7", "SLURM_JOB_GPUS": "1,3"}) == [uuid(1), uuid(3)]
    assert gpus.visible_devices({"SLURM_JOB_ID": "7", "SLURM_JOB_GPUS": "0,1,2,3", "SLURM_STEP_GPUS": "2"}) == [uuid(2)]
    assert gpus.visible_devices({"SLURM_JOB_ID": "7"}) == []  # granted none: the node's GPUs are other jobs'
    # CUDA_VISIBLE_DEVICES as SLURM set it comes first
    assert gpus.visible_devices({"SLURM_JOB_ID": "7", "SLURM_JOB_GPUS": "1,3", "CUDA_VISIBLE_DEVICES": "0,1"}) == ["0", "1"]


def test_each_slurm_allocation_has_its_own_slots(tmp_path):
    env = {gpus.LOCK_DIR_ENV: str(tmp_path)}
    assert gpus.default_lock_dir(env) == tmp_path
    assert gpus.default_lock_dir({**env, "SLURM_JOB_ID": "42"}) == tmp_path / "slurm-42"


_HOLD_A_SLOT = """
import os, sys, time
from cnnbench import gpus
dev = gpus.assign_gpu("cuda", jobs_per_gpu=int(sys.argv[1]), timeout_s=float(sys.argv[2]))
print(dev, os.environ["CUDA_VISIBLE_DEVICES"], flush=True)
time.sleep(60)
"""


def _start_job(env: dict, jobs_per_gpu: int = 1, timeout_s: float = 5.0) -> subprocess.Popen:
    """A concurrent cnnbench job that claims a slot and holds it until killed."""
    return subprocess.Popen([sys.executable, "-c", _HOLD_A_SLOT, str(jobs_per_gpu), str(timeout_s)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_jobs_in_one_slurm_allocation_spread_over_its_four_gpus(tmp_path):
    """`sbatch --gpus=4` running `snakemake --resources gpu=4`: SLURM set CUDA_VISIBLE_DEVICES to
    four devices for the whole allocation; concurrent jobs must not all take the first."""
    env = dict(os.environ, SLURM_JOB_ID="42", CUDA_VISIBLE_DEVICES="0,1,2,3", CNNBENCH_GPU_LOCK_DIR=str(tmp_path))
    jobs = [_start_job(env), _start_job(env)]
    try:
        seen = [job.stdout.readline().split() for job in jobs]
        assert all(dev == cvd for dev, cvd in seen), seen
        assert len({dev for dev, _ in seen}) == 2 and {dev for dev, _ in seen} <= {"0", "1", "2", "3"}
        assert list((tmp_path / "slurm-42").glob("gpu*.0.lock"))  # the allocation's own slots
    finally:
        for job in jobs:
            job.kill()
            job.wait()


def test_jobs_spread_over_gpus_before_they_stack(tmp_path):
    held = [gpus.claim(["0", "1"], tmp_path, wait=False, jobs_per_gpu=2) for _ in range(4)]
    assert [d for d, _ in held[:2]] == ["0", "1"]  # one per GPU first
    assert sorted(d for d, _ in held) == ["0", "0", "1", "1"]
    with pytest.raises(TimeoutError, match=r"all 4 slots of 2 GPUs .*jobs_per_gpu 2.* --resources gpu=4"):
        gpus.claim(["0", "1"], tmp_path, wait=False, jobs_per_gpu=2)
    held[1][1].close()  # a job on GPU 1 ends: the next one goes there
    assert gpus.claim(["0", "1"], tmp_path, wait=False, jobs_per_gpu=2)[0] == "1"


def test_a_third_job_on_one_gpu_shared_by_two_waits(tmp_path, caplog):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="0", CNNBENCH_GPU_LOCK_DIR=str(tmp_path))
    jobs = [_start_job(env, jobs_per_gpu=2), _start_job(env, jobs_per_gpu=2)]
    try:
        assert [job.stdout.readline().split() for job in jobs] == [["0", "0"], ["0", "0"]]  # two share GPU 0
        caplog.set_level("WARNING", logger="cnnbench")
        with pytest.raises(TimeoutError, match=r"all 2 slots of 1 GPUs"):
            gpus.assign_gpu("cuda", {"CUDA_VISIBLE_DEVICES": "0"}, lock_dir=tmp_path, jobs_per_gpu=2, timeout_s=1.5)
        waits = [r for r in caplog.records if "waiting for a slot" in r.getMessage()]
        assert len(waits) == 1  # one warning however long it waits
        jobs[0].kill()
        jobs[0].wait()  # one job ends: the third gets its slot
        env_c = {"CUDA_VISIBLE_DEVICES": "0"}
        assert gpus.assign_gpu("cuda", env_c, lock_dir=tmp_path, jobs_per_gpu=2, timeout_s=5) == "0"
    finally:
        for job in jobs:
            job.kill()
            job.wait()


def test_one_gpu_not_shared_is_not_claimed_but_a_shared_one_is(tmp_path):
    assert gpus.assign_gpu("cuda", {"CUDA_VISIBLE_DEVICES": "0"}, lock_dir=tmp_path, jobs_per_gpu=1) is None
    assert not list(tmp_path.iterdir())
    assert gpus.assign_gpu("cuda", {"CUDA_VISIBLE_DEVICES": "0"}, lock_dir=tmp_path, jobs_per_gpu=3) == "0"


def test_a_gpu_without_the_memory_a_job_needs_is_skipped(tmp_path, caplog):
    free = {"0": 900, "1": 30000}
    env = {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert gpus.assign_gpu("cuda", env, lock_dir=tmp_path, jobs_per_gpu=4, gpu_mem_mb=4000, free_mb=free.get) == "1"
    # no limit stated: nothing is asked, and the device with the most free slots is taken
    asked = []
    dev = gpus.assign_gpu("cuda", {"CUDA_VISIBLE_DEVICES": "0,1"}, lock_dir=tmp_path, jobs_per_gpu=4,
                          free_mb=lambda d: asked.append(d) or 0)
    assert dev == "0" and asked == []
    free["1"] = 1000  # now both are full: the job waits, and says why
    caplog.set_level("WARNING", logger="cnnbench")
    with pytest.raises(TimeoutError, match=r"no GPU with a free slot \(0, 1\) has the 4000 MB free this job needs"):
        gpus.assign_gpu("cuda", {"CUDA_VISIBLE_DEVICES": "0,1"}, lock_dir=tmp_path, jobs_per_gpu=4, gpu_mem_mb=4000,
                        free_mb=free.get, timeout_s=1.2)
    assert sum("4000 MB" in r.getMessage() for r in caplog.records) == 1


def test_free_memory_comes_from_nvidia_smi_without_cuda(fake_smi):
    calls = fake_smi(SMI_FOUR, free={"GPU-a": 512, "2": 70000})
    assert gpus.free_memory_mb("GPU-a") == 512 and gpus.free_memory_mb("2") == 70000
    assert gpus.free_memory_mb("7") is None  # nvidia-smi fails: unknown, so not held against the device
    assert gpus.free_memory_mb("MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f") is None  # per-GPU query: not asked
    assert calls.read_text().splitlines() == [
        f"--query-gpu=memory.free --format=csv,noheader,nounits -i {d}" for d in ("GPU-a", "2", "7")]


def test_the_memory_check_through_nvidia_smi_skips_a_full_gpu(fake_smi, tmp_path):
    fake_smi(SMI_FOUR, free={"0": 100, "1": 100, "2": 50000, "3": 100})
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    assert gpus.assign_gpu("cuda", env, lock_dir=tmp_path / "locks", gpu_mem_mb=2000) == "2"
    assert env["CUDA_VISIBLE_DEVICES"] == "2"


# --- settings: params.yaml resources.<stage>.jobs_per_gpu / gpu_mem_mb ------------------------------------
REPO = Path(__file__).resolve().parents[1]


def _config(edit=None, profile="full"):
    import yaml

    from cnnbench.config import from_raw

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["profile"] = profile
    if edit:
        edit(raw)
    return from_raw(raw, REPO / "params.yaml")


def test_sharing_settings_default_to_one_job_per_gpu_and_change_no_run():
    plain = _config()
    assert plain.job_resources("train")["jobs_per_gpu"] == 1 and "gpu_mem_mb" not in plain.job_resources("train")
    shared = _config(lambda raw: raw["resources"]["train"].update(jobs_per_gpu=4, gpu_mem_mb=6000))
    assert (shared.job_resources("train")["jobs_per_gpu"], shared.job_resources("train")["gpu_mem_mb"]) == (4, 6000)
    assert shared.job_resources("evaluate")["jobs_per_gpu"] == 1
    as_tuned = {"lr": 0.1}  # a tuned run, as if tuning chose 0.1
    assert {r: shared.run(*r, chosen=as_tuned).hash for r in shared.runs} == \
        {r: plain.run(*r, chosen=as_tuned).hash for r in plain.runs}
    per_profile = _config(lambda raw: raw["resources"]["profiles"].setdefault("full", {}).update(
        evaluate={"jobs_per_gpu": 3}))
    assert per_profile.job_resources("evaluate")["jobs_per_gpu"] == 3


@pytest.mark.parametrize("key, value, expected", [
    ("jobs_per_gpu", 0, r"resources\.train\.jobs_per_gpu: 0 is out of range; allowed: >= 1"),
    ("jobs_per_gpu", "two", r"resources\.train\.jobs_per_gpu: expected integer, got 'two'"),
    ("gpu_mem_mb", -5, r"resources\.train\.gpu_mem_mb: -5 is out of range; allowed: >= 1"),
])
def test_a_bad_sharing_setting_is_a_config_error_naming_the_key(key, value, expected):
    from cnnbench.config import ConfigError

    with pytest.raises(ConfigError, match=expected):
        _config(lambda raw: raw["resources"]["train"].update({key: value}))


def test_train_evaluate_and_bench_claim_with_their_stage_settings(monkeypatch):
    from cnnbench import bench, cli

    claims, order = [], []
    monkeypatch.setattr(gpus, "assign_gpu", lambda device, **kw: claims.append((device, kw)) or order.append("claim"))
    from cnnbench import cuda_env

    # the claim comes first, then the CUDA check (tests/test_doctor.py), which this machine may fail
    monkeypatch.setattr(cuda_env, "require_cuda", lambda device: order.append("require_cuda"))
    cfg = _config(lambda raw: raw["resources"]["train"].update(jobs_per_gpu=2, gpu_mem_mb=3000))
    cli._run_of(cfg, argparse_ns(variant="cifar10-resnet18", recipe=None, seed=None), "train")
    cli._run_of(cfg, argparse_ns(variant="cifar10-resnet18", recipe=None, seed=None), "evaluate")
    assert claims == [("cuda", {"jobs_per_gpu": 2, "gpu_mem_mb": 3000}), ("cuda", {"jobs_per_gpu": 1, "gpu_mem_mb": None})]
    assert order == ["claim", "require_cuda"] * 2
    # bench claims like a train job, before it measures anything (run_bench is where torch first asks for CUDA)
    claims.clear()
    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: order.append("bench") or {})
    monkeypatch.setattr(bench, "format_report", lambda report: "")
    cli.cmd_bench(cfg, argparse_ns(set=[], variants="cifar10-resnet18", accuracy=False, device=None, out=None,
                                   batch_size=None, warmup=1, windows=1, steps=1, workers=0, no_data_path=True,
                                   images=None, recipe=None, tiles=None, optimizer_impl=None))
    assert claims == [("auto", {"jobs_per_gpu": 2, "gpu_mem_mb": 3000})] and order[-2:] == ["claim", "bench"]


def argparse_ns(**kw):
    import argparse

    return argparse.Namespace(**kw)
