"""Figures across variants: learning curves per data set and the accuracy comparison."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display (and safe to call before pyplot is imported)
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .results import by_dataset, dataset_title, lab_rows  # noqa: E402

DPI = 110
# No "Software" tEXt chunk: the PNGs carry no version string or URL and are byte-stable across
# matplotlib patch releases, so DVC/Snakemake see a change only when a figure changes.
PNG_METADATA = {"Software": None}


def _colors(n: int = 0) -> list:
    """The default colour cycle, or tab20 when there are more lines than it has colours."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if n <= len(cycle):
        return cycle
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))  # ten strong colours first, then their light twins
    return [plt.get_cmap("tab20")(order[i % 20]) for i in range(n)]


def _epochs_text(runs: list[dict]) -> str:
    epochs = sorted({int(r["metrics"].get("epochs") or r["history"]["epoch"].max()) for r in runs})
    if len(epochs) == 1:
        return f"{epochs[0]} epoch{'s' if epochs[0] != 1 else ''}"
    return f"{epochs[0]}–{epochs[-1]} epochs"


def _save(fig, path: Path) -> None:
    try:
        fig.savefig(path, dpi=DPI, metadata=PNG_METADATA)
    finally:
        plt.close(fig)


def learning_curves(dataset: str, runs: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch of every variant of ``dataset``: train dashed, validation solid."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.6), constrained_layout=True)
    colors = _colors(len(runs))
    handles = []
    for i, run in enumerate(runs):
        h, c = run["history"], colors[i % len(colors)]
        marker = "." if len(h) <= 30 else None
        ax_loss.plot(h["epoch"], h["train_loss"], "--", color=c, marker=marker)
        ax_loss.plot(h["epoch"], h["val_loss"], "-", color=c, marker=marker)
        ax_acc.plot(h["epoch"], 100 * h["train_acc"], "--", color=c, marker=marker)
        ax_acc.plot(h["epoch"], 100 * h["val_acc"], "-", color=c, marker=marker)
        handles.append(Line2D([], [], color=c, lw=2, label=run["variant"]))
    # One legend entry per variant (colour) plus two for the line style keeps it short.
    handles += [Line2D([], [], color="0.3", ls="--", label="train"),
                Line2D([], [], color="0.3", ls="-", label="validation")]
    last = max(int(r["history"]["epoch"].max()) for r in runs)
    for ax, what in ((ax_loss, "loss"), (ax_acc, "accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.set_xlim(1, max(2, last))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.set_title("loss")
    ax_acc.set_title("accuracy")
    fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    fig.suptitle(f"{dataset_title(dataset)}: {len(runs)} variant{'s' if len(runs) != 1 else ''}, "
                 f"{_epochs_text(runs)}, one seed each")
    _save(fig, path)


def accuracy_chart(runs: list[dict], path: Path) -> None:
    """Test top-1 accuracy (%) per variant, coloured by data set; diamonds mark the lab reports' figures."""
    fig, ax = plt.subplots(figsize=(max(6.5, 0.6 * len(runs) + 3.5), 5), constrained_layout=True)
    colors = _colors()
    groups = by_dataset(runs)
    x, ticks, labels = 0.0, [], []
    lab_labelled = False
    for gi, (ds, group) in enumerate(groups.items()):
        for j, run in enumerate(group):
            acc = 100 * run["metrics"]["test_top1"]
            bar = ax.bar(x, acc, width=0.7, color=colors[gi % len(colors)],
                         label=f"{dataset_title(ds)} ({_epochs_text(group)})" if j == 0 else None)
            ax.bar_label(bar, fmt="%.1f", fontsize=8, padding=2)
            labs = [r["accuracy"] for r in lab_rows(run["spec"]) if r.get("accuracy") is not None]
            # Several lab rows for one variant: spread the diamonds across the bar, labels alternating sides.
            offsets = [0.0] if len(labs) == 1 else [-0.2 + 0.4 * k / (len(labs) - 1) for k in range(len(labs))]
            for k, (lab, dx) in enumerate(zip(labs, offsets)):
                ax.plot([x + dx], [lab], marker="D", color="black", linestyle="none", markersize=5,
                        label=None if lab_labelled else "lab report figure")
                right = len(labs) == 1 or k % 2 == 1
                ax.annotate(f"{lab:.1f}", (x + dx, lab), xytext=(5 if right else -5, 0), textcoords="offset points",
                            ha="left" if right else "right", va="center", fontsize=7)
                lab_labelled = True
            ticks.append(x)
            labels.append(run["variant"])
            x += 1
        x += 0.6  # gap between data sets
    ax.set_xticks(ticks, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_ylim(0, 108)  # room for the value labels above a bar at 100 %
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    datasets = ", ".join(dataset_title(ds) for ds in groups)
    fig.suptitle(f"Test top-1 accuracy, one seed per variant\n"
                 f"{len(runs)} variant{'s' if len(runs) != 1 else ''} on {datasets}")
    _save(fig, path)


def plot_all(runs: list[dict], out_dir: Path) -> list[Path]:
    """Write ``learning_curves_<dataset>.png`` per data set and ``accuracy.png`` into ``out_dir``.

    The figures are built in a sibling temporary directory that replaces ``out_dir`` only once
    all of them are written, so an interrupted run leaves no ``out_dir`` that looks complete.
    Returns the final paths.
    """
    if not runs:
        raise ValueError("no runs to plot")
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        names = []
        for ds, group in by_dataset(runs).items():
            name = f"learning_curves_{ds}.png"
            learning_curves(ds, group, tmp / name)
            names.append(name)
        accuracy_chart(runs, tmp / "accuracy.png")
        names.append("accuracy.png")
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out_dir / n for n in names]


def _replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``; an existing ``dst`` is moved aside first and removed afterwards."""
    if not (dst.exists() or dst.is_symlink()):
        os.replace(src, dst)
        return
    old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(dst, old)
    os.replace(src, dst)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()
