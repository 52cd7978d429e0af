"""One GPU per concurrent job on a machine with several GPUs.

`snakemake --cores 16 --resources gpu=4` lets at most four jobs that declare ``gpu=1`` run at
once, but Snakemake does not say *which* GPU a job may use: without help every job would pick
``cuda:0``. Each `cnnbench train`/`evaluate` process therefore claims a slot before CUDA starts:
slot *i* is an exclusive ``flock`` on ``<lock dir>/gpu<id>.lock`` for the *i*-th visible device,
held until the process exits (the kernel releases it even when the process is killed), and the
process sets ``CUDA_VISIBLE_DEVICES`` to that one device. The same works for `dvc queue start -j N`
and for jobs started by hand in several terminals.

Nothing is assigned when the choice is not ours: a CPU or a pinned ``cuda:N`` device in the
settings, one visible GPU or none, or a job inside a SLURM allocation (SLURM already set
``CUDA_VISIBLE_DEVICES`` to the GPUs it granted). If every device is claimed (more concurrent
jobs than GPUs, e.g. `--resources gpu=` larger than the GPU count or not given), the process
waits for a free one rather than sharing a GPU.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Mapping, MutableMapping, Sequence

log = logging.getLogger("cnnbench")

LOCK_DIR_ENV = "CNNBENCH_GPU_LOCK_DIR"
_held: list[IO] = []  # open lock files of this process: a slot is held while its file is open


def default_lock_dir() -> Path:
    """Node-local: the slots describe this machine's GPUs."""
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / f"cnnbench-gpu-slots-{os.getuid()}")


def visible_devices(env: Mapping[str, str] | None = None) -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else every GPU that
    ``nvidia-smi -L`` lists (no CUDA initialisation, so the variable can still be set after)."""
    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        return [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]


def try_claim(devices: Sequence[str], lock_dir: Path) -> tuple[str, IO] | None:
    """Claim the first free device of ``devices``; None when all are claimed."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    for dev in devices:
        name = dev.replace("/", "_")  # UUIDs and MIG ids are fine in a file name; paths are not
        handle = open(lock_dir / f"gpu{name}.lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return dev, handle
    return None


def claim(devices: Sequence[str], lock_dir: Path | None = None, wait: bool = True, poll_s: float = 1.0,
          timeout_s: float | None = None) -> tuple[str, IO]:
    """Claim a free device of ``devices``, waiting for one if ``wait``. Returns the device id and
    the open lock file; the slot stays claimed until that file is closed or the process ends."""
    if not devices:
        raise ValueError("no GPU to claim: the device list is empty")
    lock_dir = lock_dir or default_lock_dir()
    start = time.monotonic()
    warned = False
    while True:
        got = try_claim(devices, lock_dir)
        if got is not None:
            return got
        waited = time.monotonic() - start
        if not wait or (timeout_s is not None and waited >= timeout_s):
            raise TimeoutError(
                f"all {len(devices)} GPUs ({', '.join(devices)}) are in use by other cnnbench jobs "
                f"(locks in {lock_dir}); run at most that many at once, e.g. snakemake --resources gpu={len(devices)}"
            )
        if not warned:
            log.warning("all %d GPUs are in use by other cnnbench jobs; waiting for one to free up", len(devices))
            warned = True
        time.sleep(poll_s)


def assign_gpu(device_setting: str, env: MutableMapping[str, str] | None = None,
               devices: Sequence[str] | None = None, lock_dir: Path | None = None) -> str | None:
    """Give this job its own GPU by setting ``CUDA_VISIBLE_DEVICES`` in ``env`` (default: this
    process's environment) to one claimed device. Call before CUDA is initialised. Returns the
    device id, or None when nothing was assigned (see the module docstring for when)."""
    env = os.environ if env is None else env
    if device_setting not in ("auto", "cuda"):
        return None  # cpu, mps, or a pinned cuda:N: the user chose
    if env.get("SLURM_JOB_ID"):
        return None  # SLURM granted the GPUs and set CUDA_VISIBLE_DEVICES itself
    devices = list(devices) if devices is not None else visible_devices(env)
    if len(devices) < 2:
        return None
    dev, handle = claim(devices, lock_dir)
    _held.append(handle)
    env["CUDA_VISIBLE_DEVICES"] = dev
    log.info("GPU slot: device %s of %s (CUDA_VISIBLE_DEVICES=%s)", dev, ",".join(devices), dev)
    return dev
