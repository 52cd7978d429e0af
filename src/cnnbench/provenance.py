"""What the report states about where its numbers came from."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import torch

from .config import Config


def software_versions() -> dict[str, str]:
    """Versions of Python and the libraries the numbers depend on."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("cnnbench", "torch", "torchvision", "numpy", "scipy", "pandas", "matplotlib"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def report_context(cfg: Config, prepared_root: Path, command: str | None = None) -> dict:
    """Context for :func:`cnnbench.report.build_report`: profile, hashes, versions, data sources."""
    from .report import git_commit

    data = {}
    for ds in cfg.datasets:
        manifest_path = Path(prepared_root) / ds / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{manifest_path}: missing; run `cnnbench preprocess --dataset {ds}` first")
        manifest = json.loads(manifest_path.read_text())
        source = manifest.get("source", {})
        data[ds] = {
            "source": source.get("source", "unknown"),
            "location": source.get("location", "unknown"),
            "sha256": source.get("sha256", "unknown"),
            "counts": {split: info["count"] for split, info in manifest.get("splits", {}).items()},
        }
    return {
        "versions": software_versions(),
        "data_quality": None,
        "profile": cfg.profile,
        "params_hash": cfg.params_hash,
        "git_commit": git_commit(cfg.params_path.resolve().parent),
        "torch_version": torch.__version__,
        "command": command or f"snakemake --cores 4 --config profile={cfg.profile}",
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data": data,
    }
