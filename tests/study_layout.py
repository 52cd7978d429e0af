"""Where the study keeps one run and how params.yaml names a variant: the only place the tests
of the scaling features (test_cluster.py, test_dvc_scale.py) know the layout.

Today a run lives in ``results/runs/<variant>/`` and ``variants`` maps ``<dataset>-<name>`` to its
spec. When runs move to ``results/runs/<variant>/<recipe>/seed<k>/`` and variants are grouped by
data set (``variants: {cifar10: {resnet18: ...}}``), only these functions change.
"""

from __future__ import annotations

from pathlib import Path


def variant_ids(params: dict) -> list[str]:
    """Every variant id (``cifar10-resnet18``) in a parsed params.yaml."""
    return list(params["variants"])


def keep_variants(params: dict, ids: list[str]) -> dict:
    """A copy of ``params`` that trains only the variants ``ids`` (fewer jobs for a test)."""
    missing = set(ids) - set(params["variants"])
    assert not missing, f"unknown variants {missing}"
    return dict(params, variants={v: params["variants"][v] for v in ids})


def variant_param(variant: str, key: str) -> str:
    """The dotted params key of one setting of a variant, for `dvc exp run -S KEY=VALUE`."""
    return f"variants.{variant}.{key}"


def run_dir(root: Path, variant: str) -> Path:
    """The directory of one trained run of ``variant`` under a study checkout ``root``."""
    return Path(root) / "results" / "runs" / variant
