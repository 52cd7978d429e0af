"""`cnnbench plan`: how long a profile's study will take on this machine, before it starts.

For every distinct cost shape of the study's runs (the model and its arguments, batch size, image
size, augmentation and execution settings; recipes and seeds that change only numbers share one)
it times a few optimisation steps with the study's own step (:meth:`cnnbench.train.Trainer.step`
on :class:`cnnbench.train.Batches`, timed with :func:`cnnbench.bench.timed_windows`), one
evaluation batch and one checkpoint, on synthetic images of the run's shape. Then per run::

    train job     = start-up + logger + first-step extra
                    + epochs x (train images / img/s + val images / eval img/s + checkpoint)
    evaluate job  = start-up + test images / eval img/s          (x2 for every eval pass with flip TTA)

where start-up is measured in fresh Python processes (imports, params.yaml, the process set up
for a run) and the logger is DVCLive's, timed once. The whole study is a list schedule: data sets
not yet prepared first, then each run (its train and evaluate jobs back to back), longest first,
on whichever of the parallel slots frees first (CPU: cores // the train job's cpus; GPU: visible
GPUs x jobs_per_gpu), then aggregate, plot and report one after another.

A tuning trial (README "Fair comparison: tuning") is a train job of its own spec (the base recipe
with the grid point's values, for the budget's epochs) and has no evaluate job; the trials run
before the study's runs, and a tuned run waits for its variant's selection.

On 2 CPU cores this predicted the heaviest quick-profile CIFAR-10 train jobs within 7 % (README,
"How long will it take"); two concurrent one-thread jobs ran about 5 % slower than alone.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_write_text
from .config import Config
from .errors import CnnbenchError, ConfigError
from .spec import RunSpec
from .tuning import SelectionMissing, fmt_value, read_choice, selection_path

log = logging.getLogger("cnnbench.plan")

# A data set whose kind knows no official sizes (an image folder, a CSV) and is not prepared yet is
# guessed from its archive: bytes per image of 224 px JPEGs and preprocess seconds per image of the
# butterfly set (see its kind), split 80/10/10.
GUESS_PLANNING = {"splits": {"train": 0.8, "val": 0.1, "test": 0.1}, "preprocess_seconds_per_image": 0.0045,
                  "archive_bytes_per_image": 26_300}
# aggregate, plot and report after the runs (beyond each job's start-up): fixed + per run seconds,
# measured on the smoke study (34 runs) of a 2-core x86 CPU.
FINAL_STAGES_SECONDS = {"aggregate": (2.0, 0.05), "plot": (3.0, 0.05), "report": (0.0, 0.03)}
# model_args that change no tensor shape, so variants differing only in them cost the same
COST_FREE_MODEL_ARGS = ("dropout",)
STARTUP_CODE = "import sys; from cnnbench.plan import startup_probe; startup_probe(sys.argv[1], sys.argv[2])"


# --- the data a run sees ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Splits:
    """Images per split of one run (its classes filtered, train_limit applied) and where the counts come from."""

    train: int
    val: int
    test: int
    source: str


def image_size(cfg: Config, dataset: str) -> int:
    return cfg.describe_dataset(dataset).image_size


@dataclass(frozen=True)
class KindSizes:
    """What the data set's kind says of its size before preprocess (cnnbench.data.kinds)."""

    splits: dict[str, int] | None  # the official split sizes; None when the kind cannot know them
    classes: int | None
    seconds_per_image: float       # preprocess
    bytes_per_image: float         # in the downloaded archive


def kind_sizes(cfg: Config, dataset: str) -> KindSizes:
    info = cfg.describe_dataset(dataset)
    planning = info.planning or GUESS_PLANNING
    return KindSizes(splits=dict(info.planning["splits"]) if info.planning else None, classes=info.num_classes,
                     seconds_per_image=planning["preprocess_seconds_per_image"],
                     bytes_per_image=planning["archive_bytes_per_image"])


def read_manifest(prepared_root: Path, dataset: str) -> dict | None:
    path = Path(prepared_root) / dataset / "manifest.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CnnbenchError(f"{path}: not readable ({err}); run `cnnbench preprocess --dataset {dataset}` "
                            "again") from None


def manifest_classes(prepared_root: Path, dataset: str) -> int:
    """The number of classes of a prepared data set whose kind cannot say (an image folder, a CSV)."""
    manifest = read_manifest(prepared_root, dataset)
    if manifest is None:
        raise CnnbenchError(f"cannot plan data set {dataset!r}: only its data tells its classes; run "
                            f"`cnnbench preprocess --dataset {dataset}` first")
    return len(manifest["classes"])


def split_sizes(cfg: Config, spec: RunSpec, prepared_root: Path, raw_root: Path = Path("data/raw")) -> Splits:
    """Images per split of the run: from ``<prepared_root>/<dataset>/manifest.json`` when it is
    there, else :func:`unprepared_sizes`; classes left out, train_limit applied."""
    manifest = read_manifest(prepared_root, spec.dataset)
    excluded = set(spec.exclude_classes)
    if manifest is not None:
        splits = manifest["splits"]
        counts = {s: splits[s]["count"] - sum(n for c, n in splits[s].get("per_class", {}).items() if c in excluded)
                  for s in ("train", "val", "test")}
        source = f"{Path(prepared_root) / spec.dataset / 'manifest.json'}"
    else:
        counts, source = unprepared_sizes(cfg, spec.dataset, raw_root)
        classes = kind_sizes(cfg, spec.dataset).classes
        keep = 1 - len(excluded) / classes if classes else 1.0
        counts = {s: round(n * keep) for s, n in counts.items()}
    train = min(counts["train"], spec.train.train_limit) if spec.train.train_limit else counts["train"]
    return Splits(train=train, val=counts["val"], test=counts["test"], source=source)


def unprepared_sizes(cfg: Config, dataset: str, raw_root: Path) -> tuple[dict[str, int], str]:
    """Split sizes of a data set not prepared yet: the official ones its kind knows (CIFAR-10's
    validation held out of train), scaled down to the archive at hand when it holds fewer images (a
    subset, e.g. a mirror's), and where they come from. A kind without official sizes: the archive's
    size over GUESS_PLANNING's bytes per image, split 80/10/10."""
    sizes = kind_sizes(cfg, dataset)
    archive = raw_archive(cfg, dataset, raw_root)
    images = archive.stat().st_size / sizes.bytes_per_image if archive else None
    if sizes.splits is None:
        if images is None:
            raise CnnbenchError(f"cannot estimate data set {dataset!r}: it is not prepared and its archive is not "
                                f"downloaded; run `cnnbench download --dataset {dataset}` first")
        share = GUESS_PLANNING["splits"]
        return ({s: round(images * share[s]) for s in ("train", "val", "test")},
                f"a guess from the size of {archive} (about {images:,.0f} images, split 80/10/10) until it is prepared")
    counts = sizes.splits
    if images is None or images >= 0.9 * sum(counts.values()):
        return counts, f"the official {dataset} split sizes, not prepared here"
    share = images / sum(counts.values())
    return ({s: round(n * share) for s, n in counts.items()},
            f"the official {dataset} split sizes x {share:.3f}, as {archive} holds about {images:,.0f} images "
            f"(a guess until it is prepared)")


def raw_archive(cfg: Config, dataset: str, raw_root: Path) -> Path | None:
    """The data set's archive as `download` left it, else the one it will copy from the data mirror."""
    from .data.fetch import resolve_mirror

    filename = cfg.source_settings(dataset).get("filename")
    if not filename:  # a subset downloads nothing: it is drawn from its parent's store
        return None
    mirror = resolve_mirror(cfg.data_mirror)
    for folder in (Path(raw_root), mirror):
        if folder is not None and (folder / dataset / filename).is_file():
            return folder / dataset / filename
    return None


def preprocess_estimate(cfg: Config, dataset: str, prepared_root: Path, raw_root: Path) -> dict | None:
    """Seconds of `preprocess` for a data set that is not prepared at the profile's settings (None
    when it is): images (from the archive's size, or the official count) x seconds per image."""
    manifest = read_manifest(prepared_root, dataset)
    size = image_size(cfg, dataset)
    if manifest is not None and list(manifest.get("image_size", [size, size])) == [size, size]:
        return None
    archive = raw_archive(cfg, dataset, raw_root)
    sizes = kind_sizes(cfg, dataset)
    if archive is not None:
        images = archive.stat().st_size / sizes.bytes_per_image
        how = (f"estimated from the size of {archive} ({archive.stat().st_size / 1e6:.0f} MB, about {images:,.0f} "
               f"images)")
    elif sizes.splits is None:
        raise CnnbenchError(f"cannot estimate preprocess of data set {dataset!r}: its archive is not downloaded; "
                            f"run `cnnbench download --dataset {dataset}` first")
    else:
        images = sum(sizes.splits.values())
        how = (f"estimated for the official {images:,} images (no archive in {Path(raw_root) / dataset} or a data "
               f"mirror; download not included)")
    why = ("not prepared" if manifest is None
           else f"prepared at {manifest['image_size'][0]} px, the profile asks {size} px")
    return {"dataset": dataset, "seconds": images * sizes.seconds_per_image, "images": round(images),
            "why": why, "how": how + f" at {1000 * sizes.seconds_per_image:.1f} ms per image"}


# --- what one run costs ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rates:
    """What the timing of one cost shape measured."""

    train_images_per_s: float
    eval_images_per_s: float
    first_step_extra_s: float  # the first step's time beyond a normal step (allocation, compilation, autotuning)
    checkpoint_s: float        # writing one epoch's checkpoint


@dataclass(frozen=True)
class RunEstimate:
    run_id: str
    dataset: str
    device: str
    splits: Splits
    epochs: int
    epoch_images: int         # training images per epoch (train_limit and max_batches_per_epoch applied)
    eval_passes: int          # forward passes per evaluated image: 2 with flip TTA
    rates: Rates
    startup_s: float          # one job's start-up (python, imports, a trivial stage)
    logger_s: float = 0.0     # a train job's DVCLive logger: opened, one row per epoch, closed
    kind: str = "run"         # "run", or "trial" of tuning (a train job only: no evaluate job)
    selection: str | None = None  # "<variant>/<recipe>": the selection a trial feeds, or a tuned run reads

    @property
    def epoch_seconds(self) -> float:
        return self.epoch_images / self.rates.train_images_per_s

    @property
    def val_seconds(self) -> float:
        return self.splits.val * self.eval_passes / self.rates.eval_images_per_s

    @property
    def test_seconds(self) -> float:
        return self.splits.test * self.eval_passes / self.rates.eval_images_per_s

    @property
    def train_job_seconds(self) -> float:
        per_epoch = self.epoch_seconds + self.val_seconds + self.rates.checkpoint_s
        return self.startup_s + self.logger_s + self.rates.first_step_extra_s + self.epochs * per_epoch

    @property
    def evaluate_job_seconds(self) -> float:
        return 0.0 if self.kind == "trial" else self.startup_s + self.test_seconds

    @property
    def seconds(self) -> float:
        return self.train_job_seconds + self.evaluate_job_seconds

    def to_dict(self) -> dict:
        return {"run": self.run_id, "kind": self.kind, "selection": self.selection, "dataset": self.dataset,
                "device": self.device,
                "train_images": self.splits.train, "val_images": self.splits.val, "test_images": self.splits.test,
                "images_from": self.splits.source, "epochs": self.epochs, "epoch_images": self.epoch_images,
                "eval_passes": self.eval_passes, **dataclasses.asdict(self.rates),
                "epoch_seconds": self.epoch_seconds, "val_seconds": self.val_seconds, "test_seconds": self.test_seconds,
                "train_job_seconds": self.train_job_seconds, "evaluate_job_seconds": self.evaluate_job_seconds,
                "seconds": self.seconds}


def epoch_images(spec: RunSpec, train_images: int) -> int:
    """Training images one epoch steps through (every image, or max_batches_per_epoch batches)."""
    if spec.train.max_batches_per_epoch:
        return min(train_images, spec.train.max_batches_per_epoch * spec.train.batch_size)
    return train_images


# --- the schedule ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    name: str
    seconds: float
    ready: float = 0.0  # the earliest start (its data set's preprocess done)


@dataclass(frozen=True)
class Schedule:
    end: float                 # when the last job ends
    starts: dict[str, float]   # each job's start
    free: list[float]          # when each slot frees


def list_schedule(jobs: list[Job], slots: int, free: list[float] | None = None) -> Schedule:
    """List scheduling, longest first: whenever a slot frees, it takes the longest job that is
    ready then (or, when none is, the first to become ready). ``free``: when each slot frees first."""
    if slots < 1:
        raise ValueError(f"slots must be at least 1, got {slots}")
    free = list(free) if free is not None else [0.0] * slots
    pending = sorted(jobs, key=lambda j: (-j.seconds, j.name))
    starts: dict[str, float] = {}
    while pending:
        slot = min(range(slots), key=lambda i: (free[i], i))
        now = max(free[slot], min(j.ready for j in pending))
        job = next(j for j in pending if j.ready <= now)
        pending.remove(job)
        starts[job.name] = now
        free[slot] = now + job.seconds
    return Schedule(max(free), starts, free)


def parallel_slots(cfg: Config, device_kind: str, cores: int, gpus: int) -> tuple[int, str]:
    """Concurrent train jobs and how that number came about."""
    train = cfg.job_resources("train")
    cpus = int(train.get("cpus", 1))
    by_cores = max(1, cores // cpus)
    if device_kind != "cuda":
        jobs, on = "jobs" if by_cores > 1 else "job", "cores" if cores > 1 else "core"
        return by_cores, f"{by_cores} parallel {jobs} on {cores} {on}"
    per_gpu = int(train.get("jobs_per_gpu", 1))
    slots = max(1, min(gpus * per_gpu, by_cores))
    return slots, f"{slots} parallel job{'s' if slots > 1 else ''} on {gpus} GPU{'s' if gpus != 1 else ''} " \
                  f"({per_gpu} per GPU) and {cores} cores"


def final_stage_seconds(runs: int, startup_s: float) -> dict[str, float]:
    return {stage: startup_s + fixed + per_run * runs for stage, (fixed, per_run) in FINAL_STAGES_SECONDS.items()}


def tuning_phase(trials: list[RunEstimate], ready: dict[str, float], free: list[float],
                 startup_s: float) -> tuple[Schedule, dict[str, float]]:
    """The tuning trials on the slots as preprocess left them (each once its data set is prepared), and
    when each selection is made: its select job (a start-up's work) right after its last trial."""
    done = list_schedule([Job(t.run_id, t.seconds, ready.get(t.dataset, 0.0)) for t in trials], len(free), free=free)
    selected: dict[str, float] = {}
    for t in trials:
        end = done.starts[t.run_id] + t.seconds + startup_s
        selected[t.selection] = max(selected.get(t.selection, 0.0), end)
    return done, selected


def study_seconds(runs: list[RunEstimate], preprocess: list[dict], slots: int, preprocess_slots: int,
                  startup_s: float, trials: list[RunEstimate] = ()) -> dict:
    """Wall time of the study: preprocess jobs, then the tuning trials, then the runs (list schedule;
    a tuned run once its selection is made), then the final stages."""
    pre_jobs = [Job(f"preprocess {p['dataset']}", startup_s + p["seconds"]) for p in preprocess]
    # the preprocess jobs take the first slots (as many as their cpus allow), the runs follow
    pre_slots = max(1, min(preprocess_slots, slots))
    pre = list_schedule(pre_jobs, pre_slots)
    ready = {p["dataset"]: pre.starts[f"preprocess {p['dataset']}"] + startup_s + p["seconds"] for p in preprocess}
    # the trials first: the tuned runs wait for them, the other runs fill the slots after them
    tuning, selected = tuning_phase(list(trials), ready, pre.free + [0.0] * (slots - pre_slots), startup_s)
    run_jobs = [Job(r.run_id, r.seconds, max(ready.get(r.dataset, 0.0), selected.get(r.selection, 0.0)))
                for r in runs]
    done = list_schedule(run_jobs, slots, free=tuning.free)
    final = final_stage_seconds(len(runs), startup_s)
    tuning_serial = sum(t.seconds for t in trials) + startup_s * len(selected)
    serial = sum(j.seconds for j in pre_jobs) + sum(r.seconds for r in runs) + tuning_serial + sum(final.values())
    study = {"seconds": done.end + sum(final.values()), "runs_end_seconds": done.end,
             "preprocess_end_seconds": pre.end, "final_stages_seconds": final, "serial_seconds": serial,
             "trials": len(trials), "selections": len(selected), "tuning_serial_seconds": tuning_serial}
    if trials:  # what tuning adds to the wall time: the same study with the chosen values known
        study["without_tuning_seconds"] = study_seconds(runs, preprocess, slots, preprocess_slots, startup_s)["seconds"]
    return study


# --- timing on this device --------------------------------------------------------------------------------------
def cost_key(spec: RunSpec, size: int) -> str:
    """What sets the time of a step and of an evaluation batch: runs with the same key share one timing."""
    args = {k: v for k, v in spec.model_args.items() if k not in COST_FREE_MODEL_ARGS}
    return json.dumps({"dataset": spec.dataset, "size": size, "model": spec.model, "model_args": args,
                       "batch_size": spec.train.batch_size, "eval_batch_size": spec.train.eval_batch_size,
                       "augment": dataclasses.asdict(spec.train.augment), "ema": spec.train.ema is not None,
                       "execution": dataclasses.asdict(spec.execution)}, sort_keys=True)


def release_freed_memory() -> None:
    """Hand the memory freed by the last timing back to the system (glibc), so that every shape is
    timed from the allocator state a fresh job starts with: a heap left large by an earlier, bigger
    model makes the next model's steps up to a fifth faster than they are in a job of their own."""
    import ctypes

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to hand back this way
        pass


def time_checkpoint(spec: RunSpec, trainer, gen) -> float:
    """Seconds to write one epoch's checkpoint of this model and optimizer (as train does)."""
    import tempfile

    import torch

    from .checkpoint import save_checkpoint

    with tempfile.TemporaryDirectory(prefix="cnnbench-plan-") as tmp:
        t0 = time.perf_counter()
        save_checkpoint(Path(tmp) / "last.pt", spec, 1, [], model=trainer.model, optimizer=trainer.optimizer,
                        scheduler=trainer.scheduler, ema=trainer.ema, shuffle_gen=torch.Generator(), aug_gen=gen)
        return time.perf_counter() - t0


def time_logger(epochs: int) -> float:
    """Seconds a train job spends on its DVCLive logger: opened, ``epochs`` rows, closed."""
    import tempfile

    from .train import _log_live, _open_dvclive

    row = {"train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.5, "lr": 0.1, "seconds": 1.0}
    with tempfile.TemporaryDirectory(prefix="cnnbench-plan-") as tmp:
        t0 = time.perf_counter()
        live = _open_dvclive(Path(tmp) / "dvclive", [])
        if live is None:
            return 0.0
        for _ in range(epochs):
            _log_live(live, row)
        live.end()
        return time.perf_counter() - t0


def time_shape(spec: RunSpec, size: int, classes: int, steps_per_epoch: int, *, warmup: int, steps: int) -> Rates:
    """Training images/s (median of ``steps`` single steps after ``warmup``), evaluation images/s
    (one batch after one untimed batch) and one checkpoint of ``spec`` on synthetic images of ``size`` px."""
    import numpy as np
    import torch

    from .bench import timed_windows
    from .engine import DeviceData, Engine, configure_process, select_device
    from .train import Batches, build_trainer, predict

    configure_process(spec.execution)
    device = select_device(spec.execution.device)
    engine = Engine(spec.execution, device)
    bs, ebs = spec.train.batch_size, spec.train.eval_batch_size
    rng = np.random.default_rng(0)
    n = max(bs, ebs)
    images, labels = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8), rng.integers(0, classes, size=n)
    data = DeviceData(images, labels, device)
    torch.manual_seed(0)
    trainer = build_trainer(spec, classes, engine, steps_per_epoch)
    gen = torch.Generator(device=device).manual_seed(0)
    batches = Batches(data, spec.train, engine, gen)

    def step() -> None:
        trainer.step(*batches(torch.randint(0, n, (bs,), device=device, generator=gen)))

    trainer.model.train()
    first = timed_windows(step, device, 0, 1, 1)[0]
    per_step = statistics.median(timed_windows(step, device, max(0, warmup - 1), max(1, steps), 1))
    eval_data = DeviceData(images[:ebs], labels[:ebs], device)
    eval_s = timed_windows(lambda: predict(trainer.model, eval_data, batches.mean, batches.std, ebs, engine),
                           device, 1, 1, 1)[0]
    return Rates(train_images_per_s=bs / per_step, eval_images_per_s=len(eval_data) / eval_s,
                 first_step_extra_s=max(0.0, first - per_step), checkpoint_s=time_checkpoint(spec, trainer, gen))


def startup_probe(params: str, profile: str) -> None:
    """What every train and evaluate job does before its own work: start cnnbench, load and check
    params.yaml, import the training and evaluation code, set up the process for the run
    (engine.configure_process)."""
    from . import cli, evaluate, train  # noqa: F401 - imported for their cost, as a job imports them
    from .config import load
    from .engine import configure_process

    cfg = load(params, profile)
    configure_process(cfg.run(cfg.variants[0]).execution)


def measure_startup(cfg: Config, times: int = 2) -> float:
    """Seconds from a fresh Python to the end of :func:`startup_probe`: a job's start-up (the mean of
    ``times`` probes; one alone varies by a second or more on a busy machine)."""
    cmd = [sys.executable, "-c", STARTUP_CODE, str(cfg.params_path), cfg.profile]
    seconds = []
    for _ in range(times):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise RuntimeError(f"measuring a job's start-up failed ({' '.join(cmd)}):\n{proc.stderr}")
    return statistics.mean(seconds)


# --- the plan ---------------------------------------------------------------------------------------------------
def default_cores() -> int:
    """The cores this process may use, as `snakemake --cores all` counts them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def plan_device(cfg: Config, device: str | None) -> tuple[str | None, str | None]:
    """The device to time on (None: each run's own) and a note when it is not the one the profile asks for."""
    import torch

    if device is not None:
        return device, None
    kinds = {run_spec(cfg, v, r).execution.device_kind for v, r, _ in cfg.runs}
    if "cuda" in kinds and not torch.cuda.is_available():
        return "cpu", (f"profile {cfg.profile} trains on CUDA, which is not available here: timed on this CPU "
                       f"instead, so the estimate is for running the profile here with train.device: cpu")
    return None, None


def run_spec(cfg: Config, variant: str, recipe: str, seed: int | None = None, *,
             device: str | None = None) -> RunSpec:
    """A run of the study as planning sees it: a tuned recipe's with the values tuning chose once its
    selection exists, else with its base recipe's (no hyper-parameter of a grid changes a run's cost)."""
    try:
        return cfg.run(variant, recipe, seed, device=device)
    except SelectionMissing:
        return cfg.run(variant, recipe, seed, device=device, chosen={})


@dataclass(frozen=True)
class PlannedJob:
    """A run of the study or a tuning trial, with the spec that sets its cost."""

    name: str
    spec: RunSpec
    kind: str                 # "run" or "trial"
    selection: str | None     # "<variant>/<recipe>" of a tuned recipe (see RunEstimate.selection)


def planned_jobs(cfg: Config, device: str | None) -> list[PlannedJob]:
    """The study's runs, then its tuning trials (named ``<variant>/<recipe>/<point>/seed<k>``)."""
    tuned = set(cfg.tuned_recipes)
    jobs = []
    for v, r, s in cfg.runs:
        spec = run_spec(cfg, v, r, s, device=device)
        jobs.append(PlannedJob(spec.run_id, spec, "run", f"{v}/{r}" if r in tuned else None))
    for v, r, point, s in cfg.trials:
        jobs.append(PlannedJob(f"{v}/{r}/{point}/seed{s}", cfg.trial(v, r, point, s, device=device), "trial",
                               f"{v}/{r}"))
    return jobs


def estimate_runs(cfg: Config, prepared_root: Path, raw_root: Path, *, device: str | None, warmup: int, steps: int,
                  startup_s: float, logger_s: float) -> tuple[list[RunEstimate], list[dict]]:
    """Every run's and tuning trial's estimate, timing each cost shape once; and the shapes timed."""
    from .train import steps_per_epoch

    timed: dict[str, Rates] = {}
    shapes: list[dict] = []
    runs = []
    for job in planned_jobs(cfg, device):
        spec = job.spec
        size = image_size(cfg, spec.dataset)
        splits = split_sizes(cfg, spec, prepared_root, raw_root)
        key = cost_key(spec, size)
        if key not in timed:
            classes = (kind_sizes(cfg, spec.dataset).classes or manifest_classes(prepared_root, spec.dataset)
                       ) - len(spec.exclude_classes)
            log.info("timing %s (%s, %d px, batch %d) on %s", spec.variant, spec.model, size, spec.train.batch_size,
                     spec.execution.device)
            t0 = time.perf_counter()
            timed[key] = time_shape(spec, size, classes, steps_per_epoch(spec, splits.train), warmup=warmup,
                                    steps=steps)
            release_freed_memory()
            shapes.append({"first_run": job.name, "seconds": time.perf_counter() - t0, **json.loads(key)})
        runs.append(RunEstimate(run_id=job.name, dataset=spec.dataset, device=spec.execution.device, splits=splits,
                                epochs=spec.train.epochs, epoch_images=epoch_images(spec, splits.train),
                                eval_passes=2 if spec.train.tta_flip else 1, rates=timed[key], startup_s=startup_s,
                                logger_s=logger_s, kind=job.kind, selection=job.selection))
    return runs, shapes


def visible_gpus() -> int:
    """The GPUs (or MIG instances) the study's jobs may claim, counted as the jobs count them
    (cnnbench.gpus), else the ones torch sees."""
    import torch

    from .gpus import visible_devices

    return len(visible_devices()) or torch.cuda.device_count()


def plan_notes(device_note: str | None, load: float | None, kind: str, per_gpu: int) -> list[str]:
    """What the reader of the estimate must know about how it was made."""
    notes = [device_note] if device_note else []
    if load is not None and load >= 0.5:
        notes.append(f"load average {load:.1f} before the timing: other programs are using the CPU, which slows "
                     f"the timing and the study alike while they run")
    if kind == "cuda" and per_gpu > 1:
        notes.append(f"{per_gpu} jobs share each GPU (resources.train.jobs_per_gpu); each run is timed alone on its "
                     f"GPU, so the estimate is a lower bound when shared jobs slow each other")
    return notes


def make_plan(cfg: Config, *, prepared_root: Path = Path("data/prepared"), raw_root: Path = Path("data/raw"),
              cores: int | None = None, device: str | None = None, warmup: int = 2, steps: int = 5,
              startup_s: float | None = None) -> dict:
    """The study's estimate: every run, the preprocess still to do, and the wall time on the slots."""
    t0 = time.perf_counter()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    cores = cores or default_cores()
    device, device_note = plan_device(cfg, device)
    startup_s = measure_startup(cfg) if startup_s is None else startup_s
    logger_s = time_logger(max(run_spec(cfg, v, r).train.epochs for v, r, _ in cfg.runs))
    estimates, shapes = estimate_runs(cfg, prepared_root, raw_root, device=device, warmup=warmup, steps=steps,
                                      startup_s=startup_s, logger_s=logger_s)
    runs = [e for e in estimates if e.kind == "run"]
    trials = [e for e in estimates if e.kind == "trial"]
    kind = runs[0].device.split(":")[0]
    gpus = visible_gpus() if kind == "cuda" else 0
    slots, slots_text = parallel_slots(cfg, kind, cores, gpus)
    preprocess = [p for p in (preprocess_estimate(cfg, ds, prepared_root, raw_root) for ds in cfg.datasets) if p]
    pre_slots = max(1, cores // int(cfg.job_resources("preprocess").get("cpus", 1)))
    study = study_seconds(runs, preprocess, slots, pre_slots, startup_s, trials)
    notes = plan_notes(device_note, load, kind, int(cfg.job_resources("train").get("jobs_per_gpu", 1)))
    return {"profile": cfg.profile, "notes": notes, "load_average": load, "cores": cores, "gpus": gpus,
            "slots": slots, "slots_text": slots_text, "startup_seconds": startup_s, "logger_seconds": logger_s,
            "timing": {"warmup_steps": warmup, "timed_steps": steps, "shapes": shapes,
                       "images": "synthetic, of each run's shape", "plan_seconds": time.perf_counter() - t0},
            "runs": [r.to_dict() for r in runs], "trials": [t.to_dict() for t in trials],
            "tuning": tuning_summary(cfg, trials), "preprocess": preprocess, "study": study}


def _minutes(seconds: float) -> str:
    minutes = seconds / 60
    if minutes < 90:
        return f"about {max(1, round(minutes))} min"
    hours = minutes / 60
    return f"about {hours:.1f} h" if hours < 48 else f"about {hours / 24:.1f} days"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def describe_trials(cfg: Config) -> str | None:
    """``<n> tuning trials: <v> variants x <p> grid points x <s> seeds, <e> epochs each`` (None without any)."""
    t = cfg.tuning
    if not cfg.trials:
        return None
    epochs = sorted({cfg.trial(v, r, t.points[0].name, t.seeds[0]).train.epochs
                     for r in cfg.tuned_recipes for v in t.variants})
    each = _plural(epochs[0], "epoch") if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]} epochs"
    recipes = f" x {len(cfg.tuned_recipes)} tuned recipes" if len(cfg.tuned_recipes) > 1 else ""
    return (f"{_plural(len(cfg.trials), 'tuning trial')}: {_plural(len(t.variants), 'variant')}{recipes} x "
            f"{_plural(len(t.points), 'grid point')} x {_plural(len(t.seeds), 'seed')}, {each} each "
            f"(budget: {t.describe_budget()})")


# --- what `cnnbench validate` prints of the study ----------------------------------------------------------------
def tuned_choice(cfg: Config, variant: str, recipe: str) -> dict | None:
    """The values tuning chose for (variant, tuned recipe); None before its selection exists."""
    try:
        return read_choice(cfg.tuning_root, variant, recipe)
    except SelectionMissing:
        return None


def validated_spec(cfg: Config, variant: str, recipe: str, seed: int | None = None) -> tuple[RunSpec, dict | None]:
    """A run's spec and, for a tuned recipe, the values tuning chose (None before it ran: the spec then
    has the base recipe's values, and its hash is not yet the run's)."""
    if recipe not in cfg.tuned_recipes:
        return cfg.run(variant, recipe, seed), None
    cfg.variant(variant)  # an unknown variant gets its own error first
    if not cfg.runs_under(variant, recipe):
        raise ConfigError(f"--variant {variant}: not tuned (tuning.variants), so the study has no run of it under "
                          f"tuned recipe {recipe!r}; tuned variants: {', '.join(cfg.tuning.variants)}")
    chosen = tuned_choice(cfg, variant, recipe)
    return cfg.run(variant, recipe, seed, chosen={} if chosen is None else chosen), chosen


def tuned_text(grid: dict, chosen: dict | None) -> list[str]:
    """``lr chosen by tuning from [0.05, 0.2]``, with the chosen value once the selection exists."""
    parts = []
    for key, values in grid.items():
        value = f" {fmt_value(chosen[key])}" if chosen and key in chosen else ""
        parts.append(f"{key}{value} chosen by tuning from [{', '.join(fmt_value(v) for v in values)}]")
    return parts


def describe_run(cfg: Config, variant: str, recipe: str) -> str:
    """One run's line: model, epochs, batch, learning rate (or what tuning chooses), device, hash."""
    spec, chosen = validated_spec(cfg, variant, recipe)
    t, x = spec.train, spec.execution
    tuned = recipe in cfg.tuned_recipes
    grid = cfg.tuning.grid if tuned else {}
    values = ([] if "lr" in grid else [f"lr {t.optimizer.lr}"]) + tuned_text(grid, chosen)
    digest = spec.hash[:12] if not tuned or chosen is not None else "after tuning"
    return (f"{spec.variant} / {recipe}: model {spec.model}, {t.epochs} epochs, batch {t.batch_size}, "
            f"{', '.join(values)}, {x.device} {x.precision}, threads {x.num_threads or 'default'}, hash {digest}")


def describe_one(cfg: Config, variant: str, recipe: str | None, seed: int | None) -> dict:
    """`validate --variant`: the run's spec and hash; a tuned run's grid, chosen values and selection file."""
    recipe = recipe or cfg.recipes[0]
    spec, chosen = validated_spec(cfg, variant, recipe, seed)
    out = {"run": spec.run_id, "hash": spec.hash, "spec": spec.to_dict(), "report_only": cfg.variant(variant)}
    if recipe in cfg.tuned_recipes:
        out["tuning"] = {"grid": cfg.tuning.grid, "chosen": chosen,
                         "selection": str(selection_path(cfg.tuning_root, variant, recipe))}
        if chosen is None:
            out["hash"] = None
            out["tuning"]["note"] = ("not tuned yet: spec has the base recipe's values; the run's identity takes "
                                     "the chosen ones")
    return out


def tuned_only(cfg: Config) -> str:
    """`` (tuned: its 7 tuned variants only)`` where tuning does not tune every variant."""
    t = cfg.tuning
    if not cfg.tuned_recipes or len(t.variants) == len(cfg.variants):
        return ""
    return f" ({', '.join(cfg.tuned_recipes)}: its {_plural(len(t.variants), 'tuned variant')} only)"


def tuning_summary(cfg: Config, trials: list[RunEstimate]) -> dict | None:
    """What tuning costs, apart from the study's runs (None without tuning)."""
    if not trials:
        return None
    return {"text": describe_trials(cfg), "trials": len(trials), "epochs": sum(t.epochs for t in trials),
            "seconds": sum(t.seconds for t in trials)}


def job_table(rows: list[dict], title: str) -> list[str]:
    """One line per run (or trial): device, training images/s, seconds per epoch, epochs, minutes."""
    width = max(len(title), max(len(r["run"]) for r in rows))
    dev_w = max(6, max(len(r["device"]) for r in rows))
    head = f"{title:<{width}}  {'device':<{dev_w}}  {'img/s':>7}  {'s/epoch':>7}  {'epochs':>6}  {'est. min':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        epoch = r["epoch_seconds"] + r["val_seconds"] + r["checkpoint_s"]
        lines.append(f"{r['run']:<{width}}  {r['device']:<{dev_w}}  {r['train_images_per_s']:>7.1f}  {epoch:>7.1f}  "
                     f"{r['epochs']:>6}  {r['seconds'] / 60:>8.1f}")
    return lines


def totals(plan: dict) -> list[str]:
    """The last lines: one stage at a time (dvc repro), and on the slots, tuning apart from the runs."""
    study, tuning = plan["study"], plan.get("tuning")
    head = f"study (profile {plan['profile']}, {len(plan['runs'])} runs, {plan['slots_text']}): "
    if not tuning:
        return [f"dvc repro runs one stage at a time: {_minutes(study['serial_seconds'])}",
                head + _minutes(study["seconds"])]
    added = study["seconds"] - study["without_tuning_seconds"]
    return [f"tuning: {tuning['text']}; {_minutes(study['tuning_serial_seconds'])} of jobs (the trials and "
            f"{_plural(study['selections'], 'selection')}), run before the tuned runs, which wait for their selection",
            f"dvc repro runs one stage at a time: {_minutes(study['serial_seconds'])} (tuning "
            f"{_minutes(study['tuning_serial_seconds'])} of it)",
            head + f"{_minutes(study['without_tuning_seconds'])} + tuning ({_plural(tuning['trials'], 'trial')}) "
            f"{_minutes(added)} = {_minutes(study['seconds'])}"]


def format_plan(plan: dict) -> str:
    """The tables of runs and tuning trials, where the figures come from, and the study's total."""
    runs = plan["runs"]
    lines = job_table(runs, "run")
    if plan.get("trials"):
        lines += ["", *job_table(plan["trials"], "tuning trial (a train job, no evaluate job)")]
    lines.append("")
    lines += [f"note: {note}" for note in plan["notes"]]
    sources = list(dict.fromkeys((r["dataset"], r["images_from"]) for r in runs))
    for ds, src in sources:
        counts = next(r for r in runs if r["dataset"] == ds and r["images_from"] == src)
        lines.append(f"{ds}: image counts from {src} (its first run: {counts['epoch_images']:,} training images "
                     f"per epoch, {counts['val_images']:,} validation, {counts['test_images']:,} test)")
    for p in plan["preprocess"]:
        lines.append(f"preprocess {p['dataset']} ({p['why']}): {p['seconds']:.0f} s, {p['how']}")
    t = plan["timing"]
    final = ", ".join(f"{k} {v:.0f} s" for k, v in plan["study"]["final_stages_seconds"].items())
    lines += [
        f"each job's start-up (python, imports, params.yaml), measured: {plan['startup_seconds']:.1f} s; a train "
        f"job's logger: {plan['logger_seconds']:.1f} s; s/epoch includes the validation pass and the checkpoint",
        f"after the runs: {final}",
        f"timed {len(t['shapes'])} cost shapes on synthetic images ({t['warmup_steps']} warm-up + {t['timed_steps']} "
        f"steps, one evaluation batch and one checkpoint each); this plan took {t['plan_seconds']:.0f} s",
        *totals(plan),
    ]
    return "\n".join(lines)


def write_plan(plan: dict, path: Path) -> None:
    atomic_write_text(Path(path), json.dumps(plan, indent=2) + "\n")
