"""What the report states about where its numbers came from."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import torch

from .config import Config
from .errors import DataError
from .results import dataset_title, read_json


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
            "train_stats": manifest.get("train_stats"),  # the normalisation of a run without train.normalize
        }
    return {
        "versions": software_versions(),
        "data_quality": [q for q in (data_quality(Path(prepared_root) / ds, ds, title=dataset_title(cfg, ds))
                                     for ds in cfg.datasets) if q],
        "profile": cfg.profile,
        "params_hash": cfg.params_hash,
        "git_commit": git_commit(cfg.params_path.resolve().parent),
        "torch_version": torch.__version__,
        "command": command or f"snakemake --cores 4 --config profile={cfg.profile}",
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data": data,
    }


SHOWN_GROUPS = 24  # the report's thumbnail rows: groups that span splits, in duplicates.json's order
KIND_TEXT = {"exact": "exact copy", "flip": "mirror image", "near": "near duplicate"}


def _spans_splits(group: dict) -> bool:
    return len({m.get("split") for m in group.get("members", [])}) > 1


def _thumbs(prepared_dir: Path, dup: dict, groups: list[dict]) -> dict[int, str] | None:
    """``{thumb row: PNG data URI}`` for the members of ``groups``, or None when the audit has no
    thumbnails (a v1 audit, or the file is missing: the report lists the groups as text)."""
    import numpy as np

    from .report import png_data_uri

    name = dup.get("thumbs_file")
    if not name or not (Path(prepared_dir) / name).is_file():
        return None
    path = Path(prepared_dir) / name
    redo = "re-run `cnnbench preprocess`"
    try:
        thumbs = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{path} is not readable ({e}); {redo}") from e
    if thumbs.ndim != 4 or thumbs.shape[3] != 3 or thumbs.dtype != np.uint8:
        raise DataError(f"{path}: {thumbs.shape} {thumbs.dtype}, expected uint8 M x H x W x 3 thumbnails; {redo}")
    out = {}
    for group in groups:
        for m in group["members"]:
            row = m.get("thumb")
            if row is None:
                continue
            if not isinstance(row, int) or not 0 <= row < len(thumbs):
                raise DataError(f"{path.parent / 'duplicates.json'}: group {group.get('id')} names thumbnail row "
                                f"{row!r}, but {path.name} has {len(thumbs)} rows; {redo}")
            out[row] = png_data_uri(np.asarray(thumbs[row]))
    return out


def _member_text(m: dict) -> str:
    flags = [m.get("class", "?")] + (["mirrored"] if m.get("mirrored") else []) + (["dropped"] if m.get("dropped") else [])
    return f"{m.get('file', '?')} ({', '.join(flags)})"


def _nearest_pair(group: dict, index: int) -> dict | None:
    """The closest pair of the group that ``index`` (a member's position) belongs to."""
    pairs = [p for p in group.get("pairs", []) if index in (p.get("a"), p.get("b"))]
    return min(pairs, key=lambda p: p.get("distance") or 0.0) if pairs else None


def _group_view(group: dict, thumbs: dict[int, str] | None) -> dict:
    """One group as the report shows it: a text line (Markdown, v1) and a caption per member (HTML)."""
    members = []
    for i, m in enumerate(group["members"]):
        pair = _nearest_pair(group, i)
        link = ""
        if pair:
            distance = pair.get("distance")
            link = KIND_TEXT.get(pair.get("kind"), str(pair.get("kind"))) + \
                (f", distance {distance:.3f}" if isinstance(distance, (int, float)) and pair.get("kind") == "near" else "")
        index = m.get("index")
        members.append({"split": m.get("split", "?"), "file": m.get("file", "?"), "class": m.get("class", "?"),
                        "index": index if index is not None else "", "dropped": bool(m.get("dropped")),
                        "link": link, "src": (thumbs or {}).get(m.get("thumb"))})
    kinds = group.get("kinds") or sorted({p.get("kind") for p in group.get("pairs", []) if p.get("kind")})
    if "pairs" in group:  # v2: split, file and class of each member, then how they are alike
        text = " = ".join(f"{m['split']} {_member_text(m)}" for m in group["members"])
        links = "; ".join(f"{KIND_TEXT.get(p.get('kind'), p.get('kind'))}"
                          + (f" {p['distance']:.3f}" if p.get("kind") == "near" and p.get("distance") is not None else "")
                          for p in group["pairs"])
        text += f" [{links}]" if links else ""
    else:  # v1: the files say the split
        text = " = ".join(_member_text(m) for m in group["members"])
    conflict = bool(group.get("label_conflict"))
    return {"id": group.get("id", "?"), "label_conflict": conflict, "kinds": ", ".join(map(str, kinds)),
            "members": members, "text": ("LABEL CONFLICT: " if conflict else "") + text}


def data_quality(prepared_dir: Path, dataset: str | None = None, shown: int = SHOWN_GROUPS,
                 title: str | None = None) -> dict | None:
    """The duplicate audit of one data set (duplicates.json of preprocess), as the report shows it:
    a summary sentence, pair counts by split pair x kind x same/different class (rows of zeros left
    out) and the first ``shown`` groups that span splits, with thumbnails where the audit has them.
    None when the data set has no duplicates.json. Reads both the v2 format and the older v1
    (butterflies only: exact and mirrored, no clean-test list, no thumbnails). ``title``: the data set's
    title in the section heading (default: its name)."""
    prepared_dir = Path(prepared_dir)
    path = prepared_dir / "duplicates.json"
    if not path.is_file():
        return None
    dataset = dataset or prepared_dir.name
    dup = read_json(path, f"cnnbench preprocess --dataset {dataset}")
    if not isinstance(dup, dict):
        raise DataError(f"{path}: must hold a JSON object; re-run `cnnbench preprocess --dataset {dataset}`")
    rows = [[p["splits"], p["kind"], p["same_class"], p["different_class"]]
            for p in dup.get("pairs", []) if p["same_class"] or p["different_class"]]
    spanning = [g for g in dup.get("groups", []) if _spans_splits(g)]
    thumbs = _thumbs(prepared_dir, dup, spanning[:shown])
    groups = [_group_view(g, thumbs) for g in spanning[:shown]]
    audited = dup.get("images_audited") or dup.get("images_hashed") or {}
    near = dup.get("near_duplicate_threshold")
    what = "identical, mirrored or near-duplicate images" if near is not None else "identical or mirrored images"
    drop = dup.get("drop_train_duplicates_of_eval")
    test_total = audited.get("test")
    sentences = [
        f"Method: {str(dup.get('method', '?')).rstrip('.')}"
        + (f"; near duplicates below a distance of {near:g}." if near is not None else "."),
        f"{dup.get('group_count', 0)} group(s) of {what} ({dup.get('images_in_groups', 0)} images of "
        f"{sum(audited.values())} audited: {', '.join(f'{s} {n}' for s, n in audited.items())}); "
        f"{dup.get('cross_split_groups', len(spanning))} span splits; "
        f"{dup.get('label_conflict_groups', 0)} group(s) carry different labels.",
        f"{dup.get('train_duplicates_of_eval', 0)} train image(s) duplicate a validation or test image"
        + (f" and {dup.get('dropped_train', 0)} were dropped from train (drop_train_duplicates_of_eval: true)."
           if drop else " and were kept (drop_train_duplicates_of_eval: false)."),
    ]
    if dup.get("test_clean_count") is not None:
        sentences.append(f"{dup['test_clean_count']} of {test_total if test_total is not None else '?'} test images "
                         "are clean: no duplicate among the training images kept.")
    else:
        sentences.append("This audit does not list the test images with a duplicate in train (format "
                         f"{dup.get('format', '?')}): accuracy on the clean test images is unknown.")
    return {"key": dataset, "title": f"Duplicates in {title or dataset}", "summary": " ".join(sentences),
            "headers": ["splits", "kind", "pairs, same class", "pairs, different class"], "counts": rows,
            "groups": groups, "examples": [g["text"] for g in groups],
            "showing": f"showing {len(groups)} of {len(spanning)} groups that span splits",
            "thumbnails": thumbs is not None,
            "thumbs_missing": bool(dup.get("thumbs_file")) and thumbs is None and bool(groups)}
