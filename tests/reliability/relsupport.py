"""Shared helpers of the reliability suite: project copies, the CLI, run paths, fault hooks.

Everything that knows the layout of a run (where a variant's run directory and checkpoint
live, how a variant is looked up in params.yaml, which CLI options name one run, which
Snakemake target and DVC stage train it) sits in the first block, so a change of layout
(e.g. ``results/runs/<variant>/<recipe>/seed<k>/``, variants grouped by data set) is a
change here only.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MIRROR = REPO.parent / "shared" / "data" / "mirror"
FAULT_HOOK_DIR = Path(__file__).resolve().parent / "faulthook"
MIRROR_ENV = "CNNBENCH_DATA_MIRROR"

# The small variant every training case uses.
VARIANT = "cifar10-resnet18_small_stem_3stage"


# --- the layout of runs and of params.yaml (adapt here when it changes) ---------------------
# A run is one (variant, recipe, seed); the suite uses the first recipe and seed of the study.
RECIPE, SEED = "lab", 0


def _split(variant: str) -> tuple[str, str]:
    dataset, name = variant.split("-", 1)
    return dataset, name


def run_dir(root: Path, variant: str = VARIANT) -> Path:
    """The directory of one training run (model.pt, history.csv, train.json, metrics.json)."""
    return Path(root) / "results" / "runs" / variant / RECIPE / f"seed{SEED}"


def checkpoint_dir(root: Path, variant: str = VARIANT) -> Path:
    """Where `cnnbench train` keeps the per-epoch checkpoint of that run by default."""
    return Path(root) / "results" / ".checkpoints" / variant / RECIPE / f"seed{SEED}"


def run_args(variant: str = VARIANT) -> list[str]:
    """CLI options that select one run for `cnnbench train` / `cnnbench evaluate`."""
    return ["--variant", variant, "--recipe", RECIPE, "--seed", str(SEED)]


def variant_spec(doc: dict, variant: str = VARIANT) -> dict:
    """The params.yaml entry of a variant (a parsed document, edited in place by callers)."""
    dataset, name = _split(variant)
    return doc["variants"][dataset][name]


def variant_key(variant: str = VARIANT) -> str:
    """The key path of a variant's entry, as config errors name it."""
    dataset, name = _split(variant)
    return f"variants.{dataset}.{name}"


def all_variants(doc: dict) -> dict[str, dict]:
    """The ``variants`` block: data set -> {name -> entry}."""
    return doc["variants"]


def train_log(root: Path, variant: str = VARIANT) -> Path:
    """The log file of that run's Snakemake train job."""
    return Path(root) / "logs" / "train" / variant / RECIPE / f"seed{SEED}.log"


def snakemake_target(variant: str = VARIANT) -> str:
    return f"results/runs/{variant}/{RECIPE}/seed{SEED}/metrics.json"


def dvc_stage(variant: str = VARIANT, stage: str = "evaluate") -> str:
    dataset, name = _split(variant)
    return f"{stage}-{dataset}@{name}-{RECIPE}-{SEED}"


RUN_OUTPUTS = ("model.pt", "history.csv", "train.json", "metrics.json", "confusion.csv", "predictions.csv")


# --- a project directory ---------------------------------------------------------------------
COPY = ["Snakefile", "dvc.yaml", "params.yaml", "workflow", "src", ".dvc/config", ".dvc/.gitignore", ".dvcignore",
        ".gitignore", "pyproject.toml"]


def make_project(dest: Path, *, git: bool = False, smoke: bool = True) -> Path:
    """Copy what the drivers need into ``dest``; the smoke profile is written into params.yaml."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in COPY:
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            (dest / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / item)
    if smoke:  # the smoke profile, and its seeds as the top-level ones (which DVC iterates over)
        text = (dest / "params.yaml").read_text()
        text = re.sub(r"(?m)^profile: \w+", "profile: smoke", text)
        (dest / "params.yaml").write_text(re.sub(r"(?m)^seeds: \[.*\]", "seeds: [0]", text))
        write_dvc_yaml(dest)
    if git:
        git_commit(dest, "study copy", init=True)
    return dest


def write_dvc_yaml(root: Path) -> None:
    """dvc.yaml for the params.yaml in ``root`` (its tuning stages list the profile's grid), as
    `cnnbench dvc-yaml` writes it."""
    from cnnbench.config import load
    from cnnbench.pipeline import render_dvc_yaml

    (Path(root) / "dvc.yaml").write_text(render_dvc_yaml(load(Path(root) / "params.yaml")))


def git_commit(repo: Path, message: str, init: bool = False) -> None:
    ident = ["-c", "user.email=test@cnnbench.invalid", "-c", "user.name=cnnbench tests"]
    if init:
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", *ident, "commit", "-qm", message, "--allow-empty"], cwd=repo, check=True)


def read_params(root: Path) -> dict:
    return yaml.safe_load((Path(root) / "params.yaml").read_text())


def write_params(root: Path, doc: dict) -> None:
    (Path(root) / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def set_key(doc: dict, dotted: str, value: Any) -> dict:
    """Set ``a.b.c`` in a parsed params document (creating blocks on the way)."""
    node = doc
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return doc


# --- running things ------------------------------------------------------------------------------
def env_for(mirror: Path | None = MIRROR, fault: dict[str, str] | None = None) -> dict:
    """Environment of a child process: this venv first, the mirror, DVC quiet, an optional fault."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop(MIRROR_ENV, None)
    if mirror is not None:
        env[MIRROR_ENV] = str(mirror)
    env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "cnnbench tests"
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "test@cnnbench.invalid"
    env["DVC_NO_ANALYTICS"] = "1"
    env["TQDM_DISABLE"] = "1"
    env.pop("DVC_EXP_BASELINE_REV", None)
    for key in [k for k in env if k.startswith("CNNBENCH_FAULT_")]:
        del env[key]
    if fault:
        env["PYTHONPATH"] = os.pathsep.join([str(FAULT_HOOK_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env.update(fault)
    return env



def run(args: list[str], cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def describe(proc: subprocess.CompletedProcess, cwd: Path | None = None) -> str:
    logs = ""
    if cwd is not None and (cwd / "logs").exists():
        for log in sorted((cwd / "logs").rglob("*.log")):
            logs += f"\n--- {log.relative_to(cwd)}\n{log.read_text()[-2000:]}"
    return (f"{' '.join(map(str, proc.args))} -> {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n"
            f"stderr:\n{proc.stderr[-5000:]}{logs}")


def ok(args: list[str], cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = run(args, cwd, env, timeout)
    assert proc.returncode == 0, describe(proc, cwd)
    return proc


def cli(root: Path, *args: str, mirror: Path | None = MIRROR) -> tuple[int, str]:
    """`cnnbench ARGS` in-process with ``root`` as working directory: (exit status, stderr).

    ``mirror`` becomes CNNBENCH_DATA_MIRROR for the call (None: unset).
    """
    from cnnbench import cli as cli_mod

    err = io.StringIO()
    old_cwd, old_mirror = Path.cwd(), os.environ.pop(MIRROR_ENV, None)
    if mirror is not None:
        os.environ[MIRROR_ENV] = str(mirror)
    os.chdir(root)
    # cli.main's logging.basicConfig only takes effect once per process: catch its log lines here.
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        with contextlib.redirect_stderr(err):
            rc = cli_mod.main(list(args))
    finally:
        logging.getLogger().removeHandler(handler)
        os.chdir(old_cwd)
        os.environ.pop(MIRROR_ENV, None)
        if old_mirror is not None:
            os.environ[MIRROR_ENV] = old_mirror
    return rc, err.getvalue()


# --- inspecting outputs ---------------------------------------------------------------------------
def files_under(root: Path) -> set[str]:
    """Every file and link below ``root`` (relative, posix), hidden ones included."""
    root = Path(root)
    if not root.exists():
        return set()
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def history_without_timing(path: Path) -> list[dict]:
    """history.csv rows without the columns that measure time or memory."""
    import csv

    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    return [{k: v for k, v in r.items() if k not in ("seconds", "peak_memory_mb")} for r in rows]


def metrics_without_timing(path: Path) -> dict:
    m = json.loads(Path(path).read_text())
    for key in ("mean_epoch_seconds", "peak_memory_mb", "eval_device", "device"):
        m.pop(key, None)
    return m


def state_dicts_equal(a: Path, b: Path) -> bool:
    import torch

    sa = torch.load(a, map_location="cpu", weights_only=True)["state_dict"]
    sb = torch.load(b, map_location="cpu", weights_only=True)["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- handcrafted archives ------------------------------------------------------------------------
CIFAR_NAME = "cifar-10-python.tar.gz"
BUTTERFLY_NAME = "butterfly-images40-species.zip"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar_members(n: int = 20) -> dict[str, bytes]:
    """The pickles of a tiny but genuine-format CIFAR-10 python archive."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(0)

    def batch(offset: int, count: int) -> bytes:
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        return pickle.dumps({"batch_label": "b", "labels": [(i + offset) % 10 for i in range(count)], "data": data},
                            protocol=2)

    members = {f"cifar-10-batches-py/data_batch_{i}": batch(i, n) for i in range(1, 6)}
    members["cifar-10-batches-py/test_batch"] = batch(0, n)
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps({"label_names": CIFAR_CLASSES}, protocol=2)
    return members


def write_tar(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    """A .tar.gz of regular files, plus symbolic links ``name -> target``."""
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


def make_mirror(root: Path, files: dict[str, Path | bytes]) -> Path:
    """A data mirror ``root`` holding ``{"<dataset>/<file>": content}`` and a matching SHA256SUMS."""
    import hashlib

    lines = []
    for rel, content in files.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = content.read_bytes() if isinstance(content, Path) else content
        dest.write_bytes(data)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {rel}")
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return root


def jpeg(mode: str = "RGB", size: tuple[int, int] = (224, 224), fmt: str = "JPEG", seed: int = 0) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "CMYK": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    im = Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def butterfly_zip(path: Path, files: dict[str, bytes], rows: list[tuple[str, str, str]],
                  extra_infos: list[tuple[Any, bytes]] | None = None, compression: int | None = None) -> Path:
    """A Kaggle-style zip: ``butterflies and moths.csv`` (rows: filepath, label, data set) + files."""
    import zipfile

    labels = sorted({label for _, label, _ in rows})
    lines = ["class id,filepaths,labels,data set"]
    lines += [f"{labels.index(label)},{rel},{label},{split}" for rel, label, split in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression if compression is not None else zipfile.ZIP_STORED) as zf:
        zf.writestr("butterflies and moths.csv", "\n".join(lines) + "\n")
        for rel, data in files.items():
            zf.writestr(rel, data)
        for info, data in extra_infos or []:
            zf.writestr(info, data)
    return path


def good_butterflies(classes: tuple[str, ...] = ("ALPHA", "BETA", "GAMMA"), per_split: int = 2):
    """(files, rows) of a small clean butterfly archive: every class in train, valid and test."""
    files, rows = {}, []
    for c, cls in enumerate(classes):
        for split in ("train", "valid", "test"):
            for i in range(per_split):
                rel = f"{split}/{cls}/{i}.jpg"
                # distinct pictures everywhere: a train copy of a valid image would be dropped as a duplicate
                files[rel] = jpeg(seed=100 * c + 10 * i + ("train", "valid", "test").index(split))
                rows.append((rel, cls, split))
    return files, rows
