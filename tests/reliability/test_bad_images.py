"""Bad images and CSV/folder mismatches in the butterfly archive, through download + preprocess.

With ``on_bad_image: skip`` every bad item is left out, warned about by name, and listed with
its reason in manifest.json and excluded.csv, and the good images are all packed. With
``fail`` each one alone stops preprocess with one message naming the member and the switch,
and no prepared data set appears.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from relsupport import (
    BUTTERFLY_NAME,
    butterfly_zip,
    cli,
    good_butterflies,
    jpeg,
    make_mirror,
    make_project,
    read_params,
    set_key,
    write_params,
)

_FULL = jpeg(seed=7)

# name -> (member path, CSV label or None (no CSV row), bytes in the zip or None (absent), reason fragment)
BAD = {
    "truncated-jpeg": ("train/ALPHA/truncated.jpg", "ALPHA", _FULL[: len(_FULL) // 2], "truncated"),
    "zero-byte": ("train/ALPHA/empty.jpg", "ALPHA", b"", "empty file (0 bytes)"),
    "png-named-jpg": ("train/BETA/png.jpg", "BETA", jpeg(fmt="PNG"), "not a JPEG (content is PNG)"),
    "cmyk": ("valid/BETA/cmyk.jpg", "BETA", jpeg("CMYK"), "colour mode CMYK, expected RGB"),
    "grayscale": ("test/GAMMA/gray.jpg", "GAMMA", jpeg("L"), "colour mode L, expected RGB"),
    "csv-row-missing-file": ("train/GAMMA/missing.jpg", "GAMMA", None, "listed in the CSV but missing from the archive"),
    "csv-class-without-folder": ("train/OMEGA/0.jpg", "OMEGA", None, "folder train/OMEGA/ of CSV class 'OMEGA' is not in the archive"),
    "folder-without-csv-class": ("test/DELTA/0.jpg", None, jpeg(seed=9), "class folder 'DELTA' is not in the CSV"),
}


def _archive(path: Path, bad: list[str]) -> Path:
    files, rows = good_butterflies()
    for name in bad:
        rel, label, data, _ = BAD[name]
        if label is not None:
            rows.append((rel, label, rel.split("/")[0]))
        if data is not None:
            files[rel] = data
    return butterfly_zip(path, files, rows)


def _run(tmp_path: Path, bad: list[str], on_bad_image: str) -> tuple[Path, int, str]:
    mirror = make_mirror(tmp_path / "mirror", {f"butterflies/{BUTTERFLY_NAME}": _archive(tmp_path / BUTTERFLY_NAME, bad)})
    root = make_project(tmp_path / "project")
    doc = read_params(root)
    set_key(doc, "datasets.butterflies.noisy_classes", [])
    set_key(doc, "profiles.smoke.datasets.butterflies.on_bad_image", on_bad_image)  # through the profile merge
    write_params(root, doc)
    rc, err = cli(root, "-q", "download", "--dataset", "butterflies", mirror=mirror)
    assert rc == 0, err
    rc, err = cli(root, "preprocess", "--dataset", "butterflies", mirror=mirror)
    return root, rc, err


def test_skip_leaves_out_and_lists_every_bad_item(tmp_path):
    root, rc, err = _run(tmp_path, list(BAD), "skip")
    assert rc == 0, err
    out = root / "data" / "prepared" / "butterflies"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["on_bad_image"] == "skip"
    listed = {e["file"]: e for e in manifest["excluded"]}
    with open(out / "excluded.csv", newline="") as fh:
        in_csv = {r["file"]: r for r in csv.DictReader(fh)}
    for name, (rel, _, _, reason) in BAD.items():
        assert rel in listed, f"{name}: {rel} not in the manifest's excluded list"
        assert reason in listed[rel]["reason"], (name, listed[rel])
        assert listed[rel]["split"] == {"train": "train", "valid": "val", "test": "test"}[rel.split("/")[0]]
        assert rel in in_csv and reason in in_csv[rel]["reason"], (name, in_csv.get(rel))
        assert rel in err, f"{name}: no warning names {rel}"
    # Every good image is packed; no bad one is.
    files, rows = good_butterflies()
    for split, ours in (("train", "train"), ("valid", "val"), ("test", "test")):
        assert manifest["splits"][ours]["count"] == sum(1 for r in rows if r[2] == split)
    assert manifest["classes"] == ["ALPHA", "BETA", "GAMMA"]  # OMEGA has no image, DELTA is not a CSV class
    assert manifest["dropped_classes"] == ["OMEGA"]
    assert any("8 bad image(s)" in n for n in manifest["notes"]), manifest["notes"]


@pytest.mark.parametrize("name", list(BAD))
def test_fail_stops_at_the_bad_item_and_writes_nothing(tmp_path, name):
    root, rc, err = _run(tmp_path, [name], "fail")
    rel, _, _, reason = BAD[name]
    assert rc == 1, err
    line = [ln for ln in err.splitlines() if ln.startswith("cnnbench preprocess: error:")]
    assert len(line) == 1, err
    assert f"bad image '{rel}'" in line[0] and reason in line[0], line[0]
    assert BUTTERFLY_NAME in line[0] and "on_bad_image: skip" in line[0], line[0]
    prepared = root / "data" / "prepared"
    assert not prepared.exists() or list(prepared.iterdir()) == [], list(prepared.iterdir())
