"""Where the study keeps one run and how params.yaml names a variant: the only place the tests
of the scaling features (test_cluster.py, test_dvc_scale.py) know the layout.

A run lives in ``results/runs/<variant>/<recipe>/seed<k>/``; ``variants`` groups the variants
by data set (``variants: {cifar10: {resnet18: ...}}``) and a variant's id is ``<dataset>-<name>``.
"""

from __future__ import annotations

from pathlib import Path


def variant_ids(params: dict) -> list[str]:
    """Every variant id (``cifar10-resnet18``) in a parsed params.yaml."""
    return [f"{ds}-{name}" for ds, group in params["variants"].items() for name in (group or {})]


def keep_variants(params: dict, ids: list[str], recipes: list[str] | None = None) -> dict:
    """A copy of ``params`` that trains only the variants ``ids`` (fewer jobs for a test), under
    ``recipes`` when given; claims about other variants are left out."""
    missing = set(ids) - set(variant_ids(params))
    assert not missing, f"unknown variants {missing}"
    variants = {ds: {name: spec for name, spec in (group or {}).items() if f"{ds}-{name}" in ids}
                for ds, group in params["variants"].items()}
    claims = [c for c in params["claims"] if c["a"] in ids and c["b"] in ids]
    out = dict(params, variants=variants, claims=claims)
    if recipes is not None:
        out["recipes_in_study"] = list(recipes)
    _keep_tuned(out, ids)
    return out


def _keep_tuned(params: dict, ids: list[str]) -> None:
    """Tuning lists of variants (top level, profiles) keep only ``ids``; one left empty tunes all."""
    import copy

    params["profiles"] = copy.deepcopy(params.get("profiles", {}))
    if params.get("tuning"):
        params["tuning"] = copy.deepcopy(params["tuning"])
    blocks = [params.get("tuning")] + [p.get("tuning") for p in params["profiles"].values()]
    for block in blocks:
        if block and isinstance(block.get("variants"), list):
            kept = [v for v in block["variants"] if v in ids]
            block["variants"] = kept or "all"


def stage(kind: str, variant: str, recipe: str = "lab", seed: int = 0) -> str:
    """DVC's name of one run's train or evaluate stage, e.g. ``train-cifar10@resnet18-lab-0``
    (``train-tuned-cifar10@...`` for a tuned recipe: this study's is called ``tuned``)."""
    dataset, name = variant.split("-", 1)
    tuned = "tuned-" if recipe == "tuned" else ""
    return f"{kind}-{tuned}{dataset}@{name}-{recipe}-{seed}"


def tune_stage(variant: str, point: str, recipe: str = "tuned", seed: int = 1000) -> str:
    """DVC's name of one tuning trial's stage, e.g. ``tune-cifar10@resnet18-tuned-lr0.05-1000``."""
    dataset, name = variant.split("-", 1)
    return f"tune-{dataset}@{name}-{recipe}-{point}-{seed}"


def variant_param(variant: str, key: str) -> str:
    """The dotted params key of one setting of a variant, for `dvc exp run -S KEY=VALUE`."""
    dataset, name = variant.split("-", 1)
    return f"variants.{dataset}.{name}.{key}"


def run_dir(root: Path, variant: str, recipe: str = "lab", seed: int = 0) -> Path:
    """The directory of one trained run of ``variant`` under a study checkout ``root``."""
    return Path(root) / "results" / "runs" / variant / recipe / f"seed{seed}"
