"""No silent CPU fallback (cnnbench.cuda_env) and `cnnbench doctor` (cnnbench.doctor).

The GPU nodes are faked: a stand-in torch module (its CUDA build, availability, devices), the
driver's /proc file and nvidia-smi's output are injected, so every diagnosis and every line of the
report is checked on a machine without CUDA. Two tests run the real CLI on this machine.
"""

from __future__ import annotations

import fcntl
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cnnbench import cli, cuda_env, doctor
from cnnbench.config import load
from cnnbench.cuda_env import CudaProblem, diagnose, driver_version, parse_driver_file, require_cuda
from cnnbench.errors import CnnbenchError, ConfigError

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"
PROPRIETARY = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\nGCC version:  gcc 12\n"
OPEN_580 = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  (dvs-builder@U22)  Tue Sep 23\n"
SMI_L_TWO = ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-950792bf-a01c-3f1a-e122-3473e67f54b2)\n"
             "  MIG 3g.40gb     Device  0: (UUID: MIG-b3061c09-2a4c-5026-a575-79f86a5bb12c)\n"
             "  MIG 3g.40gb     Device  1: (UUID: MIG-27b1a30b-e164-5ba8-9904-9d949f65d8e4)\n"
             "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-e109d8d9-923e-7235-0429-96b7fdbcbd30)\n")


def fake_torch(cuda: str | None = "13.0", available: bool = False, devices=(), init_error: str = "no CUDA",
               hip: str | None = None, archs=("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"),
               bf16: bool = True):
    """A stand-in for the torch module with what cuda_env and doctor read."""
    def init():
        if not available:
            raise RuntimeError(init_error)

    props = [SimpleNamespace(name=n, total_memory=int(gib * 2**30), major=ma, minor=mi) for n, gib, ma, mi in devices]
    return SimpleNamespace(
        __version__="2.14.1+cu130" if cuda else "2.14.1+cpu",
        version=SimpleNamespace(cuda=cuda, hip=hip),
        cuda=SimpleNamespace(is_available=lambda: available, init=init, device_count=lambda: len(props),
                             get_device_properties=lambda i: props[i], get_arch_list=lambda: list(archs),
                             is_bf16_supported=lambda including_emulation=True: bf16),
        backends=SimpleNamespace(
            cpu=SimpleNamespace(get_cpu_capability=lambda: "AVX2"),
            cuda=SimpleNamespace(matmul=SimpleNamespace(allow_tf32=False)),
            cudnn=SimpleNamespace(allow_tf32=True, version=lambda: 92400 if cuda else None, enabled=True),
            mps=SimpleNamespace(is_available=lambda: False),
        ),
    )


def smi_of(list_out: str | None = None, driver: str | None = None):
    """A stand-in for `nvidia-smi ARGS`: -L gives ``list_out``, the driver query ``driver``."""
    def smi(args):
        return list_out if args == ["-L"] else driver
    return smi


def proc_file(tmp_path: Path, text: str | None) -> Path:
    path = tmp_path / "nvidia-version"
    if text is not None:
        path.write_text(text)
    return path


# --- reading the driver ----------------------------------------------------------------------
@pytest.mark.parametrize("text, version", [
    (PROPRIETARY, "535.104.05"),
    (OPEN_580, "580.95.05"),
    ("NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  580.82.07  Release Build  (x@y)\n", "580.82.07"),
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.135  Fri Jan 10 20:00:00 UTC 2025\n", "550.135"),
    ("GCC version:  gcc version 12.2.0\n", None),
])
def test_the_driver_version_is_read_from_the_kernel_modules_file(text: str, version: str | None) -> None:
    assert parse_driver_file(text) == version


def test_without_the_file_the_driver_version_comes_from_nvidia_smi(tmp_path: Path) -> None:
    found = driver_version(proc_file(tmp_path, None), smi_of(driver="570.124.06\n570.124.06\n"), lambda: True)
    assert (found.version, found.major, found.source) == ("570.124.06", 570, "nvidia-smi")


def test_no_driver_says_where_it_looked(tmp_path: Path) -> None:
    none = driver_version(proc_file(tmp_path, None), smi_of(), lambda: False)
    assert none.version is None and none.source.endswith("nvidia-version and no nvidia-smi")
    broken = driver_version(proc_file(tmp_path, None), smi_of(), lambda: True)
    assert broken.version is None and "nvidia-smi is installed but reaches no driver" in broken.source


# --- the diagnosis ----------------------------------------------------------------------------
def _diagnose(tmp_path: Path, torch_mod, driver_text=None, smi=None, env=None, has_smi=True) -> CudaProblem | None:
    return diagnose(torch_mod, env or {}, proc_file(tmp_path, driver_text), smi or smi_of(), lambda: has_smi)


def test_cuda_available_is_no_problem(tmp_path: Path) -> None:
    assert _diagnose(tmp_path, fake_torch(available=True)) is None


def test_a_cpu_only_torch_build_is_named(tmp_path: Path) -> None:
    problem = _diagnose(tmp_path, fake_torch(cuda=None), OPEN_580)
    assert problem.kind == "cpu-build"
    assert str(problem) == ("CUDA is not available: torch 2.14.1+cpu is a CPU-only build (torch.version.cuda is None); "
                            "install a CUDA build of torch 2.14.1 (README: Installing PyTorch for your GPU) or run on "
                            "the CPU on purpose (--profile quick, or train.device: cpu)")


def test_no_nvidia_driver_is_named(tmp_path: Path) -> None:
    problem = _diagnose(tmp_path, fake_torch(), None, has_smi=False)
    assert problem.kind == "no-driver"
    assert problem.why.startswith("this node has no NVIDIA driver (no ") and "--gpus=1" in problem.fix
    assert problem.fix.endswith("or run on the CPU on purpose (--profile quick, or train.device: cpu)")


def test_a_driver_too_old_for_the_build_names_both_versions_and_the_build_to_install(tmp_path: Path) -> None:
    problem = _diagnose(tmp_path, fake_torch(), PROPRIETARY, smi_of(SMI_L_TWO))
    assert problem.kind == "old-driver"
    assert problem.why == ("torch 2.14.1 is built for CUDA 13.0, which needs NVIDIA driver >= 580, and this node's "
                           "driver is 535.104.05")
    assert problem.fix.startswith("install the torch build for CUDA 12.6 (pip install torch==2.14.1 torchvision==")
    assert "--index-url https://download.pytorch.org/whl/cu126; README: Installing PyTorch for your GPU)" in problem.fix
    assert "\n" not in str(problem)


def test_a_driver_too_old_even_for_cuda_12_asks_for_a_driver_update(tmp_path: Path) -> None:
    problem = _diagnose(tmp_path, fake_torch(cuda="12.6"), "NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.256.02\n")
    assert problem.kind == "old-driver" and "needs NVIDIA driver >= 525" in problem.why
    assert problem.fix.startswith("update the NVIDIA driver to >= 525")


@pytest.mark.parametrize("cvd, hidden", [
    ("", True), ("-1", True), ("3", True), ("GPU-00000000", True), ("foo,0", True),
    ("1", False), ("0,1", False), ("GPU-e109d8d9", False), ("MIG-27b1a30b-e164-5ba8-9904-9d949f65d8e4", False),
])
def test_cuda_visible_devices_that_leave_no_device_are_named(tmp_path: Path, cvd: str, hidden: bool) -> None:
    problem = _diagnose(tmp_path, fake_torch(init_error="no CUDA-capable device is detected"), OPEN_580,
                        smi_of(SMI_L_TWO), env={"CUDA_VISIBLE_DEVICES": cvd})
    if hidden:
        assert problem.kind == "no-device" and f"CUDA_VISIBLE_DEVICES={cvd!r}" in problem.why
    else:  # the variable is fine: torch's own error is the reason
        assert problem.kind == "init-error" and "no CUDA-capable device is detected" in problem.why


def test_a_driver_that_sees_no_gpu_is_named(tmp_path: Path) -> None:
    problem = _diagnose(tmp_path, fake_torch(), OPEN_580, smi_of("No devices found.\n"))
    assert problem.kind == "no-device" and "nvidia-smi -L lists none" in problem.why


def test_otherwise_torchs_own_error_is_given_on_one_line(tmp_path: Path) -> None:
    problem = _diagnose(tmp_path, fake_torch(init_error="CUDA driver initialization failed,\n  you might not have a CUDA gpu."),
                        OPEN_580, smi_of(SMI_L_TWO))
    assert problem.kind == "init-error"
    assert "(CUDA driver initialization failed, you might not have a CUDA gpu.)" in problem.why
    assert "cnnbench doctor" in problem.fix and "\n" not in str(problem)


def test_a_rocm_build_is_not_called_cpu_only(tmp_path: Path) -> None:
    problem = _diagnose(tmp_path, fake_torch(cuda=None, hip="6.4"), None, has_smi=False)
    assert problem.kind == "init-error"


def test_require_cuda_ignores_other_devices_and_stops_a_cuda_run_with_one_line(tmp_path: Path) -> None:
    def never():
        raise AssertionError("a CPU run must not ask torch about CUDA")

    no_ask = fake_torch()
    no_ask.cuda.is_available = never
    require_cuda("cpu", torch=no_ask)
    with pytest.raises(ConfigError) as err:
        require_cuda("cuda:1", torch=fake_torch(), env={}, driver_file=proc_file(tmp_path, PROPRIETARY), smi=smi_of())
    message = str(err.value)
    assert message.startswith("the run's device is 'cuda:1' (train.device, or auto with resources.train.gpu >= 1) "
                              "but CUDA is not available: torch 2.14.1 is built for CUDA 13.0")
    assert "\n" not in message and "or run on the CPU on purpose (--profile quick, or train.device: cpu)" in message


def test_require_cuda_refuses_a_pinned_index_this_process_does_not_see() -> None:
    two = fake_torch(available=True, devices=[("NVIDIA H100 80GB HBM3", 79.2, 9, 0)] * 2)
    require_cuda("cuda:1", torch=two)
    with pytest.raises(ConfigError, match=r"^train.device is 'cuda:2' but this process sees 2 GPU\(s\), cuda:0 to cuda:1 "):
        require_cuda("cuda:2", torch=two)


def test_select_device_stops_with_the_diagnosis(monkeypatch) -> None:
    from cnnbench.engine import select_device

    monkeypatch.setattr(cuda_env, "diagnose", lambda **kw: CudaProblem("no-driver", "no driver here", "do this"))
    with pytest.raises(ConfigError, match=r"^the run's device is 'cuda' .* but CUDA is not available: no driver here; do this$"):
        select_device("cuda")
    assert select_device("cpu").type == "cpu"


# --- train/evaluate stop before any work -----------------------------------------------------
def test_the_full_profile_asks_for_cuda_and_the_cpu_profiles_for_the_cpu() -> None:
    for profile, device in (("full", "cuda"), ("quick", "cpu"), ("smoke", "cpu")):
        cfg = load(PARAMS, profile=profile)
        assert {cfg.run(v, r, s, chosen={"lr": 0.1}).execution.device for v, r, s in cfg.runs} == {device}
    assert load(PARAMS, profile="full").profile_block["train"]["device"] == "cuda"  # explicit, not auto


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_a_gpu_job_without_cuda_stops_after_the_gpu_slot_and_before_any_data(monkeypatch, tmp_path, capsys, stage) -> None:
    calls = []
    monkeypatch.setattr("cnnbench.gpus.assign_gpu", lambda *a, **kw: calls.append("assign_gpu"))

    def diagnosis(**kw):
        calls.append("diagnose")
        return CudaProblem("old-driver", "torch 2.14.1 is built for CUDA 13.0, ...", "install the CUDA 12.6 build")

    monkeypatch.setattr(cuda_env, "diagnose", diagnosis)
    monkeypatch.chdir(tmp_path)  # nothing may appear here: no results/, no checkpoints
    rc = cli.main(["--params", str(PARAMS), "--profile", "full", stage, "--variant", "cifar10-resnet18",
                   "--recipe", "lab", "--seed", "0", "--data", str(tmp_path / "absent")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("cnnbench: config error: the run's device is 'cuda'") and "install the CUDA 12.6 build" in err[0]
    assert calls == ["assign_gpu", "diagnose"]  # the slot first: asking torch about CUDA fixes the devices
    assert list(tmp_path.iterdir()) == []


# --- doctor -----------------------------------------------------------------------------------
def host(tmp_path: Path, torch_mod, driver_text=None, smi_list=None, env=None, has_smi=None, flags=None) -> doctor.Host:
    (tmp_path / "cwd").mkdir(exist_ok=True)
    return doctor.Host(torch=torch_mod, env=env or {}, smi=smi_of(smi_list), driver_file=proc_file(tmp_path, driver_text),
                       has_smi=lambda: bool(smi_list) if has_smi is None else has_smi, cwd=tmp_path / "cwd",
                       cpu_flags=lambda: flags, lock_dir=tmp_path / "slots")


def lines_of(report: doctor.Report) -> dict[str, tuple[str, str]]:
    return {f.name: (f.status, f.value) for f in report.findings}


def test_doctor_on_a_gpu_node_lists_the_devices_mig_and_passes(tmp_path: Path) -> None:
    gpu = fake_torch(available=True, devices=[("NVIDIA H100 80GB HBM3", 79.2, 9, 0)] * 2)
    report = doctor.run(PARAMS, "full", host=host(tmp_path, gpu, OPEN_580, SMI_L_TWO, flags=set()))
    found = lines_of(report)
    assert found["torch"] == ("OK", "2.14.1+cu130, built for CUDA 13.0 (needs NVIDIA driver >= 580)")
    assert found["NVIDIA driver"] == ("OK", f"580.95.05 (from {tmp_path / 'nvidia-version'}): new enough for CUDA 13.0 (>= 580)")
    assert found["cuda:0-1"] == ("OK", "2 x NVIDIA H100 80GB HBM3, 79.2 GiB, compute capability 9.0")
    assert found["MIG"] == ("OK", "2 instance(s): 2 x 3g.40gb (nvidia-smi -L)")
    cfg = load(PARAMS, profile="full")
    assert found["profile device"] == ("OK", f"profile full wants cuda ({len(cfg.runs)} runs): available, 2 device(s)")
    assert found["bf16"] == ("OK", "supported by cuda:0")
    assert found["cuDNN"] == ("OK", "9.24.0, enabled")
    assert not report.failures and not report.fixes


def test_doctor_on_a_node_with_an_old_driver_fails_with_both_versions_and_one_fix(tmp_path: Path, capsys) -> None:
    h = host(tmp_path, fake_torch(), PROPRIETARY, "GPU 0: Tesla T4 (UUID: GPU-1111)\n", flags=set())
    with pytest.raises(CnnbenchError, match=r"^3 check\(s\) failed \(NVIDIA driver, GPUs, profile device\)"):
        doctor.run(PARAMS, "full", host=h)
    out = capsys.readouterr().out.splitlines()
    assert len(out) <= 30
    driver = next(ln for ln in out if ln.strip().startswith("NVIDIA driver"))
    assert "FAIL  535.104.05" in driver and "too old for torch's CUDA 13.0 build (needs >= 580)" in driver
    assert any("GPUs" in ln and "FAIL  1 listed by nvidia-smi, none usable by torch" in ln for ln in out)
    assert any("profile device  FAIL  profile full wants cuda: NOT available: torch 2.14.1 is built for CUDA 13.0, "
               "which needs NVIDIA driver >= 580, and this node's driver is 535.104.05" in ln for ln in out)
    fixes = [ln for ln in out if ln.startswith("fix: ")]
    assert len(fixes) == 1 and "--index-url https://download.pytorch.org/whl/cu126" in fixes[0]
    assert out[-1] == "3 FAIL, 0 WARN"


def test_doctor_for_a_cpu_profile_needs_no_driver(tmp_path: Path) -> None:
    report = doctor.run(PARAMS, "quick", host=host(tmp_path, fake_torch(), None, has_smi=False, flags={"avx2"}))
    found = lines_of(report)
    assert found["NVIDIA driver"][0] == "OK" and found["GPUs"][0] == "OK"
    assert found["profile device"][1].startswith("profile quick runs on cpu (")
    assert found["bf16"] == ("OK", "CPU (AVX2): no avx512_bf16/amx_bf16, so bf16 is emulated (slow); CPU runs use fp32")
    assert not report.failures


def test_doctor_with_a_cpu_only_torch_for_the_full_profile_names_the_pip_command(tmp_path: Path) -> None:
    with pytest.raises(CnnbenchError):
        doctor.run(PARAMS, "full", host=host(tmp_path, fake_torch(cuda=None), OPEN_580, SMI_L_TWO))
    report = doctor.examine(PARAMS, "full", host(tmp_path, fake_torch(cuda=None), OPEN_580, SMI_L_TWO))
    torch_line = next(f for f in report.findings if f.name == "torch")
    assert torch_line.status == "FAIL" and torch_line.value == "2.14.1+cpu, a CPU-only build"
    assert "--index-url https://download.pytorch.org/whl/cu130 (driver >= 580)" in torch_line.fix


def test_doctor_fails_a_gpu_this_torch_has_no_kernels_for(tmp_path: Path) -> None:
    volta = fake_torch(available=True, devices=[("Tesla V100-SXM2-32GB", 31.7, 7, 0)])
    report = doctor.examine(PARAMS, "full", host(tmp_path, volta, OPEN_580, "GPU 0: Tesla V100-SXM2-32GB (UUID: GPU-2)\n"))
    device = next(f for f in report.findings if f.name == "cuda:0")
    assert device.status == "FAIL" and "has no kernels for it (sm_75, sm_80" in device.value
    assert "install the CUDA 12.6 build, which still covers it" in device.fix


def test_doctor_reports_a_broken_params_file_as_a_failure(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    bad.write_text("profile: [unclosed\n")
    report = doctor.examine(bad, None, host(tmp_path, fake_torch(), None, has_smi=False))
    assert report.findings[0].name == "params" and report.findings[0].status == "FAIL"
    assert "YAML syntax error" in report.findings[0].value


def test_doctor_checks_folders_numba_cache_and_the_gpu_slots(tmp_path: Path, monkeypatch) -> None:
    h = host(tmp_path, fake_torch(), None, has_smi=False)
    (h.cwd / "data").write_text("a file where the folder should be")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    h.env = {"NUMBA_CACHE_DIR": str(blocker / "numba")}
    h.lock_dir.mkdir()
    held = open(h.lock_dir / "gpu0.0.lock", "a+")
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    held.write("4242\n")
    held.flush()
    (h.lock_dir / "gpu1.0.lock").write_text("")
    try:
        found = {f.name: f for f in doctor.examine(PARAMS, "quick", h).findings}
    finally:
        held.close()
    assert found["data/"].status == "FAIL" and found["data/"].value.endswith("exists but is not a folder")
    assert "chmod -R u+w" in found["data/"].fix
    assert found["results/"].status == "OK" and found["results/"].value.endswith("results: absent, can be created")
    assert found["numba"].status == "OK" and f"{blocker / 'numba'} (NUMBA_CACHE_DIR) not writable" in found["numba"].value
    assert found["GPU slots"].value.endswith("writable; 2 slot file(s), 1 held (0.0 by pid 4242)")

    monkeypatch.setattr(doctor, "numba_cache_candidates", lambda env: [("NUMBA_CACHE_DIR", blocker / "numba")])
    numba_line = doctor.check_numba(h)
    assert numba_line.status == "WARN" and numba_line.fix.startswith("export NUMBA_CACHE_DIR=")


def test_doctor_reads_the_slurm_job(tmp_path: Path) -> None:
    h = host(tmp_path, fake_torch(), None, has_smi=False)
    assert doctor.check_slurm(h, True).value == "not in a SLURM job"
    h.env = {"SLURM_JOB_ID": "77", "SLURM_CPUS_PER_TASK": "8"}
    gpu_less = doctor.check_slurm(h, True)
    assert gpu_less.status == "WARN" and "SLURM_JOB_ID='77'" in gpu_less.value and "--gpus=1" in gpu_less.fix
    h.env = {"SLURM_JOB_ID": "77", "SLURM_JOB_GPUS": "2,3", "CUDA_VISIBLE_DEVICES": "0,1", "SLURM_CPUS_PER_TASK": "8"}
    assert doctor.check_slurm(h, True) == doctor.Finding(
        "SLURM", "OK", "SLURM_JOB_ID='77', SLURM_JOB_GPUS='2,3', CUDA_VISIBLE_DEVICES='0,1', SLURM_CPUS_PER_TASK='8'")


def test_doctor_json_for_scripts(tmp_path: Path, capsys) -> None:
    h = host(tmp_path, fake_torch(), PROPRIETARY, "GPU 0: Tesla T4 (UUID: GPU-1111)\n")
    with pytest.raises(CnnbenchError):
        doctor.run(PARAMS, "full", json_out=Path("-"), host=h)
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["profile"] == "full" and len(doc["fixes"]) == 1
    assert {"name": "profile device", "status": "FAIL"}.items() <= doc["findings"][3].items()
    doctor.run(PARAMS, "quick", json_out=tmp_path / "doctor.json", host=h)
    assert json.loads((tmp_path / "doctor.json").read_text())["ok"] is True


# --- the real command on this machine ---------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cnnbench_doctor_here(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CNNBENCH_GPU_LOCK_DIR", str(tmp_path / "slots"))
    assert cli.main(["--params", str(PARAMS), "--profile", "quick", "doctor"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) <= 30 and out[-1].endswith(": ready for this profile")
    findings = [ln for ln in out if ln.startswith("  ")]
    assert len(findings) >= 12 and all(re.match(r"^  \S.*?  (OK  |WARN)  \S", ln) for ln in findings)

    assert cli.main(["--params", str(PARAMS), "--profile", "full", "doctor"]) == 1
    captured = capsys.readouterr()
    assert "profile device  FAIL  profile full wants cuda: NOT available: " in captured.out
    assert any(ln.startswith("fix: ") for ln in captured.out.splitlines())
    assert captured.err.strip().startswith("cnnbench doctor: error: ")
