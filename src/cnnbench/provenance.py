"""What the report states about where its numbers came from."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import torch

from .config import Config
from .results import read_json


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
        manifest = read_json(Path(prepared_root) / ds / "manifest.json", f"cnnbench preprocess --dataset {ds}")
        source = manifest.get("source", {})
        data[ds] = {
            "source": source.get("source", "unknown"),
            "location": source.get("location", "unknown"),
            "sha256": source.get("sha256", "unknown"),
            "counts": {split: info["count"] for split, info in manifest.get("splits", {}).items()},
        }
    return {
        "versions": software_versions(),
        "data_quality": data_quality(Path(prepared_root) / "butterflies") if "butterflies" in cfg.datasets else None,
        "profile": cfg.profile,
        "params_hash": cfg.params_hash,
        "git_commit": git_commit(cfg.params_path.resolve().parent),
        "torch_version": torch.__version__,
        "command": command or f"snakemake --cores 4 --config profile={cfg.profile}",
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data": data,
    }


def data_quality(prepared_dir: Path, examples: int = 8) -> dict | None:
    """The butterfly duplicates found by preprocess (duplicates.json), as the report shows them."""
    path = Path(prepared_dir) / "duplicates.json"
    if not path.is_file():
        return None
    dup = json.loads(path.read_text())
    rows = [[p["splits"], p["kind"], p["same_class"], p["different_class"]]
            for p in dup.get("pairs", []) if p["same_class"] or p["different_class"]]
    shown = []
    for group in dup.get("groups", [])[:examples]:
        members = " = ".join(
            f"{m['file']} ({m['class']}{', mirrored' if m.get('mirrored') else ''}"
            f"{', dropped' if m.get('dropped') else ''})" for m in group["members"])
        shown.append(("LABEL CONFLICT: " if group.get("label_conflict") else "") + members)
    hashed = dup.get("images_hashed", {})
    drop = dup.get("drop_train_duplicates_of_eval")
    summary = (
        f"{dup.get('group_count', 0)} group(s) of identical or mirrored images ({dup.get('images_in_groups', 0)} images "
        f"of {sum(hashed.values())} hashed: {', '.join(f'{s} {n}' for s, n in hashed.items())}); "
        f"{dup.get('label_conflict_groups', 0)} group(s) carry different labels. "
        f"{dup.get('train_duplicates_of_eval', 0)} train image(s) duplicate a valid or test image"
        + (f" and {dup.get('dropped_train', 0)} were dropped from train (drop_train_duplicates_of_eval: true)."
           if drop else " and were kept (drop_train_duplicates_of_eval: false).")
        + f" Method: {dup.get('method', '?')}."
    )
    return {"title": "duplicates in the butterfly set", "summary": summary,
            "headers": ["splits", "kind", "pairs, same class", "pairs, different class"], "counts": rows,
            "examples": shown}
