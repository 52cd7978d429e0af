"""`cnnbench doctor`: is this machine ready for the chosen profile, before a long run?

One screen of findings, each a name, OK/WARN/FAIL and what was found: torch and its CUDA build,
the NVIDIA driver (new enough for that build?), the devices torch sees (and MIG instances),
whether the profile's device is there (the full profile wants CUDA), bf16 and TF32, cuDNN, numba
and its cache directory, whether data/ and results/ are writable, the GPU slot directory and the
SLURM context. A FAIL is something that would stop or spoil the study; each problem found comes
with one ``fix:`` line. Statuses are judged against the profile: no NVIDIA driver is fine for a
profile that runs on the CPU on purpose, and a FAIL for one that wants CUDA.

Everything doctor reads is injectable (:class:`Host`) so the tests can fake a GPU node.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import re
import sys
import tempfile
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable, Mapping

from .cuda_env import (DRIVER_FILE, INSTALL_DOC, LEGACY_CUDA, LEGACY_INDEX, MIN_DRIVER, CudaProblem, Smi,
                       diagnose, driver_version, listed_gpus, pip_command, required_driver, run_nvidia_smi,
                       smi_installed)
from .errors import CnnbenchError

OK, WARN, FAIL = "OK", "WARN", "FAIL"
CURRENT_INDEX = "https://download.pytorch.org/whl/cu130"  # the build requirements.lock installs (CUDA 13.0)
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES", "SLURM_CPUS_PER_TASK")


@dataclass(frozen=True)
class Finding:
    name: str
    status: str                 # OK | WARN | FAIL
    value: str
    fix: str | None = None      # what to do; only where the status is not OK


def read_cpu_flags(path: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The CPU's feature flags (Linux); None where /proc/cpuinfo cannot be read."""
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@dataclass
class Host:
    """What doctor looks at; the defaults are this process and this machine."""

    torch: ModuleType | None = None
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    smi: Smi = run_nvidia_smi
    has_smi: Callable[[], bool] = smi_installed
    driver_file: Path = DRIVER_FILE
    cwd: Path = Path(".")
    cpu_flags: Callable[[], "set[str] | None"] = read_cpu_flags
    lock_dir: Path | None = None  # None: cnnbench.gpus.default_lock_dir()

    def __post_init__(self) -> None:
        if self.torch is None:
            import torch

            self.torch = torch


@dataclass
class Report:
    profile: str | None
    params: str
    findings: list[Finding]

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.status == FAIL]

    @property
    def fixes(self) -> list[str]:
        """One line per problem: findings that share a cause share the fix, shown once."""
        return list(dict.fromkeys(f.fix for f in self.findings if f.fix))

    def text(self) -> str:
        width = max(len(f.name) for f in self.findings)
        head = f"cnnbench doctor: profile {self.profile or '?'} of {self.params}, on {platform.node() or 'this machine'}"
        lines = [head] + [f"  {f.name:<{width}}  {f.status:<4}  {f.value}" for f in self.findings]
        lines += [f"fix: {fix}" for fix in self.fixes]
        warn = sum(f.status == WARN for f in self.findings)
        lines.append(f"{len(self.failures)} FAIL, {warn} WARN" + ("" if self.failures else ": ready for this profile"))
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"profile": self.profile, "params": self.params, "ok": not self.failures,
                           "findings": [asdict(f) for f in self.findings], "fixes": self.fixes}, indent=2) + "\n"


# --- the profile ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProfileNeeds:
    name: str
    runs: dict                  # device (cuda, cpu, ...) -> number of runs of the study
    precisions: dict            # device kind -> the precisions its runs use

    @property
    def cuda(self) -> bool:
        return any(d.startswith("cuda") for d in self.runs)


def profile_needs(cfg) -> ProfileNeeds:
    """Where the profile's runs execute, read from each run's resolved specification."""
    runs: Counter = Counter()
    precisions: dict = {}
    for variant, recipe, _ in cfg.runs:
        x = cfg.run(variant, recipe, chosen={}).execution  # tuned values never move a run to another device
        runs[x.device] += 1
        precisions.setdefault(x.device_kind, set()).add(x.precision)
    return ProfileNeeds(cfg.profile, dict(runs), precisions)


def check_profile(needs: ProfileNeeds, problem: CudaProblem | None, torch: ModuleType) -> Finding:
    wants = ", ".join(f"{dev} ({n} runs)" for dev, n in needs.runs.items())
    name = "profile device"
    if needs.cuda and problem:
        return Finding(name, FAIL, f"profile {needs.name} wants cuda: NOT available: {problem.why}", problem.fix)
    if "mps" in needs.runs and not torch.backends.mps.is_available():
        return Finding(name, FAIL, f"profile {needs.name} wants mps: NOT available here",
                       "set train.device: auto or cpu for this machine")
    if needs.cuda:
        return Finding(name, OK, f"profile {needs.name} wants {wants}: available, "
                       f"{torch.cuda.device_count()} device(s)")
    return Finding(name, OK, f"profile {needs.name} runs on {wants}, on purpose (train.device: cpu, or auto with "
                   "resources.train.gpu: 0)")


# --- torch, driver, devices -------------------------------------------------------------------
def check_torch(torch: ModuleType, needs_cuda: bool) -> Finding:
    cuda, hip = torch.version.cuda, getattr(torch.version, "hip", None)
    if cuda:
        need = required_driver(cuda)
        return Finding("torch", OK, f"{torch.__version__}, built for CUDA {cuda}"
                       + (f" (needs NVIDIA driver >= {need})" if need else ""))
    if hip:
        return Finding("torch", OK, f"{torch.__version__}, built for ROCm {hip}")
    fix = (f"install a CUDA build: {pip_command(CURRENT_INDEX, torch)} (driver >= {MIN_DRIVER[13]}), or "
           f"from {LEGACY_INDEX} (driver >= {MIN_DRIVER[12]}); {INSTALL_DOC}")
    return Finding("torch", FAIL if needs_cuda else OK, f"{torch.__version__}, a CPU-only build",
                   fix if needs_cuda else None)


def check_driver(host: Host, problem: CudaProblem | None, needs_cuda: bool) -> Finding:
    cuda = host.torch.version.cuda
    driver = driver_version(host.driver_file, host.smi, host.has_smi)
    if driver.version is None:
        return Finding("NVIDIA driver", FAIL if needs_cuda else OK, f"none ({driver.source})",
                       problem.fix if needs_cuda and problem else None)
    need = required_driver(cuda) if cuda else None
    if need is None:
        return Finding("NVIDIA driver", OK, f"{driver.version} (from {driver.source})")
    if driver.major < need:
        fix = problem.fix if problem else f"{pip_command(LEGACY_INDEX, host.torch)} (CUDA {LEGACY_CUDA}); {INSTALL_DOC}"
        return Finding("NVIDIA driver", FAIL if needs_cuda else WARN,
                       f"{driver.version} (from {driver.source}): too old for torch's CUDA {cuda} build (needs >= {need})", fix)
    return Finding("NVIDIA driver", OK, f"{driver.version} (from {driver.source}): new enough for CUDA {cuda} (>= {need})")


def _arch_supported(torch: ModuleType, major: int, minor: int) -> bool:
    """Has this torch kernels for compute capability major.minor (its own sm_XY, or PTX it can JIT)?"""
    archs = torch.cuda.get_arch_list()
    if not archs:
        return True  # nothing to judge by
    cap = major * 10 + minor
    if f"sm_{cap}" in archs:
        return True
    return any(a.startswith("compute_") and int(re.sub(r"\D", "", a)) <= cap for a in archs)


def check_devices(host: Host, problem: CudaProblem | None, needs_cuda: bool) -> list[Finding]:
    torch = host.torch
    smi_lines = listed_gpus(host.smi) or []
    if problem or not torch.cuda.is_available():
        listed = [ln for ln in smi_lines if ln.startswith("GPU ")]
        value = (f"{len(listed)} listed by nvidia-smi, none usable by torch" if listed
                 else "none visible (no GPU on this node, or none granted to this process)")
        return [Finding("GPUs", FAIL if needs_cuda else OK, value, problem.fix if needs_cuda and problem else None)]
    groups: dict[tuple, list[int]] = {}
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        groups.setdefault((p.name, round(p.total_memory / 2**30, 1), p.major, p.minor), []).append(i)
    found = []
    for (name, gib, major, minor), ids in groups.items():
        label = f"cuda:{ids[0]}" if len(ids) == 1 else f"cuda:{ids[0]}-{ids[-1]}"
        value = f"{len(ids)} x " * (len(ids) > 1) + f"{name}, {gib:g} GiB, compute capability {major}.{minor}"
        if _arch_supported(torch, major, minor):
            found.append(Finding(label, OK, value))
        else:
            found.append(Finding(label, FAIL, f"{value}: torch {torch.__version__} has no kernels for it "
                                 f"({', '.join(torch.cuda.get_arch_list())})",
                                 f"install the CUDA {LEGACY_CUDA} build, which still covers it: "
                                 f"{pip_command(LEGACY_INDEX, torch)}; {INSTALL_DOC}"))
    mig = [ln for ln in smi_lines if ln.startswith("MIG ")]
    if mig:
        kinds = Counter(ln.split()[1] for ln in mig)
        found.append(Finding("MIG", OK, f"{len(mig)} instance(s): " + ", ".join(f"{n} x {k}" for k, n in kinds.items())
                             + " (nvidia-smi -L)"))
    return found


# --- numerics ---------------------------------------------------------------------------------
def check_bf16(host: Host, needs: ProfileNeeds | None, cuda_ok: bool) -> Finding:
    torch = host.torch
    wants_bf16 = needs is not None and "bf16" in needs.precisions.get("cuda" if cuda_ok else "cpu", set())
    if cuda_ok:
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch < 2.3 has no emulation flag
            native = torch.cuda.is_bf16_supported()
        if native:
            return Finding("bf16", OK, "supported by cuda:0")
        return Finding("bf16", WARN if wants_bf16 else OK, "cuda:0 has no native bf16 (compute capability < 8.0)",
                       "set train.precision: fp32 in the profile for this GPU" if wants_bf16 else None)
    flags = host.cpu_flags()
    cap = torch.backends.cpu.get_cpu_capability()
    if flags is None:
        return Finding("bf16", OK, f"CPU ({cap}): bf16 instructions unknown (no /proc/cpuinfo)")
    has = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    value = f"CPU ({cap}): " + (", ".join(has) if has else "no avx512_bf16/amx_bf16, so bf16 is emulated (slow)")
    if wants_bf16 and not has:
        return Finding("bf16", WARN, value, "CPU runs: train.precision: auto (fp32 on the CPU) or fp32")
    return Finding("bf16", OK, value + ("" if wants_bf16 else "; CPU runs use fp32"))


def check_tf32(torch: ModuleType, cuda_ok: bool) -> Finding:
    with warnings.catch_warnings():  # newer torch steers to fp32_precision; the old flags still read true
        warnings.simplefilter("ignore")
        matmul, conv = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    onoff = lambda b: "on" if b else "off"  # noqa: E731
    value = (f"torch's defaults matmul {onoff(matmul)}, cuDNN conv {onoff(conv)}; cnnbench's runs turn both off "
             "(precision fp32 is true fp32, bf16 autocast is the fast path)")
    return Finding("TF32", OK, value if cuda_ok else "CUDA only; " + value)


def check_cudnn(torch: ModuleType, cuda_ok: bool) -> Finding:
    try:
        v = torch.backends.cudnn.version()
    except Exception:  # a CPU build, or a library that does not load
        v = None
    if not v:
        return Finding("cuDNN", OK if not cuda_ok else WARN, "not available in this torch")
    major, rest = (v // 10000, v % 10000) if v >= 90000 else (v // 1000, v % 1000)  # 9.x: 92400; 8.x: 8907
    value = f"{major}.{rest // 100}.{rest % 100}, {'enabled' if torch.backends.cudnn.enabled else 'DISABLED'}"
    return Finding("cuDNN", OK, value if cuda_ok else value + " (unused without CUDA)")


# --- files and folders ------------------------------------------------------------------------
def writable(path: Path) -> tuple[bool, str]:
    """Can this process create files in ``path`` (a temporary file test), or create ``path``?"""
    if path.is_dir():
        try:
            with tempfile.TemporaryFile(dir=path):
                return True, "writable"
        except OSError as exc:
            return False, f"not writable ({exc.strerror or exc})"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if path.exists():
        return False, "exists but is not a folder"
    if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
        return True, "absent, can be created"
    return False, f"absent, and {parent} is not writable"


def numba_cache_candidates(env: Mapping[str, str]) -> list[tuple[str, Path]]:
    """Where numba caches cnnbench's compiled kernel, in numba's own order of preference: the
    NUMBA_CACHE_DIR folder, __pycache__ beside augment.py, the user-wide cache (the first writable wins)."""
    from importlib.util import find_spec

    out = []
    if env.get("NUMBA_CACHE_DIR"):
        out.append(("NUMBA_CACHE_DIR", Path(env["NUMBA_CACHE_DIR"])))
    spec = find_spec("cnnbench.augment")  # found without importing it (its import compiles the kernel)
    if spec and spec.origin:
        out.append(("beside the module", Path(spec.origin).parent / "__pycache__"))
    try:
        from numba.misc.appdirs import AppDirs

        out.append(("user-wide", Path(AppDirs(appname="numba", appauthor=False).user_cache_dir)))
    except ImportError:
        pass
    return out


def check_numba(host: Host) -> Finding:
    try:
        import numba
    except ImportError:
        return Finding("numba", WARN, "not installed: the CPU resized crop uses the slower torch kernel",
                       "pip install numba (requirements.lock pins it)")
    tried = []
    for label, path in numba_cache_candidates(host.env):
        ok, how = writable(path)
        if ok:
            note = f"; {', '.join(tried)} not writable" if tried else ""
            return Finding("numba", OK, f"{numba.__version__}, cache {path} ({label}, {how}){note}")
        tried.append(f"{path} ({label})")
    return Finding("numba", WARN, f"{numba.__version__}, no writable cache folder: {', '.join(tried)}",
                   "export NUMBA_CACHE_DIR=<a writable folder>, e.g. export NUMBA_CACHE_DIR=$HOME/.cache/numba")


def check_folders(host: Host) -> list[Finding]:
    found = []
    for name in ("data", "results"):
        path = (host.cwd / name).resolve()
        ok, how = writable(path)
        fix = None if ok else f"make {path} a writable folder (chmod -R u+w {path}) or run from a writable checkout"
        found.append(Finding(f"{name}/", OK if ok else FAIL, f"{path}: {how}", fix))
    return found


def slot_holders(lock_dir: Path) -> tuple[int, list[str]]:
    """The GPU slot files in ``lock_dir`` and who holds each held one ("gpu0.1 by pid 123")."""
    files = sorted(p for p in lock_dir.glob("gpu*.lock"))
    held = []
    for path in files:
        try:
            handle = open(path)
        except OSError:
            continue
        with handle:
            try:  # a free slot takes the lock for an instant; a held one refuses it
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = handle.read().strip().splitlines()
                held.append(f"{path.stem.removeprefix('gpu')} by pid {pid[0] if pid else '?'}")
            else:
                fcntl.flock(handle, fcntl.LOCK_UN)
    return len(files), held


def check_slots(host: Host, needs_cuda: bool) -> Finding:
    from . import gpus

    lock_dir = host.lock_dir or gpus.default_lock_dir()
    ok, how = writable(lock_dir)
    if not ok:
        return Finding("GPU slots", FAIL if needs_cuda else WARN, f"{lock_dir}: {how}",
                       f"export {gpus.LOCK_DIR_ENV}=<a writable node-local folder>, or chmod u+w {lock_dir}")
    if not lock_dir.is_dir():
        return Finding("GPU slots", OK, f"{lock_dir}: {how}")
    count, held = slot_holders(lock_dir)
    shown = ", ".join(held[:4]) + (f", +{len(held) - 4} more" if len(held) > 4 else "")
    return Finding("GPU slots", OK, f"{lock_dir}: {how}; {count} slot file(s), {len(held)} held"
                   + (f" ({shown})" if held else ""))


def check_slurm(host: Host, needs_cuda: bool) -> Finding:
    env = host.env
    if not env.get("SLURM_JOB_ID"):
        cvd = env.get("CUDA_VISIBLE_DEVICES")
        return Finding("SLURM", OK, "not in a SLURM job" + (f"; CUDA_VISIBLE_DEVICES={cvd!r}" if cvd is not None else ""))
    value = ", ".join(f"{k}={env[k]!r}" if k in env else f"{k} unset" for k in SLURM_VARS)
    if needs_cuda and not env.get("SLURM_JOB_GPUS") and not env.get("CUDA_VISIBLE_DEVICES"):
        return Finding("SLURM", WARN, value + ": this job was granted no GPU",
                       "ask SLURM for a GPU (sbatch/srun --gpus=1, or the slurm profile's resources.train.gpu)")
    return Finding("SLURM", OK, value)


# --- the report -------------------------------------------------------------------------------
def examine(params: Path, profile: str | None, host: Host | None = None) -> Report:
    """Every finding for the profile ``profile`` of ``params`` on this machine (or ``host``)."""
    from .config import load
    from .errors import ConfigError

    host = host or Host()
    needs, findings = None, []
    try:
        needs = profile_needs(load(params, profile=profile))
    except ConfigError as exc:
        findings.append(Finding("params", FAIL, str(exc), f"fix {params} as the message says, or pass --params/--profile"))
    problem = diagnose(host.torch, host.env, host.driver_file, host.smi, host.has_smi)
    cuda_ok = problem is None
    needs_cuda = bool(needs and needs.cuda)
    findings += [check_torch(host.torch, needs_cuda), check_driver(host, problem, needs_cuda),
                 *check_devices(host, problem, needs_cuda)]
    if needs:
        findings.append(check_profile(needs, problem, host.torch))
    findings += [check_bf16(host, needs, cuda_ok), check_tf32(host.torch, cuda_ok), check_cudnn(host.torch, cuda_ok),
                 check_numba(host), *check_folders(host), check_slots(host, needs_cuda), check_slurm(host, needs_cuda)]
    return Report(needs.name if needs else profile, str(params), findings)


def run(params: Path, profile: str | None, json_out: Path | None = None, host: Host | None = None) -> Report:
    """`cnnbench doctor`: print the report (or, with ``json_out`` "-", its JSON), write the JSON to
    ``json_out``, and raise a CnnbenchError (exit status 1) when any check failed."""
    from .atomic import atomic_write_text

    report = examine(params, profile, host)
    if str(json_out) == "-":
        sys.stdout.write(report.to_json())
    else:
        print(report.text())
        if json_out:
            atomic_write_text(json_out, report.to_json())
    if report.failures:
        names = ", ".join(f.name for f in report.failures)
        raise CnnbenchError(f"{len(report.failures)} check(s) failed ({names}); the fix: lines say what to do")
    return report
