"""The run specification: one run of the study (variant, recipe, seed) resolved into frozen, typed settings.

params.yaml is merged once, in this order (later wins)::

    train -> recipes.<recipe> -> datasets.<ds>.train -> variants.<ds>.<name>.train -> profiles.<profile>.train
    variants.<ds>.<name>.model_args -> profiles.<profile>.model_args

and read into a :class:`RunSpec`. Everything that changes a run's numbers is in it, and nothing
else: the model and its arguments, the classes it leaves out, the training settings, the recipe,
the seed, and the execution settings resolved for the device the job runs on (device kind,
precision, memory format, threads). What only the report shows (``lab_report``, ``description``,
claims) and what only the scheduler reads (``resources``, apart from the GPU request and the cores
that decide the device and the threads) are not in it. :attr:`RunSpec.hash` is the one identity of
a run: Snakemake's ``params:``, DVC's spec files (``cnnbench specs``), checkpoints and ``model.pt``
all carry it, so a run is redone exactly when its numbers would change.

The engine reads attributes of these objects; there are no defaults here: every value comes from
params.yaml (whose ``train`` block the schema requires complete), so a key left out is a config
error, never a silent fallback.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any


class SpecError(ValueError):
    """A merged setting is missing (raised as a ConfigError by config.py, which knows the file)."""


def canonical_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys): a stable fingerprint of settings."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def _take(block: dict, key: str, where: str) -> Any:
    try:
        return block[key]
    except KeyError:
        raise SpecError(f"{where}.{key}: missing after the merge; set it in params.yaml `{where}`") from None


@dataclass(frozen=True)
class OptimizerSpec:
    name: str                   # sgd | adamw
    lr: float
    momentum: float             # sgd only
    weight_decay: float
    nesterov: bool              # sgd only, and only with momentum > 0
    no_decay_norm_bias: bool    # no weight decay on BatchNorm weights and on biases


@dataclass(frozen=True)
class ScheduleSpec:
    name: str                   # constant | step | cosine | onecycle
    warmup_epochs: int          # linear warm-up, then the schedule
    step_size: int              # step: epochs between decays
    gamma: float                # step: decay factor


@dataclass(frozen=True)
class AugmentSpec:
    crop: str                   # pad (CIFAR: zero padding + random crop) | resized (random resized crop)
    flip: bool                  # random horizontal flip
    crop_padding: int | None    # pad: pixels of zero padding (None for resized)
    min_scale: float | None     # resized: smallest crop area fraction (None for pad)


@dataclass(frozen=True)
class NormalizeSpec:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class TrainSpec:
    epochs: int
    batch_size: int
    eval_batch_size: int
    optimizer: OptimizerSpec
    schedule: ScheduleSpec
    label_smoothing: float
    ema: float | None           # decay of an EMA of the weights, evaluated instead of them; None = off
    tta_flip: bool              # average each test image's prediction with its mirror image's
    zero_init_residual: bool
    train_limit: int | None     # keep only the first N training images (one seeded subset)
    max_batches_per_epoch: int | None
    normalize: NormalizeSpec | None  # None: the training split's own mean and std (preprocess records them)
    augment: AugmentSpec


@dataclass(frozen=True)
class ExecutionSpec:
    """Where and how the run executes, resolved: these change speed, memory and the last bits of
    the numbers, so they are part of the run's identity."""

    device: str                 # cpu | cuda | cuda:N | mps (``auto`` resolved, see resolve_device)
    precision: str              # fp32 | bf16 (bf16 autocast)
    memory_format: str          # contiguous | channels_last
    compile: bool               # torch.compile the model
    deterministic: bool
    num_threads: int | None     # torch CPU threads; None = torch's default

    @property
    def device_kind(self) -> str:
        return self.device.split(":")[0]


@dataclass(frozen=True)
class RunSpec:
    variant: str                # <dataset>-<name>
    dataset: str
    model: str                  # a name of the model registry
    model_args: dict            # keyword arguments of the model builder (treat as read-only)
    exclude_classes: tuple[str, ...]
    recipe: str
    seed: int
    train: TrainSpec
    execution: ExecutionSpec

    def to_dict(self) -> dict:
        """Plain JSON-able data (tuples as lists): what the hash is taken of."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @property
    def hash(self) -> str:
        return canonical_hash(self.to_dict())

    @property
    def run_id(self) -> str:
        return f"{self.variant}/{self.recipe}/seed{self.seed}"


# --- resolution ---------------------------------------------------------------------------------------
def resolve_device(device: str, gpu_job: bool | None) -> str:
    """``auto`` -> ``cuda`` when the job asks the scheduler for a GPU (``resources.train.gpu`` >= 1),
    ``cpu`` when it asks for none; without a ``resources`` block (``gpu_job`` None), ``cuda`` when
    this machine has one. Decided from params.yaml alone wherever it can be, so the machine that
    plans the study and the one that runs a job agree, and a GPU job never trains on the CPU."""
    if device != "auto":
        return device
    if gpu_job is None:
        import torch

        # device_count asks NVML, without initialising CUDA (is_available would, and CUDA reads
        # CUDA_VISIBLE_DEVICES only then: a GPU slot claimed after that would be ignored).
        gpu_job = torch.cuda.device_count() > 0
    return "cuda" if gpu_job else "cpu"


def resolve_execution(train: dict, gpu_job: bool | None, job_cpus: int | None) -> ExecutionSpec:
    device = resolve_device(_take(train, "device", "train"), gpu_job)
    cuda = device.split(":")[0] == "cuda"
    precision = _take(train, "precision", "train")
    memory_format = _take(train, "memory_format", "train")
    threads = _take(train, "num_threads", "train")
    return ExecutionSpec(
        device=device,
        precision=("bf16" if cuda else "fp32") if precision == "auto" else precision,
        memory_format=("channels_last" if cuda else "contiguous") if memory_format == "auto" else memory_format,
        compile=bool(_take(train, "compile", "train")),
        deterministic=bool(_take(train, "deterministic", "train")),
        num_threads=threads if threads is not None else job_cpus,
    )


def resolve_train(train: dict) -> TrainSpec:
    opt, sched = _take(train, "optimizer", "train"), _take(train, "schedule", "train")
    aug, norm = _take(train, "augment", "train"), _take(train, "normalize", "train")
    crop = _take(aug, "crop", "train.augment")
    return TrainSpec(
        epochs=_take(train, "epochs", "train"),
        batch_size=_take(train, "batch_size", "train"),
        eval_batch_size=_take(train, "eval_batch_size", "train"),
        optimizer=OptimizerSpec(**{f.name: _take(opt, f.name, "train.optimizer")
                                   for f in dataclasses.fields(OptimizerSpec)}),
        schedule=ScheduleSpec(**{f.name: _take(sched, f.name, "train.schedule")
                                 for f in dataclasses.fields(ScheduleSpec)}),
        label_smoothing=_take(train, "label_smoothing", "train"),
        ema=_take(train, "ema", "train"),
        tta_flip=_take(train, "tta_flip", "train"),
        zero_init_residual=_take(train, "zero_init_residual", "train"),
        train_limit=_take(train, "train_limit", "train"),
        max_batches_per_epoch=_take(train, "max_batches_per_epoch", "train"),
        normalize=None if norm is None else NormalizeSpec(mean=tuple(_take(norm, "mean", "train.normalize")),
                                                          std=tuple(_take(norm, "std", "train.normalize"))),
        augment=AugmentSpec(
            crop=crop,
            flip=_take(aug, "flip", "train.augment"),
            crop_padding=_take(aug, "crop_padding", "train.augment") if crop == "pad" else None,
            min_scale=_take(aug, "min_scale", "train.augment") if crop == "resized" else None,
        ),
    )
