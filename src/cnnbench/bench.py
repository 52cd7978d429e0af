"""`cnnbench bench`: the engine against the lab reports' training loop, on whatever device is here.

Four measurements, each the median of several timed windows after a warm-up:

1. training images/s per variant with the engine (packed uint8 data on the device, batched
   augmentation, bf16 + channels_last on CUDA);
2. the same model, batch size and recipe through a reference loop written as the lab reports
   did (torchvision PIL transforms, ``DataLoader(num_workers=2)``, fp32, NCHW), run in a Python
   process of its own as their scripts were; the ratio engine / reference is the headline;
3. the data path alone on the butterfly images: batches/s from the packed store with on-device
   augmentation against ``ImageFolder`` + PIL transforms decoding the JPEGs (also in a process
   of its own);
4. evaluation images/s.

``--accuracy`` instead trains variants for a fixed number of epochs over several seeds and
reports test accuracy (the "accuracy under a budget" comparison of the lab and fast recipes).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import statistics
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from .atomic import atomic_write_text
from .augment import ResizedCropFlip, augment_batch, make_augmenter
from .config import Config, run_dir
from .data import packed
from .engine import DeviceData, Engine, allocator_state, configure_process, describe_device, select_device
from .errors import DataError
from .models import build_model
from .results import read_history
from .spec import NormalizeSpec, RunSpec, TrainSpec
from .train import Batches, build_optimizer, build_trainer, normalization, optimizer_impl, predict

log = logging.getLogger("cnnbench.bench")


# --- timing -----------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_windows(step: Callable[[], None], device: torch.device, warmup: int, windows: int,
                  steps: int) -> list[float]:
    """Seconds per window of ``steps`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    _sync(device)
    out = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def rate(windows: list[float], items_per_window: int) -> dict:
    rates = [items_per_window / w for w in windows]
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "windows": len(rates)}


# --- data ---------------------------------------------------------------------------------------------
def train_arrays(cfg: Config, dataset: str, prepared_root: Path, n_synthetic: int) -> tuple[np.ndarray, np.ndarray, str]:
    """The real packed train split when it is prepared here, else synthetic data of the right shape."""
    prepared = Path(prepared_root) / dataset
    if (prepared / "train_images.npy").is_file():
        x, y, _ = packed.load_split(prepared, "train")
        return np.asarray(x), np.asarray(y), f"{prepared} (real, {len(y)} images)"
    info = cfg.describe_dataset(dataset)
    size, classes = info.image_size, info.num_classes or 10
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n_synthetic, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, classes, size=n_synthetic).astype(np.int64)
    return x, y, f"synthetic {n_synthetic}x{size}x{size}x3 uint8 (no prepared data at {prepared})"


class PILDataset(torch.utils.data.Dataset):
    """uint8 arrays served image by image through PIL and torchvision transforms (the reports' way)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def reference_transform(train: TrainSpec, size: int):
    from torchvision import transforms as T

    aug, norm = train.augment, train.normalize
    if aug.crop == "resized":
        crop = [T.RandomResizedCrop(size, scale=(aug.min_scale, 1.0))]
    else:
        crop = [T.RandomCrop(size, padding=aug.crop_padding)] if aug.crop_padding else []
    flip = [T.RandomHorizontalFlip()] if aug.flip else []
    return T.Compose(crop + flip + [T.ToTensor(), T.Normalize(list(norm.mean), list(norm.std))])


def endless(loader) -> Iterator:
    while True:
        yield from loader


def num_classes(cfg: Config, dataset: str, labels: np.ndarray) -> int:
    """The data set's classes as its kind knows them, else as many as the labels show."""
    return cfg.describe_dataset(dataset).num_classes or int(labels.max()) + 1


# --- the reference loop, in a process of its own ------------------------------------------------------
def reference_rate(cfg: Config, spec: RunSpec, prepared_root: Path, *, warmup: int, windows: int, steps: int,
                   workers: int, num_threads: int) -> dict:
    """Training images/s of the lab reports' loop: the same model, batch and optimizer settings,
    torchvision PIL transforms, ``DataLoader(num_workers=workers)``, fp32, NCHW, torch's default SGD."""
    torch.set_num_threads(num_threads)  # as many CPU threads as the engine had
    dev = torch.device(spec.execution.device)
    settings, batch_size = spec.train, spec.train.batch_size
    x_np, y_np, _ = train_arrays(cfg, spec.dataset, prepared_root, n_synthetic=max(4 * batch_size, 1024))
    criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    torch.manual_seed(0)
    model = build_model(spec.model, num_classes(cfg, spec.dataset, y_np), **spec.model_args).to(dev)
    opt = build_optimizer(model, settings.optimizer)
    loader = torch.utils.data.DataLoader(
        PILDataset(x_np, y_np, reference_transform(settings, x_np.shape[1])), batch_size=batch_size, shuffle=True,
        num_workers=workers, drop_last=True, persistent_workers=workers > 0, pin_memory=dev.type == "cuda",
    )
    batches = endless(loader)

    def step() -> None:
        x, y = next(batches)
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        loss = criterion(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    return {"rate": rate(timed_windows(step, dev, warmup, windows, steps), steps * batch_size),
            "optimizer": optimizer_impl(opt), "allocator": allocator_state()}


def _child(conn, fn: Callable, args: tuple, kwargs: dict) -> None:
    import multiprocessing as mp

    # A spawned child inherits "spawn" as its start method; a script of its own has the platform's
    # default (fork on Linux), and that is what its DataLoader workers must start with.
    mp.set_start_method(None, force=True)
    try:
        conn.send(("ok", fn(*args, **kwargs)))
    except BaseException as err:  # noqa: BLE001 - everything goes back to the parent
        import traceback

        conn.send(("error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))
    finally:
        conn.close()


def in_fresh_process(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` in a new Python process, as if run as a script of its own (spawned:
    nothing of this one carried over; the platform's default start method for any processes it
    starts); its return value, or a RuntimeError with the child's traceback."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn, args, kwargs), name=f"cnnbench-{fn.__name__}")
    proc.start()
    send.close()
    try:
        status, value = recv.recv()
    except EOFError:
        proc.join()
        raise RuntimeError(f"{fn.__name__} in its own process ended without an answer "
                           f"(exit code {proc.exitcode})") from None
    finally:
        recv.close()
    proc.join()
    if status != "ok":
        raise RuntimeError(f"{fn.__name__} failed in its own process: {value}")
    return value


# --- 1, 2, 4: training and evaluation throughput ----------------------------------------------------------
def bench_spec(cfg: Config, name: str, recipe: str | None, device: torch.device, batch_size: int | None) -> RunSpec:
    """The run the bench measures: the variant under ``recipe``, its execution resolved for
    ``device``, with the batch size of ``--batch-size`` when given."""
    spec = cfg.run(name, recipe, device=str(device))
    if batch_size:
        spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, batch_size=batch_size))
    return dataclasses.replace(spec, train=timed_settings(spec.train))


def timed_settings(train: TrainSpec) -> TrainSpec:
    """``train`` as bench times it: the normalisation's values change no timing, so a run that takes
    them from its training split (``normalize`` unset) is timed with mean and std 0.5."""
    if train.normalize is not None:
        return train
    return dataclasses.replace(train, normalize=NormalizeSpec(mean=(0.5,) * 3, std=(0.5,) * 3))


def bench_variant(cfg: Config, name: str, prepared_root: Path, *, batch_size: int | None, warmup: int,
                  windows: int, steps: int, workers: int, device: torch.device, reference: bool = True,
                  recipe: str | None = None, optimizer_impls: list[str] | None = None) -> dict:
    spec = bench_spec(cfg, name, recipe, device, batch_size)
    # This process's settings for this run, both ways: a deterministic run timed earlier in the same
    # process (bench --accuracy, the GPU check) must not slow this one down.
    configure_process(dataclasses.replace(spec.execution, deterministic=False))
    settings, bs = spec.train, spec.train.batch_size
    x_np, y_np, source = train_arrays(cfg, spec.dataset, prepared_root, n_synthetic=max(4 * bs, 1024))
    classes = num_classes(cfg, spec.dataset, y_np)
    size = x_np.shape[1]
    result = {"variant": name, "model": spec.model, "recipe": spec.recipe, "batch_size": bs,
              "data": source, "image_size": size}

    # Engine: the study's own step (Trainer.step: forward, loss, backward, optimizer, schedule, EMA)
    # on the study's own batches.
    engine = Engine(spec.execution, device)
    torch.manual_seed(0)
    trainer = build_trainer(spec, classes, engine, steps_per_epoch=max(1, len(y_np) // bs))
    model = trainer.model
    data = DeviceData(x_np, y_np, device)
    gen = torch.Generator(device=device).manual_seed(0)
    batches = Batches(data, settings, engine, gen)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        return batches(torch.randint(0, len(data), (bs,), device=device, generator=gen))

    def engine_step() -> None:
        trainer.step(*batch())

    model.train()
    result["engine_train_images_per_s"] = rate(timed_windows(engine_step, device, warmup, windows, steps), steps * bs)
    # What one CIFAR-10-sized epoch (50,000 images) takes at the median rate.
    result["engine_seconds_per_50k_images"] = 50_000 / result["engine_train_images_per_s"]["median"]
    result["engine"] = {"precision": engine.precision, "channels_last": engine.channels_last, "compile": engine.compile,
                        "optimizer": optimizer_impl(trainer.optimizer), "allocator": engine.allocator}

    # The ceiling: the same engine steps on one fixed, already augmented batch (no data work at all).
    # Engine close to it = the data path costs nothing and the model's own compute sets the speed.
    if optimizer_impls:
        result["engine_train_images_per_s_by_optimizer"] = time_optimizer_impls(
            spec, classes, device, batch, optimizer_impls, warmup=warmup, windows=windows, steps=steps)
    x0, y0 = (t.clone() for t in batch())  # the batch buffer is reused: keep a copy of this one
    result["model_only_train_images_per_s"] = rate(timed_windows(lambda: trainer.step(x0, y0), device, warmup,
                                                                  windows, steps), steps * bs)
    mean, std = batches.mean, batches.std

    # Evaluation throughput (engine path, no augmentation)
    eval_n = min(len(data), 8 * settings.eval_batch_size)
    eval_data = DeviceData(x_np[:eval_n], y_np[:eval_n], device)
    t = timed_windows(lambda: predict(model, eval_data, mean, std, settings.eval_batch_size, engine,
                                      settings.tta_flip), device, 1, windows, 1)
    result["eval_images_per_s"] = rate(t, eval_n)

    # Reference loop: PIL transforms, DataLoader workers, fp32, NCHW; a script of its own, as the
    # lab reports ran it (a fresh process: none of the engine's process settings, torch's defaults).
    if reference:
        ref = in_fresh_process(reference_rate, cfg, spec, prepared_root, warmup=warmup, windows=windows,
                               steps=steps, workers=workers, num_threads=torch.get_num_threads())
        result["reference_train_images_per_s"] = ref["rate"]
        result["speedup"] = result["engine_train_images_per_s"]["median"] / ref["rate"]["median"]
        result["reference"] = {"precision": "fp32", "channels_last": False, "num_workers": workers,
                               "optimizer": ref["optimizer"], "process": "its own (spawned)",
                               "allocator": ref["allocator"]}
    return result


OPTIMIZER_IMPLS = ("fused", "default")


def time_optimizer_impls(spec: RunSpec, classes: int, device: torch.device, batch: Callable, impls: list[str], *,
                         warmup: int, windows: int, steps: int) -> dict:
    """Engine images/s with each optimizer implementation: torch's fused single-kernel step and
    its default (foreach) one, same model and batches. What decides ``Engine.fused_optimizer``."""
    rates = {}
    for impl in impls:
        engine = Engine(spec.execution, device, fused_optimizer=impl == "fused")
        torch.manual_seed(0)
        trainer = build_trainer(spec, classes, engine, steps_per_epoch=1000)
        trainer.model.train()
        rates[optimizer_impl(trainer.optimizer)] = rate(
            timed_windows(lambda: trainer.step(*batch()), device, warmup, windows, steps),
            steps * spec.train.batch_size)
    return rates


# --- 3: the data path on JPEGs -------------------------------------------------------------------------
def extract_split(zip_path: Path, split: str, dest: Path, limit_per_class: int | None = None) -> Path:
    """Extract ``<split>/<class>/*.jpg`` of the Kaggle zip into ``dest`` (for ImageFolder)."""
    from .data.butterflies import check_archive_members

    counts: dict[str, int] = {}
    with zipfile.ZipFile(zip_path) as zf:
        check_archive_members(zf, zip_path, max_uncompressed_bytes=2**40)
        for info in zf.infolist():
            parts = Path(info.filename).parts
            if info.is_dir() or len(parts) < 3 or parts[-3] != split or not info.filename.lower().endswith(".jpg"):
                continue
            cls = parts[-2]
            if limit_per_class is not None and counts.get(cls, 0) >= limit_per_class:
                continue
            counts[cls] = counts.get(cls, 0) + 1
            target = dest / split / cls / parts[-1]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(info))
    if not counts:
        raise DataError(f"{zip_path} has no {split}/<class>/*.jpg members")
    return dest / split


BUTTERFLY_SIZE = 224  # the JPEGs' own size: both data paths produce the same 224x224 training batches


def imagefolder_rate(settings: TrainSpec, image_dir: Path, *, batch_size: int, warmup: int, windows: int, steps: int,
                     workers: int, device: str, num_threads: int) -> dict:
    """Batches/s of ``ImageFolder`` + PIL transforms through ``DataLoader(num_workers=workers)``,
    each batch moved to ``device`` (run it in its own process, as a lab report's script would)."""
    from torchvision.datasets import ImageFolder

    torch.set_num_threads(num_threads)
    dev = torch.device(device)
    folder = ImageFolder(str(image_dir), transform=reference_transform(settings, BUTTERFLY_SIZE))
    loader = torch.utils.data.DataLoader(folder, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=workers > 0)
    batches = endless(loader)

    def step() -> None:
        x, _ = next(batches)
        x.to(dev)

    return rate(timed_windows(step, dev, warmup, windows, steps), steps)


def bench_data_path(cfg: Config, image_dir: Path, *, batch_size: int, warmup: int, windows: int, steps: int,
                    workers: int, device: torch.device, tiles: list[int] | None = None) -> dict:
    """Batches/s: packed uint8 store + on-device augmentation vs ImageFolder + PIL transforms.

    The packed path uses the resized crop's default kernel for the device (numba on the CPU); when
    that is not the torch one, the torch kernel is timed too. ``tiles``: also time the torch kernel
    with these many images per tile (``ResizedCropFlip(tile=...)``), to choose
    ``augment.CPU_TILE_BYTES`` for a CPU."""
    from PIL import Image
    from torchvision.datasets import ImageFolder

    settings = timed_settings(cfg.run(cfg.variants_of(data_path_dataset(cfg))[0], device=str(device)).train)
    size = BUTTERFLY_SIZE
    jpeg = in_fresh_process(imagefolder_rate, settings, image_dir, batch_size=batch_size, warmup=warmup,
                            windows=windows, steps=steps, workers=workers, device=str(device),
                            num_threads=torch.get_num_threads())

    # The packed store holds the same images decoded once (what `cnnbench preprocess` writes).
    folder = ImageFolder(str(image_dir))
    arrays = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size))) for p, _ in folder.samples])
    labels = np.array([c for _, c in folder.samples])
    data = DeviceData(arrays, labels, device)
    mean, std = normalization(settings, device)
    gen = torch.Generator(device=device).manual_seed(0)
    aug = settings.augment
    augmenter = make_augmenter(aug, mean, std)
    batch = torch.empty(batch_size, 3, size, size, device=device) if augmenter else None  # reused, as in training

    def packed_rate(resized: ResizedCropFlip | None) -> dict:
        def packed_step() -> None:
            idx = torch.randint(0, len(data), (batch_size,), device=device, generator=gen)
            augment_batch(data.images, idx, aug, mean, std, gen, resized, out=batch)

        return rate(timed_windows(packed_step, device, warmup, windows, steps), steps)

    store = packed_rate(augmenter)
    result = {"images": len(labels), "image_size": size, "batch_size": batch_size, "num_workers": workers,
              "imagefolder_batches_per_s": jpeg, "packed_batches_per_s": store,
              "speedup": store["median"] / jpeg["median"], "augment": dataclasses.asdict(aug),
              "packed_allocator": allocator_state(), "imagefolder_process": "its own (spawned)"}
    if augmenter is not None:
        result["kernel"] = augmenter.kernel_for(device)
        torch_kernel = make_augmenter(aug, mean, std, kernel="torch")
        result["tile"] = torch_kernel.tile_size(batch_size, data.images[0].numel(), device)
        if result["kernel"] != "torch":
            result["packed_batches_per_s_torch_kernel"] = packed_rate(torch_kernel)
        if tiles:
            result["packed_batches_per_s_by_tile"] = {
                str(k): packed_rate(make_augmenter(aug, mean, std, tile=k, kernel="torch")) for k in tiles}
    return result


# --- accuracy under a budget ----------------------------------------------------------------------------------
def bench_accuracy(cfg: Config, names: list[str], prepared_root: Path, *, epochs: int, seeds: list[int],
                   work_dir: Path, recipes: list[str] | None = None) -> dict:
    """Train each variant under each recipe for ``epochs`` epochs per seed; test top-1 per run and
    the mean per (variant, recipe), keyed ``<variant>/<recipe>``."""
    from .evaluate import evaluate_variant
    from .train import train_variant

    recipes = recipes or cfg.recipes
    runs = []
    for name in names:
        for recipe in recipes:
            for seed in seeds:
                c = copy.deepcopy(cfg)
                dataset = c.variant(name)["dataset"]
                c.raw["variants"][dataset][name[len(dataset) + 1:]].setdefault("train", {})["epochs"] = epochs
                c.raw["profiles"][c.profile].get("train", {}).pop("epochs", None)  # the benchmark sets it
                out = run_dir(work_dir, name, recipe, seed)
                t0 = time.perf_counter()
                summary = train_variant(c, name, Path(prepared_root) / dataset, out, out / "ckpt",
                                        use_dvclive=False, recipe=recipe, seed=seed)
                metrics = evaluate_variant(c, name, Path(prepared_root) / dataset, out, recipe=recipe, seed=seed)
                val = read_history(out / "history.csv", name)["val_acc"].iloc[-1]
                runs.append({"variant": name, "recipe": recipe, "seed": seed, "epochs": epochs,
                             "test_top1": metrics["test_top1"], "val_top1": float(val),
                             "seconds": time.perf_counter() - t0,
                             "device": summary["device"], "precision": summary["precision"]})
                log.info("%s %s seed %d: test top-1 %.4f", name, recipe, seed, metrics["test_top1"])
    def means(key: str) -> dict:
        return {f"{n}/{r}": statistics.mean(x[key] for x in runs if (x["variant"], x["recipe"]) == (n, r))
                for n in names for r in recipes}

    # val_top1 (final epoch, on the validation hold-out) is what to compare when choosing settings;
    # test_top1 is what to report.
    return {"epochs": epochs, "seeds": seeds, "recipes": recipes, "runs": runs,
            "mean_test_top1": means("test_top1"), "mean_val_top1": means("val_top1")}


def data_path_dataset(cfg: Config) -> str:
    """The data set whose archive the data-path comparison decodes: the study's one with the
    largest images (where decoding JPEGs every epoch costs most), the first of those."""
    return max(cfg.datasets, key=lambda d: cfg.describe_dataset(d).image_size)


# --- the command ------------------------------------------------------------------------------------------------
def run_bench(cfg: Config, *, variants: list[str], prepared_root: Path, raw_root: Path, out: Path,
              batch_size: int | None, warmup: int, windows: int, steps: int, workers: int,
              data_path: bool, image_dir: Path | None, device_name: str | None, recipe: str | None = None,
              tiles: list[int] | None = None, optimizer_impls: list[str] | None = None) -> dict:
    # The device at hand unless --device names one; the engine's settings are resolved for it.
    device = select_device(device_name or ("cuda" if torch.cuda.is_available() else "cpu"))
    configure_process(dataclasses.replace(cfg.run(variants[0], recipe, device=str(device)).execution,
                                          deterministic=False))
    report = {"device": describe_device(device), "torch_version": torch.__version__, "profile": cfg.profile,
              "timing": {"warmup_steps": warmup, "windows": windows, "steps_per_window": steps}, "variants": []}
    for name in variants:
        log.info("benchmarking %s on %s", name, report["device"])
        report["variants"].append(bench_variant(cfg, name, prepared_root, batch_size=batch_size, warmup=warmup,
                                                windows=windows, steps=steps, workers=workers, device=device,
                                                recipe=recipe, optimizer_impls=optimizer_impls))
    if data_path:
        with tempfile.TemporaryDirectory(prefix="cnnbench-bench-") as tmp:
            if image_dir is None:
                dataset = data_path_dataset(cfg)
                zip_path = Path(raw_root) / dataset / cfg.source_settings(dataset).get("filename", "")
                if not zip_path.is_file() or not zipfile.is_zipfile(zip_path):
                    raise DataError(f"{zip_path}: not a downloaded zip of JPEG folders; run `cnnbench download "
                                    f"--dataset {dataset}` first, or pass --images DIR (an ImageFolder tree) or "
                                    "--no-data-path")
                image_dir = extract_split(zip_path, "train", Path(tmp))
            report["data_path"] = bench_data_path(cfg, image_dir, batch_size=batch_size or 64, warmup=warmup,
                                                  windows=windows, steps=steps, workers=workers, device=device,
                                                  tiles=tiles)
    atomic_write_text(out, json.dumps(report, indent=2) + "\n")
    return report


def format_report(report: dict) -> str:
    lines = [f"device: {report['device']} · torch {report['torch_version']}"]
    head = f"{'variant':34} {'batch':>5} {'engine img/s':>13} {'reference img/s':>16} {'ratio':>6} {'eval img/s':>11}"
    lines += [head, "-" * len(head)]
    for r in report["variants"]:
        ref = r.get("reference_train_images_per_s", {}).get("median")
        ref_text = f"{ref:.1f}" if ref else "—"
        ratio_text = f"{r['speedup']:.2f}x" if ref else "—"
        lines.append(
            f"{r['variant']:34} {r['batch_size']:>5} {r['engine_train_images_per_s']['median']:>13.1f} "
            f"{ref_text:>16} {ratio_text:>6} {r['eval_images_per_s']['median']:>11.1f}"
        )
        ceiling = r.get("model_only_train_images_per_s", {}).get("median")
        if ceiling:
            lines.append(f"  model alone (one fixed batch, no data work): {ceiling:.1f} img/s; "
                         f"the engine reaches {r['engine_train_images_per_s']['median'] / ceiling:.0%} of it"
                         + (f", so engine/reference cannot exceed {ceiling / ref:.2f}x here" if ref else ""))
        by_opt = r.get("engine_train_images_per_s_by_optimizer", {})
        if by_opt:
            lines.append("  optimizer step: " + ", ".join(f"{k} {v['median']:.1f} img/s" for k, v in by_opt.items()))
        lines.append(f"  data: {r['data']}; engine: {r['engine']['precision']}"
                     f"{', channels_last' if r['engine']['channels_last'] else ''}"
                     f"{', compiled' if r['engine']['compile'] else ''}; "
                     f"{r['engine_seconds_per_50k_images']:.1f} s per 50,000 training images at the median rate")
    if "data_path" in report:
        d = report["data_path"]
        lines.append(
            f"data path ({d['images']} butterfly JPEGs, {d['image_size']} px, batch {d['batch_size']}): "
            f"packed store {d['packed_batches_per_s']['median']:.1f} batches/s vs ImageFolder+PIL "
            f"{d['imagefolder_batches_per_s']['median']:.2f} batches/s ({d['num_workers']} workers): "
            f"{d['speedup']:.1f}x" + (f" (resized crop: {d['kernel']} kernel)" if "kernel" in d else "")
        )
        if "packed_batches_per_s_torch_kernel" in d:
            lines.append(f"  packed store, torch kernel (tiles of {d['tile']} images): "
                         f"{d['packed_batches_per_s_torch_kernel']['median']:.1f} batches/s")
        for k, r in d.get("packed_batches_per_s_by_tile", {}).items():
            lines.append(f"  packed store, torch kernel in tiles of {k} images: {r['median']:.1f} batches/s")
    return "\n".join(lines)
