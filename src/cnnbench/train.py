"""Train one run: packed uint8 arrays on the device, augmentation as batched tensor ops.

The shape of the torchvision references' ``train.py``: :func:`train_variant` resolves the run and
calls :func:`train_run`, a short list of named steps; :func:`train_one_epoch` and :func:`validate`
do one epoch and one validation pass; :meth:`Trainer.step` is the one optimisation step, which
``cnnbench bench`` times as it is. Checkpoints live in :mod:`cnnbench.checkpoint`, the device,
precision and process settings in :mod:`cnnbench.engine`.

Resumable: after every epoch a checkpoint is written atomically; a rerun with the same settings
continues after the last complete epoch.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import __version__
from .atomic import atomic_write_text, remove_leftovers, replace_dir, temp_dir, write_csv
from .augment import ResizedCropFlip, augment_batch, augment_kernel, make_augmenter, normalize
from .checkpoint import (
    atomic_torch_save,
    checkpoint_path,
    load_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from .config import Config
from .data import packed
from .engine import (
    DeviceData,
    Engine,
    configure_process,
    count_parameters,
    describe_device,
    memory_kind,
    peak_memory,
    reset_peak_memory,
    select_device,
)
from .errors import DataError, TrainingDiverged
from .models import build_model, zero_init_residual
from .spec import NormalizeSpec, OptimizerSpec, RunSpec, ScheduleSpec, TrainSpec
from .tuning import final_val_acc

log = logging.getLogger("cnnbench.train")

HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "peak_memory_mb"]


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


def build_optimizer(model: nn.Module, opt: OptimizerSpec, fused: bool = False) -> torch.optim.Optimizer:
    """The optimizer of the ``optimizer`` settings. ``fused`` asks for torch's fused implementation
    (one kernel for all parameters; same update rule), used where this torch has one for the device."""
    params = parameter_groups(model, opt.weight_decay, opt.no_decay_norm_bias)
    if opt.name == "sgd":
        cls, kwargs = torch.optim.SGD, {"lr": opt.lr, "momentum": opt.momentum,
                                        "nesterov": opt.nesterov and opt.momentum > 0}
    elif opt.name == "adamw":
        cls, kwargs = torch.optim.AdamW, {"lr": opt.lr}
    else:  # the schema allows only the two above
        raise ValueError(f"unknown optimizer {opt.name!r}")
    if fused:
        try:
            return cls(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError) as err:  # an older torch, or no fused kernel for this device
            log.debug("fused %s not available (%s); using the default implementation", cls.__name__, err)
    return cls(params, **kwargs)


def optimizer_impl(optimizer: torch.optim.Optimizer) -> str:
    return "fused" if optimizer.defaults.get("fused") else "default"


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, sched: ScheduleSpec) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    warmup = sched.warmup_epochs * steps_per_epoch
    if warmup and step < warmup:
        return (step + 1) / warmup
    if sched.name == "constant":
        return 1.0
    if sched.name == "step":
        return sched.gamma ** ((step // steps_per_epoch) // sched.step_size)
    progress = (step - warmup) / max(1, total_steps - warmup)
    if sched.name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if sched.name == "onecycle":
        # Linear decay to zero after the warm-up (the "one cycle" of Smith & Topin, without momentum cycling).
        return max(0.0, 1.0 - progress)
    raise ValueError(f"unknown schedule {sched.name!r}")  # the schema allows only the four above


class WeightEMA(nn.Module):
    """An exponential moving average of a model's weights and BatchNorm buffers.

    The average of ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn(decay)`` and
    ``use_buffers=True`` (the first update copies, every later one is ``ema += (1 - decay) *
    (model - ema)``, one ``torch._foreach_lerp_`` over all floating tensors), without its per-step
    host work: AveragedModel keeps its update counter on the CPU, branches on it twice a step and
    copies it to the device once per tensor group, which on a GPU waits for the device each step.
    Here the branch is on a Python count; ``n_averaged`` (a device buffer, for state-dict
    compatibility with AveragedModel) only follows it. Integer buffers (BatchNorm's
    ``num_batches_tracked``) are copied, not averaged."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__()
        self.module = copy.deepcopy(model)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        device = next(iter(model.parameters())).device
        self.register_buffer("n_averaged", torch.zeros((), dtype=torch.long, device=device))
        self._updates = 0

    def _pairs(self, model: nn.Module) -> tuple[list, list, list, list]:
        mine = [*self.module.parameters(), *self.module.buffers()]
        theirs = [t.detach() for t in (*model.parameters(), *model.buffers())]
        floats = [i for i, t in enumerate(mine) if t.is_floating_point()]
        ints = [i for i, t in enumerate(mine) if not t.is_floating_point()]
        return ([mine[i] for i in floats], [theirs[i] for i in floats],
                [mine[i] for i in ints], [theirs[i] for i in ints])

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        ema_f, model_f, ema_i, model_i = self._pairs(model)
        if self._updates == 0:  # once per run
            for a, b in zip(ema_f + ema_i, model_f + model_i):
                a.copy_(b)
        else:
            torch._foreach_lerp_(ema_f, model_f, 1.0 - self.decay)
            for a, b in zip(ema_i, model_i):  # BatchNorm's step counters: a few scalars
                a.copy_(b)
        self.n_averaged.add_(1)
        self._updates += 1

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        count = state_dict.get(prefix + "n_averaged")
        if count is not None:
            self._updates = int(count)  # once, when a checkpoint is restored; never in the step loop


def make_ema(model: nn.Module, decay: float | None) -> WeightEMA | None:
    """An exponential moving average of the weights (and BN buffers), or None."""
    return WeightEMA(model, decay) if decay else None


# --- evaluation ------------------------------------------------------------------------------
@torch.no_grad()
def predict(model: nn.Module, data: DeviceData, mean, std, batch_size: int, engine: Engine | None = None,
            tta_flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and per-example losses for a whole split (model in eval mode), in fp32 whatever the
    training precision: the accuracy the claims compare is not also a test of bf16 inference, and
    the cost is one forward pass per image.

    With ``tta_flip`` the softmax outputs of each image and its mirror image are averaged.
    """
    model.eval()
    engine = engine or Engine.plain(data.labels.device)
    logits, losses = [], []
    for i in range(0, len(data), batch_size):
        x = engine.input(normalize(data.images[i : i + batch_size], mean, std))
        out = model(x).float()
        if tta_flip:
            both = (out.softmax(1) + model(x.flip(3)).float().softmax(1)) / 2
            out = both.clamp_min(1e-12).log()  # log-probabilities: cross_entropy and argmax still apply
        logits.append(out)
        losses.append(F.cross_entropy(out, data.labels[i : i + batch_size], reduction="none"))
    return torch.cat(logits), torch.cat(losses)


def with_data_normalization(train: TrainSpec, prepared_dir: Path) -> TrainSpec:
    """``train`` itself, or, where it sets no ``normalize``, with the per-channel mean and std of the
    data set's training split (all its classes) that preprocess recorded in the manifest."""
    if train.normalize is not None:
        return train
    mean, std = packed.train_normalization(prepared_dir)
    return dataclasses.replace(train, normalize=NormalizeSpec(mean=mean, std=std))


def normalization(train: TrainSpec, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's per-channel mean and std as (1, 3, 1, 1) tensors on ``device`` (``train.normalize``
    resolved: see :func:`with_data_normalization`)."""
    mean = torch.tensor(train.normalize.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(train.normalize.std, device=device).view(1, 3, 1, 1)
    return mean, std


# --- the parts of a run ----------------------------------------------------------------------------
class Batches:
    """Augmented training batches of one run: ``batches(idx)`` -> (images, labels) on the device.

    The resized-crop pipeline writes each batch into one reused buffer (saves a large allocation
    per step on the CPU); the previous batch is no longer referenced once its backward pass has run."""

    def __init__(self, data: DeviceData, train: TrainSpec, engine: Engine, gen: torch.Generator) -> None:
        self.data, self.aug, self.engine, self.gen = data, train.augment, engine, gen
        self.mean, self.std = normalization(train, engine.device)
        self.augmenter: ResizedCropFlip | None = make_augmenter(self.aug, self.mean, self.std)
        self.buffer = None
        if self.augmenter is not None:
            self.buffer = torch.empty((train.batch_size, *data.images.shape[1:]), device=engine.device)

    def __call__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.buffer[: len(idx)] if self.buffer is not None else None
        x = augment_batch(self.data.images, idx, self.aug, self.mean, self.std, self.gen, self.augmenter, out=out)
        return self.engine.input(x), self.data.labels[idx]


@dataclass
class Trainer:
    """Everything one optimisation step touches."""

    model: nn.Module          # the weights (what checkpoints and model.pt hold)
    step_model: nn.Module     # what the step calls: ``model``, compiled when asked
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: nn.Module | None
    criterion: nn.Module
    engine: Engine
    batch_size: int           # the full batch: the only shape a compiled step_model is called with

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step on a batch; returns the (detached) loss and logits.

        A compiled model only ever sees full batches: the epoch's partial last batch (45,000 / 128
        leaves 72) goes through the eager model, which shares its weights, instead of making
        torch.compile recompile for a second shape and fall back to dynamic shapes."""
        model = self.step_model if self.step_model is self.model or len(y) == self.batch_size else self.model
        with self.engine.autocast():
            out = model(x)
            loss = self.criterion(out.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return loss.detach(), out.detach()

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and kept: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.model


def build_trainer(spec: RunSpec, num_classes: int, engine: Engine, steps_per_epoch: int) -> Trainer:
    """Model (seeded by the caller), optimizer, learning-rate schedule, EMA and loss of a run."""
    train = spec.train
    model = build_model(spec.model, num_classes, **spec.model_args)
    if train.zero_init_residual:
        zero_init_residual(model)
    model = engine.prepare(model)
    ema = make_ema(model, train.ema)
    optimizer = build_optimizer(model, train.optimizer, fused=engine.fused_optimizer)
    total_steps = steps_per_epoch * train.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, steps_per_epoch, train.schedule)
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=train.label_smoothing)
    return Trainer(model, engine.wrap(model), optimizer, scheduler, ema, criterion, engine, train.batch_size)


def steps_per_epoch(spec: RunSpec, train_images: int) -> int:
    steps = math.ceil(train_images / spec.train.batch_size)
    return min(steps, spec.train.max_batches_per_epoch) if spec.train.max_batches_per_epoch else steps


def load_training_data(spec: RunSpec, prepared_dir: Path, device: torch.device) -> tuple[DeviceData, DeviceData, list[str]]:
    exclude = list(spec.exclude_classes)
    x_tr, y_tr, classes = packed.load_split(prepared_dir, "train", exclude_classes=exclude)
    x_va, y_va, _ = packed.load_split(prepared_dir, "val", exclude_classes=exclude)
    if spec.train.train_limit:
        # One fixed subset for every variant and seed of a data set: seeds then vary the training
        # (initialisation, order, augmentation), not the data.
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(y_tr), generator=g)[: spec.train.train_limit].sort().values.numpy()
        x_tr, y_tr = x_tr[idx], y_tr[idx]
    if len(y_tr) == 0:
        raise DataError(f"{prepared_dir}: no training images left for variant {spec.variant!r}")
    if spec.train.batch_size > len(y_tr):
        raise DataError(
            f"train.batch_size {spec.train.batch_size} is larger than the {len(y_tr)} training images of "
            f"variant {spec.variant!r}; lower batch_size or raise train_limit"
        )
    return DeviceData(x_tr, y_tr, device), DeviceData(x_va, y_va, device), classes


# --- divergence --------------------------------------------------------------------------------------
def diverged(what: str, spec: RunSpec, epoch: int, step: int) -> TrainingDiverged:
    return TrainingDiverged(
        f"variant {spec.variant!r}: {what} became NaN or infinite at epoch {epoch + 1}, step {step + 1}; "
        f"lower train.optimizer.lr (now {spec.train.optimizer.lr}); no model or metrics were written"
    )


def check_finite_loss(first_bad: torch.Tensor, spec: RunSpec, epoch: int) -> None:
    step = int(first_bad.item())
    if step >= 0:
        raise diverged("loss", spec, epoch, step)


def check_finite_weights(trainer: Trainer, spec: RunSpec, epoch: int, last_step: int) -> None:
    """The weights and buffers (BatchNorm statistics) after an epoch's last step, the EMA's too: a
    non-finite update earlier in the epoch already made a later step's loss non-finite, and nothing
    non-finite may reach a checkpoint."""
    modules = [trainer.model] + ([trainer.ema.module] if trainer.ema is not None else [])
    tensors = [t.detach() for m in modules for t in m.state_dict().values() if t.is_floating_point()]
    if not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all()):  # one host sync
        raise diverged("the weights", spec, epoch, last_step)


# --- one epoch, one validation pass ---------------------------------------------------------------------
class EpochBar:
    """The epoch's progress bar (only when stderr is a terminal; tqdm's ``disable=None``).

    Its loss/accuracy/images-per-second figures are device tensors: reading them waits for the
    GPU, so they are read once every ``every`` steps (one transfer for both), never per step, and
    the bar redraws at tqdm's own pace (``mininterval``), not per step."""

    def __init__(self, spec: RunSpec, epoch: int, steps: int, every: int = 50) -> None:
        self.bar = tqdm(total=steps, desc=f"{spec.variant} epoch {epoch + 1}/{spec.train.epochs}", unit="batch",
                        leave=False, disable=None, file=sys.stderr, mininterval=0.5)
        self.every = every
        self.t0 = time.perf_counter()

    @property
    def live(self) -> bool:
        return not self.bar.disable  # tqdm leaves it None (not False) when it draws

    def update(self, step: int, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> None:
        if not self.live:
            return
        if step % self.every == 0:
            loss, right = torch.stack([loss_sum.float(), correct.float()]).tolist()  # one host read
            self.bar.set_postfix(loss=f"{loss / seen:.3f}", acc=f"{right / seen:.3f}",
                                 img_s=f"{seen / (time.perf_counter() - self.t0):.0f}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


SYNC_DEBUG_ENV = "CNNBENCH_SYNC_DEBUG"  # warn: count the step loop's host syncs (scripts/gpu-check.sh)


class SyncCounter:
    """With ``CNNBENCH_SYNC_DEBUG=warn`` on a CUDA run, the step loop runs under
    ``torch.cuda.set_sync_debug_mode("warn")`` and the synchronizing operations it does are
    counted (``count``; None when not counting). Only the step loop: the divergence check every
    few steps and the end of the epoch synchronise on purpose."""

    def __init__(self, device: torch.device) -> None:
        self.on = device.type == "cuda" and os.environ.get(SYNC_DEBUG_ENV, "").lower() == "warn"
        self.count: int | None = 0 if self.on else None
        self._catch = None

    def __enter__(self) -> "SyncCounter":
        if self.on:
            self._catch = warnings.catch_warnings(record=True)
            self._seen = self._catch.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        return self

    @contextlib.contextmanager
    def pause(self):
        """A block whose syncs are deliberate (not counted)."""
        if not self.on:
            yield
            return
        torch.cuda.set_sync_debug_mode("default")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("warn")

    def __exit__(self, *exc) -> None:
        if self.on:
            torch.cuda.set_sync_debug_mode("default")
            self.count = sum("synchroniz" in str(w.message) for w in self._seen)
            self._catch.__exit__(*exc)


def train_one_epoch(trainer: Trainer, batches: Batches, spec: RunSpec, epoch: int, steps: int,
                    shuffle_gen: torch.Generator) -> dict:
    """One pass over a fresh random order of the training images; stops at the step whose loss is
    not finite, and after the last step if the weights are not. Returns the epoch's training
    loss, accuracy, images, seconds, peak memory and (when counted) host syncs in the step loop."""
    trainer.model.train()
    device, bs = trainer.engine.device, spec.train.batch_size
    windowed = reset_peak_memory(device)
    t0 = time.perf_counter()
    order = torch.randperm(len(batches.data), generator=shuffle_gen).to(device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    # On the CPU looking at the flag costs nothing: stop at the first bad step. On a GPU every few steps.
    check_every = trainer.engine.host_check_every
    first_bad = torch.full((), -1, device=device, dtype=torch.long)  # first step with a non-finite loss
    bar = EpochBar(spec, epoch, steps)
    with SyncCounter(device) as syncs:
        for step in range(steps):
            x, y = batches(order[step * bs : (step + 1) * bs])
            loss, out = trainer.step(x, y)
            # Track divergence on the device; look at it every few steps so the GPU never waits per step.
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
            if step % check_every == check_every - 1 or step == steps - 1:
                with syncs.pause():
                    check_finite_loss(first_bad, spec, epoch)
            loss_sum += loss * len(y)
            correct += (out.argmax(1) == y).sum()
            seen += len(y)
            with syncs.pause():
                bar.update(step, loss_sum, correct, seen)
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    memory = peak_memory(device)
    check_finite_weights(trainer, spec, epoch, steps - 1)
    return {"train_loss": loss_sum.item() / seen, "train_acc": correct.item() / seen, "images": seen,
            "seconds": seconds, **memory, "memory_windowed": windowed, "sync_warnings": syncs.count}


def validate(trainer: Trainer, data: DeviceData, spec: RunSpec, mean: torch.Tensor, std: torch.Tensor) -> dict:
    """Loss and accuracy of the kept weights on the validation split (NaN when it is empty)."""
    if not len(data):
        return {"val_loss": float("nan"), "val_acc": float("nan")}
    logits, losses = predict(trainer.eval_model, data, mean, std, spec.train.eval_batch_size, trainer.engine,
                             spec.train.tta_flip)
    return {"val_loss": losses.mean().item(), "val_acc": (logits.argmax(1) == data.labels).float().mean().item()}


# --- the run -----------------------------------------------------------------------------------------
def train_variant(cfg: Config, name: str, prepared_dir: Path, out_dir: Path, checkpoint_dir: Path,
                  use_dvclive: bool = True, recipe: str | None = None, seed: int | None = None) -> dict:
    """Train one run of variant ``name`` (under ``recipe``, with ``seed``); write model.pt,
    history.csv and train.json into ``out_dir``."""
    return train_run(cfg.run(name, recipe, seed), prepared_dir, out_dir, checkpoint_dir, use_dvclive)


def train_run(spec: RunSpec, prepared_dir: Path, out_dir: Path, checkpoint_dir: Path,
              use_dvclive: bool = True, keep_model: bool = True) -> dict:
    """Train the run ``spec``: every epoch, validation and a checkpoint; then the outputs (without
    model.pt when not ``keep_model``: a tuning trial keeps only its scores)."""
    configure_process(spec.execution)
    device = select_device(spec.execution.device)
    torch.manual_seed(spec.seed)
    aug_gen = torch.Generator(device=device).manual_seed(spec.seed)
    shuffle_gen = torch.Generator().manual_seed(spec.seed + 1)

    # The checkpoint first: one of another run is refused before any data is loaded.
    ckpt_file = checkpoint_path(checkpoint_dir)
    remove_leftovers(checkpoint_dir)
    ckpt = load_checkpoint(ckpt_file, spec)
    clear_outputs(out_dir)

    train_data, val_data, classes = load_training_data(spec, prepared_dir, device)
    engine = Engine(spec.execution, device)
    batches = Batches(train_data, with_data_normalization(spec.train, prepared_dir), engine, aug_gen)
    steps = steps_per_epoch(spec, len(train_data))
    trainer = build_trainer(spec, len(classes), engine, steps)
    history: list[dict] = []
    epoch_extras: list[dict] = []  # what train.json says of this process's epochs, beyond history.csv
    start_epoch = 0
    if ckpt is not None:
        start_epoch, history = restore_checkpoint(
            ckpt, model=trainer.model, optimizer=trainer.optimizer, scheduler=trainer.scheduler, ema=trainer.ema,
            shuffle_gen=shuffle_gen, aug_gen=aug_gen)
        log.info("resuming %s from %s after epoch %d of %d", spec.variant, ckpt_file, start_epoch, spec.train.epochs)
    log_start(spec, trainer, engine, len(train_data), len(val_data), len(classes), steps)

    # DVCLive logs into a temporary folder (cnnbench.atomic's convention) that becomes dvclive/ only
    # with the finished run, so a failed or killed run leaves no metrics behind (a resumed run
    # replays its history into it).
    live_dir = out_dir / "dvclive"
    shutil.rmtree(live_dir, ignore_errors=True)
    live_staging = temp_dir(live_dir) if use_dvclive else None
    live = _open_dvclive(live_staging, history) if use_dvclive else None
    try:
        for epoch in range(start_epoch, spec.train.epochs):
            stats = train_one_epoch(trainer, batches, spec, epoch, steps, shuffle_gen)
            row = {"epoch": epoch + 1, "train_loss": stats["train_loss"], "train_acc": stats["train_acc"],
                   **validate(trainer, val_data, spec, batches.mean, batches.std),
                   "lr": trainer.optimizer.param_groups[0]["lr"], "seconds": stats["seconds"],
                   "peak_memory_mb": stats["peak_memory_mb"]}
            history.append(row)
            epoch_extras.append({k: stats.get(k) for k in ("peak_reserved_mb", "memory_windowed", "sync_warnings")})
            log_epoch(spec, row, stats["images"])
            if live is not None:
                _log_live(live, row)
            save_checkpoint(ckpt_file, spec, epoch + 1, history, model=trainer.model, optimizer=trainer.optimizer,
                            scheduler=trainer.scheduler, ema=trainer.ema, shuffle_gen=shuffle_gen, aug_gen=aug_gen)
    except BaseException:
        # Diverged, interrupted or failed: the metrics logged so far must not look like a result.
        if live_staging is not None:
            shutil.rmtree(live_staging, ignore_errors=True)
        raise

    summary = run_summary(spec, trainer, engine, batches, classes, history, len(train_data), len(val_data),
                          epoch_extras, train_data.nbytes + val_data.nbytes)
    write_outputs(out_dir, summary, history, trainer if keep_model else None, live, live_staging, live_dir)
    ckpt_file.unlink(missing_ok=True)
    return summary


def run_trial(spec: RunSpec, values: dict, point: str, prepared_dir: Path, out_dir: Path,
              checkpoint_dir: Path) -> dict:
    """One tuning trial (cnnbench.tuning): train ``spec`` (train and validation splits only: the test
    split is never loaded) and write trial.json, its record for the selection, last. A trial that
    diverges is a result, not a failure (a learning rate too high for the network): it is recorded as
    diverged, so the grid's other points still decide."""
    started = time.perf_counter()
    try:
        summary = train_run(spec, prepared_dir, out_dir, checkpoint_dir, use_dvclive=False, keep_model=False)
        record = {"diverged": False, "val_acc": final_val_acc(out_dir / "history.csv"),
                  "train_seconds": summary["first_epoch_seconds"] + summary["mean_epoch_seconds"] * (summary["epochs"] - 1),
                  "params": summary["params"]}
    except TrainingDiverged as exc:
        log.warning("trial %s %s diverged: %s", spec.run_id, point, exc)
        remove_leftovers(checkpoint_dir)
        checkpoint_path(checkpoint_dir).unlink(missing_ok=True)
        record = {"diverged": True, "val_acc": None, "why": str(exc)}
    record = {"variant": spec.variant, "recipe": spec.recipe, "point": point, "values": values, "seed": spec.seed,
              "epochs": spec.train.epochs, "settings_hash": spec.hash, **record,
              "seconds": time.perf_counter() - started}
    atomic_write_text(out_dir / "trial.json", json.dumps(record, indent=2) + "\n")
    return record


def clear_outputs(out_dir: Path) -> None:
    """Outputs of an earlier run would sit beside this run's half-written ones: remove them now,
    model.pt (the mark of a complete run) first, so a failure leaves nothing that looks complete."""
    for stale in ("model.pt", "trial.json", "metrics.json", "confusion.csv", "train.json", "history.csv"):
        (out_dir / stale).unlink(missing_ok=True)
    remove_leftovers(out_dir)


def log_start(spec: RunSpec, trainer: Trainer, engine: Engine, n_train: int, n_val: int, n_classes: int,
              steps: int) -> None:
    log.info(
        "training %s: model %s (%s parameters), %d train / %d val images, %d classes, %d epochs x %d steps, "
        "batch %d, recipe %s, device %s, %s%s%s",
        spec.variant, spec.model, f"{count_parameters(trainer.model):,}", n_train, n_val, n_classes,
        spec.train.epochs, steps, spec.train.batch_size, spec.recipe, describe_device(engine.device),
        engine.precision, ", channels_last" if engine.channels_last else "", ", compiled" if engine.compile else "",
    )


def log_epoch(spec: RunSpec, row: dict, images: int) -> None:
    log.info(
        "%s epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | %.1f s, %.0f img/s",
        spec.variant, row["epoch"], spec.train.epochs, row["train_loss"], row["train_acc"], row["val_loss"],
        row["val_acc"], row["seconds"], images / row["seconds"],
    )


def model_identity(spec: RunSpec, classes: list[str]) -> dict:
    """What identifies the trained model: shared by train.json and model.pt."""
    return {"variant": spec.variant, "dataset": spec.dataset, "recipe": spec.recipe, "seed": spec.seed,
            "model": spec.model, "model_args": spec.model_args, "num_classes": len(classes), "classes": classes,
            "settings_hash": spec.hash}


def epoch_seconds(history: list[dict]) -> float:
    """Seconds per epoch in the steady state: the mean over epochs 2..n. The first epoch also pays
    for one-off work (torch.compile's compilation, cuDNN's autotuning, the allocator's first
    requests), so it is left out whenever there is another; history.csv keeps every epoch's time."""
    timed = history[1:] if len(history) > 1 else history
    return sum(r["seconds"] for r in timed) / len(timed)


def memory_summary(device: torch.device, history: list[dict], extras: list[dict], data_bytes: int) -> dict:
    """train.json's memory figures: the largest per-epoch training peak, and what it measures."""
    windowed = all(e["memory_windowed"] for e in extras) if extras else True
    out = {"peak_memory_mb": max(r["peak_memory_mb"] for r in history),
           "memory_kind": memory_kind(device, windowed),
           "data_on_device_mb": data_bytes / 2**20}
    reserved = [e["peak_reserved_mb"] for e in extras if e.get("peak_reserved_mb") is not None]
    if reserved:
        out["peak_reserved_mb"] = max(reserved)
    return out


def run_summary(spec: RunSpec, trainer: Trainer, engine: Engine, batches: Batches, classes: list[str],
                history: list[dict], n_train: int, n_val: int, extras: list[dict] | None = None,
                data_bytes: int = 0) -> dict:
    """train.json: the model's identity, its size, time and memory, and how it was trained."""
    device = engine.device
    extras = extras or []
    syncs = [e["sync_warnings"] for e in extras if e.get("sync_warnings") is not None]
    return {
        **model_identity(spec, classes),
        "params": count_parameters(trainer.model),
        "epochs": spec.train.epochs,
        "train_images": n_train,
        "val_images": n_val,
        "mean_epoch_seconds": epoch_seconds(history),
        "first_epoch_seconds": history[0]["seconds"],
        **memory_summary(device, history, extras, data_bytes),
        "device": describe_device(device),
        "precision": engine.precision,
        "eval_precision": "fp32",
        "memory_format": "channels_last" if engine.channels_last else "contiguous",
        "optimizer_impl": optimizer_impl(trainer.optimizer),
        "allocator": engine.allocator,
        "augment_kernel": augment_kernel(batches.augmenter, device),
        "compiled": engine.compile,
        "ema": spec.train.ema,
        "tta_flip": spec.train.tta_flip,
        "torch_version": torch.__version__,
        "cnnbench_version": __version__,
        "settings": spec.to_dict(),
        "selection": "final epoch" + (" (EMA weights)" if trainer.ema is not None else "")
        + " (the validation split is monitored, never used to pick weights)",
        **({"sync_warnings_in_step_loop": sum(syncs)} if syncs else {}),
    }


def write_outputs(out_dir: Path, summary: dict, history: list[dict], trainer: Trainer | None, live,
                  live_staging: Path | None, live_dir: Path) -> None:
    """history.csv, train.json, dvclive/ and, last, model.pt: its presence means the run is complete
    (no model.pt without a ``trainer``: a tuning trial's trial.json marks it complete instead)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / "history.csv", history, HISTORY_COLUMNS)
    atomic_write_text(out_dir / "train.json", json.dumps(summary, indent=2) + "\n")
    if live is not None:
        live.end()
        replace_dir(live_staging, live_dir)
    elif live_staging is not None:  # dvclive could not be imported: nothing was logged
        shutil.rmtree(live_staging, ignore_errors=True)
    if trainer is None:
        return
    identity = {k: summary[k] for k in ("variant", "dataset", "recipe", "seed", "model", "model_args",
                                        "num_classes", "classes", "settings_hash")}
    # the weights that were validated are the ones kept
    atomic_torch_save({**identity, "state_dict": trainer.eval_model.state_dict()}, out_dir / "model.pt")


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
