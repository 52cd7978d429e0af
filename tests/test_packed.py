"""cnnbench.data.packed: the packed uint8 store written by preprocess and read by train/evaluate."""

from __future__ import annotations

import csv
import json
import os
import socket
import tempfile
from pathlib import Path

import numpy as np
import pytest

from cnnbench.data import packed
from cnnbench.errors import ConfigError, DataError

CLASSES = ["ant", "bee", "cat", "dog"]


def _splits(seed: int = 0, hw: int = 8) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", 20), ("val", 8), ("test", 12)):
        images = rng.integers(0, 256, size=(n, hw, hw, 3), dtype=np.uint8)
        labels = np.arange(n) % len(CLASSES)
        out[split] = (images, labels)
    return out


def _manifest(**extra: object) -> dict:
    m = {
        "dataset": "toy",
        "source": {"source": "mirror", "sha256": "0" * 64},
        "noisy_classes": ["bee"],
        "excluded": [{"split": "train", "file": "train/ant/bad.jpg", "reason": "empty file (0 bytes)"}],
        "notes": ["a note"],
    }
    m.update(extra)
    return m


def test_roundtrip(tmp_path: Path) -> None:
    splits = _splits()
    out = tmp_path / "prepared" / "toy"
    packed.write_prepared(out, splits, CLASSES, _manifest())
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{s}_{k}.npy" for s in packed.SPLITS for k in ("images", "labels")]
        + ["classes.json", "manifest.json", "excluded.csv"]
    )
    assert [p.name for p in out.parent.iterdir()] == ["toy"]  # no staging directory left
    for split in packed.SPLITS:
        images, labels, classes = packed.load_split(out, split)
        assert isinstance(images, np.memmap) and images.dtype == np.uint8
        np.testing.assert_array_equal(images, splits[split][0])
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(labels, splits[split][1])
        assert classes == CLASSES
    manifest = packed.read_manifest(out)
    assert manifest["format"] == packed.FORMAT
    assert manifest["classes"] == CLASSES and manifest["image_size"] == [8, 8]
    assert manifest["splits"]["train"] == {"count": 20, "per_class": {"ant": 5, "bee": 5, "cat": 5, "dog": 5}}
    assert manifest["splits"]["val"]["count"] == 8 and manifest["notes"] == ["a note"]
    assert packed.read_classes(out) == CLASSES
    with open(out / "excluded.csv", newline="") as f:
        assert list(csv.reader(f)) == [["split", "file", "reason"], ["train", "train/ant/bad.jpg", "empty file (0 bytes)"]]


def test_load_split_excludes_and_remaps(tmp_path: Path) -> None:
    splits = _splits()
    packed.write_prepared(tmp_path / "p", splits, CLASSES, _manifest())
    images, labels, classes = packed.load_split(tmp_path / "p", "train", exclude_classes=["bee", "dog"])
    assert classes == ["ant", "cat"]
    keep = np.isin(splits["train"][1], [0, 2])
    np.testing.assert_array_equal(images, splits["train"][0][keep])
    np.testing.assert_array_equal(labels, np.where(splits["train"][1][keep] == 0, 0, 1))
    assert labels.dtype == np.int64 and set(labels.tolist()) == {0, 1}


def test_load_split_errors(tmp_path: Path) -> None:
    packed.write_prepared(tmp_path / "p", _splits(), CLASSES, _manifest())
    with pytest.raises(ConfigError, match="'zebra'"):
        packed.load_split(tmp_path / "p", "train", exclude_classes=["bee", "zebra"])
    with pytest.raises(ConfigError, match="removes every class"):
        packed.load_split(tmp_path / "p", "test", exclude_classes=CLASSES)
    with pytest.raises(ValueError, match="not the string"):
        packed.load_split(tmp_path / "p", "test", exclude_classes="bee")
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        packed.load_split(tmp_path / "p", "valid")


def test_missing_files_say_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cnnbench preprocess --dataset cifar10"):
        packed.load_split(tmp_path / "cifar10", "train")
    with pytest.raises(DataError, match="cnnbench preprocess --dataset butterflies"):
        packed.read_manifest(tmp_path / "butterflies")
    packed.write_prepared(tmp_path / "p", _splits(), CLASSES, _manifest())
    (tmp_path / "p" / "val_labels.npy").unlink()
    with pytest.raises(DataError, match=r"val_labels\.npy.*cnnbench preprocess --dataset toy"):
        packed.load_split(tmp_path / "p", "val")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda s: s["train"].__setitem__(0, s["train"][0].astype(np.float32)), "uint8"),
        (lambda s: s["train"].__setitem__(0, s["train"][0][..., :1]), "N x H x W x 3"),
        (lambda s: s["val"].__setitem__(1, s["val"][1][:-1]), "8 images but 7 labels"),
        (lambda s: s["test"].__setitem__(1, s["test"][1] + 1), r"0\.\.3"),
        (lambda s: s["test"].__setitem__(0, np.zeros((12, 4, 4, 3), np.uint8)), "one image size"),
        (lambda s: s.pop("val"), "missing \\['val'\\]"),
        (lambda s: s.__setitem__("valid", s["val"]), "unknown \\['valid'\\]"),
    ],
)
def test_write_validates(tmp_path: Path, mutate, message: str) -> None:
    splits = {k: list(v) for k, v in _splits().items()}
    mutate(splits)
    with pytest.raises(ValueError, match=message):
        packed.write_prepared(tmp_path / "p", {k: tuple(v) for k, v in splits.items()}, CLASSES, _manifest())
    assert not (tmp_path / "p").exists()


def test_write_rejects_inconsistent_manifest_and_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="splits.train.count"):
        packed.write_prepared(tmp_path / "p", _splits(), CLASSES, _manifest(splits={"train": {"count": 3}}))
    with pytest.raises(DataError, match="duplicate class names"):
        packed.write_prepared(tmp_path / "p", _splits(), ["a", "a", "b", "c"], _manifest())
    with pytest.raises(ValueError, match="excluded\\[0\\]"):
        packed.write_prepared(tmp_path / "p", _splits(), CLASSES, _manifest(excluded=[{"file": "x"}]))


def test_extra_manifest_keys_kept(tmp_path: Path) -> None:
    manifest = _manifest(splits={"train": {"note": "kept"}}, splits_without_noisy={"train": {"count": 15}})
    packed.write_prepared(tmp_path / "p", _splits(), CLASSES, manifest)
    got = packed.read_manifest(tmp_path / "p")
    assert got["splits"]["train"]["note"] == "kept" and got["splits"]["train"]["count"] == 20
    assert got["splits_without_noisy"] == {"train": {"count": 15}}


def test_rewrite_replaces_atomically(tmp_path: Path) -> None:
    out = tmp_path / "p"
    packed.write_prepared(out, _splits(seed=1), CLASSES, _manifest())
    (out / "stale.npy").write_bytes(b"old")
    packed.write_prepared(out, _splits(seed=2), CLASSES, _manifest(notes=["second"]))
    assert not (out / "stale.npy").exists()
    assert packed.read_manifest(out)["notes"] == ["second"]
    np.testing.assert_array_equal(packed.load_split(out, "val")[0], _splits(seed=2)["val"][0])
    # A failed write leaves the previous result untouched and no staging directory behind.
    with pytest.raises(ValueError):
        packed.write_prepared(out, _splits(), ["only", "three", "names"], _manifest())
    assert packed.read_manifest(out)["notes"] == ["second"]
    assert [p.name for p in tmp_path.iterdir()] == ["p"]


def _killed_while_staging(dest: Path) -> Path:
    """A real process that makes a staging folder for `dest`, writes into it and is SIGKILLed."""
    import subprocess
    import sys

    code = ("import os, signal, sys; from cnnbench.data import packed; "
            "d = packed.staging_dir(sys.argv[1]); (d / 'part.npy').write_bytes(b'x' * 1000); "
            "print(d, flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code, str(dest)], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    left = Path(proc.stdout.strip())
    assert left.is_dir() and left.parent == dest.parent
    return left


@pytest.mark.skipif(os.name != "posix", reason="process liveness is checked with POSIX signals")
def test_leftovers_of_a_killed_run_are_removed_by_the_next_one(tmp_path: Path, caplog) -> None:
    out = tmp_path / "p"
    left = _killed_while_staging(out)
    live = Path(tempfile.mkdtemp(prefix=f".p.tmp-{os.getpid()}@{socket.gethostname()}-", dir=tmp_path))
    elsewhere = tmp_path / ".p.tmp-1@another-host.example-abc123"
    legacy = tmp_path / ".p.tmp-k2j3h4"  # named before folders carried their owner
    other = tmp_path / ".q.tmp-1@" / "x"
    for d in (elsewhere, legacy, other):
        d.mkdir(parents=True)
    with caplog.at_level("WARNING", logger="cnnbench.atomic"):
        packed.write_prepared(out, _splits(), CLASSES, _manifest())
    assert not left.exists()  # its process is gone: deleted, and said so
    assert f"removed {left}" in caplog.text and "interrupted run" in caplog.text
    # a live process's folder, another host's and other destinations' are kept; an unknown owner is named
    assert live.is_dir() and elsewhere.is_dir() and legacy.is_dir() and other.is_dir()
    assert f"{legacy}: left by an earlier run (owner unknown)" in caplog.text
    assert packed.read_manifest(out)["dataset"] == "toy"


def test_empty_split_allowed(tmp_path: Path) -> None:
    splits = _splits()
    splits["val"] = (np.zeros((0, 8, 8, 3), np.uint8), np.zeros(0, np.int64))
    packed.write_prepared(tmp_path / "p", splits, CLASSES, _manifest())
    images, labels, _ = packed.load_split(tmp_path / "p", "val", exclude_classes=["bee"])
    assert images.shape == (0, 8, 8, 3) and labels.shape == (0,)
    assert json.loads((tmp_path / "p" / "manifest.json").read_text())["splits"]["val"]["count"] == 0


def test_extra_json_written_in_the_same_rename(tmp_path: Path) -> None:
    out = tmp_path / "p"
    packed.write_prepared(out, _splits(), CLASSES, _manifest(), extra_json={"report.json": {"groups": [1, 2]}})
    assert json.loads((out / "report.json").read_text()) == {"groups": [1, 2]}
    for name in ("../escape.json", "sub/x.json", "report.txt", "manifest.json", "classes.json"):
        with pytest.raises(ValueError, match="plain '\\*.json' file name"):
            packed.write_prepared(out, _splits(seed=3), CLASSES, _manifest(), extra_json={name: {}})
    # Something that is not JSON fails the write: the previous store stays, nothing is left behind.
    with pytest.raises(TypeError):
        packed.write_prepared(out, _splits(seed=3), CLASSES, _manifest(), extra_json={"bad.json": {"x": object()}})
    assert json.loads((out / "report.json").read_text()) == {"groups": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"] and not (tmp_path / "escape.json").exists()


# --------------------------------------------------------------------------- clean_mask (leak audit)
def _audit(leaked: list | None, **extra: object) -> dict:
    audit = {"format": "cnnbench-duplicates-v2", "dataset": "toy", "pairs": [], "groups": []}
    if leaked is not None:
        audit["test_leaked"] = leaked
    audit.update(extra)
    return audit


def test_clean_mask_follows_the_audit_and_the_class_filter(tmp_path: Path) -> None:
    # test labels are 0,1,2,3,0,1,2,3,0,1,2,3 (ant, bee, cat, dog repeating); images 1 (bee), 2 (cat),
    # 6 (cat) and 11 (dog) have a duplicate in train
    out = tmp_path / "p"
    packed.write_prepared(out, _splits(), CLASSES, _manifest(),
                          extra_json={"duplicates.json": _audit([2, 6, 1, 11, 6], test_clean_count=8)})
    mask = packed.clean_mask(out)
    assert mask.dtype == bool
    assert mask.tolist() == [True, False, False, True, True, True, False, True, True, True, True, False]
    # without bee and dog, load_split keeps images 0, 2, 4, 6, 8, 10 (ant, cat, ant, cat, ant, cat)
    filtered = packed.clean_mask(out, "test", exclude_classes=["bee", "dog"])
    assert filtered.tolist() == [True, False, True, False, True, True]
    assert len(filtered) == len(packed.load_split(out, "test", exclude_classes=["bee", "dog"])[1])
    # an audit that lists nothing leaves every image clean
    packed.write_prepared(out, _splits(), CLASSES, _manifest(), extra_json={"duplicates.json": _audit([])})
    assert packed.clean_mask(out).tolist() == [True] * 12


def test_clean_mask_unknown_without_a_v2_audit(tmp_path: Path) -> None:
    out = tmp_path / "p"
    packed.write_prepared(out, _splits(), CLASSES, _manifest())
    assert packed.clean_mask(out) is None  # no duplicates.json
    v1 = {"format": "cnnbench-duplicates-v1", "dataset": "toy", "pairs": [], "groups": []}
    packed.write_prepared(out, _splits(), CLASSES, _manifest(), extra_json={"duplicates.json": v1})
    assert packed.clean_mask(out) is None  # no test_leaked: clean accuracy unknown, not an error
    assert packed.clean_mask(out, "val") is None  # the audit lists test images only


@pytest.mark.parametrize(
    "audit, message",
    [
        (_audit([3, 12]), r"duplicates\.json: test_leaked holds position\(s\) \[12\] outside the 12 images of "
                          r"test_labels\.npy.*cnnbench preprocess --dataset toy"),
        (_audit([-1]), r"duplicates\.json: test_leaked holds position\(s\) \[-1\]"),
        (_audit(["3"]), r"duplicates\.json: test_leaked must be a list of integer positions"),
        (_audit([1, 2], test_clean_count=11), r"duplicates\.json: test_clean_count is 11 but test_leaked leaves 10"),
    ],
)
def test_clean_mask_rejects_an_audit_of_another_store(tmp_path: Path, audit: dict, message: str) -> None:
    out = tmp_path / "p"
    packed.write_prepared(out, _splits(), CLASSES, _manifest(), extra_json={"duplicates.json": audit})
    with pytest.raises(DataError, match=message):
        packed.clean_mask(out)


def test_clean_mask_bad_json_and_arguments(tmp_path: Path) -> None:
    out = tmp_path / "p"
    packed.write_prepared(out, _splits(), CLASSES, _manifest())
    (out / "duplicates.json").write_text("{not json")
    with pytest.raises(DataError, match=r"duplicates\.json is not valid JSON"):
        packed.clean_mask(out)
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        packed.clean_mask(out, "valid")
