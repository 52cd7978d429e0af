"""The execution engine: the device, its precision and memory layout, the process's threads,
determinism and CPU allocator, and the data set held on the device."""

from __future__ import annotations

import logging
import os
import platform
import resource
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import ConfigError
from .spec import ExecutionSpec

log = logging.getLogger("cnnbench.engine")


def select_device(name: str) -> torch.device:
    """The torch device of a resolved ``execution.device`` (cpu, cuda, cuda:N, mps), refused with a
    config error when this machine does not have it."""
    dev = torch.device(name)
    if dev.type == "cuda":
        from .cuda_env import require_cuda

        require_cuda(name)  # one line: why CUDA is missing here (CPU build, driver, devices) and what to do
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"train.device is {name!r} but MPS is not available here; use device: auto or cpu")
    return dev


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{idx} ({torch.cuda.get_device_name(idx)})"
    if device.type == "cpu":
        return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
    return str(device)


# --- memory -------------------------------------------------------------------------------
# The peak of one epoch's training steps, not of the process's life: reset at the start of each
# epoch. On CUDA, the caching allocator's peak of allocated tensors (the data set held on the device
# included: ``DeviceData.nbytes`` says how much of it that is) and of reserved memory (what
# nvidia-smi shows); on Linux CPUs, the process's resident-set peak (VmHWM), which writing 5 to
# /proc/self/clear_refs resets; elsewhere the process's peak RSS since it started.
CLEAR_REFS = Path("/proc/self/clear_refs")
PROC_STATUS = Path("/proc/self/status")


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak-memory window; False where only the peak since the process started is known."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _resident_peak_kib() -> int | None:
    try:
        for line in PROC_STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_memory(device: torch.device) -> dict:
    """Peak memory (MiB) since the last :func:`reset_peak_memory`: ``peak_memory_mb`` (CUDA: allocated
    tensors; CPU: resident set) and, on CUDA, ``peak_reserved_mb`` (the allocator's reserved memory)."""
    if device.type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20,
                "peak_reserved_mb": torch.cuda.max_memory_reserved(device) / 2**20}
    kib = _resident_peak_kib()
    if kib is None:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kib = rss / 1024 if sys.platform == "darwin" else rss  # bytes on macOS, KiB on Linux
    return {"peak_memory_mb": kib / 1024}


def memory_kind(device: torch.device, windowed: bool) -> str:
    """What ``peak_memory_mb`` measures, in words (train.json's ``memory_kind``)."""
    if device.type == "cuda":
        return "CUDA peak allocated during each epoch's training steps (data set on the device included)"
    if windowed:
        return "peak resident memory of the process during each epoch's training steps (data set included)"
    return "peak resident memory of the process since it started"


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def configure_process(execution: ExecutionSpec) -> None:
    """Threads, determinism and float precision of this process, as the run asks. Every switch is
    set both ways, so a run earlier in the same process (bench, ``bench --accuracy`` and the
    GPU check train several) leaves nothing behind for the next."""
    if execution.num_threads:
        torch.set_num_threads(execution.num_threads)
    if execution.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Only when it changes: the first call in a process imports much of torch._dynamo (2-3 s per job).
    if torch.are_deterministic_algorithms_enabled() != execution.deterministic:
        torch.use_deterministic_algorithms(execution.deterministic)
    torch.backends.cudnn.deterministic = execution.deterministic
    torch.backends.cudnn.benchmark = not execution.deterministic
    # "fp32" means fp32: cuDNN would otherwise run fp32 convolutions on TF32 tensor cores (its
    # default), with a 10-bit mantissa. Under bf16 autocast the convolutions are bf16 anyway.
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


# --- data on the device ------------------------------------------------------------------
class DeviceData:
    """A split held on the device as uint8 NCHW plus int64 labels."""

    def __init__(self, images, labels, device: torch.device) -> None:
        # np.array copies the read-only memmap into memory once; then NHWC -> NCHW, still uint8.
        x = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True))
        self.images = x.permute(0, 3, 1, 2).contiguous().to(device)
        self.labels = torch.from_numpy(np.array(labels, dtype=np.int64, copy=True)).to(device)

    @property
    def nbytes(self) -> int:
        return self.images.nelement() * self.images.element_size() + self.labels.nelement() * 8

    def __len__(self) -> int:
        return self.labels.shape[0]


# --- CPU memory allocator ----------------------------------------------------------------
# glibc's malloc hands every large freed block back to the kernel (munmap, or trimming the top of
# the heap) and takes it again on the next step, so a CPU training step pays hundreds of thousands
# of page faults an epoch for the same activations. Raising both thresholds keeps that memory in
# the process (what PyTorch's CPU tuning guide gets by preloading tcmalloc or jemalloc).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MALLOC_MMAP_THRESHOLD = 256 * 2**20  # blocks larger than this (whole data sets) still get their own mapping
MALLOC_TRIM_THRESHOLD = 2**31 - 1    # return freed memory to the kernel only beyond ~2 GiB (mallopt takes an int)
MALLOC_ENV = "CNNBENCH_MALLOC_TUNING"  # set to 0 to leave the allocator as it is
_malloc_state = "default"


def tune_cpu_allocator() -> str:
    """Set glibc's mmap and trim thresholds for this process (once); return the allocator's state.

    "glibc, tuned" when set, "default" where the C library is not glibc, mallopt refuses, or
    ``CNNBENCH_MALLOC_TUNING=0``. Process-wide and lasting: it changes speed and resident memory,
    never results."""
    global _malloc_state
    if _malloc_state != "default" or os.environ.get(MALLOC_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return _malloc_state
    try:
        glibc = os.confstr("CS_GNU_LIBC_VERSION")  # e.g. "glibc 2.36"; absent outside glibc
    except (AttributeError, ValueError, OSError):
        glibc = None
    if not glibc:
        return _malloc_state
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD,
                                                                                      MALLOC_TRIM_THRESHOLD)
    except (OSError, AttributeError) as err:
        log.debug("mallopt not available (%s); keeping the default allocator settings", err)
        return _malloc_state
    if ok:
        _malloc_state = "glibc, tuned"
    return _malloc_state


def allocator_state() -> str:
    return _malloc_state


GPU_HOST_CHECK_EVERY = 25


class Engine:
    """Device, precision and memory layout of one run (its resolved ``execution`` settings)."""

    def __init__(self, execution: ExecutionSpec, device: torch.device, fused_optimizer: bool | None = None) -> None:
        self.device = device
        self.bf16 = execution.precision == "bf16"
        self.channels_last = execution.memory_format == "channels_last"
        self.compile = execution.compile
        # torch's fused (single-kernel) optimizer step on the CPU, where it measured faster
        # (docs/benchmarks.md); on CUDA torch's default (foreach) until `cnnbench bench
        # --optimizer-impl fused,default` has measured the fused one there.
        self.fused_optimizer = device.type == "cpu" if fused_optimizer is None else fused_optimizer
        # Steps between host-side looks at the divergence flag: free on the CPU, a wait on a GPU.
        self.host_check_every = 1 if device.type == "cpu" else GPU_HOST_CHECK_EVERY
        # On the CPU the process's allocator is part of the engine (see tune_cpu_allocator)
        self.allocator = tune_cpu_allocator() if device.type == "cpu" else allocator_state()

    @classmethod
    def plain(cls, device: torch.device) -> "Engine":
        """fp32, contiguous, not compiled: the engine of a caller that asks for nothing."""
        return cls(ExecutionSpec(device=device.type, precision="fp32", memory_format="contiguous", compile=False,
                                 deterministic=False, num_threads=None), device)

    @property
    def precision(self) -> str:
        """What training computes in (evaluation always runs in fp32: see train.predict)."""
        if self.bf16:
            return "bf16 autocast"
        return "fp32 (TF32 off)" if self.device.type == "cuda" else "fp32"

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def prepare(self, model: nn.Module) -> nn.Module:
        return model.to(self.device, memory_format=self.memory_format)

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to call in the hot loop (compiled when asked); shares weights with ``model``."""
        return torch.compile(model) if self.compile else model

    def input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=self.memory_format)
