"""Train one variant: packed uint8 arrays on the device, augmentation as batched tensor ops.

Resumable: after every epoch a checkpoint (model, optimizer, scheduler, RNG states, history) is
written atomically; a rerun with the same settings continues after the last complete epoch.
A checkpoint made with other settings is set aside, never silently reused.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import __version__
from .atomic import atomic_write, atomic_write_text, remove_leftovers, write_csv
from .augment import augment_batch, augment_kernel, make_augmenter, normalize
from .config import Config, canonical_hash
from .data import packed
from .models import build_model, zero_init_residual

log = logging.getLogger("cnnbench.train")

HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "peak_memory_mb"]


from .errors import CheckpointError, CheckpointMismatch, DataError, TrainingDiverged  # noqa: E402 - importable from here too


# --- small utilities --------------------------------------------------------------------
def atomic_torch_save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda fh: torch.save(obj, fh))


def select_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device is {name!r} but CUDA is not available here; use device: auto or cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"train.device is {name!r} but MPS is not available here; use device: auto or cpu")
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


def configure_determinism(settings: dict) -> None:
    if settings.get("num_threads"):
        torch.set_num_threads(int(settings["num_threads"]))
    if settings["deterministic"]:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.backends.cudnn.benchmark = True


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
    """Device, precision and memory layout of one run, resolved from the settings."""

    def __init__(self, settings: dict, device: torch.device) -> None:
        self.device = device
        prec = settings.get("precision", "auto")
        self.bf16 = prec == "bf16" or (prec == "auto" and device.type == "cuda")
        fmt = settings.get("memory_format", "auto")
        self.channels_last = fmt == "channels_last" or (fmt == "auto" and device.type == "cuda")
        self.compile = bool(settings.get("compile", False))
        # torch's fused (single-kernel) optimizer step, where this torch has one for the device
        self.fused_optimizer = device.type in ("cpu", "cuda")
        # On the CPU the process's allocator is part of the engine (see tune_cpu_allocator)
        self.allocator = tune_cpu_allocator() if device.type == "cpu" else allocator_state()

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


# --- optimisation --------------------------------------------------------------------------
def parameter_groups(model: nn.Module, weight_decay: float, no_decay_norm_bias: bool) -> list[dict]:
    """Weight decay on conv/linear weights; none on norm weights and biases when asked."""
    if not no_decay_norm_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)  # BN weights/biases and all biases are 1-D
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, opt: dict, fused: bool = False) -> torch.optim.Optimizer:
    """The optimizer of the ``optimizer`` settings. ``fused`` asks for torch's fused implementation
    (one kernel for all parameters; same update rule), used where this torch has one for the device."""
    params = parameter_groups(model, opt.get("weight_decay", 0.0), bool(opt.get("no_decay_norm_bias", False)))
    if opt["name"] == "sgd":
        cls, kwargs = torch.optim.SGD, {
            "lr": opt["lr"],
            "momentum": opt.get("momentum", 0.0),
            "nesterov": bool(opt.get("nesterov", False)) and opt.get("momentum", 0.0) > 0,
        }
    elif opt["name"] == "adamw":
        cls, kwargs = torch.optim.AdamW, {"lr": opt["lr"]}
    else:
        raise ValueError(f"train.optimizer.name: unknown optimizer {opt['name']!r}; allowed: sgd, adamw")
    if fused:
        try:
            return cls(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError) as err:  # an older torch, or no fused kernel for this device
            log.debug("fused %s not available (%s); using the default implementation", cls.__name__, err)
    return cls(params, **kwargs)


def optimizer_impl(optimizer: torch.optim.Optimizer) -> str:
    return "fused" if optimizer.defaults.get("fused") else "default"


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, sched: dict) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    warmup = sched.get("warmup_epochs", 0) * steps_per_epoch
    if warmup and step < warmup:
        return (step + 1) / warmup
    name = sched["name"]
    if name == "constant":
        return 1.0
    if name == "step":
        epoch = step // steps_per_epoch
        return sched.get("gamma", 0.1) ** (epoch // sched.get("step_size", 10))
    progress = (step - warmup) / max(1, total_steps - warmup)
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if name == "onecycle":
        # Linear decay to zero after the warm-up (the "one cycle" of Smith & Topin, without momentum cycling).
        return max(0.0, 1.0 - progress)
    raise ValueError(f"train.schedule.name: unknown schedule {name!r}; allowed: constant, step, cosine, onecycle")


# --- evaluation ------------------------------------------------------------------------------
@torch.no_grad()
def predict(model: nn.Module, data: DeviceData, mean, std, batch_size: int, engine: Engine | None = None,
            tta_flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and per-example losses for a whole split (model in eval mode).

    With ``tta_flip`` the softmax outputs of each image and its mirror image are averaged.
    """
    model.eval()
    engine = engine or Engine({"precision": "fp32", "memory_format": "contiguous"}, data.labels.device)
    logits, losses = [], []
    for i in range(0, len(data), batch_size):
        x = engine.input(normalize(data.images[i : i + batch_size], mean, std))
        with engine.autocast():
            out = model(x).float()
            if tta_flip:
                both = (out.softmax(1) + model(x.flip(3)).float().softmax(1)) / 2
                out = both.clamp_min(1e-12).log()  # log-probabilities: cross_entropy and argmax still apply
        logits.append(out)
        losses.append(F.cross_entropy(out, data.labels[i : i + batch_size], reduction="none"))
    return torch.cat(logits), torch.cat(losses)


# --- EMA and divergence -----------------------------------------------------------------------------
NAN_CHECK_EVERY = 25  # steps between host-side looks at the divergence flag


def make_ema(model: nn.Module, decay: float | None):
    """An exponential moving average of the weights (and BN buffers), or None."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def check_finite(first_bad: torch.Tensor, name: str, epoch: int, settings: dict) -> None:
    step = int(first_bad.item())
    if step >= 0:
        raise TrainingDiverged(
            f"variant {name!r}: loss became NaN or infinite at epoch {epoch + 1}, step {step + 1}; "
            f"lower train.optimizer.lr (now {settings['optimizer']['lr']}); no model or metrics were written"
        )


# --- checkpoints -------------------------------------------------------------------------------
def checkpoint_path(checkpoint_dir: Path) -> Path:
    return checkpoint_dir / "last.pt"


def load_plain(path: Path, what: str, remedy: str) -> dict:
    """``torch.load(path, weights_only=True)``: tensors and plain data only, never code.

    Any failure (a truncated or corrupt file, or a pickle that names other globals, which
    weights_only refuses before running anything) becomes a CheckpointError naming the file.
    """
    import pickle

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


def remove_partial_files(directory: Path) -> None:
    """Delete the temporaries killed runs left in ``directory`` (see `cnnbench.atomic.remove_leftovers`)."""
    remove_leftovers(directory)


def load_checkpoint(path: Path, variant: dict, settings_hash: str) -> dict | None:
    """Return the checkpoint if it may resume this run, None if there is none or it is stale."""
    if not path.exists():
        return None
    ckpt = load_plain(path, "checkpoint", "Delete it to train this variant from scratch.")
    if ckpt.get("variant") != variant["variant"] or ckpt.get("dataset") != variant["dataset"]:
        raise CheckpointMismatch(
            f"{path} belongs to variant {ckpt.get('variant')!r} on {ckpt.get('dataset')!r}, not "
            f"{variant['variant']!r} on {variant['dataset']!r}; delete it or pass the right --checkpoint-dir"
        )
    if ckpt.get("settings_hash") != settings_hash:
        stale = path.with_name(f"stale-{ckpt.get('settings_hash', 'unknown')[:12]}.pt")
        os.replace(path, stale)
        log.warning("checkpoint %s was made with other settings; kept as %s, training from scratch", path, stale)
        return None
    return ckpt


def rng_state(gen: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "data": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- the run ---------------------------------------------------------------------------------
def load_training_data(variant: dict, prepared_dir: Path, device: torch.device) -> tuple[DeviceData, DeviceData, list[str]]:
    settings = variant["train"]
    exclude = variant["exclude_classes"]
    x_tr, y_tr, classes = packed.load_split(prepared_dir, "train", exclude_classes=exclude)
    x_va, y_va, _ = packed.load_split(prepared_dir, "val", exclude_classes=exclude)
    if settings.get("train_limit"):
        # One fixed subset for every variant and seed of a data set: seeds then vary the training
        # (initialisation, order, augmentation), not the data.
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(y_tr), generator=g)[: settings["train_limit"]].sort().values.numpy()
        x_tr, y_tr = x_tr[idx], y_tr[idx]
    if len(y_tr) == 0:
        raise DataError(f"{prepared_dir}: no training images left for variant {variant['variant']!r}")
    if settings["batch_size"] > len(y_tr):
        raise DataError(
            f"train.batch_size {settings['batch_size']} is larger than the {len(y_tr)} training images of "
            f"variant {variant['variant']!r}; lower batch_size or raise train_limit"
        )
    return DeviceData(x_tr, y_tr, device), DeviceData(x_va, y_va, device), classes


def train_variant(
    cfg: Config,
    name: str,
    prepared_dir: Path,
    out_dir: Path,
    checkpoint_dir: Path,
    use_dvclive: bool = True,
    recipe: str | None = None,
    seed: int | None = None,
) -> dict:
    """Train one run of variant ``name`` (under ``recipe``, with ``seed``); write model.pt,
    history.csv and train.json into ``out_dir``."""
    variant = cfg.variant(name, recipe, seed)
    settings = variant["train"]
    settings_hash = canonical_hash(variant)
    configure_determinism(settings)
    device = select_device(settings["device"])
    torch.manual_seed(settings["seed"])
    gen = torch.Generator(device=device).manual_seed(settings["seed"])
    shuffle_gen = torch.Generator().manual_seed(settings["seed"] + 1)

    # The checkpoint first: one of another run is refused before any data is loaded.
    ckpt_file = checkpoint_path(checkpoint_dir)
    remove_partial_files(checkpoint_dir)
    ckpt = load_checkpoint(ckpt_file, variant, settings_hash)
    # Outputs of an earlier run would sit beside this run's half-written ones: remove them now,
    # model.pt (the mark of a complete run) first, so a failure below leaves nothing that looks complete.
    for stale in ("model.pt", "metrics.json", "confusion.csv", "train.json", "history.csv"):
        (out_dir / stale).unlink(missing_ok=True)
    remove_partial_files(out_dir)

    train_data, val_data, classes = load_training_data(variant, prepared_dir, device)
    num_classes = len(classes)
    norm = settings["normalize"]
    mean = torch.tensor(norm["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(norm["std"], device=device).view(1, 3, 1, 1)
    aug = settings["augment"]
    augmenter = make_augmenter(aug, mean, std)
    # The resized-crop pipeline writes each batch into one reused buffer (saves a large allocation per
    # step on the CPU); the previous batch is no longer referenced once its backward pass has run.
    batch_buf = None
    if augmenter is not None:
        batch_buf = torch.empty((settings["batch_size"], *train_data.images.shape[1:]), device=device)
    engine = Engine(settings, device)

    model = build_model(variant["model"], num_classes, **variant["model_args"])
    if settings.get("zero_init_residual"):
        zero_init_residual(model)
    model = engine.prepare(model)
    ema = make_ema(model, settings.get("ema"))
    step_model = engine.wrap(model)
    optimizer = build_optimizer(model, settings["optimizer"], fused=engine.fused_optimizer)
    bs = settings["batch_size"]
    steps_per_epoch = math.ceil(len(train_data) / bs)
    if settings.get("max_batches_per_epoch"):
        steps_per_epoch = min(steps_per_epoch, settings["max_batches_per_epoch"])
    epochs = settings["epochs"]
    total_steps = steps_per_epoch * epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, steps_per_epoch, settings["schedule"])
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=settings["label_smoothing"])

    history: list[dict] = []
    start_epoch = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        set_rng_state(ckpt["rng"], shuffle_gen)
        gen.set_state(ckpt["rng"]["aug"])
        history = list(ckpt["history"])
        start_epoch = int(ckpt["epoch"])
        log.info("resuming %s from %s after epoch %d of %d", name, ckpt_file, start_epoch, epochs)

    # DVCLive logs into a staging folder that becomes dvclive/ only with the finished run, so a
    # failed or killed run leaves no metrics behind (a resumed run replays its history into it).
    live_dir, live_staging = out_dir / "dvclive", out_dir / ".dvclive.partial"
    shutil.rmtree(live_dir, ignore_errors=True)
    shutil.rmtree(live_staging, ignore_errors=True)
    live = None
    if use_dvclive:
        live = _open_dvclive(live_staging, history)

    dev_desc = describe_device(device)
    n_params = count_parameters(model)
    log.info(
        "training %s: model %s (%s parameters), %d train / %d val images, %d classes, %d epochs x %d steps, "
        "batch %d, recipe %s, device %s, %s%s%s",
        name, variant["model"], f"{n_params:,}", len(train_data), len(val_data), num_classes,
        epochs, steps_per_epoch, bs, variant["recipe"], dev_desc, engine.precision,
        ", channels_last" if engine.channels_last else "", ", compiled" if engine.compile else "",
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    try:
        # On the CPU looking at the flag costs nothing: stop at the first bad step. On a GPU every few steps.
        check_every = 1 if device.type == "cpu" else NAN_CHECK_EVERY
        for epoch in range(start_epoch, epochs):
            model.train()
            t0 = time.perf_counter()
            order = torch.randperm(len(train_data), generator=shuffle_gen).to(device)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            bar = tqdm(
                range(steps_per_epoch), desc=f"{name} epoch {epoch + 1}/{epochs}", unit="batch",
                leave=False, disable=None, file=sys.stderr,
            )
            first_bad = torch.full((), -1, device=device, dtype=torch.long)  # first step with a non-finite loss
            for step in bar:
                idx = order[step * bs : (step + 1) * bs]
                buf = batch_buf[: len(idx)] if batch_buf is not None else None
                x = engine.input(augment_batch(train_data.images, idx, aug, mean, std, gen, augmenter, out=buf))
                y = train_data.labels[idx]
                with engine.autocast():
                    out = step_model(x)
                    loss = criterion(out.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(model)
                # Track divergence on the device; look at it every few steps so the GPU never waits per step.
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), step, first_bad)
                if step % check_every == check_every - 1 or step == steps_per_epoch - 1:
                    check_finite(first_bad, name, epoch, settings)
                loss_sum += loss.detach() * len(idx)
                correct += (out.argmax(1) == y).sum()
                seen += len(idx)
                if bar.disable is False:
                    elapsed = time.perf_counter() - t0
                    bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}",
                                    img_s=f"{seen / elapsed:.0f}")
            bar.close()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_seconds = time.perf_counter() - t0
            eval_model = ema.module if ema is not None else model
            logits, losses = predict(eval_model, val_data, mean, std, settings["eval_batch_size"], engine,
                                     settings.get("tta_flip", False))
            row = {
                "epoch": epoch + 1,
                "train_loss": loss_sum.item() / seen,
                "train_acc": correct.item() / seen,
                "val_loss": losses.mean().item() if len(val_data) else float("nan"),
                "val_acc": (logits.argmax(1) == val_data.labels).float().mean().item() if len(val_data) else float("nan"),
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": train_seconds,
                "peak_memory_mb": peak_memory_mb(device),
            }
            history.append(row)
            log.info(
                "%s epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.1f s, %.0f img/s",
                name, epoch + 1, epochs, row["train_loss"], row["train_acc"], row["val_loss"], row["val_acc"],
                train_seconds, seen / train_seconds,
            )
            if live is not None:
                _log_live(live, row)
            state = rng_state(shuffle_gen)
            state["aug"] = gen.get_state()
            atomic_torch_save(
                {
                    "variant": name,
                    "dataset": variant["dataset"],
                    "settings_hash": settings_hash,
                    "epoch": epoch + 1,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "ema": ema.state_dict() if ema is not None else {},
                    "rng": state,
                    "history": history,
                },
                ckpt_file,
            )
    except BaseException:
        # Diverged, interrupted or failed: the metrics logged so far must not look like a result.
        shutil.rmtree(live_staging, ignore_errors=True)
        raise

    # What identifies the trained model: shared by train.json and model.pt.
    meta = {
        "variant": name,
        "dataset": variant["dataset"],
        "recipe": variant["recipe"],
        "seed": variant["seed"],
        "model": variant["model"],
        "model_args": variant["model_args"],
        "num_classes": num_classes,
        "classes": classes,
        "settings_hash": settings_hash,
    }
    summary = {
        **meta,
        "params": n_params,
        "epochs": epochs,
        "train_images": len(train_data),
        "val_images": len(val_data),
        "mean_epoch_seconds": sum(r["seconds"] for r in history) / len(history),
        "peak_memory_mb": max(r["peak_memory_mb"] for r in history),
        "memory_kind": "cuda max allocated" if device.type == "cuda" else "process peak RSS",
        "device": dev_desc,
        "precision": engine.precision,
        "memory_format": "channels_last" if engine.channels_last else "contiguous",
        "optimizer_impl": optimizer_impl(optimizer),
        "allocator": engine.allocator,
        "augment_kernel": augment_kernel(augmenter, device),
        "compiled": engine.compile,
        "ema": settings.get("ema"),
        "tta_flip": settings.get("tta_flip", False),
        "torch_version": torch.__version__,
        "cnnbench_version": __version__,
        "settings": variant,
        "selection": "final epoch" + (" (EMA weights)" if ema is not None else "")
        + " (the validation split is monitored, never used to pick weights)",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "history.csv", history, HISTORY_COLUMNS)
    atomic_write_text(out_dir / "train.json", json.dumps(summary, indent=2) + "\n")
    if live is not None:
        live.end()
        os.replace(live_staging, live_dir)
    # model.pt last: its presence means the run is complete.
    final = ema.module if ema is not None else model  # the weights that were validated are the ones kept
    atomic_torch_save({**meta, "state_dict": final.state_dict()}, out_dir / "model.pt")
    ckpt_file.unlink(missing_ok=True)
    return summary


def _open_dvclive(live_dir: Path, history: list[dict]):
    """DVCLive that only logs: it never edits dvc.yaml and never creates an experiment itself."""
    try:
        from dvclive import Live
    except ImportError:  # pragma: no cover - dvclive is a dependency, but logging is optional
        log.warning("dvclive is not installed; metrics are only written to history.csv")
        return None
    live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None, resume=False)
    for row in history:  # a resumed run replays what it already did
        _log_live(live, row)
    return live


def _log_live(live, row: dict) -> None:
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"):
        live.log_metric(key, row[key])
    live.next_step()
