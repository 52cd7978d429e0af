"""Which GPU each concurrent job uses, and how many jobs share one.

`snakemake --cores 16 --resources gpu=4` lets at most four jobs that declare ``gpu=1`` run at
once, but Snakemake does not say *which* GPU a job may use: without help every job would pick
``cuda:0``. Each `cnnbench train`/`evaluate`/`bench` process therefore claims a *slot* before CUDA
starts and sets ``CUDA_VISIBLE_DEVICES`` to that slot's device. A device has ``jobs_per_gpu`` slots
(``resources.<stage>.jobs_per_gpu``, default 1: small CIFAR models leave most of a large GPU idle,
so several may share one); slot *s* of device *d* is an exclusive ``flock`` on
``<lock dir>/gpu<d>.<s>.lock``, held until the process exits (the kernel releases it even when the
process is killed). A job takes the device with the most free slots (spread before stacking); the
choice is made under one more lock (``claim.lock``) so that jobs starting together count the same
slots. The same works for `dvc queue start -j N` and for jobs started by hand in several terminals.
Locally the concurrency cap is the driver's: `--resources gpu=` GPUs × jobs_per_gpu.

Which devices: ``CUDA_VISIBLE_DEVICES`` when set, its entries used exactly as written (indexes,
GPU UUIDs or MIG UUIDs). Otherwise ``nvidia-smi -L``, by UUID (CUDA's default device order is
not nvidia-smi's, a UUID means the same device to both): a GPU split into MIG instances offers its
instances (``MIG-...``), never itself. Inside a SLURM allocation only the GPUs SLURM granted count
(``CUDA_VISIBLE_DEVICES`` as SLURM set it, else ``SLURM_STEP_GPUS``/``SLURM_JOB_GPUS``), and the
lock directory is the allocation's own, so `sbatch --gpus=4` running `snakemake --resources gpu=4`
spreads its jobs over its four GPUs while other allocations on the node do not count against it.

Before taking a slot, a job that states its need (``resources.<stage>.gpu_mem_mb``) checks the
device's free memory with ``nvidia-smi`` (no CUDA initialisation) and skips a device without room;
the check sees memory in use now, not what jobs that have just claimed a slot will allocate, so
``jobs_per_gpu`` is the cap and the check guards against a device that others already fill. MIG
instances are not checked (nvidia-smi's memory query is per GPU). When no slot fits, the job waits
for one rather than overfilling a device.

Nothing is claimed when the choice is not ours or there is none: a CPU or a pinned ``cuda:N``
device in the settings, no visible GPU, or exactly one visible device with ``jobs_per_gpu`` 1
(e.g. a SLURM job that was granted its own GPU).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator, Mapping, MutableMapping, Sequence

from .cuda_env import run_nvidia_smi

log = logging.getLogger("cnnbench")

LOCK_DIR_ENV = "CNNBENCH_GPU_LOCK_DIR"
_held: list[IO] = []  # open lock files of this process: a slot is held while its file is open

FreeMemory = Callable[[str], "int | None"]  # device id -> free MiB, None when unknown

_GPU_LINE = re.compile(r"^GPU (\d+):.*?(?:\(UUID: ([^)]+)\))?\s*$")
_MIG_LINE = re.compile(r"^\s+MIG .*?Device\s+\d+:.*\(UUID: ([^)]+)\)")


def default_lock_dir(env: Mapping[str, str] | None = None) -> Path:
    """Node-local: the slots describe this machine's GPUs; inside SLURM, this allocation's."""
    env = os.environ if env is None else env
    base = Path(env.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / f"cnnbench-gpu-slots-{os.getuid()}")
    # Two allocations on one node may both see their own GPU as "0": their slots must not meet.
    return base / f"slurm-{env['SLURM_JOB_ID']}" if env.get("SLURM_JOB_ID") else base


def parse_smi_list(text: str) -> list[tuple[str, str | None, list[str]]]:
    """``nvidia-smi -L`` -> [(GPU index, GPU UUID or None, [MIG instance UUIDs])]. MIG instances
    are the indented ``MIG 1g.10gb Device 0: (UUID: MIG-...)`` lines under their GPU."""
    gpus: list[tuple[str, str | None, list[str]]] = []
    for line in text.splitlines():
        gpu = _GPU_LINE.match(line)
        if gpu:
            gpus.append((gpu.group(1), gpu.group(2), []))
            continue
        mig = _MIG_LINE.match(line)
        if mig and gpus:
            gpus[-1][2].append(mig.group(1))
    return gpus


def claimable_devices(smi_list: str, indexes: Sequence[str] | None = None) -> list[str]:
    """The ids to put in ``CUDA_VISIBLE_DEVICES``, one per claimable device: each MIG instance of
    a GPU split into instances, else the GPU (its UUID, its index when no UUID is shown). With
    ``indexes`` (SLURM's grant), only those GPUs; an index nvidia-smi does not list is kept as is."""
    gpus = parse_smi_list(smi_list)
    if indexes is not None:
        listed = {index: (uuid, migs) for index, uuid, migs in gpus}
        gpus = [(i, *listed[i]) if i in listed else (i, None, []) for i in indexes]
    return [d for index, uuid, migs in gpus for d in (migs or [uuid or index])]


def _smi_list() -> str | None:
    return run_nvidia_smi(["-L"])


def _split(value: str) -> list[str]:
    return [d.strip() for d in value.split(",") if d.strip()]


def visible_devices(env: Mapping[str, str] | None = None) -> list[str]:
    """Device ids this process may use (see the module docstring), found without initialising
    CUDA, so ``CUDA_VISIBLE_DEVICES`` can still be set after."""
    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        return _split(env["CUDA_VISIBLE_DEVICES"])
    granted = None
    if env.get("SLURM_JOB_ID"):
        granted = _split(env.get("SLURM_STEP_GPUS") or env.get("SLURM_JOB_GPUS") or "")
        if not granted:
            return []  # SLURM granted no GPU: the node's others belong to other jobs
    listing = _smi_list()
    if listing is None:
        return granted or []
    return claimable_devices(listing, granted)


def free_memory_mb(device: str) -> int | None:
    """Free memory of ``device`` in MiB as nvidia-smi reports it (no CUDA initialisation); None
    when unknown (no nvidia-smi, a MIG instance, an answer that is not a number)."""
    if device.startswith("MIG-"):
        log.debug("GPU slot: %s is a MIG instance; nvidia-smi reports memory per GPU, so its memory is not checked",
                  device)
        return None
    args = ["--query-gpu=memory.free", "--format=csv,noheader,nounits", "-i", device]
    try:
        return int((run_nvidia_smi(args) or "").split()[0])
    except (ValueError, IndexError):
        log.debug("GPU slot: no free-memory figure for %s from nvidia-smi %s; not checked", device, " ".join(args))
        return None


@contextmanager
def _deciding(lock_dir: Path) -> Iterator[None]:
    """One claimer at a time counts and takes slots, so concurrent starts spread evenly."""
    with open(lock_dir / "claim.lock", "a") as mutex:
        fcntl.flock(mutex, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _lock_slot(lock_dir: Path, device: str, slot: int) -> IO | None:
    name = device.replace("/", "_")  # old-style MIG ids (MIG-GPU-<uuid>/1/0) hold slashes
    handle = open(lock_dir / f"gpu{name}.{slot}.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _free_slots(lock_dir: Path, device: str, jobs_per_gpu: int) -> list[int]:
    """Slots of ``device`` nobody holds (probed by locking and releasing, under the mutex)."""
    free = []
    for slot in range(jobs_per_gpu):
        handle = _lock_slot(lock_dir, device, slot)
        if handle is not None:
            handle.close()
            free.append(slot)
    return free


def _pick(devices: Sequence[str], lock_dir: Path, jobs_per_gpu: int, need_mb: int | None,
          free_mb: FreeMemory) -> tuple[str, IO] | str:
    """Take a slot on the device with the most free slots that has room; else say what is short."""
    with _deciding(lock_dir):
        free = {dev: _free_slots(lock_dir, dev, jobs_per_gpu) for dev in devices}
        open_devices = sorted((d for d in devices if free[d]), key=lambda d: -len(free[d]))  # stable: ties keep order
        if not open_devices:
            return "slots"
        for dev in open_devices:
            have = free_mb(dev) if need_mb is not None else None
            if have is not None and have < need_mb:
                log.debug("GPU slot: %s has %d MB free, this job needs %d MB; skipped", dev, have, need_mb)
                continue
            for slot in free[dev]:
                handle = _lock_slot(lock_dir, dev, slot)
                if handle is not None:
                    handle.seek(0)
                    handle.truncate()
                    handle.write(f"{os.getpid()}\n")
                    handle.flush()
                    return dev, handle
        return "memory"


def try_claim(devices: Sequence[str], lock_dir: Path, jobs_per_gpu: int = 1, need_mb: int | None = None,
              free_mb: FreeMemory = free_memory_mb) -> tuple[str, IO] | None:
    """Claim a slot on a device of ``devices``; None when every slot is taken or no device with a
    free slot has ``need_mb`` MiB free."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    got = _pick(devices, lock_dir, jobs_per_gpu, need_mb, free_mb)
    return None if isinstance(got, str) else got


def _shortage(why: str, devices: Sequence[str], jobs_per_gpu: int, need_mb: int | None) -> str:
    if why == "memory":
        return f"no GPU with a free slot ({', '.join(devices)}) has the {need_mb} MB free this job needs (gpu_mem_mb)"
    if jobs_per_gpu == 1:
        return f"all {len(devices)} GPUs ({', '.join(devices)}) are in use by other cnnbench jobs"
    return (f"all {len(devices) * jobs_per_gpu} slots of {len(devices)} GPUs ({', '.join(devices)}; "
            f"jobs_per_gpu {jobs_per_gpu}) are in use by other cnnbench jobs")


def claim(devices: Sequence[str], lock_dir: Path | None = None, wait: bool = True, poll_s: float = 1.0,
          timeout_s: float | None = None, jobs_per_gpu: int = 1, need_mb: int | None = None,
          free_mb: FreeMemory = free_memory_mb) -> tuple[str, IO]:
    """Claim a slot on a device of ``devices``, waiting for one if ``wait``. Returns the device id
    and the open lock file; the slot stays claimed until that file is closed or the process ends."""
    if not devices:
        raise ValueError("no GPU to claim: the device list is empty")
    if jobs_per_gpu < 1:
        raise ValueError(f"jobs_per_gpu must be at least 1, got {jobs_per_gpu}")
    lock_dir = lock_dir or default_lock_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    warned = False
    while True:
        got = _pick(devices, lock_dir, jobs_per_gpu, need_mb, free_mb)
        if not isinstance(got, str):
            return got
        why = _shortage(got, devices, jobs_per_gpu, need_mb)
        if not wait or (timeout_s is not None and time.monotonic() - start >= timeout_s):
            cap = len(devices) * jobs_per_gpu
            raise TimeoutError(f"{why} (locks in {lock_dir}); run at most GPUs × jobs_per_gpu jobs at once, "
                               f"e.g. snakemake --resources gpu={cap}")
        if not warned:
            log.warning("%s; waiting for a slot to free up", why)
            warned = True
        time.sleep(poll_s)


def assign_gpu(device_setting: str, env: MutableMapping[str, str] | None = None,
               devices: Sequence[str] | None = None, lock_dir: Path | None = None, *,
               jobs_per_gpu: int = 1, gpu_mem_mb: int | None = None, free_mb: FreeMemory = free_memory_mb,
               timeout_s: float | None = None) -> str | None:
    """Give this job a GPU slot by setting ``CUDA_VISIBLE_DEVICES`` in ``env`` (default: this
    process's environment) to the claimed device. Call before CUDA is initialised. Returns the
    device id, or None when nothing was claimed (see the module docstring for when)."""
    env = os.environ if env is None else env
    if device_setting not in ("auto", "cuda"):
        return None  # cpu, mps, or a pinned cuda:N: the user chose
    devices = list(devices) if devices is not None else visible_devices(env)
    if not devices or (len(devices) == 1 and jobs_per_gpu == 1):
        return None  # no choice to make and no sharing to cap
    dev, handle = claim(devices, lock_dir or default_lock_dir(env), timeout_s=timeout_s,
                        jobs_per_gpu=jobs_per_gpu, need_mb=gpu_mem_mb, free_mb=free_mb)
    _held.append(handle)
    env["CUDA_VISIBLE_DEVICES"] = dev
    log.info("GPU slot: device %s of %s, %d job(s) per GPU (CUDA_VISIBLE_DEVICES=%s)",
             dev, ",".join(devices), jobs_per_gpu, dev)
    return dev
