"""The study report: one self-contained HTML file (images embedded) and the same in Markdown."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import jinja2

from .results import by_dataset

DATASET_TITLES = {"cifar10": "CIFAR-10", "butterflies": "Butterflies & moths (100 species)"}


def git_commit(repo_dir: Path) -> str:
    """HEAD of the checkout, with " (dirty)" when tracked files are modified; never raises."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown (not a git checkout)"
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_dir,
                                capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + (" (dirty)" if status.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _lab(spec: dict) -> str:
    lab = spec.get("lab_report") or {}
    if lab.get("accuracy") is None:
        return "—"
    extra = ", ".join(x for x in (lab.get("report"), f"{lab['epochs']} ep" if lab.get("epochs") else None) if x)
    return f"{lab['accuracy']:.2f} % ({extra})"


def table_rows(runs: list[dict]) -> list[dict]:
    rows = []
    for run in runs:
        m = run["metrics"]
        rows.append({
            "variant": run["variant"],
            "model": m["model"],
            "params": f"{m['params']:,}",
            "classes": m["num_classes"],
            "top1": _pct(m["test_top1"]),
            "top5": _pct(m.get("test_top5")),
            "epoch_s": f"{m['mean_epoch_seconds']:.2f}",
            "memory": f"{m['peak_memory_mb']:.0f}",
            "device": m["device"],
            "epochs": m["epochs"],
            "lab": _lab(run["spec"]),
        })
    return rows


def banner(profile: str) -> str | None:
    if profile == "full":
        return None
    if profile == "smoke":
        return "smoke data: not evidence. The smoke profile trains tiny networks for a few batches to test the pipeline."
    return f"{profile} profile: small data and few epochs — not evidence."


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("cnnbench", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"], default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def build_report(runs: list[dict], plots_dir: Path, out_dir: Path, context: dict) -> tuple[Path, Path]:
    """Render report.html (self-contained) and report.md into ``out_dir``."""
    plots_dir, out_dir = Path(plots_dir), Path(out_dir)
    groups = by_dataset(runs)
    figures = []
    for ds in groups:
        figures.append((f"Learning curves: {DATASET_TITLES.get(ds, ds)}", plots_dir / f"learning_curves_{ds}.png"))
    figures.append(("Test accuracy of every variant", plots_dir / "accuracy.png"))
    for _, path in figures:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; it is written by `cnnbench plot`")
    out_dir.mkdir(parents=True, exist_ok=True)
    devices = sorted({r["metrics"]["device"] for r in runs})
    precisions = sorted({r["metrics"].get("precision", "fp32") for r in runs})
    common = {
        "ctx": context,
        "banner": banner(context["profile"]),
        "datasets": [
            {"key": ds, "title": DATASET_TITLES.get(ds, ds), "rows": table_rows(group),
             "top5": any(r["metrics"].get("test_top5") is not None for r in group),
             "data": context["data"].get(ds, {})}
            for ds, group in groups.items()
        ],
        "devices": devices,
        "precisions": precisions,
        "n_variants": len(runs),
    }
    env = _env()
    html_figs = [(title, "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode()) for title, p in figures]
    md_figs = [(title, os.path.relpath(p, out_dir)) for title, p in figures]
    html = env.get_template("report.html.j2").render(figures=html_figs, **common)
    md = env.get_template("report.md.j2").render(figures=md_figs, **common)
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    _write_atomic(md_path, md)
    _write_atomic(html_path, html)
    return html_path, md_path
