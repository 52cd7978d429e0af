"""Fault injection for the reliability tests: put this folder on PYTHONPATH of a child process.

Python imports ``sitecustomize`` at start-up. When ``cnnbench.checkpoint`` is later imported, this
hook wraps its checkpoint writer so that the process kills itself with SIGKILL at an exact
point (a real, uncatchable kill, but at a deterministic moment instead of a racing timer):

CNNBENCH_FAULT_KILL_AFTER_CHECKPOINT=N   right after the checkpoint of epoch N is in place
CNNBENCH_FAULT_KILL_DURING_CHECKPOINT=N  half-way through writing the checkpoint of epoch N
CNNBENCH_FAULT_LOG=PATH                  append one line saying what was done (proof the fault fired)

Without these variables nothing is changed. Never used outside the tests.
"""

import importlib.abc
import importlib.machinery
import io
import os
import signal
import sys

_AFTER = int(os.environ.get("CNNBENCH_FAULT_KILL_AFTER_CHECKPOINT") or 0)
_DURING = int(os.environ.get("CNNBENCH_FAULT_KILL_DURING_CHECKPOINT") or 0)


def _die(what: str) -> None:
    log = os.environ.get("CNNBENCH_FAULT_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{what} (pid {os.getpid()})\n")
            fh.flush()
            os.fsync(fh.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def _epoch_of(obj):
    if isinstance(obj, dict) and "optimizer" in obj and "epoch" in obj:
        return obj["epoch"]
    return None


def _patch(checkpoint) -> None:
    real_atomic_save = checkpoint.atomic_torch_save
    torch = checkpoint.torch
    real_save = torch.save

    def atomic_torch_save(obj, path):
        real_atomic_save(obj, path)
        if _AFTER and _epoch_of(obj) == _AFTER:
            _die(f"killed after checkpoint of epoch {_AFTER}")

    def save(obj, f, *args, **kwargs):
        if _DURING and _epoch_of(obj) == _DURING and hasattr(f, "write"):
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            _die(f"killed while writing checkpoint of epoch {_DURING}")
        return real_save(obj, f, *args, **kwargs)

    checkpoint.atomic_torch_save = atomic_torch_save  # what save_checkpoint calls
    torch.save = save


class _PostImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "cnnbench.checkpoint":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        real_exec = spec.loader.exec_module

        def exec_module(module):
            real_exec(module)
            _patch(module)

        spec.loader.exec_module = exec_module
        return spec


if _AFTER or _DURING:
    sys.meta_path.insert(0, _PostImport())
