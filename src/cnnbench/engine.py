"""The execution engine: the device, its precision and memory layout, the process's threads,
determinism and CPU allocator, and the data set held on the device."""

from __future__ import annotations

import logging
import os
import platform
import resource
import sys

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


def peak_memory_mb(device: torch.device) -> float:
    """Peak device memory: CUDA allocator peak on a GPU, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def configure_process(execution: ExecutionSpec) -> None:
    """Threads and determinism of this process, as the run asks (both ways: a deterministic run
    earlier in the same process leaves nothing switched on for the next)."""
    if execution.num_threads:
        torch.set_num_threads(execution.num_threads)
    if execution.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(execution.deterministic)
    torch.backends.cudnn.deterministic = execution.deterministic
    torch.backends.cudnn.benchmark = not execution.deterministic


# --- data on the device ------------------------------------------------------------------
class DeviceData:
    """A split held on the device as uint8 NCHW plus int64 labels."""

    def __init__(self, images, labels, device: torch.device) -> None:
        # np.array copies the read-only memmap into memory once; then NHWC -> NCHW, still uint8.
        x = torch.from_numpy(np.array(images, dtype=np.uint8, copy=True))
        self.images = x.permute(0, 3, 1, 2).contiguous().to(device)
        self.labels = torch.from_numpy(np.array(labels, dtype=np.int64, copy=True)).to(device)

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


class Engine:
    """Device, precision and memory layout of one run (its resolved ``execution`` settings)."""

    def __init__(self, execution: ExecutionSpec, device: torch.device) -> None:
        self.device = device
        self.bf16 = execution.precision == "bf16"
        self.channels_last = execution.memory_format == "channels_last"
        self.compile = execution.compile
        # torch's fused (single-kernel) optimizer step, where this torch has one for the device
        self.fused_optimizer = device.type in ("cpu", "cuda")
        # On the CPU the process's allocator is part of the engine (see tune_cpu_allocator)
        self.allocator = tune_cpu_allocator() if device.type == "cpu" else allocator_state()

    @classmethod
    def plain(cls, device: torch.device) -> "Engine":
        """fp32, contiguous, not compiled: the engine of a caller that asks for nothing."""
        return cls(ExecutionSpec(device=device.type, precision="fp32", memory_format="contiguous", compile=False,
                                 deterministic=False, num_threads=None), device)

    @property
    def precision(self) -> str:
        return "bf16 autocast" if self.bf16 else "fp32"

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
