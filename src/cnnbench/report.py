"""The study report: one self-contained HTML file (images embedded) and the same in Markdown."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import jinja2

from .results import by_dataset, dataset_title, lab_rows

NOT_A_CHECKOUT = "unknown (not a git checkout)"
DEFAULT_SELECTION = "final epoch (the validation split is monitored, never used to pick weights)"


# ---------------------------------------------------------------------------------------------
# provenance helpers


def git_commit(repo_dir: Path) -> str:
    """HEAD of the checkout at ``repo_dir``, plus " (dirty)" when tracked files are modified.

    Returns ``"unknown (not a git checkout)"`` outside a repository or without git; never raises.
    """
    try:
        head = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], cwd=repo_dir,
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0 or not head.stdout.strip():
            return NOT_A_CHECKOUT
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_dir,
                                capture_output=True, text=True, timeout=10)
        dirty = status.returncode != 0 or bool(status.stdout.strip())
        return head.stdout.strip() + (" (dirty)" if dirty else "")
    except (OSError, subprocess.SubprocessError, ValueError):
        return NOT_A_CHECKOUT


def banner(profile: str) -> str | None:
    """The warning shown above everything else when the numbers are not the real study's."""
    if profile == "full":
        return None
    if profile == "smoke":
        return "smoke data: not evidence. The smoke profile trains tiny networks for a few batches to test the pipeline."
    return f"{profile} profile: small data and few epochs — not evidence."


# ---------------------------------------------------------------------------------------------
# table content


def _num(value, fmt: str, scale: float = 1.0) -> str:
    if value is None:
        return "—"
    try:
        return format(float(value) * scale, fmt)
    except (TypeError, ValueError):
        return "—"


def _one_lab_figure(row: dict) -> str | None:
    if row.get("accuracy") is None:
        return None
    bits = [row.get("report"), f"{row['epochs']} ep" if row.get("epochs") else None,
            f"{row['epoch_seconds']:g} s/epoch" if row.get("epoch_seconds") else None]
    extra = ", ".join(str(b) for b in bits if b)
    return f"{row['accuracy']:.2f} %" + (f" ({extra})" if extra else "")


def lab_figure(spec: dict) -> str:
    """``"83.92 % (Lab report 1, 50 ep)"`` per lab-report row with a figure, joined by "; "; else ``"—"``."""
    figures = [f for f in map(_one_lab_figure, lab_rows(spec)) if f]
    return "; ".join(figures) or "—"


def table_rows(runs: list[dict]) -> list[dict]:
    """Display strings for one data set's results table."""
    rows = []
    for run in runs:
        m, spec = run["metrics"], run["spec"]
        params = m.get("params")
        rows.append({
            "variant": run["variant"],
            "model": m.get("model", spec.get("model", "?")),
            "params": f"{int(params):,}" if params is not None else "—",
            "classes": m.get("num_classes", "—"),
            "top1": _num(m.get("test_top1"), ".2f", 100),
            "top5": _num(m.get("test_top5"), ".2f", 100),
            "epoch_s": _num(m.get("mean_epoch_seconds"), ".2f"),
            "memory": _num(m.get("peak_memory_mb"), ".0f"),
            "device": m.get("device", "?"),
            "epochs": m.get("epochs", "—"),
            "lab": lab_figure(spec),
        })
    return rows


def claim_rows(runs: list[dict]) -> list[dict]:
    """One row per lab-report row: what the lab report said next to what this run measured."""
    rows = []
    for run in runs:
        m = run["metrics"]
        top1 = m.get("test_top1")
        for lab in lab_rows(run["spec"]):
            acc = lab.get("accuracy")
            rows.append({
                "variant": run["variant"],
                "report": lab.get("report", "?"),
                "row": lab.get("row", "?"),
                "lab_acc": _num(acc, ".2f"),
                "lab_epochs": lab.get("epochs") or "—",
                "top1": _num(top1, ".2f", 100),
                "epochs": m.get("epochs", "—"),
                "delta": f"{100 * top1 - acc:+.2f}" if top1 is not None and acc is not None else "—",
                "lab_epoch_s": _num(lab.get("epoch_seconds"), "g"),
                "epoch_s": _num(m.get("mean_epoch_seconds"), ".2f"),
                "claim": lab.get("claim") or "—",
            })
    return rows


def training_rows(runs: list[dict]) -> list[dict]:
    """How each variant was trained, from its settings (the part of params.yaml it reads)."""
    rows = []
    for run in runs:
        spec, m = run["spec"], run["metrics"]
        train = spec.get("train") or {}
        opt = train.get("optimizer") or {}
        sched = train.get("schedule") or {}
        opt_bits = [str(opt["name"])] if opt.get("name") else []
        for key, label in (("lr", "lr"), ("momentum", "momentum"), ("weight_decay", "wd")):
            if opt.get(key) is not None:
                opt_bits.append(f"{label} {opt[key]:g}")
        if opt.get("nesterov"):
            opt_bits.append("nesterov")
        data_bits = []
        if "filter_noisy" in spec:
            data_bits.append("noisy classes filtered" if spec["filter_noisy"] else "unfiltered")
        if spec.get("exclude_classes"):
            data_bits.append(f"{len(spec['exclude_classes'])} class(es) excluded")
        if spec.get("description"):
            data_bits.append(str(spec["description"]))
        model_args = spec.get("model_args") or {}
        if opt.get("no_decay_norm_bias"):
            opt_bits.append("no wd on BN/bias")
        recipe_bits = [str(spec.get("recipe", "—"))]
        if train.get("label_smoothing"):
            recipe_bits.append(f"label smoothing {train['label_smoothing']:g}")
        if train.get("ema"):
            recipe_bits.append(f"EMA {train['ema']:g}")
        if train.get("tta_flip"):
            recipe_bits.append("flip TTA")
        rows.append({
            "variant": run["variant"],
            "recipe": ", ".join(recipe_bits),
            "optimizer": ", ".join(opt_bits) or "—",
            "schedule": str(sched.get("name", "—")),
            "batch": train.get("batch_size", "—"),
            "precision": m.get("precision", "—"),
            "seed": m.get("seed", train.get("seed", "—")),
            "model_args": ", ".join(f"{k}={v}" for k, v in model_args.items()) or "—",
            "notes": "; ".join(data_bits) or "—",
        })
    return rows


def _sorted_set(values) -> list[str]:
    return sorted({str(v) for v in values if v is not None})


def _dataset_section(ds: str, group: list[dict], data: dict, plots_dir: Path) -> dict:
    counts = data.get("counts") or {}
    test_n = counts.get("test")
    if test_n is None:
        test_n = next((r["metrics"]["test_images"] for r in group if "test_images" in r["metrics"]), "?")
    seeds = _sorted_set(r["metrics"].get("seed") for r in group)
    return {
        "key": ds,
        "title": dataset_title(ds),
        "rows": table_rows(group),
        "training": training_rows(group),
        "top5": any(r["metrics"].get("test_top5") is not None for r in group),
        "claims": claim_rows(group),
        "test_n": test_n,
        "seeds": ", ".join(seeds) or "?",
        "selection": _sorted_set(r["metrics"].get("selection") for r in group) or [DEFAULT_SELECTION],
        "memory_kinds": _sorted_set(r["metrics"].get("memory_kind") for r in group),
        "data": {"source": str(data.get("source") or "?"), "location": str(data.get("location") or "?"),
                 "sha256": str(data.get("sha256") or "?"), "counts": counts},
        "figure": plots_dir / f"learning_curves_{ds}.png",
    }


# ---------------------------------------------------------------------------------------------
# rendering


def _md_cell(value) -> str:
    """Text safe inside a Markdown table cell."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cnnbench", "templates"),
        # HTML escaped, Markdown not (it would show "&amp;" literally).
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["md"] = _md_cell
    return env


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def build_report(runs: list[dict], plots_dir: Path, out_dir: Path, context: dict) -> tuple[Path, Path]:
    """Render ``report.html`` (self-contained: images inline, no external URL) and ``report.md``.

    ``runs`` come from :func:`cnnbench.results.load_runs`, the figures from
    :func:`cnnbench.plots.plot_all` in ``plots_dir``; ``context`` carries the provenance
    (profile, params_hash, git_commit, torch_version, command, generated, data). The Markdown
    refers to the PNGs by their path relative to ``out_dir``. Returns (html_path, md_path).
    """
    if not runs:
        raise ValueError("no runs to report")
    plots_dir, out_dir = Path(plots_dir), Path(out_dir)
    groups = by_dataset(runs)
    data = context.get("data") or {}
    datasets = [_dataset_section(ds, group, data.get(ds) or {}, plots_dir) for ds, group in groups.items()]
    accuracy = plots_dir / "accuracy.png"
    for path in [d["figure"] for d in datasets] + [accuracy]:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; it is written by `cnnbench plot`")
    known = {d["figure"].name for d in datasets} | {accuracy.name}
    extra = sorted(p for p in plots_dir.glob("*.png") if p.name not in known)

    common = {
        "ctx": context,
        "banner": banner(context["profile"]),
        "datasets": datasets,
        "n_variants": len(runs),
        "variants": [r["variant"] for r in runs],
        "devices": _sorted_set(r["metrics"].get("device") for r in runs),
        "eval_devices": _sorted_set(r["metrics"].get("eval_device") for r in runs),
        "precisions": _sorted_set(r["metrics"].get("precision") for r in runs) or ["?"],
        "run_torch": _sorted_set(r["metrics"].get("torch_version") for r in runs),
    }

    def rel(p: Path) -> str:
        link = Path(os.path.relpath(p.resolve(), out_dir.resolve())).as_posix()
        return f"<{link}>" if any(c in link for c in " ()") else link  # CommonMark link destination

    env = _env()
    html = env.get_template("report.html.j2").render(
        img={d["key"]: _data_uri(d["figure"]) for d in datasets},
        accuracy_img=_data_uri(accuracy),
        extra=[(p.stem, _data_uri(p)) for p in extra],
        **common,
    )
    md = env.get_template("report.md.j2").render(
        img={d["key"]: rel(d["figure"]) for d in datasets},
        accuracy_img=rel(accuracy),
        extra=[(p.stem, rel(p)) for p in extra],
        **common,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out_dir / "report.html", out_dir / "report.md"
    _write_atomic(md_path, md)
    _write_atomic(html_path, html)
    return html_path, md_path
