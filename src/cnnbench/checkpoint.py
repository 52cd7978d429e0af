"""Checkpoints of a run in progress, and the one safe way to read any torch file cnnbench wrote.

After every epoch the whole training state (model, optimizer, scheduler, EMA, the random number
generators, the history so far) is written atomically to ``<checkpoint dir>/last.pt``; a rerun of
the same run continues after that epoch. A checkpoint carries the run's identity
(:attr:`RunSpec.hash`, which holds the resolved device kind, and the device kind itself): one made
with other settings or on another kind of device is set aside as ``stale-<hash>.pt``, never
silently reused; one of another variant or data set is refused. Its random-number state is that
of the run's own device (see :func:`_rng_state`), so it restores wherever the same run resumes.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_write
from .errors import CheckpointError, CheckpointMismatch
from .spec import RunSpec

log = logging.getLogger("cnnbench.checkpoint")


def atomic_torch_save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda fh: torch.save(obj, fh))


def checkpoint_path(checkpoint_dir: Path) -> Path:
    return checkpoint_dir / "last.pt"


def load_plain(path: Path, what: str, remedy: str) -> dict:
    """``torch.load(path, weights_only=True)``: tensors and plain data only, never code.

    Any failure (a truncated or corrupt file, or a pickle that names other globals, which
    weights_only refuses before running anything) becomes a CheckpointError naming the file.
    """
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is mostly boilerplate (and suggests weights_only=False, which we never do):
        # keep the line that says what was found.
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "GLOBAL" in ln or ln.startswith("Unsupported")), lines[-1] if lines else "")
        if "GLOBAL" in detail:
            raise CheckpointError(
                f"{path}: refused to load this {what}: it names code, not just tensors and plain data "
                f"({detail[:300]}); nothing in it was run. {remedy}"
            ) from None
        raise CheckpointError(f"{path}: not a readable {what} (pickle data: {detail[:300]}). {remedy}") from None
    except Exception as exc:  # truncated zip, garbage bytes, EOF, ...
        raise CheckpointError(
            f"{path}: not a readable {what} ({type(exc).__name__}: {str(exc)[:300]}). {remedy}"
        ) from None
    if not isinstance(blob, dict):
        raise CheckpointError(f"{path}: not a cnnbench {what} (holds a {type(blob).__name__}). {remedy}")
    return blob


def load_checkpoint(path: Path, spec: RunSpec) -> dict | None:
    """The checkpoint if it may resume this run; None if there is none or it is stale (set aside)."""
    if not path.exists():
        return None
    ckpt = load_plain(path, "checkpoint", "Delete it to train this variant from scratch.")
    if ckpt.get("variant") != spec.variant or ckpt.get("dataset") != spec.dataset:
        raise CheckpointMismatch(
            f"{path} belongs to variant {ckpt.get('variant')!r} on {ckpt.get('dataset')!r}, not "
            f"{spec.variant!r} on {spec.dataset!r}; delete it or pass the right --checkpoint-dir"
        )
    if ckpt.get("settings_hash") != spec.hash or ckpt.get("device_kind") != spec.execution.device_kind:
        stale = path.with_name(f"stale-{ckpt.get('settings_hash', 'unknown')[:12]}.pt")
        os.replace(path, stale)
        log.warning("checkpoint %s was made with other settings; kept as %s, training from scratch", path, stale)
        return None
    return ckpt


def _rng_state(shuffle_gen: torch.Generator, aug_gen: torch.Generator, device: torch.device) -> dict:
    """The generators a run draws from: torch's default CPU one, the shuffle and augmentation
    generators, and, on CUDA, the default generator of the run's own device only (dropout draws
    from it). Not ``get_rng_state_all()``: that holds one state per GPU this process happens to
    see, which a job on another node, or on a CPU with CUDA installed, cannot restore."""
    state = {"torch": torch.get_rng_state(), "data": shuffle_gen.get_state(), "aug": aug_gen.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, shuffle_gen: torch.Generator, aug_gen: torch.Generator,
                   device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    shuffle_gen.set_state(state["data"])
    aug_gen.set_state(state["aug"])
    cuda = state.get("cuda")
    if device.type == "cuda" and isinstance(cuda, torch.Tensor):
        torch.cuda.set_rng_state(cuda, device)
    # A CPU run draws nothing from CUDA's generators: whatever a checkpoint holds for them is not its
    # state. (Checkpoints before this version held a list, one per visible GPU: their run identity
    # has changed since, so load_checkpoint sets them aside before they get here.)


def save_checkpoint(path: Path, spec: RunSpec, epoch: int, history: list[dict], *, model: nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler, ema: nn.Module | None,
                    shuffle_gen: torch.Generator, aug_gen: torch.Generator) -> None:
    """Everything a rerun needs to continue after ``epoch`` (1-based, complete), written atomically."""
    atomic_torch_save(
        {
            "variant": spec.variant,
            "dataset": spec.dataset,
            "settings_hash": spec.hash,
            "device_kind": spec.execution.device_kind,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "ema": ema.state_dict() if ema is not None else {},
            "rng": _rng_state(shuffle_gen, aug_gen, aug_gen.device),  # aug_gen lives on the run's device
            "history": history,
        },
        path,
    )


def restore_checkpoint(ckpt: dict, *, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler,
                       ema: nn.Module | None, shuffle_gen: torch.Generator,
                       aug_gen: torch.Generator) -> tuple[int, list[dict]]:
    """Load a checkpoint of :func:`load_checkpoint` into the run's objects; return (epochs done, history)."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if ema is not None:
        ema.load_state_dict(ckpt["ema"])
    _set_rng_state(ckpt["rng"], shuffle_gen, aug_gen, aug_gen.device)
    return int(ckpt["epoch"]), list(ckpt["history"])
