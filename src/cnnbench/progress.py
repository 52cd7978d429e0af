"""The study's overall progress, for the train jobs to print.

Snakemake prints "N of M steps (x%) done" itself; `dvc repro` and `dvc exp run` do not, so every
train job says at its start how far the study is. A module of its own, importing only the
configuration: it is among the code deps of every DVC train stage, so the planning code in
:mod:`cnnbench.plan` can change without making every trained run stale.
"""

from __future__ import annotations

from pathlib import Path

from .config import Config, run_dir


def trained_runs(cfg: Config, runs_root: Path, exclude: tuple[str, str, int] | None = None) -> int:
    """How many runs of the study have a ``model.pt`` (written last: the run is complete) under
    ``runs_root``; ``exclude`` (variant, recipe, seed) is not counted (the run about to be trained,
    whose old model.pt it will replace)."""
    return sum(1 for run in cfg.runs if run != exclude and (run_dir(runs_root, *run) / "model.pt").is_file())


def progress_line(cfg: Config, runs_root: Path, current: tuple[str, str, int] | None = None) -> str:
    """``study progress: k of N runs of profile P trained`` (``current`` not counted)."""
    done = trained_runs(cfg, runs_root, exclude=current)
    return f"study progress: {done} of {len(cfg.runs)} runs of profile {cfg.profile} trained"
