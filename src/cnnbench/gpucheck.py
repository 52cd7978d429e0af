"""`cnnbench gpu-check` (scripts/gpu-check.sh): every CUDA path of the engine, exercised on one
GPU in a few minutes, in one table of checks, figures, bars and verdicts.

The checks (each a function below, with its own time budget):

a. ``train-sync``: a short training run (ResNet-18 small stem, the fast recipe, bf16,
   channels_last, an EMA of the weights) under a pseudo-terminal, so tqdm's bar is live as in an
   interactive `cnnbench train`, with ``CNNBENCH_SYNC_DEBUG=warn``: train.py runs the step loop under
   ``torch.cuda.set_sync_debug_mode("warn")`` and writes the synchronising operations it counted
   to train.json (``sync_warnings_in_step_loop``). Bar: 0.
b. ``train-compile``: the same with ``compile: true``; also the first epoch's seconds (compilation)
   against the later ones. Bar: 0 sync warnings.
c. ``deterministic``: ``deterministic: true`` trained twice: every tensor of model.pt equal
   (``torch.equal``) and the same history.
d. ``augment-kernels``: the resized crop's torch kernel (the GPU's) on the device against the numba
   kernel on the CPU, on the same images and crop boxes. Bar: max abs difference <= 1e-4.
e. ``resume``: a run stopped after epoch 1's checkpoint and resumed in a new process against the
   same run trained straight through: every tensor equal.
f. ``gpu-claims``: two concurrent jobs claim GPU slots through :mod:`cnnbench.gpus` with
   ``jobs_per_gpu`` 2: both hold one at once (on one GPU, both on it).
g. ``concurrent-jobs``: total training images/s of 1, 2 and 4 CIFAR jobs sharing the GPU (ResNet-18
   small stem, batch 128, bf16, channels_last), started together. Bar: 2 jobs >= 1 job.
h. ``bench-targets``: `cnnbench bench` of ResNet-18 small stem without max-pool against the GPU
   targets of docs/benchmarks.md: one 50,000-image epoch <= 3 s, >= 5x the lab reports' loop.

Each check runs in a process of its own, killed when it outlives its budget: a check that hangs
or breaks the CUDA context is reported and the others still run, and nothing one switches on
(deterministic algorithms, the sync debug mode, compiled graphs) reaches the next.

``--device cpu`` runs the checks that mean something without a GPU (c, d, e, f) at tiny sizes
(the tests use it); the others read "needs CUDA". In the default CUDA mode a machine without CUDA
stops at once with the reason. Data: ``data/prepared/<dataset>`` where it exists, else synthetic
data of the same shapes (CIFAR-10 32 px, 10 classes; butterflies 224 px, 100 classes) written
with :func:`cnnbench.data.packed.write_prepared` into a scratch folder; the table says which.

Outputs (``--out``, default results/gpu-check/): table.md (the table as printed),
gpu-check.json (every figure of every check) and logs/ (each check's output, the training
runs' terminal output included).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import fcntl
import inspect
import json
import logging
import os
import pty
import re
import select
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from unittest import mock

import numpy as np

from . import __version__
from .atomic import atomic_write_text
from .data import packed
from .errors import CnnbenchError, ConfigError

if TYPE_CHECKING:
    import torch

# torch is imported where it is used: the processes that only claim a GPU slot start in a blink.
log = logging.getLogger("cnnbench.gpucheck")

PASS, FAIL, NEEDS_CUDA = "PASS", "FAIL", "needs CUDA"
TOTAL_BAR_S = 480           # the whole check on one H100-class GPU: under 8 minutes
DEFAULT_TIME_LIMIT_S = 560  # hard stop for all checks together, so the table is written even if one hangs
MIN_CHECK_S = 20            # a check is not started with less time than this left
DEFAULT_PROFILE = {"cuda": "full", "cpu": "smoke"}  # full-size networks on a GPU, tiny ones on a CPU

TRAIN_VARIANT = "cifar10-resnet18_small_stem"          # a, b, c, e, g
BENCH_VARIANT = "cifar10-resnet18_small_stem_nomaxpool"  # h: the docs/benchmarks.md GPU target
AUG_VARIANT = "butterflies-resnet18"                     # d: the resized crop's settings
SYNC_ENV, SYNC_KEY = "CNNBENCH_SYNC_DEBUG", "sync_warnings_in_step_loop"
WAIT_S = 120                # the longest a worker waits for its partner processes
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class CudaUnavailable(CnnbenchError):
    """The CUDA check was asked for where CUDA does not work."""


class CheckFailed(Exception):
    """Raised inside a check: its verdict is FAIL, with this message as its result."""


# --- sizes, context, outcome ----------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    """How much work each check does: the CUDA sizes fit the 8-minute whole, the CPU ones are tiny."""

    cifar_images: tuple[int, int, int]      # synthetic CIFAR-10 train/val/test images
    butterfly_images: tuple[int, int, int]  # synthetic butterflies, 224 px
    train_images: int                       # images per training epoch (train_limit)
    batch_size: int
    epochs: int                             # a, c, e
    compile_epochs: int                     # b: the first epoch against the later ones
    aug_images: int                         # d
    warmup_steps: int                       # g: untimed steps of each job (cuDNN autotuning)
    job_seconds: float                      # g: timed steps of each job
    jobs: tuple[int, ...]                   # g: concurrent jobs per round
    bench_timing: tuple[int, int, int]      # h: warm-up steps, windows, steps per window


SIZES = {
    # 10,000 / 128 leaves a partial last batch each epoch, as the study's 45,000 / 128 does.
    "cuda": Sizes(cifar_images=(10_000, 2_000, 2_000), butterfly_images=(256, 32, 32), train_images=10_000,
                  batch_size=128, epochs=2, compile_epochs=3, aug_images=128, warmup_steps=30, job_seconds=20.0,
                  jobs=(1, 2, 4), bench_timing=(20, 5, 50)),
    "cpu": Sizes(cifar_images=(128, 32, 32), butterfly_images=(16, 4, 4), train_images=100, batch_size=32,
                 epochs=2, compile_epochs=2, aug_images=8, warmup_steps=1, job_seconds=1.0, jobs=(1, 2),
                 bench_timing=(1, 2, 2)),
}


@dataclass(frozen=True)
class Context:
    """What every check reads: the device, the params file and profile, the data, the folders."""

    device: str           # cuda | cpu
    params: str
    profile: str
    data_root: str        # where prepared data lives when it is real (bench reads it too)
    cifar: str            # the prepared CIFAR-10 store the training checks use
    cifar_data: str       # "real data (...)" or "synthetic data (...)"
    butterflies: str
    butterflies_data: str
    work: str             # scratch folder (runs, synthetic data, the checks' results)
    logs: str
    sizes: Sizes

    @property
    def file(self) -> Path:
        return Path(self.work) / "context.json"

    def save(self) -> None:
        atomic_write_text(self.file, json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Context":
        raw = json.loads(Path(path).read_text())
        raw["sizes"] = Sizes(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw["sizes"].items()})
        return cls(**raw)


@dataclass
class Outcome:
    """A check's verdict (PASS, FAIL or needs CUDA), what happened in words, the figure compared
    with the bar, and every figure it measured (for gpu-check.json)."""

    verdict: str
    result: str
    figure: str = "—"
    figures: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    key: str
    title: str
    bar: str
    budget_s: int
    on_cpu: bool          # means something without a GPU: runs in --device cpu
    run: Callable[[Context], Outcome]


# --- data -----------------------------------------------------------------------------------------
def write_synthetic(dest: Path, counts: tuple[int, int, int], size: int, classes: list[str], seed: int = 0) -> None:
    """A packed store of uniform random images of the data set's shape (the numbers mean nothing)."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in zip(packed.SPLITS, counts):
        labels = (np.arange(n) % len(classes)).astype(np.int64)
        splits[split] = (rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8), labels)
    manifest = {"dataset": dest.name, "source": {"source": "synthetic (cnnbench gpu-check)", "sha256": None},
                "noisy_classes": [], "excluded": [], "notes": ["uniform random pixels: right shapes, no content"]}
    packed.write_prepared(dest, splits, classes, manifest)


def prepare_data(data_root: Path, work: Path, sizes: Sizes, synthetic: bool) -> dict[str, tuple[str, str]]:
    """{data set: (prepared dir, description)}: the real store where there is one (and not
    ``synthetic``), else synthetic data of its shape in ``work``."""
    kinds = {"cifar10": (sizes.cifar_images, 32, CIFAR_CLASSES),
             "butterflies": (sizes.butterfly_images, 224, [f"species {i:03d}" for i in range(100)])}
    found = {}
    for name, (counts, size, classes) in kinds.items():
        real = data_root / name
        if not synthetic and (real / "train_images.npy").is_file():
            found[name] = (str(real), f"real data ({real})")
            continue
        dest = work / "prepared" / name
        write_synthetic(dest, counts, size, classes)
        found[name] = (str(dest), f"synthetic data ({'/'.join(f'{n:,}' for n in counts)} train/val/test images, "
                                  f"{size} px, {len(classes)} classes)")
    return found


def make_context(device: str, params: Path, profile: str, data_root: Path, work: Path, logs: Path,
                 synthetic: bool) -> Context:
    from .config import load

    load(params, profile=profile)  # a params file or profile that does not load: one clear error first
    work.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    sizes = SIZES[device]
    data = prepare_data(data_root, work, sizes, synthetic)
    ctx = Context(device=device, params=str(params), profile=profile, data_root=str(data_root),
                  cifar=data["cifar10"][0], cifar_data=data["cifar10"][1], butterflies=data["butterflies"][0],
                  butterflies_data=data["butterflies"][1], work=str(work), logs=str(logs), sizes=sizes)
    ctx.save()
    return ctx


def run_spec(ctx: Context, variant: str = TRAIN_VARIANT, recipe: str | None = None, **changes):
    """The run a check trains: ``variant`` under ``recipe`` as the params file and profile say, on
    the check's device and sizes, with ``changes`` (fields of TrainSpec or ExecutionSpec)."""
    from .config import load
    from .spec import TrainSpec

    spec = load(ctx.params, profile=ctx.profile).run(variant, recipe, device=ctx.device)
    train_fields = {f.name for f in dataclasses.fields(TrainSpec)}
    sizes = {"epochs": ctx.sizes.epochs, "batch_size": ctx.sizes.batch_size, "train_limit": ctx.sizes.train_images,
             "max_batches_per_epoch": None}
    train = dataclasses.replace(spec.train, **{**sizes, **{k: v for k, v in changes.items() if k in train_fields}})
    execution = dataclasses.replace(spec.execution, **{k: v for k, v in changes.items() if k not in train_fields})
    return dataclasses.replace(spec, train=train, execution=execution)


# --- processes ------------------------------------------------------------------------------------
def worker_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cnnbench.gpucheck", *args]


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment, with this copy of cnnbench first on the path and unbuffered output."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env["PYTHONPATH"]]) if env.get("PYTHONPATH") else src
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def last_line(path: Path) -> str:
    """The last non-empty line of a log (terminal redraws split on carriage returns), for a message."""
    try:
        text = path.read_bytes().decode(errors="replace")
    except OSError:
        return "(no output)"
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", text) if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def run_logged(cmd: list[str], env: dict[str, str], log_path: Path) -> int:
    """Run ``cmd`` to the end with its output in ``log_path``; its exit status."""
    with open(log_path, "wb") as sink:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, env=env).returncode


def start_logged(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "wb") as sink:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, env=env)


def wait_for_files(paths: list[Path], procs: list[subprocess.Popen], logs: list[Path], timeout: float,
                   what: str) -> None:
    """Wait until every path exists; a process that ends first, or the timeout, fails the check."""
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        for path, proc, log_path in zip(paths, procs, logs):
            if not path.exists() and proc.poll() is not None:
                raise CheckFailed(f"{what}: a process ended with status {proc.returncode} first: {last_line(log_path)}")
        if time.monotonic() > deadline:
            missing = sum(not p.exists() for p in paths)
            raise CheckFailed(f"{what}: {missing} of {len(paths)} processes not there after {timeout:.0f} s")
        time.sleep(0.05)


def wait_for(path: Path, timeout: float = WAIT_S) -> None:
    """In a worker: wait for the parent's signal file."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout:.0f} s")
        time.sleep(0.01)


def stop_all(procs: list[subprocess.Popen], grace_s: float = 0.0) -> None:
    """Give each process ``grace_s`` seconds to end by itself, then end it."""
    for proc in procs:
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_in_terminal(cmd: list[str], env: dict[str, str], log_path: Path, columns: int = 160) -> int:
    """Run ``cmd`` with a pseudo-terminal as its stdin, stdout and stderr, as an interactive
    `cnnbench train` would be (tqdm draws its bar only on a terminal), copying all it writes to
    ``log_path``. Returns its exit status."""
    master, slave = pty.openpty()
    try:
        # a wide terminal: one line per redraw of the bar
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
        proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    finally:
        os.close(slave)
    try:
        with open(log_path, "wb") as sink:
            _copy_terminal(master, proc, sink)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.wait()


def _copy_terminal(master: int, proc: subprocess.Popen, sink, linger_s: float = 2.0) -> None:
    """Copy the terminal's output until every writer has closed it; give up ``linger_s`` after the
    process ended if something it started still holds the terminal open."""
    ended = None
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: no process holds the terminal any more
                data = b""
            if not data:
                return
            sink.write(data)
            continue
        if proc.poll() is not None:
            ended = ended or time.monotonic()
            if time.monotonic() - ended > linger_s:
                return


# --- a, b: training under a terminal, syncs counted -----------------------------------------------
BAR_DRAWN = re.compile(rb"epoch \d+/\d+: +\d+%\|")  # tqdm: "<variant> epoch 1/2:  37%|###   | 29/79 [...]"


def read_history(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def train_settings(compile_: bool, epochs: int) -> dict:
    return {"variant": TRAIN_VARIANT, "recipe": "fast", "epochs": epochs, "ema": 0.999, "precision": "bf16",
            "memory_format": "channels_last", "compile": compile_, "deterministic": False}


def train_under_terminal(ctx: Context, key: str, settings: dict) -> Outcome:
    """Train in a process of its own under a pseudo-terminal; the outcome of its train.json."""
    out = Path(ctx.work) / key
    log_path = Path(ctx.logs) / f"{key}-train.log"
    env = worker_env({SYNC_ENV: "warn"} if ctx.device == "cuda" else None)
    rc = run_in_terminal(worker_command("train", str(ctx.file), json.dumps(settings), str(out)), env, log_path)
    if rc != 0:
        raise CheckFailed(f"the training process ended with status {rc}: {last_line(log_path)} (see {log_path})")
    summary = json.loads((out / "train.json").read_text())
    seconds = [float(r["seconds"]) for r in read_history(out)]
    return sync_outcome(summary, seconds, bool(BAR_DRAWN.search(log_path.read_bytes())), settings, ctx)


def sync_outcome(summary: dict, seconds: list[float], bar_live: bool, settings: dict, ctx: Context) -> Outcome:
    """a and b's verdict: the run trained as asked, with a live bar, and its step loop synchronised
    with the host zero times."""
    first, later = seconds[0], seconds[1:] or seconds[:1]
    steady = sum(later) / len(later)
    expected = {"precision": "bf16 autocast", "memory_format": "channels_last", "ema": settings["ema"],
                "compiled": settings["compile"]}
    count = summary.get(SYNC_KEY)
    figures = {SYNC_KEY: count, "bar_live": bar_live, "epoch_seconds": seconds, "first_epoch_seconds": first,
               "later_epoch_seconds": steady, "first_over_later": first / steady,
               "train_images": summary.get("train_images"), "data": ctx.cifar_data,
               **{k: summary.get(k) for k in ("device", "mean_epoch_seconds", "peak_memory_mb", *expected)}}
    result = (f"{len(seconds)} epochs of {summary.get('train_images', 0):,} images on {ctx.cifar_data.split(' (')[0]}; "
              f"epoch 1 {first:.2f} s, later {steady:.2f} s; bar {'live' if bar_live else 'NOT drawn'}")
    wrong = [f"{k} {summary.get(k)!r} (asked for {v!r})" for k, v in expected.items() if summary.get(k) != v]
    if wrong:
        return Outcome(FAIL, f"train.json says {', '.join(wrong)}", "—", figures)
    if not bar_live:
        return Outcome(FAIL, f"{result}: the pseudo-terminal did not reach the training process", "—", figures)
    if count is None:
        why = ("train.py's CNNBENCH_SYNC_DEBUG hook is missing" if ctx.device == "cuda"
               else "train.py counts them only on CUDA")
        return Outcome(FAIL, f"{result}; train.json has no {SYNC_KEY}: {why}", "no count", figures)
    return Outcome(PASS if count == 0 else FAIL, result, f"{count} sync warnings in the step loop", figures)


def check_train_sync(ctx: Context) -> Outcome:
    return train_under_terminal(ctx, "a", train_settings(compile_=False, epochs=ctx.sizes.epochs))


def check_train_compile(ctx: Context) -> Outcome:
    outcome = train_under_terminal(ctx, "b", train_settings(compile_=True, epochs=ctx.sizes.compile_epochs))
    f = outcome.figures
    outcome.result += f"; compiling made epoch 1 {f['first_over_later']:.1f}x the later ones"
    return outcome


# --- c, e: bit-identical runs ---------------------------------------------------------------------
HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")


def train_once(ctx: Context, settings: dict, out: Path) -> dict:
    from .train import train_run

    return train_run(run_spec(ctx, **settings), Path(ctx.cifar), out, checkpoint_dir(out), use_dvclive=False)


def checkpoint_dir(out: Path) -> Path:
    return out.parent / f"{out.name}-ckpt"


def compare_runs(a: Path, b: Path) -> dict:
    """model.pt of two runs tensor by tensor (``torch.equal``), and their history.csv."""
    import torch

    from .checkpoint import load_plain

    sa, sb = (load_plain(d / "model.pt", "model file", "")["state_dict"] for d in (a, b))
    differ = sorted(k for k in sa.keys() | sb.keys() if k not in sa or k not in sb or not torch.equal(sa[k], sb[k]))
    diffs = [(sa[k].double() - sb[k].double()).abs().max().item() for k in differ
             if k in sa and k in sb and sa[k].shape == sb[k].shape and sa[k].numel()]
    ha, hb = read_history(a), read_history(b)
    same_history = [[r[c] for c in HISTORY_FIELDS] for r in ha] == [[r[c] for c in HISTORY_FIELDS] for r in hb]
    return {"tensors": len(sa), "tensors_differing": len(differ), "differing": differ[:10],
            "max_abs_diff": max(diffs, default=0.0), "history_identical": same_history, "epochs": len(ha)}


def identical_outcome(cmp: dict, result: str, figures: dict) -> Outcome:
    ok = cmp["tensors_differing"] == 0 and cmp["history_identical"]
    figure = (f"{cmp['tensors_differing']} of {cmp['tensors']} tensors differ"
              + (f" (max {cmp['max_abs_diff']:.3g})" if cmp["tensors_differing"] else "")
              + f"; history {'identical' if cmp['history_identical'] else 'differs'}")
    return Outcome(PASS if ok else FAIL, result, figure, {**cmp, **figures})


def check_deterministic(ctx: Context) -> Outcome:
    settings = {"variant": TRAIN_VARIANT, "recipe": "lab", "deterministic": True}
    runs = [Path(ctx.work) / "c" / name for name in ("first", "second")]
    summaries = [train_once(ctx, settings, out) for out in runs]
    s = summaries[0]
    result = (f"deterministic: true, twice in one process: {s['epochs']} epochs of {s['train_images']:,} images, "
              f"{s['precision']}, {s['memory_format']}, {ctx.cifar_data.split(' (')[0]}")
    return identical_outcome(compare_runs(*runs), result, {"device": s["device"], "data": ctx.cifar_data})


class _Stopped(BaseException):
    """Ends a training run right after a checkpoint, as a kill would (train_run cleans up and re-raises)."""


def train_until_checkpoint(ctx: Context, settings: dict, out: Path, epoch: int) -> None:
    """Train until epoch ``epoch``'s checkpoint is written, then stop, leaving it for a rerun."""
    from . import train as train_mod

    real_save = train_mod.save_checkpoint

    def save_then_stop(path, spec, done, *args, **kwargs):
        real_save(path, spec, done, *args, **kwargs)
        if done == epoch:
            raise _Stopped

    with mock.patch.object(train_mod, "save_checkpoint", save_then_stop):  # train_run calls it by this name
        try:
            train_once(ctx, settings, out)
        except _Stopped:
            return
    raise CheckFailed(f"the run to be stopped ended without writing epoch {epoch}'s checkpoint")


def check_resume(ctx: Context) -> Outcome:
    """Trained straight through, and stopped after epoch 1's checkpoint, here; resumed in a new
    process (as a killed job's rerun would be)."""
    settings = {"variant": TRAIN_VARIANT, "recipe": "fast", "ema": 0.99, "deterministic": True}
    base = Path(ctx.work) / "e"
    straight, resumed = base / "straight", base / "resumed"
    summary = train_once(ctx, settings, straight)
    train_until_checkpoint(ctx, settings, resumed, epoch=1)
    report, log_path = base / "resumed.json", Path(ctx.logs) / "e-resumed.log"
    cmd = worker_command("train", str(ctx.file), json.dumps(settings), str(resumed), "--report", str(report))
    rc = run_logged(cmd, worker_env(), log_path)
    if rc != 0:
        raise CheckFailed(f"the resumed run ended with status {rc}: {last_line(log_path)}")
    facts = json.loads(report.read_text())
    if facts.get("checkpoint_epoch") != 1 or not facts.get("checkpoint_matches") or facts.get("set_aside"):
        return Outcome(FAIL, f"the new process did not resume from epoch 1's checkpoint: {facts}", "—", facts)
    result = (f"stopped after epoch 1's checkpoint, resumed in a new process, against {summary['epochs']} epochs "
              f"straight; {summary['precision']}, EMA, {ctx.cifar_data.split(' (')[0]}")
    return identical_outcome(compare_runs(straight, resumed), result, {**facts, "device": summary["device"]})


def train_worker(ctx: Context, settings: dict, out: Path, report: Path | None) -> int:
    """One training run in this process; ``report`` receives what the checkpoint it started
    from held, and whether it was set aside as stale instead of resumed."""
    from .checkpoint import checkpoint_path, load_plain
    from .train import train_run

    spec = run_spec(ctx, **settings)
    ckpt_dir = checkpoint_dir(out)
    facts: dict = {"checkpoint_epoch": None}
    if checkpoint_path(ckpt_dir).exists():
        ckpt = load_plain(checkpoint_path(ckpt_dir), "checkpoint", "")
        facts.update(checkpoint_epoch=int(ckpt["epoch"]), checkpoint_device_kind=ckpt.get("device_kind"),
                     checkpoint_matches=ckpt.get("settings_hash") == spec.hash)
    train_run(spec, Path(ctx.cifar), out, ckpt_dir, use_dvclive=False)
    facts["set_aside"] = sorted(p.name for p in ckpt_dir.glob("stale-*.pt"))
    if report is not None:
        atomic_write_text(report, json.dumps(facts) + "\n")
    return 0


# --- d: the resized crop's two kernels ------------------------------------------------------------
def resample_on_boxes(kernel: str, device: torch.device, images: torch.Tensor, boxes: tuple, flips: torch.Tensor,
                      mean: torch.Tensor, std: torch.Tensor, min_scale: float) -> torch.Tensor:
    """``ResizedCropFlip(kernel=...).resample`` on ``device`` with the given crop boxes and flips;
    the batch comes back on the CPU."""
    import torch

    from . import augment

    aug = augment.ResizedCropFlip(min_scale, True, mean.to(device), std.to(device), kernel=kernel)
    if aug.kernel_for(device) != kernel:
        raise CheckFailed(f"the {kernel} kernel does not run on {device} here (it would be {aug.kernel_for(device)})")
    on = lambda t: t.to(device)  # noqa: E731
    return aug.resample(on(images), torch.arange(len(images), device=device), tuple(map(on, boxes)),
                        on(flips)).cpu()


def check_augment_kernels(ctx: Context) -> Outcome:
    import torch

    from .augment import crop_boxes
    from .train import normalization

    x, _, _ = packed.load_split(Path(ctx.butterflies), "train")
    images = torch.from_numpy(np.array(x[: ctx.sizes.aug_images])).permute(0, 3, 1, 2).contiguous()
    n, _, h, w = images.shape
    train = run_spec(ctx, AUG_VARIANT).train
    mean, std = normalization(train, torch.device("cpu"))
    scale = train.augment.min_scale
    boxes = crop_boxes(n, h, w, (scale, 1.0), torch.Generator().manual_seed(0), torch.device("cpu"))
    flips = torch.rand(n, generator=torch.Generator().manual_seed(1)) < 0.5
    dev = torch.device(ctx.device)
    gpu = resample_on_boxes("torch", dev, images, boxes, flips, mean, std, scale)
    cpu = resample_on_boxes("numba", torch.device("cpu"), images, boxes, flips, mean, std, scale)
    diff = (gpu - cpu).abs().max().item()
    figures = {"max_abs_diff": diff, "images": n, "image_size": [h, w], "min_scale": scale,
               "flipped": int(flips.sum()), "data": ctx.butterflies_data}
    result = (f"{n} images {h}x{w}, the same crop boxes; torch kernel on {dev.type}, numba on the CPU; "
              f"{ctx.butterflies_data.split(' (')[0]}")
    return Outcome(PASS if diff <= 1e-4 else FAIL, result, f"max abs diff {diff:.2g}", figures)


# --- f: GPU slots for two jobs --------------------------------------------------------------------
def claim_slot(devices: list[str] | None, lock_dir: Path, jobs_per_gpu: int) -> str | None:
    """The one call into cnnbench.gpus: a train job's claim (``assign_gpu``, which sets
    ``CUDA_VISIBLE_DEVICES``), with ``jobs_per_gpu`` slots per device."""
    from . import gpus

    return gpus.assign_gpu("cuda", devices=devices, lock_dir=lock_dir, jobs_per_gpu=jobs_per_gpu)


def gpus_share() -> bool:
    """Whether this cnnbench.gpus lets several jobs share a device (``jobs_per_gpu``)."""
    from . import gpus

    return "jobs_per_gpu" in inspect.signature(gpus.assign_gpu).parameters


def visible_gpus(ctx: Context) -> list[str]:
    """The devices cnnbench.gpus sees; on a CPU one pretend GPU (the claim is only lock files)."""
    from . import gpus

    return gpus.visible_devices() if ctx.device == "cuda" else ["0"]


def claim_worker(devices: list[str] | None, lock_dir: Path, jobs_per_gpu: int, result: Path, release: Path,
                 cuda: bool) -> int:
    """Claim a slot as a train job does, say which, hold it until ``release`` appears."""
    device = claim_slot(devices, lock_dir, jobs_per_gpu)
    facts = {"device": device, "pid": os.getpid(), "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if cuda:  # the id it was given is one CUDA understands
        import torch

        facts["cuda_devices"] = torch.cuda.device_count()
        facts["cuda_device_name"] = torch.cuda.get_device_name(0) if facts["cuda_devices"] else None
    atomic_write_text(result, json.dumps(facts) + "\n")
    wait_for(release)
    return 0


def check_gpu_claims(ctx: Context, jobs_per_gpu: int = 2, wait_s: float = 60.0) -> Outcome:
    if not gpus_share():
        raise CheckFailed("cnnbench.gpus.assign_gpu has no jobs_per_gpu keyword: GPU sharing is not in this version")
    base = Path(ctx.work) / "f"
    base.mkdir(parents=True, exist_ok=True)
    visible = visible_gpus(ctx)
    devices = None if ctx.device == "cuda" else visible
    results = [base / f"job{i}.json" for i in range(2)]
    logs = [Path(ctx.logs) / f"f-job{i}.log" for i in range(2)]
    args = [json.dumps(devices), str(base / "locks"), str(jobs_per_gpu)]
    procs = [start_logged(worker_command("claim", *args, str(res), str(base / "release"),
                                         "--cuda" if ctx.device == "cuda" else "--no-cuda"), worker_env(), lg)
             for res, lg in zip(results, logs)]
    try:
        wait_for_files(results, procs, logs, wait_s, f"two jobs claiming slots ({jobs_per_gpu} per GPU)")
        jobs = [json.loads(r.read_text()) for r in results]
    finally:
        (base / "release").touch()
        stop_all(procs, grace_s=10)
    return claims_outcome(jobs, visible, jobs_per_gpu, ctx.device == "cuda")


def claims_outcome(jobs: list[dict], visible: list[str], jobs_per_gpu: int, cuda: bool) -> Outcome:
    got = [j["device"] for j in jobs]
    figures = {"jobs": jobs, "visible_devices": visible, "jobs_per_gpu": jobs_per_gpu}
    result = f"2 jobs at once, jobs_per_gpu {jobs_per_gpu}, visible: {', '.join(visible) or 'none'}"
    if not visible:
        return Outcome(FAIL, f"{result}: cnnbench.gpus sees no GPU (CUDA_VISIBLE_DEVICES unset and nvidia-smi -L "
                             f"lists none)", "—", figures)
    if None in got:
        return Outcome(FAIL, f"{result}: a job was given no device (cnnbench.gpus claimed nothing)", "—", figures)
    if len(visible) == 1 and got[0] != got[1]:
        return Outcome(FAIL, f"{result}: one GPU, yet the jobs hold {got[0]} and {got[1]}", "—", figures)
    if cuda and any(not j.get("cuda_devices") for j in jobs):
        return Outcome(FAIL, f"{result}: a job sees no CUDA device with its CUDA_VISIBLE_DEVICES", "—", figures)
    return Outcome(PASS, result, f"both hold a slot: {got[0]}, {got[1]}", figures)


# --- g: concurrent jobs on one GPU ----------------------------------------------------------------
def engine_stepper(ctx: Context, spec, seed: int) -> tuple[Callable[[], None], torch.device]:
    """The study's own training step (Trainer.step on Batches, as bench times it) on the check's data."""
    import torch

    from .engine import DeviceData, Engine, configure_process, select_device
    from .train import Batches, build_trainer

    configure_process(spec.execution)
    device = select_device(spec.execution.device)
    x, y, classes = packed.load_split(Path(ctx.cifar), "train")
    n, bs = min(len(y), ctx.sizes.train_images), spec.train.batch_size
    engine = Engine(spec.execution, device)
    torch.manual_seed(seed)
    trainer = build_trainer(spec, len(classes), engine, max(1, n // bs))
    data = DeviceData(x[:n], y[:n], device)
    gen = torch.Generator(device=device).manual_seed(seed)
    batches = Batches(data, spec.train, engine, gen)
    trainer.model.train()

    def step() -> None:
        trainer.step(*batches(torch.randint(0, n, (bs,), device=device, generator=gen)))

    return step, device


def throughput_worker(ctx: Context, index: int, base: Path) -> int:
    """One of g's jobs: warm up, say so, wait for the common start, time steps for job_seconds."""
    from .bench import timed_windows

    spec = run_spec(ctx, TRAIN_VARIANT, "lab", precision="bf16", memory_format="channels_last", compile=False,
                    deterministic=False)
    step, device = engine_stepper(ctx, spec, seed=index)
    timed_windows(step, device, ctx.sizes.warmup_steps, 0, 0)  # untimed: cuDNN autotuning, the allocator
    (base / f"ready{index}").touch()
    wait_for(base / "go")
    start, steps, seconds = time.time(), 0, 0.0
    while seconds < ctx.sizes.job_seconds:
        seconds += timed_windows(step, device, 0, 1, 10)[0]
        steps += 10
    images = steps * spec.train.batch_size
    facts = {"images": images, "seconds": seconds, "images_per_s": images / seconds, "start": start,
             "end": time.time(), "device": str(device)}
    atomic_write_text(base / f"result{index}.json", json.dumps(facts) + "\n")
    return 0


def run_round(ctx: Context, jobs: int) -> dict:
    """``jobs`` training processes that start timing together; their total images/s."""
    base = Path(ctx.work) / "g" / f"jobs{jobs}"
    base.mkdir(parents=True, exist_ok=True)
    logs = [Path(ctx.logs) / f"g-{jobs}jobs-{i}.log" for i in range(jobs)]
    procs = [start_logged(worker_command("throughput", str(ctx.file), str(i), str(base)), worker_env(), lg)
             for i, lg in enumerate(logs)]
    try:
        wait_for_files([base / f"ready{i}" for i in range(jobs)], procs, logs, WAIT_S, f"{jobs} jobs warming up")
        (base / "go").touch()
        wait_for_files([base / f"result{i}.json" for i in range(jobs)], procs, logs,
                       ctx.sizes.job_seconds + WAIT_S, f"{jobs} jobs timing")
    finally:
        stop_all(procs, grace_s=10)
    per_job = [json.loads((base / f"result{i}.json").read_text()) for i in range(jobs)]
    return {"jobs": jobs, "images_per_s": sum(j["images_per_s"] for j in per_job), "per_job": per_job}


def check_concurrent_jobs(ctx: Context) -> Outcome:
    rounds = {n: run_round(ctx, n) for n in ctx.sizes.jobs}
    return throughput_outcome(rounds, ctx)


def throughput_outcome(rounds: dict[int, dict], ctx: Context) -> Outcome:
    one = rounds[1]["images_per_s"]
    figures = {"rounds": {str(n): r for n, r in rounds.items()}, "data": ctx.cifar_data,
               "batch_size": ctx.sizes.batch_size, "job_seconds": ctx.sizes.job_seconds}
    result = "; ".join(f"{n} job{'s' if n > 1 else ''}: {r['images_per_s']:,.0f} img/s" for n, r in rounds.items())
    figure = ", ".join(f"{n} jobs {r['images_per_s'] / one:.2f}x" for n, r in rounds.items() if n > 1)
    ok = rounds[2]["images_per_s"] >= one
    return Outcome(PASS if ok else FAIL, f"{result} (total, batch {ctx.sizes.batch_size})", figure + " of 1 job",
                   figures)


# --- h: the bench against the GPU targets ---------------------------------------------------------
EPOCH_BAR_S, SPEEDUP_BAR = 3.0, 5.0


def check_bench_targets(ctx: Context) -> Outcome:
    from . import bench
    from .config import load

    warmup, windows, steps = ctx.sizes.bench_timing
    report = bench.run_bench(
        load(ctx.params, profile=ctx.profile), variants=[BENCH_VARIANT], prepared_root=Path(ctx.data_root),
        raw_root=Path("data/raw"), out=Path(ctx.logs) / "h-bench.json", batch_size=None, warmup=warmup,
        windows=windows, steps=steps, workers=2, data_path=False, image_dir=None, device_name=ctx.device,
        recipe="lab", optimizer_impls=list(bench.OPTIMIZER_IMPLS))  # fused vs default: Engine.fused_optimizer's question
    return bench_outcome(report)


def bench_outcome(report: dict) -> Outcome:
    """h's verdict: one 50,000-image epoch within EPOCH_BAR_S, and at least SPEEDUP_BAR times the
    reference loop's images/s."""
    v = report["variants"][0]
    epoch_s, speedup = v["engine_seconds_per_50k_images"], v.get("speedup")
    figures = {"device": report["device"], "variant": v["variant"], "batch_size": v["batch_size"], "data": v["data"],
               "engine_images_per_s": v["engine_train_images_per_s"]["median"],
               "model_only_images_per_s": v.get("model_only_train_images_per_s", {}).get("median"),
               "reference_images_per_s": v.get("reference_train_images_per_s", {}).get("median"),
               "seconds_per_50k_images": epoch_s, "speedup": speedup, "engine": v.get("engine"),
               "images_per_s_by_optimizer": {k: r["median"] for k, r in
                                             v.get("engine_train_images_per_s_by_optimizer", {}).items()}}
    result = (f"{v['variant']}, batch {v['batch_size']}: engine {figures['engine_images_per_s']:,.0f} img/s, "
              f"reference {figures['reference_images_per_s'] or 0:,.0f} img/s; {v['data']}")
    figure = f"{epoch_s:.2f} s per 50k images; {speedup or 0:.1f}x the reference" + "".join(
        f"; {k} SGD {r:,.0f} img/s" for k, r in figures["images_per_s_by_optimizer"].items())
    ok = epoch_s <= EPOCH_BAR_S and speedup is not None and speedup >= SPEEDUP_BAR
    return Outcome(PASS if ok else FAIL, result, figure, figures)


# --- the checks, in the table's order and in the order they run -----------------------------------
CHECKS = (
    Check("a", "train: bf16, channels_last, EMA, live bar, sync debug", "0", 120, False, check_train_sync),
    Check("b", "the same with compile: true", "0", 240, False, check_train_compile),
    Check("c", "deterministic mode, trained twice", "0 tensors differ, same history", 120, True, check_deterministic),
    Check("d", "resized crop: torch kernel vs numba, same boxes", "max abs diff <= 1e-4", 60, True,
          check_augment_kernels),
    Check("e", "checkpoint resumed in a new process", "0 tensors differ, same history", 150, True, check_resume),
    Check("f", "GPU slots for two concurrent jobs", "both hold a slot at once", 60, True, check_gpu_claims),
    Check("g", "1, 2, 4 concurrent CIFAR jobs on one GPU", "2 jobs >= 1 job (img/s)", 180, False,
          check_concurrent_jobs),
    Check("h", "cnnbench bench: the GPU targets", f"<= {EPOCH_BAR_S:g} s per 50k; >= {SPEEDUP_BAR:g}x", 150, False,
          check_bench_targets),
)
CHECKS_BY_KEY = {c.key: c for c in CHECKS}
# Quick ones first, compilation (the least predictable time) last.
RUN_ORDER = "dfacehgb"


def parse_only(text: str | None) -> list[str]:
    """``--only a,c``: the keys of the checks to run (all when None)."""
    if text is None:
        return [c.key for c in CHECKS]
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in CHECKS_BY_KEY]
    if unknown or not keys:
        raise ConfigError(f"--only {text!r}: the checks are {', '.join(CHECKS_BY_KEY)} (comma-separated), "
                          f"not {', '.join(unknown) or 'nothing'}")
    return keys


# --- running the checks ---------------------------------------------------------------------------
def nvidia_smi(query: str) -> str | None:
    """One line of ``nvidia-smi --query-gpu=<query>`` for the first GPU, or None."""
    from .cuda_env import run_nvidia_smi

    out = (run_nvidia_smi([f"--query-gpu={query}", "--format=csv,noheader"]) or "").strip()
    return out.splitlines()[0].strip() if out else None


def cuda_problem() -> str | None:
    """Why CUDA cannot be used here, in one line (cnnbench.cuda_env's diagnosis); None when it can."""
    from .cuda_env import cuda_unavailable_reason

    reason = cuda_unavailable_reason()
    if reason is None:
        return None
    import torch

    return (f"{reason} (torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'}); "
            f"`scripts/gpu-check.sh --device cpu` runs the checks that need no GPU")


def kill_group(proc: subprocess.Popen) -> None:
    """End a check's process and whatever it started (its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_isolated(check: Check, ctx: Context, timeout: float) -> Outcome:
    """``check`` in a process of its own (its own process group), killed after ``timeout`` seconds."""
    result = Path(ctx.work) / f"result-{check.key}.json"
    log_path = Path(ctx.logs) / f"{check.key}.log"
    cmd = worker_command("check", check.key, str(ctx.file), str(result))
    with open(log_path, "wb") as sink:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                                env=worker_env(), start_new_session=True)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        return Outcome(FAIL, f"killed after {round(timeout, 1):g} s, its budget; last output: {last_line(log_path)}")
    finally:
        kill_group(proc)  # anything it left running (compile workers, a stuck child)
    if result.is_file():
        return Outcome(**json.loads(result.read_text()))
    return Outcome(FAIL, f"its process ended with status {rc} and no result: {last_line(log_path)}")


def check_main(key: str, ctx_file: Path, result: Path) -> int:
    """In a check's own process: run it; any failure becomes a FAIL with its reason (traceback in the log)."""
    ctx = Context.load(ctx_file)
    try:
        outcome = CHECKS_BY_KEY[key].run(ctx)
    except CheckFailed as err:
        outcome = Outcome(FAIL, str(err))
    except Exception as err:  # noqa: BLE001 - reported in the table; the traceback goes to the check's log
        traceback.print_exc()
        outcome = Outcome(FAIL, f"{type(err).__name__}: {first_line(err)}")
    atomic_write_text(result, json.dumps(dataclasses.asdict(outcome), indent=2, default=str) + "\n")
    return 0


def run_checks(ctx: Context, keys: list[str], started: float, time_limit: float) -> list[dict]:
    rows = []
    for check in (CHECKS_BY_KEY[k] for k in RUN_ORDER if k in keys):
        left = time_limit - (time.monotonic() - started)
        t0 = time.monotonic()
        if ctx.device == "cpu" and not check.on_cpu:
            outcome = Outcome(NEEDS_CUDA, "not run: needs CUDA")
        elif left < MIN_CHECK_S:
            outcome = Outcome(FAIL, f"not run: the time limit of {time_limit:.0f} s was spent")
        else:
            log.info("gpu-check %s: %s (budget %d s)", check.key, check.title, min(check.budget_s, left))
            outcome = run_isolated(check, ctx, min(check.budget_s, left))
            log.info("gpu-check %s: %s in %.1f s: %s", check.key, outcome.verdict, time.monotonic() - t0,
                     outcome.figure if outcome.verdict == PASS else outcome.result)
        rows.append({"key": check.key, "title": check.title, "bar": check.bar, "budget_s": check.budget_s,
                     "seconds": round(time.monotonic() - t0, 2), **dataclasses.asdict(outcome)})
    return sorted(rows, key=lambda r: r["key"])


def gpu_check(*, device: str, params: Path, profile: str | None, out: Path, data_root: Path, only: str | None = None,
              synthetic: bool = False, keep_work: bool = False, time_limit: float = DEFAULT_TIME_LIMIT_S) -> dict:
    """Run the checks (see the module docstring); write table.md, gpu-check.json and logs/ into ``out``."""
    started = time.monotonic()
    keys = parse_only(only)
    if device == "cuda":
        problem = cuda_problem()
        if problem:
            raise CudaUnavailable(problem)
    logs = out / "logs"
    shutil.rmtree(logs, ignore_errors=True)  # an earlier run's logs would read as this one's
    logs.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="cnnbench-gpu-check-"))
    try:
        ctx = make_context(device, params, profile or DEFAULT_PROFILE[device], data_root, work, logs, synthetic)
        rows = run_checks(ctx, keys, started, time_limit)
    finally:
        if keep_work:
            log.info("gpu-check: scratch folder kept: %s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report = build_report(ctx, rows, time.monotonic() - started, time_limit)
    atomic_write_text(out / "gpu-check.json", json.dumps(report, indent=2, default=str) + "\n")
    atomic_write_text(out / "table.md", format_report(report) + "\n")
    return report


def build_report(ctx: Context, rows: list[dict], seconds: float, time_limit: float) -> dict:
    import torch

    cuda = ctx.device == "cuda"
    total = {"key": "total", "title": "wall time of the whole check", "bar": f"< {TOTAL_BAR_S} s",
             "result": f"{sum(r['verdict'] != NEEDS_CUDA for r in rows)} checks run", "figure": f"{seconds:.0f} s",
             "figures": {"seconds": seconds, "time_limit_s": time_limit},
             "verdict": (PASS if seconds < TOTAL_BAR_S else FAIL) if cuda else NEEDS_CUDA}
    command = shlex.join(["cnnbench", *sys.argv[1:]]) if Path(sys.argv[0]).name == "cnnbench" else None
    return {"command": command, "date": _dt.datetime.now().isoformat(timespec="seconds"), "device": ctx.device,
            "gpu": nvidia_smi("name,memory.total,driver_version") if cuda else None,
            "torch": torch.__version__, "torch_cuda": torch.version.cuda, "cnnbench": __version__,
            "profile": ctx.profile, "data": {"cifar10": ctx.cifar_data, "butterflies": ctx.butterflies_data},
            "sizes": dataclasses.asdict(ctx.sizes), "total_seconds": seconds, "checks": rows + [total]}


def format_report(report: dict) -> str:
    """The header lines and one Markdown table: check, result, figure, bar, verdict."""
    where = report["gpu"] or ("CUDA" if report["device"] == "cuda" else "the CPU (tiny sizes; GPU checks not run)")
    lines = [f"GPU check on {where}: torch {report['torch']} (CUDA {report['torch_cuda'] or 'none'}), "
             f"profile {report['profile']}, {report['total_seconds']:.0f} s, {report['date']}",
             f"data: cifar10 {report['data']['cifar10']}; butterflies {report['data']['butterflies']}", ""]
    cells = [["check", "result", "figure", "bar", "verdict"]]
    for r in report["checks"]:
        name = r["title"] if r["key"] == "total" else f"{r['key']}. {r['title']}"
        cells.append([c.replace("|", "\\|") for c in (name, r["result"], r["figure"], r["bar"], r["verdict"])])
    widths = [max(len(row[i]) for row in cells) for i in range(5)]
    fmt = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"  # noqa: E731
    lines += [fmt(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(fmt, cells[1:])]
    return "\n".join(lines)


# --- the worker processes -------------------------------------------------------------------------
def worker_main(argv: list[str]) -> int:
    """``python -m cnnbench.gpucheck <role> ...``: a check's process, or a process a check starts."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cnnbench.gpucheck",
                                     description="internal: see `cnnbench gpu-check`")
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("check")
    p.add_argument("key"), p.add_argument("context", type=Path), p.add_argument("result", type=Path)
    p = sub.add_parser("train")
    p.add_argument("context", type=Path), p.add_argument("settings", type=json.loads), p.add_argument("out", type=Path)
    p.add_argument("--report", type=Path)
    p = sub.add_parser("claim")
    for name in ("devices", "lock_dir", "jobs_per_gpu", "result", "release"):
        p.add_argument(name)
    p.add_argument("--cuda", action=argparse.BooleanOptionalAction, default=False)
    p = sub.add_parser("throughput")
    p.add_argument("context", type=Path), p.add_argument("index", type=int), p.add_argument("base", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
    if args.role == "check":
        return check_main(args.key, args.context, args.result)
    if args.role == "train":
        return train_worker(Context.load(args.context), args.settings, args.out, args.report)
    if args.role == "claim":
        return claim_worker(json.loads(args.devices), Path(args.lock_dir), int(args.jobs_per_gpu), Path(args.result),
                            Path(args.release), args.cuda)
    return throughput_worker(Context.load(args.context), args.index, args.base)


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
