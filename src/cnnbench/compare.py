"""`cnnbench compare A B`: two studies' results side by side, in Markdown and self-contained HTML.

A and B are results folders as `cnnbench aggregate` left them (``results/`` or its ``summary/``):
two DVC experiments, or a study before and after a change of params.yaml. For every variant and
recipe the comparison gives each study's mean test accuracy with its 95 % interval and the
difference B − A; for every claim and recipe whose verdict changed, both verdicts and why, as far
as the two summaries tell: a different rule, more or fewer seeds, other test images, an effect
that moved. Unchanged verdicts are counted, not listed.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .aggregate import FAILS, HOLDS, INCONCLUSIVE, METRIC_LABELS
from .atomic import atomic_write_text
from .errors import DataError
from .report import VERDICT_CLASS, banner, fmt, metric_spec, template_env
from .results import read_json, read_table

AGGREGATE = "cnnbench aggregate"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)
ACCURACY = ("test_top1", "top1_kept")  # the per-variant metrics compared, in percent
VARIANT_KEYS = ["variant", "recipe"]
CLAIM_KEYS = ["claim", "recipe"]
VARIANT_COLUMNS = [*VARIANT_KEYS, "dataset", "n",
                   *(f"{m}_{s}" for m in ACCURACY for s in ("mean", "ci_low", "ci_high"))]
CLAIM_COLUMNS = [*CLAIM_KEYS, "report", "text", "metric", "expect", "a", "b", "n_a", "n_b", "n_images", "diff",
                 "ci_low", "ci_high", "p", "p_adjusted", "method", "verdict", "reason"]
DEFINITION = ("a", "b", "metric", "expect")  # what a claim compares; params.yaml may change it
BOTH, ONLY_A, ONLY_B = "both", "only in A", "only in B"


@dataclass(frozen=True)
class Study:
    """One results folder: the three files of `cnnbench aggregate` that a comparison reads."""

    folder: Path  # the summary folder the files were read from
    variants: pd.DataFrame
    claims: pd.DataFrame
    summary: dict


# ---------------------------------------------------------------------------------------------
# reading


def summary_dir(path: Path) -> Path:
    """The folder holding the summary files: ``path/summary``, or ``path`` itself when it is one."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a folder; give a results folder (results/) or its summary/ subfolder")
    if (path / "variants.csv").is_file() or (path.name == "summary" and not (path / "summary").is_dir()):
        return path
    return path / "summary"


def _read_summary_table(path: Path, columns: list[str], keys: list[str]) -> pd.DataFrame:
    table = read_table(path, AGGREGATE, keep_default_na=False, na_values=[""])
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{path}: no column(s) {', '.join(missing)}; re-run `{AGGREGATE}` with this cnnbench")
    if table.duplicated(keys).any():
        raise DataError(f"{path}: more than one row per ({', '.join(keys)}); re-run `{AGGREGATE}`")
    return table


def load_study(path: Path) -> Study:
    """variants.csv, claims.csv and summary.json of a results folder; a DataError names a missing or bad
    file and the command that writes it."""
    folder = summary_dir(path)
    variants = _read_summary_table(folder / "variants.csv", VARIANT_COLUMNS, VARIANT_KEYS)
    claims = _read_summary_table(folder / "claims.csv", CLAIM_COLUMNS, CLAIM_KEYS)
    summary = read_json(folder / "summary.json", AGGREGATE)
    if not isinstance(summary, dict) or not isinstance(summary.get("rule"), dict):
        raise DataError(f"{folder / 'summary.json'}: no `rule` object; re-run `{AGGREGATE}`")
    return Study(folder, variants, claims, summary)


# ---------------------------------------------------------------------------------------------
# joining and formatting


def _join(a: pd.DataFrame, b: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """A's and B's rows side by side (shared columns suffixed ``_a``/``_b``), in A's order and then
    B's own rows; ``side`` is "both", "only in A" or "only in B"."""
    order = pd.concat([a[keys], b[keys]]).drop_duplicates()
    joined = (order.merge(a.assign(_in_a=True), on=keys, how="left")
              .merge(b.assign(_in_b=True), on=keys, how="left", suffixes=("_a", "_b")))
    in_a, in_b = joined["_in_a"].notna(), joined["_in_b"].notna()
    joined["side"] = [BOTH if x and y else ONLY_A if x else ONLY_B for x, y in zip(in_a, in_b)]
    return joined.reset_index(drop=True)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def same(x, y) -> bool:
    """Equal, for numbers up to rounding; two missing values are the same, one missing is not."""
    if _missing(x) or _missing(y):
        return _missing(x) and _missing(y)
    if isinstance(x, numbers.Real) and isinstance(y, numbers.Real):
        return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
    return x == y


def mean_ci(mean, low, high, n=None, spec: str = ".2f") -> str:
    """``"84.10 [83.52, 84.68] (n=3)"``: a mean with its 95 % interval; "—" without a mean."""
    if _missing(mean):
        return "—"
    text = fmt(mean, spec)
    if not (_missing(low) or _missing(high)):
        text += f" [{fmt(low, spec)}, {fmt(high, spec)}]"
    return text + (f" (n={int(n)})" if not _missing(n) else "")


def effect(diff, low, high, p, spec: str = ".2f") -> str:
    """``"+1.20 [0.50, 1.90], p 0.003"``: a claim's difference a − b with its interval and p."""
    text = fmt(diff, "+" + spec)
    if not (_missing(low) or _missing(high)):
        text += f" [{fmt(low, spec)}, {fmt(high, spec)}]"
    return text + (f", p {fmt(p, '.3g')}" if not _missing(p) else "")


def _side_value(row: pd.Series, column: str):
    """A column of a joined row from whichever side has it (A first)."""
    value = row.get(f"{column}_a")
    return row.get(f"{column}_b") if _missing(value) else value


# ---------------------------------------------------------------------------------------------
# variants


def _accuracy_cells(row: pd.Series, metric: str) -> dict:
    """One metric of a joined variant row: each side's mean [95 % CI] (n) and B − A."""
    mean_a, mean_b = row.get(f"{metric}_mean_a"), row.get(f"{metric}_mean_b")
    return {
        "a": mean_ci(mean_a, row.get(f"{metric}_ci_low_a"), row.get(f"{metric}_ci_high_a"), row.get("n_a")),
        "b": mean_ci(mean_b, row.get(f"{metric}_ci_low_b"), row.get(f"{metric}_ci_high_b"), row.get("n_b")),
        "diff": "—" if _missing(mean_a) or _missing(mean_b) else fmt(mean_b - mean_a, "+.2f"),
    }


def compared_metrics(a: Study, b: Study) -> list[str]:
    """The accuracy metrics some variant of either study has (top-1 on the kept classes: data sets that
    list noisy classes)."""
    return [m for m in ACCURACY
            if a.variants[f"{m}_mean"].notna().any() or b.variants[f"{m}_mean"].notna().any()]


def variant_rows(a: Study, b: Study, metrics: list[str]) -> list[dict]:
    """One row per (variant, recipe) of either study: each side's accuracy and the difference B − A."""
    joined = _join(a.variants, b.variants, VARIANT_KEYS)
    return [{"variant": r["variant"], "recipe": r["recipe"], "dataset": _side_value(r, "dataset"),
             "side": r["side"], "cells": [_accuracy_cells(r, m) for m in metrics]}
            for _, r in joined.iterrows()]


# ---------------------------------------------------------------------------------------------
# why a verdict changed


_ABSENT = object()  # a rule key one study does not have


def _show(value) -> str:
    return "(none)" if value is _ABSENT else str(value)


def rule_changes(rule_a: dict, rule_b: dict, prefix: str = "") -> list[str]:
    """``"alpha 0.05 → 0.01"`` for every key of the verdict rule whose value differs (nested keys dotted)."""
    changes = []
    for key in [*rule_a, *(k for k in rule_b if k not in rule_a)]:
        va, vb = rule_a.get(key, _ABSENT), rule_b.get(key, _ABSENT)
        if isinstance(va, dict) and isinstance(vb, dict):
            changes += rule_changes(va, vb, f"{prefix}{key}.")
        elif va != vb:
            changes.append(f"{prefix}{key} {_show(va)} → {_show(vb)}")
    return changes


def _settings(rule: dict) -> dict:
    """The verdict rule as params.yaml set it: without ``tests``, the size of the family, which follows
    from the claims and the runs (its change shows as "adjusted p moved")."""
    return {k: v for k, v in rule.items() if k != "tests"}


def _changed(row: pd.Series, columns) -> list[str]:
    """``"column A → B"`` for each of ``columns`` whose value differs between the sides of a joined row."""
    return [f"{c} {row[c + '_a']} → {row[c + '_b']}" for c in columns if not same(row[c + "_a"], row[c + "_b"])]


def _seed_reason(row: pd.Series, seeds: tuple[list, list]) -> dict | None:
    """More, fewer or other seeds behind a claim's two sides."""
    before, after = (row["n_a_a"], row["n_b_a"]), (row["n_a_b"], row["n_b_b"])
    if not all(same(x, y) for x, y in zip(before, after)):
        ups = [y > x for x, y in zip(before, after) if not same(x, y)]
        kind = "more seeds" if all(ups) else "fewer seeds" if not any(ups) else "other seeds"
        detail = ", ".join(f"{side}: {_count(x)} → {_count(y)}" for side, x, y in zip("ab", before, after))
        return {"kind": kind, "detail": f"seeds per side {detail}"}
    if seeds[0] != seeds[1]:
        return {"kind": "other seeds", "detail": f"seeds {_seed_list(seeds[0])} → {_seed_list(seeds[1])}"}
    return None


def _count(n) -> str:
    return "—" if _missing(n) else str(int(n))


def _seed_list(seeds) -> str:
    return " ".join(map(str, seeds)) if isinstance(seeds, list) else "—"


def _effect_reason(row: pd.Series) -> dict | None:
    """The difference a − b (or its interval) moved; or, with the same p, only the adjusted p did."""
    spec = metric_spec(row["metric_b"])
    if not all(same(row[c + "_a"], row[c + "_b"]) for c in ("diff", "ci_low", "ci_high", "p")):
        sides = [effect(row[f"diff{s}"], row[f"ci_low{s}"], row[f"ci_high{s}"], row[f"p{s}"], spec)
                 for s in ("_a", "_b")]
        return {"kind": "effect moved", "detail": f"a − b = {sides[0]} → {sides[1]}"}
    if not same(row["p_adjusted_a"], row["p_adjusted_b"]):
        return {"kind": "adjusted p moved",
                "detail": f"same effect and p, adjusted p {fmt(row['p_adjusted_a'], '.3g')} → "
                          f"{fmt(row['p_adjusted_b'], '.3g')}: the other claims' p-values or their number changed"}
    return None


def change_reasons(row: pd.Series, rule_diff: list[str], seeds: tuple[list, list]) -> list[dict]:
    """Why a joined claim row's verdict changed, as far as the two summaries tell: each reason a
    ``{"kind", "detail"}``; several may apply."""
    reasons = []
    if rule_diff:  # the test method follows from the rule and the seeds, so it is not compared on its own
        reasons.append({"kind": "different rule", "detail": "; ".join(rule_diff)})
    redefined = _changed(row, DEFINITION)
    if redefined:
        reasons.append({"kind": "claim redefined", "detail": "; ".join(redefined)})
    reasons.append(_seed_reason(row, seeds))
    if not same(row["n_images_a"], row["n_images_b"]):
        reasons.append({"kind": "other test images",
                        "detail": f"{_count(row['n_images_a'])} → {_count(row['n_images_b'])} test images"})
    reasons.append(_effect_reason(row))
    reasons = [r for r in reasons if r]
    return reasons or [{"kind": "unexplained", "detail": "same rule, seeds, test images and effect"}]


# ---------------------------------------------------------------------------------------------
# claims


def _claim_summary(row: pd.Series) -> dict:
    """What identifies a claim of a joined row, from whichever side has it."""
    return {"claim": row["claim"], "recipe": row["recipe"], "text": _side_value(row, "text"),
            "report": _side_value(row, "report"), "verdict_a": row.get("verdict_a"), "verdict_b": row.get("verdict_b")}


def _verdict_cell(row: pd.Series, side: str) -> dict:
    verdict = row[f"verdict_{side}"]
    return {"verdict": verdict, "css": VERDICT_CLASS.get(verdict, "inconclusive"), "reason": row[f"reason_{side}"]}


def verdict_counts(a: Study, b: Study, changed: pd.Series, joined: pd.DataFrame) -> list[dict]:
    """Per recipe: how many claims got each verdict in A and in B, and how many changed."""
    rows = []
    for recipe in joined["recipe"].drop_duplicates():
        in_a, in_b = a.claims[a.claims["recipe"] == recipe], b.claims[b.claims["recipe"] == recipe]
        rows.append({"recipe": recipe,
                     "a": [(v, VERDICT_CLASS[v], int((in_a["verdict"] == v).sum())) for v in VERDICTS],
                     "b": [(v, VERDICT_CLASS[v], int((in_b["verdict"] == v).sum())) for v in VERDICTS],
                     "changed": int((changed & (joined["recipe"] == recipe)).sum())})
    return rows


def claim_comparison(a: Study, b: Study) -> dict:
    """Every claim × recipe whose verdict changed (with why), the unchanged ones counted, the claims
    of one study only, and the verdict counts per recipe."""
    joined = _join(a.claims, b.claims, CLAIM_KEYS)
    rule_diff = rule_changes(_settings(a.summary["rule"]), _settings(b.summary["rule"]))
    seeds = (a.summary.get("seeds"), b.summary.get("seeds"))
    both = joined["side"] == BOTH
    changed = both & (joined["verdict_a"] != joined["verdict_b"])
    unchanged = joined[both & ~changed]
    return {
        "rule": rule_diff,
        "counts": verdict_counts(a, b, changed, joined),
        "changed": [{**_claim_summary(r), "a": _verdict_cell(r, "a"), "b": _verdict_cell(r, "b"),
                     "reasons": change_reasons(r, rule_diff, seeds)} for _, r in joined[changed].iterrows()],
        "unchanged": len(unchanged),
        "unchanged_by_verdict": [(v, int((unchanged["verdict_a"] == v).sum())) for v in VERDICTS],
        "only_a": [_claim_summary(r) for _, r in joined[joined["side"] == ONLY_A].iterrows()],
        "only_b": [_claim_summary(r) for _, r in joined[joined["side"] == ONLY_B].iterrows()],
    }


# ---------------------------------------------------------------------------------------------
# the whole comparison


def study_facts(study: Study, label: str) -> dict:
    """What the header says about one side: its folder, profile, seeds and recipes, a warning outside `full`."""
    profile = str(study.summary.get("profile", "?"))
    return {"label": label, "folder": str(study.folder), "profile": profile,
            "seeds": _seed_list(study.summary.get("seeds")),
            "recipes": ", ".join(map(str, study.summary.get("recipes") or [])) or "—",
            "banner": banner(profile) if profile != "?" else None}


def comparison(a: Study, b: Study) -> dict:
    """Everything the templates show."""
    metrics = compared_metrics(a, b)
    return {"sides": [study_facts(a, "A"), study_facts(b, "B")],
            "metrics": [METRIC_LABELS.get(m, m) for m in metrics],
            "variants": variant_rows(a, b, metrics),
            "claims": claim_comparison(a, b)}


def compare_studies(path_a: Path, path_b: Path, out_dir: Path) -> tuple[Path, Path]:
    """Read both results folders and write ``compare.md`` and ``compare.html`` (self-contained) into
    ``out_dir``, each atomically. Returns (md_path, html_path)."""
    context = comparison(load_study(path_a), load_study(path_b))
    env = template_env()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, html_path = out_dir / "compare.md", out_dir / "compare.html"
    atomic_write_text(md_path, env.get_template("compare.md.j2").render(**context))
    atomic_write_text(html_path, env.get_template("compare.html.j2").render(**context))
    return md_path, html_path
