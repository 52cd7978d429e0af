"""Figures across variants: learning curves per data set and the accuracy comparison."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .results import by_dataset  # noqa: E402

DATASET_TITLES = {"cifar10": "CIFAR-10", "butterflies": "Butterflies & moths"}


def _title(ds: str) -> str:
    return DATASET_TITLES.get(ds, ds)


def learning_curves(dataset: str, runs: list[dict], path: Path) -> None:
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(runs):
        h, c = run["history"], colors[i % len(colors)]
        ax_loss.plot(h["epoch"], h["train_loss"], "--", color=c, marker=".", label=f"{run['variant']} train")
        ax_loss.plot(h["epoch"], h["val_loss"], "-", color=c, marker=".", label=f"{run['variant']} val")
        ax_acc.plot(h["epoch"], 100 * h["train_acc"], "--", color=c, label=f"{run['variant']} train")
        ax_acc.plot(h["epoch"], 100 * h["val_acc"], "-", color=c, label=f"{run['variant']} val")
    epochs = max(int(r["history"]["epoch"].max()) for r in runs)
    for ax, what in ((ax_loss, "loss"), (ax_acc, "accuracy (%)")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.set_xlim(1, max(2, epochs))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.legend(fontsize=8, loc="best")
    fig.suptitle(f"{_title(dataset)}: learning curves of {len(runs)} variant(s), up to {epochs} epochs "
                 "(dashed = train, solid = validation)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def accuracy_chart(runs: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(runs) + 2), 4.8), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    groups = by_dataset(runs)
    x = 0
    ticks, labels = [], []
    for gi, (ds, group) in enumerate(groups.items()):
        for run in group:
            acc = 100 * run["metrics"]["test_top1"]
            bar = ax.bar(x, acc, color=colors[gi % len(colors)], label=_title(ds) if run is group[0] else None)
            ax.bar_label(bar, fmt="%.1f", fontsize=8)
            lab = (run["spec"].get("lab_report") or {}).get("accuracy")
            if lab is not None:
                ax.plot([x], [lab], marker="D", color="black", linestyle="none",
                        label="lab report" if "lab report" not in ax.get_legend_handles_labels()[1] else None)
            ticks.append(x)
            labels.append(run["variant"])
            x += 1
        x += 0.5
    ax.set_xticks(ticks, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"Test accuracy of {len(runs)} variant(s) (diamonds: the lab reports' figures)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_all(runs: list[dict], out_dir: Path) -> list[Path]:
    """Write every figure into ``out_dir`` (built aside, then renamed into place)."""
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
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out_dir / n for n in names]
