"""`cnnbench compare A B`: two results folders, constructed here as `cnnbench aggregate` writes them."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from cnnbench.cli import main
from cnnbench.compare import (claim_comparison, compare_studies, load_study, mean_ci, rule_changes,
                              summary_dir, variant_rows)
from cnnbench.errors import DataError

METRICS = ("test_top1", "test_top5", "top1_kept", "epoch_seconds", "params", "instability", "peak_memory_mb")
RULE = {"alpha": 0.05, "correction": "holm", "similar_margin": 2.0, "power": 0.8,
        "bootstrap": {"seed": 0, "draws": 10000}, "tests": 3}


def variant(name: str, recipe: str = "lab", top1: float = 90.0, ci: float = 0.5, n: int = 3,
            kept: float | None = None) -> dict:
    """A row of variants.csv: test top-1 ``top1`` ± ``ci`` (95 % interval), over ``n`` seeds."""
    row = {"variant": name, "dataset": name.split("-")[0], "model": "resnet18", "recipe": recipe, "n": n,
           "seeds": " ".join(map(str, range(n))), "epochs": 10, "test_images": 10000}
    for m in METRICS:
        row[f"{m}_mean"], row[f"{m}_std"] = (top1, 0.3) if m == "test_top1" else (1.0, 0.1)
    row["top1_kept_mean"] = kept
    row["top1_kept_std"] = None if kept is None else 0.2
    row["test_top1_ci_low"], row["test_top1_ci_high"] = top1 - ci, top1 + ci
    row["top1_kept_ci_low"] = None if kept is None else kept - 1
    row["top1_kept_ci_high"] = None if kept is None else kept + 1
    return row


def claim(cid: str, verdict: str, recipe: str = "lab", diff: float = 1.5, ci=(0.5, 2.5), p: float = 0.01,
          n: int = 3, **extra) -> dict:
    """A row of claims.csv: "a is more accurate than b"."""
    row = {"claim": cid, "report": "Lab report 1", "text": f"claim {cid} text", "their": "", "metric": "test_top1",
           "expect": "greater", "recipe": recipe, "a": "cifar10-a", "b": "cifar10-b", "n_a": n, "n_b": n,
           "n_images": 10000, "paired": True, "mean_a": 91.0, "mean_b": 91.0 - diff, "std_a": 0.3, "std_b": 0.3,
           "diff": diff, "ci_low": ci[0], "ci_high": ci[1], "p": p, "p_adjusted": min(1.0, 3 * p),
           "prob_improvement": 0.9, "pi_low": 0.8, "pi_high": 0.95, "noise": "seeds and test images",
           "method": "two-level bootstrap", "verdict": verdict, "reason": f"because {verdict}",
           "seeds_needed": None, "seeds_needed_note": ""}
    return {**row, **extra}


def write_results(root: Path, variants: list[dict], claims: list[dict], rule: dict | None = None,
                  seeds=(0, 1, 2), profile: str = "full") -> Path:
    """``root/summary/`` with variants.csv, claims.csv and summary.json; returns ``root``."""
    summary = root / "summary"
    summary.mkdir(parents=True)
    pd.DataFrame(variants).to_csv(summary / "variants.csv", index=False)
    pd.DataFrame(claims).to_csv(summary / "claims.csv", index=False)
    (summary / "summary.json").write_text(json.dumps({
        "profile": profile, "seeds": list(seeds), "recipes": sorted({c["recipe"] for c in claims}),
        "rule": rule or RULE, "verdicts": {}, "claims": []}))
    return root


BASE_VARIANTS = [variant("cifar10-a", top1=91.0), variant("cifar10-b", top1=89.5),
                 variant("butterflies-c", top1=80.0, kept=82.25)]
BASE_CLAIMS = [claim("c1", "holds"), claim("c2", "inconclusive", diff=0.2, ci=(-0.8, 1.2), p=0.6),
               claim("c3", "holds", recipe="fast")]


@pytest.fixture
def base(tmp_path) -> Path:
    return write_results(tmp_path / "A", BASE_VARIANTS, BASE_CLAIMS)


def changed_by_claim(a: Path, b: Path) -> dict:
    result = claim_comparison(load_study(a), load_study(b))
    return {(c["claim"], c["recipe"]): c for c in result["changed"]}, result


def kinds(change: dict) -> set[str]:
    return {r["kind"] for r in change["reasons"]}


# --- why a verdict changed ----------------------------------------------------------------------


def test_a_changed_rule_is_the_reason_and_names_the_keys(base, tmp_path):
    rule = copy.deepcopy(RULE)
    rule["alpha"], rule["bootstrap"]["draws"] = 0.001, 20000
    claims = [claim("c1", "inconclusive"), *copy.deepcopy(BASE_CLAIMS[1:])]  # same effect, stricter alpha
    b = write_results(tmp_path / "B", BASE_VARIANTS, claims, rule=rule)
    changed, result = changed_by_claim(base, b)
    assert list(changed) == [("c1", "lab")]
    assert kinds(changed["c1", "lab"]) == {"different rule"}
    detail = changed["c1", "lab"]["reasons"][0]["detail"]
    assert "alpha 0.05 → 0.001" in detail and "bootstrap.draws 10000 → 20000" in detail
    assert result["rule"] == ["alpha 0.05 → 0.001", "bootstrap.draws 10000 → 20000"]


def test_more_seeds_is_the_reason_with_both_counts(base, tmp_path):
    claims = [claim("c1", "holds"), claim("c2", "holds", diff=0.2, ci=(-0.8, 1.2), p=0.6, n=10),
              claim("c3", "holds", recipe="fast")]
    b = write_results(tmp_path / "B", BASE_VARIANTS, claims, seeds=range(10))
    changed, _ = changed_by_claim(base, b)
    assert kinds(changed["c2", "lab"]) == {"more seeds"}
    assert changed["c2", "lab"]["reasons"][0]["detail"] == "seeds per side a: 3 → 10, b: 3 → 10"
    # and the other way round
    changed, _ = changed_by_claim(b, base)
    assert kinds(changed["c2", "lab"]) == {"fewer seeds"}


def test_a_moved_effect_gives_both_differences_with_their_intervals(base, tmp_path):
    claims = [claim("c1", "does not hold", diff=-2.0, ci=(-3.0, -1.0), p=0.002), *BASE_CLAIMS[1:]]
    b = write_results(tmp_path / "B", BASE_VARIANTS, claims)
    changed, _ = changed_by_claim(base, b)
    change = changed["c1", "lab"]
    assert kinds(change) == {"effect moved"}
    assert change["reasons"][0]["detail"] == "a − b = +1.50 [0.50, 2.50], p 0.01 → -2.00 [-3.00, -1.00], p 0.002"
    assert (change["a"]["verdict"], change["b"]["verdict"]) == ("holds", "does not hold")


def test_several_reasons_are_all_given(base, tmp_path):
    rule = {**RULE, "similar_margin": 1.0}
    claims = [claim("c1", "inconclusive", diff=0.4, ci=(-1.0, 1.8), p=0.3, n=5), *BASE_CLAIMS[1:]]
    b = write_results(tmp_path / "B", BASE_VARIANTS, claims, rule=rule, seeds=range(5))
    changed, _ = changed_by_claim(base, b)
    assert kinds(changed["c1", "lab"]) == {"different rule", "more seeds", "effect moved"}


@pytest.mark.parametrize("change, kind, detail", [
    ({"p_adjusted": 0.09}, "adjusted p moved", "adjusted p 0.03 → 0.09"),  # same p, Holm over other claims
    ({"b": "cifar10-e"}, "claim redefined", "b cifar10-b → cifar10-e"),
    ({"n_images": 5000}, "other test images", "10000 → 5000 test images"),
    ({}, "unexplained", "same rule, seeds, test images and effect"),
])
def test_the_other_reasons(base, tmp_path, change, kind, detail):
    b = write_results(tmp_path / "B", BASE_VARIANTS, [claim("c1", "inconclusive", **change), *BASE_CLAIMS[1:]])
    changed, _ = changed_by_claim(base, b)
    assert [(r["kind"], detail in r["detail"]) for r in changed["c1", "lab"]["reasons"]] == [(kind, True)]


def test_more_tests_in_the_family_is_not_a_rule_change(base, tmp_path):
    # the same rule over more claims: Holm's adjusted p moved, the rule did not
    claims = [claim("c1", "inconclusive", p_adjusted=0.12, method="another method text"), *BASE_CLAIMS[1:]]
    b = write_results(tmp_path / "B", BASE_VARIANTS, claims, rule={**RULE, "tests": 12})
    changed, result = changed_by_claim(base, b)
    assert result["rule"] == [] and kinds(changed["c1", "lab"]) == {"adjusted p moved"}


def test_unchanged_verdicts_are_counted_not_listed(base, tmp_path):
    # B moved c2's effect a little but its verdict stayed: no change listed
    claims = [BASE_CLAIMS[0], claim("c2", "inconclusive", diff=0.9, ci=(-0.1, 1.9), p=0.08), BASE_CLAIMS[2]]
    b = write_results(tmp_path / "B", BASE_VARIANTS, claims)
    changed, result = changed_by_claim(base, b)
    assert changed == {}
    assert result["unchanged"] == 3
    assert dict(result["unchanged_by_verdict"]) == {"holds": 2, "does not hold": 0, "inconclusive": 1}


def test_claims_only_in_one_study_are_listed(base, tmp_path):
    claims = [*BASE_CLAIMS[:2], claim("c4", "holds", recipe="fast")]
    b = write_results(tmp_path / "B", BASE_VARIANTS, claims)
    changed, result = changed_by_claim(base, b)
    assert changed == {}
    assert [(c["claim"], c["recipe"], c["verdict_a"]) for c in result["only_a"]] == [("c3", "fast", "holds")]
    assert [(c["claim"], c["recipe"], c["verdict_b"]) for c in result["only_b"]] == [("c4", "fast", "holds")]


def test_rule_changes_lists_added_and_removed_keys():
    assert rule_changes(RULE, RULE) == []
    new = {k: v for k, v in RULE.items() if k != "power"} | {"paired": True}
    assert rule_changes(RULE, new) == ["power 0.8 → (none)", "paired (none) → True"]


# --- variants -----------------------------------------------------------------------------------


def test_mean_ci_format():
    assert mean_ci(84.1, 83.5, 84.7, 3) == "84.10 [83.50, 84.70] (n=3)"
    assert mean_ci(84.1, float("nan"), float("nan"), 1) == "84.10 (n=1)"
    assert mean_ci(float("nan"), 1, 2, 3) == "—"


def test_variants_side_by_side_with_the_difference_and_one_sided_rows(base, tmp_path):
    variants = [variant("cifar10-a", top1=92.25, ci=0.25, n=5), variant("butterflies-c", top1=79.0, kept=83.0),
                variant("cifar10-d", top1=70.0)]
    b = write_results(tmp_path / "B", variants, BASE_CLAIMS)
    rows = {(r["variant"], r["recipe"]): r for r in variant_rows(load_study(base), load_study(b),
                                                                   ["test_top1", "top1_kept"])}
    top1, kept = rows["cifar10-a", "lab"]["cells"]
    assert rows["cifar10-a", "lab"]["side"] == "both"
    assert (top1["a"], top1["b"], top1["diff"]) == ("91.00 [90.50, 91.50] (n=3)", "92.25 [92.00, 92.50] (n=5)", "+1.25")
    assert kept == {"a": "—", "b": "—", "diff": "—"}  # CIFAR-10 has no kept classes
    assert rows["butterflies-c", "lab"]["cells"][1]["diff"] == "+0.75"
    assert rows["cifar10-b", "lab"]["side"] == "only in A" and rows["cifar10-b", "lab"]["cells"][0]["b"] == "—"
    assert rows["cifar10-d", "lab"]["side"] == "only in B" and rows["cifar10-d", "lab"]["cells"][0]["diff"] == "—"
    assert list(rows)[-1] == ("cifar10-d", "lab")  # A's order, then B's own rows


# --- files written --------------------------------------------------------------------------------


def test_both_files_are_written_and_the_html_is_self_contained(tmp_path):
    text = "<b>ResNet</b> & co beat VGG"
    a = write_results(tmp_path / "A", BASE_VARIANTS, [claim("c1", "holds", text=text), *BASE_CLAIMS[1:]])
    claims = [claim("c1", "does not hold", diff=-2.0, ci=(-3.0, -1.0), p=0.002, text=text), *BASE_CLAIMS[1:]]
    b = write_results(tmp_path / "B", BASE_VARIANTS, claims, profile="smoke")
    md_path, html_path = compare_studies(a, b / "summary", tmp_path / "out")  # results/ or summary/: both
    md, html = md_path.read_text(), html_path.read_text()
    assert md_path.name == "compare.md" and html_path.name == "compare.html"
    assert "http" not in html and not re.search(r"""(src|href)=["'](?!#)""", html)
    assert "&lt;b&gt;ResNet&lt;/b&gt; &amp; co" in html and "<b>ResNet</b> & co" in md
    for text in (md, html):
        assert "91.00 [90.50, 91.50] (n=3)" in text
        assert "effect moved" in text and "+1.50 [0.50, 2.50], p 0.01 → -2.00 [-3.00, -1.00], p 0.002" in text
        assert "1 verdict(s) changed; 2 unchanged" in text
        assert "smoke data: not evidence" in text  # B is the smoke profile
        assert "claim c2 text" not in text  # unchanged: counted only
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left


def test_summary_dir_accepts_results_or_its_summary(base):
    assert summary_dir(base) == base / "summary"
    assert summary_dir(base / "summary") == base / "summary"


@pytest.mark.parametrize("name", ["variants.csv", "claims.csv", "summary.json"])
def test_a_missing_file_is_named_with_the_command_that_writes_it(base, name):
    (base / "summary" / name).unlink()
    with pytest.raises(DataError, match=rf"{re.escape(str(base / 'summary' / name))}: missing; it is written by "
                                        r"`cnnbench aggregate`"):
        load_study(base)


def test_an_old_summary_without_the_intervals_is_refused(base):
    path = base / "summary" / "variants.csv"
    pd.read_csv(path).drop(columns=["test_top1_ci_low"]).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"variants.csv: no column\(s\) test_top1_ci_low; re-run `cnnbench aggregate`"):
        load_study(base)


# --- the command ------------------------------------------------------------------------------------


def test_cli_writes_both_files_without_params_yaml(base, tmp_path, capsys):
    b = write_results(tmp_path / "B", BASE_VARIANTS, BASE_CLAIMS)
    out = tmp_path / "cmp"
    assert main(["--params", str(tmp_path / "no-params.yaml"), "compare", str(base), str(b), "--out", str(out)]) == 0
    assert capsys.readouterr().out.split() == ["wrote", str(out / "compare.md"), "wrote", str(out / "compare.html")]
    assert (out / "compare.md").is_file() and (out / "compare.html").is_file()


def test_cli_bad_folder_is_one_line_with_status_1(base, tmp_path, capsys):
    rc = main(["compare", str(base), str(tmp_path / "nowhere"), "--out", str(tmp_path / "cmp")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 1 and len(err) == 1 and "Traceback" not in err[0]
    assert err[0].startswith("cnnbench compare: error: ") and "nowhere: not a folder" in err[0]
    assert not (tmp_path / "cmp").exists()


def test_cli_help_says_what_a_and_b_are(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "results folder" in text and "compare.html" in text and "dvc exp apply" in text
