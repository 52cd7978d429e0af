"""Why CUDA is not available on this node, in one line that says what to do.

``torch.cuda.is_available()`` only says no. On a cluster the reason is nearly always one of these,
checked in this order:

1. torch is a CPU-only build (``torch.version.cuda`` is None);
2. the node has no NVIDIA driver (no ``/proc/driver/nvidia/version``, no ``nvidia-smi``);
3. the driver is older than the CUDA line torch was built for needs. Under NVIDIA's minor-version
   compatibility every CUDA 13.x build runs on a driver >= 580, 12.x on >= 525 and 11.x on >= 450
   (https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html), so the
   pinned torch (CUDA 13.0) needs R580 while many clusters run R535-R570;
4. ``CUDA_VISIBLE_DEVICES`` hides every device (empty, or its first entry names no GPU of the node);

and otherwise torch's own error from initialising CUDA. :func:`require_cuda` turns the reason
into the config error a train or evaluate job stops with, before it touches data or checkpoints,
instead of training the whole study on the CPU. `cnnbench doctor` shows the same diagnosis.

Reading the driver version and the GPU list needs no CUDA initialisation (a file and
``nvidia-smi``), so none of this changes which devices the process may still be given.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Callable, Mapping

from .errors import ConfigError

DRIVER_FILE = Path("/proc/driver/nvidia/version")
MIN_DRIVER = {11: 450, 12: 525, 13: 580}  # CUDA major -> oldest Linux driver major (minor-version compatibility)
# The oldest CUDA line the pinned torch (2.14) is built for, and where its wheels are: older drivers
# that still reach 525 run this build (requirements.lock installs the CUDA 13.0 one from PyPI).
LEGACY_CUDA, LEGACY_INDEX = "12.6", "https://download.pytorch.org/whl/cu126"
INSTALL_DOC = "README: Installing PyTorch for your GPU"
CPU_ON_PURPOSE = "or run on the CPU on purpose (--profile quick, or train.device: cpu)"

Smi = Callable[[list[str]], "str | None"]  # runs `nvidia-smi ARGS`; its stdout, or None when it cannot


def run_nvidia_smi(args: list[str]) -> str | None:
    """stdout of ``nvidia-smi ARGS``; None when it is not installed or fails (no driver loaded)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        return subprocess.run([smi, *args], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def smi_installed() -> bool:
    return shutil.which("nvidia-smi") is not None


@dataclass(frozen=True)
class Driver:
    version: str | None         # e.g. "535.104.05"; None: no driver found
    source: str                 # where it was read, or why none was found

    @property
    def major(self) -> int | None:
        return int(self.version.split(".")[0]) if self.version else None


def parse_driver_file(text: str) -> str | None:
    """The version in /proc/driver/nvidia/version's NVRM line, e.g. "NVRM version: NVIDIA UNIX
    x86_64 Kernel Module  535.104.05  ..." or "... Open Kernel Module for x86_64  580.95.05  ..."."""
    for line in text.splitlines():
        if line.startswith("NVRM version:"):
            found = re.search(r"\s(\d{2,4}\.\d{1,3}(?:\.\d{1,3})?)(?:\s|$)", line)
            return found.group(1) if found else None
    return None


def driver_version(driver_file: Path = DRIVER_FILE, smi: Smi = run_nvidia_smi,
                   has_smi: Callable[[], bool] = smi_installed) -> Driver:
    """The NVIDIA driver of this node: the kernel module's file first, else nvidia-smi."""
    try:
        version = parse_driver_file(driver_file.read_text())
        if version:
            return Driver(version, str(driver_file))
    except OSError:
        pass
    out = smi(["--query-gpu=driver_version", "--format=csv,noheader"])
    lines = [ln.strip() for ln in (out or "").splitlines() if ln.strip()]
    if lines and re.fullmatch(r"\d+\.\d+(\.\d+)?", lines[0]):
        return Driver(lines[0], "nvidia-smi")
    if has_smi():
        return Driver(None, f"no {driver_file}, and nvidia-smi is installed but reaches no driver")
    return Driver(None, f"no {driver_file} and no nvidia-smi")


def required_driver(cuda_build: str) -> int | None:
    """The oldest driver major that runs a build for CUDA ``cuda_build`` ("13.0"), if known."""
    try:
        return MIN_DRIVER.get(int(cuda_build.split(".")[0]))
    except ValueError:
        return None


def listed_gpus(smi: Smi = run_nvidia_smi) -> list[str] | None:
    """The lines of ``nvidia-smi -L`` (GPUs and MIG instances), stripped; None without nvidia-smi."""
    out = smi(["-L"])
    return None if out is None else [ln.strip() for ln in out.splitlines() if ln.strip()]


def hidden_by_visible_devices(env: Mapping[str, str], gpus: list[str] | None) -> str | None:
    """Why ``CUDA_VISIBLE_DEVICES`` leaves CUDA no device, or None when it does not (or is unset).

    CUDA reads the list up to its first entry that names no device, so the first entry decides
    whether any device is left. Judged against ``nvidia-smi -L`` when it is available."""
    if "CUDA_VISIBLE_DEVICES" not in env:
        return None
    value = env["CUDA_VISIBLE_DEVICES"]
    entries = [e.strip() for e in value.split(",")]
    if not entries[0]:
        return f"CUDA_VISIBLE_DEVICES={value!r} hides every GPU"
    first = entries[0]
    if first.lstrip("-").isdigit() and int(first) < 0:
        return f"CUDA_VISIBLE_DEVICES={value!r} hides every GPU"
    if gpus is None:
        return None
    gpu_lines = [ln for ln in gpus if ln.startswith("GPU ")]
    uuids = re.findall(r"UUID: ((?:GPU|MIG)-[^)\s]+)", "\n".join(gpus))
    valid = int(first) < len(gpu_lines) if first.isdigit() else any(u.startswith(first) for u in uuids)
    if valid:
        return None
    return (f"CUDA_VISIBLE_DEVICES={value!r} names no device of this node, which has "
            f"{len(gpu_lines)} GPU(s) (nvidia-smi -L)")


@dataclass(frozen=True)
class CudaProblem:
    kind: str                   # cpu-build | no-driver | old-driver | no-device | init-error
    why: str
    fix: str

    def __str__(self) -> str:
        return f"CUDA is not available: {self.why}; {self.fix}"


def _torch_versions(torch: ModuleType) -> tuple[str, str | None]:
    return torch.__version__.split("+")[0], torch.version.cuda


def pip_command(index_url: str, torch: ModuleType) -> str:
    """The pip command that installs this torch release (and the torchvision that goes with it)
    from another build index of download.pytorch.org."""
    from importlib import metadata

    packages = [f"torch=={_torch_versions(torch)[0]}"]
    try:
        packages.append(f"torchvision=={metadata.version('torchvision').split('+')[0]}")
    except metadata.PackageNotFoundError:
        pass
    return f"pip install {' '.join(packages)} --index-url {index_url}"


def _driver_problem(torch: ModuleType, driver: Driver) -> CudaProblem | None:
    version, cuda = _torch_versions(torch)
    if driver.version is None:
        return CudaProblem("no-driver", f"this node has no NVIDIA driver ({driver.source})",
                           f"run on a node with an NVIDIA GPU (under SLURM: ask for one, e.g. --gpus=1) {CPU_ON_PURPOSE}")
    need = required_driver(cuda)
    if need is None or driver.major >= need:
        return None
    if driver.major >= MIN_DRIVER[12]:
        fix = (f"install the torch build for CUDA {LEGACY_CUDA} ({pip_command(LEGACY_INDEX, torch)}; "
               f"{INSTALL_DOC}) or update the driver to >= {need}, {CPU_ON_PURPOSE}")
    else:
        fix = f"update the NVIDIA driver to >= {need} (>= {MIN_DRIVER[12]} runs the CUDA {LEGACY_CUDA} build; {INSTALL_DOC}) {CPU_ON_PURPOSE}"
    return CudaProblem("old-driver", f"torch {version} is built for CUDA {cuda}, which needs NVIDIA driver >= {need}, "
                       f"and this node's driver is {driver.version}", fix)


def diagnose(torch: ModuleType | None = None, env: Mapping[str, str] | None = None,
             driver_file: Path = DRIVER_FILE, smi: Smi = run_nvidia_smi,
             has_smi: Callable[[], bool] = smi_installed) -> CudaProblem | None:
    """Why CUDA is unavailable to this process, or None when it is available (see the module
    docstring for the order). ``torch``, ``env``, the driver file and ``nvidia-smi`` are injectable."""
    if torch is None:
        import torch
    env = os.environ if env is None else env
    if torch.cuda.is_available():
        return None
    version, cuda = _torch_versions(torch)
    if cuda is None and getattr(torch.version, "hip", None) is None:
        return CudaProblem("cpu-build", f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None)",
                           f"install a CUDA build of torch {version} ({INSTALL_DOC}) {CPU_ON_PURPOSE}")
    if cuda is not None:  # NVIDIA build (a ROCm build goes straight to torch's own error)
        problem = _driver_problem(torch, driver_version(driver_file, smi, has_smi))
        if problem:
            return problem
        gpus = listed_gpus(smi)
        if gpus is not None and not any(ln.startswith("GPU ") for ln in gpus):
            return CudaProblem("no-device", "the NVIDIA driver sees no GPU on this node (nvidia-smi -L lists none)",
                               f"run on a node with an NVIDIA GPU (under SLURM: ask for one, e.g. --gpus=1) {CPU_ON_PURPOSE}")
        hidden = hidden_by_visible_devices(env, gpus)
        if hidden:
            return CudaProblem("no-device", hidden, "unset it or name a GPU that `nvidia-smi -L` lists "
                               f"(under SLURM: ask for a GPU, e.g. --gpus=1) {CPU_ON_PURPOSE}")
    return CudaProblem("init-error", f"torch {torch.__version__} could not initialise CUDA ({_init_error(torch)})",
                       f"run `cnnbench doctor` for this node's driver and devices, {CPU_ON_PURPOSE}")


def _init_error(torch: ModuleType) -> str:
    """torch's own error from initialising CUDA, on one line."""
    try:
        torch.cuda.init()
    except Exception as exc:  # torch raises RuntimeError/AssertionError/AcceleratorError, varying by version
        return " ".join(str(exc).split()) or type(exc).__name__
    return "torch.cuda.is_available() is False, but torch.cuda.init() raised nothing"


def cuda_unavailable_reason(**kwargs) -> str | None:
    """:func:`diagnose` as the one line a job stops with; None when CUDA is available."""
    problem = diagnose(**kwargs)
    return None if problem is None else str(problem)


def require_cuda(device: str, **kwargs) -> None:
    """Stop a run whose device is CUDA (``cuda``, ``cuda:N``) where CUDA is not available, with
    one config error that says why and what to do. Call after the GPU slot is assigned
    (cnnbench.gpus.assign_gpu): asking torch about CUDA fixes the devices the process sees."""
    if not device.startswith("cuda"):
        return
    reason = cuda_unavailable_reason(**kwargs)
    if reason:
        raise ConfigError(f"the run's device is {device!r} (train.device, or auto with resources.train.gpu >= 1) "
                          f"but {reason}")
    torch = kwargs.get("torch")
    if torch is None:
        import torch
    index, count = device.partition(":")[2], torch.cuda.device_count()
    if index and int(index) >= count:
        raise ConfigError(f"train.device is {device!r} but this process sees {count} GPU(s), cuda:0 to cuda:{count - 1} "
                          f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); set train.device: "
                          "cuda, or an index below the count")
