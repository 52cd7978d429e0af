"""cnnbench.data.cifar, the CIFAR-100 kind: a tiny fake of the official archive (every one of the
100 fine classes, 3 training images and 1 test image each), fine and coarse labels, the seeded
stratified hold-out, the restricted unpickler, corrupt members, and the download with its md5."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml

from cnnbench.data import fetch, packed
from cnnbench.data.cifar import CIFAR10, CIFAR100
from cnnbench.data.fetch import ChecksumError
from cnnbench.errors import ConfigError, DataError
from test_cifar10 import _tar

REPO = Path(__file__).resolve().parents[1]
NAME = "cifar-100-python.tar.gz"
DATASET = "c100"  # a name of the user's choosing, so errors must not say "cifar100"
CFG = {"name": DATASET, "kind": "cifar100", "url": "unused", "md5": "0" * 32, "filename": NAME,
       "val_fraction": 0.2, "split_seed": 0}
# label order is deliberately not alphabetical: classes must follow the meta file, not be sorted
FINE = [f"fine_{99 - i:02d}" for i in range(100)]
COARSE = [f"coarse_{19 - j:02d}" for j in range(20)]
TRAIN_PER_CLASS, TEST_PER_CLASS = 3, 1


def _coarse_of(fine: int) -> int:
    return fine % 20  # each superclass holds 5 fine classes, interleaved


def _py2(obj: dict) -> bytes:
    """Pickle like the official (Python 2) files: byte-string keys and names, numpy.core globals."""
    def enc(v: object) -> object:
        return v.encode() if isinstance(v, str) else [enc(x) for x in v] if isinstance(v, list) else v

    blob = pickle.dumps({k.encode(): enc(v) for k, v in obj.items()}, protocol=2)
    return blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def _batch(per_class: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    fine = rng.permutation(np.repeat(np.arange(100), per_class)).tolist()
    return {"batch_label": "training batch 1 of 1", "filenames": [f"img_{seed}_{i}.png" for i in range(len(fine))],
            "fine_labels": fine, "coarse_labels": [_coarse_of(f) for f in fine],
            "data": rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8)}


TRAIN, TEST = _batch(TRAIN_PER_CLASS, 1), _batch(TEST_PER_CLASS, 2)


def _members(**replace: bytes) -> dict[str, bytes]:
    members = {
        "cifar-100-python/train": _py2(TRAIN),
        "cifar-100-python/test": _py2(TEST),
        "cifar-100-python/meta": _py2({"fine_label_names": FINE, "coarse_label_names": COARSE}),
        "cifar-100-python/file.txt~": b"editor backup shipped in the official archive",
    }
    members.update({f"cifar-100-python/{k}": v for k, v in replace.items()})
    return members


def _raw(path: Path, **replace: bytes) -> Path:
    _tar(path / NAME, _members(**replace))
    (path / "source.json").write_text(json.dumps({"dataset": DATASET, "source": "url", "filename": NAME}))
    return path


def _hashes(images: np.ndarray) -> set[str]:
    return {hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _raw(tmp_path_factory.mktemp("c100") / "raw")


# --------------------------------------------------------------------------- labels
def test_fine_labels_by_default(raw: Path, tmp_path: Path) -> None:
    manifest = CIFAR100.prepare(raw, tmp_path / "out", CFG)
    assert manifest["classes"] == FINE  # label order of the meta file
    assert manifest["kind"] == "cifar100" and manifest["dataset"] == DATASET and manifest["label_mode"] == "fine"
    assert manifest["source"]["filename"] == NAME and manifest["noisy_classes"] == []
    splits = manifest["splits"]
    for c in FINE:  # 3 training images per class: round(0.2 * 3) = 1 held out for val
        assert (splits["train"]["per_class"][c], splits["val"]["per_class"][c], splits["test"]["per_class"][c]) \
            == (2, 1, 1)
    assert any("subset" in n for n in manifest["notes"])
    test_x, test_y, classes = packed.load_split(tmp_path / "out", "test")
    assert classes == FINE and test_y.tolist() == TEST["fine_labels"]
    # CIFAR rows are 1024 R, 1024 G, 1024 B (row-major): pixel (y, x, c) = row[c*1024 + y*32 + x].
    for i, (y, x, c) in enumerate([(0, 0, 0), (5, 17, 1), (31, 31, 2)]):
        assert test_x[i, y, x, c] == TEST["data"][i][c * 1024 + y * 32 + x]
    described = CIFAR100.describe(CFG)
    assert {k: described[k] for k in ("image_size", "num_classes", "title")} == {
        "image_size": 32, "num_classes": 100, "title": "CIFAR-100 (fine labels)"}
    assert described["planning"]["splits"] == {"train": 50_000 - round(CFG["val_fraction"] * 50_000),
                                               "val": round(CFG["val_fraction"] * 50_000), "test": 10_000}


def test_coarse_labels(raw: Path, tmp_path: Path) -> None:
    cfg = {**CFG, "label_mode": "coarse"}
    manifest = CIFAR100.prepare(raw, tmp_path / "out", cfg)
    assert manifest["classes"] == COARSE and manifest["label_mode"] == "coarse"
    assert any("the 20 coarse superclasses (label_mode coarse)" in n for n in manifest["notes"])
    splits = manifest["splits"]
    for c in COARSE:  # 5 fine classes x 3 images; stratified by superclass: round(0.2 * 15) = 3 in val
        assert (splits["train"]["per_class"][c], splits["val"]["per_class"][c], splits["test"]["per_class"][c]) \
            == (12, 3, 5)
    _, test_y, _ = packed.load_split(tmp_path / "out", "test")
    assert test_y.tolist() == TEST["coarse_labels"]
    assert CIFAR100.describe(cfg)["num_classes"] == 20


def test_val_holdout_is_stratified_disjoint_and_seeded(raw: Path, tmp_path: Path) -> None:
    first = CIFAR100.prepare(raw, tmp_path / "a", CFG)
    again = CIFAR100.prepare(raw, tmp_path / "b", CFG)
    other = CIFAR100.prepare(raw, tmp_path / "c", {**CFG, "split_seed": 1})
    assert again == first
    val = {d: _hashes(packed.load_split(tmp_path / d, "val")[0]) for d in "abc"}
    train = _hashes(packed.load_split(tmp_path / "a", "train")[0])
    assert val["a"] == val["b"] and val["a"] != val["c"] and len(val["c"]) == len(val["a"]) == 100
    assert not train & val["a"] and len(train | val["a"]) == 300  # every training image, in one split only
    assert other["splits"]["val"]["per_class"] == first["splits"]["val"]["per_class"]


def test_noisy_classes_and_names_in_errors(raw: Path, tmp_path: Path) -> None:
    manifest = CIFAR100.prepare(raw, tmp_path / "out", {**CFG, "noisy_classes": ["fine_07", "fine_42"]})
    assert manifest["noisy_classes"] == ["fine_07", "fine_42"]
    kept_x, kept_y, kept = packed.load_split(tmp_path / "out", "test", exclude_classes=manifest["noisy_classes"])
    assert len(kept) == 98 and len(kept_y) == 98 and "fine_07" not in kept
    # a superclass is not a class of the fine labels
    with pytest.raises(ConfigError, match=r"datasets\.c100\.noisy_classes names \['coarse_03'\], not a class of "
                                          r"CIFAR-100 \(fine labels\)"):
        CIFAR100.prepare(raw, tmp_path / "bad", {**CFG, "noisy_classes": ["coarse_03"]})
    with pytest.raises(ConfigError, match=r"datasets\.c100\.label_mode must be one of fine, coarse, got 'medium'"):
        CIFAR100.prepare(raw, tmp_path / "bad", {**CFG, "label_mode": "medium"})
    with pytest.raises(ConfigError, match=r"datasets\.c100\.val_fraction must be in \[0, 1\), got 1\.0"):
        CIFAR100.prepare(raw, tmp_path / "bad", {**CFG, "val_fraction": 1.0})
    with pytest.raises(ConfigError, match=r"datasets\.c100\.drop_train_duplicates_of_eval must be true or false"):
        CIFAR100.prepare(raw, tmp_path / "bad", {**CFG, "drop_train_duplicates_of_eval": "yes"})
    with pytest.raises(ConfigError, match=r"datasets\.cifar10\.label_mode: CIFAR-10 has a single set of labels"):
        CIFAR10.describe({"label_mode": "fine"})  # no name in the settings: the kind's name
    assert not (tmp_path / "bad").exists()


# --------------------------------------------------------------------------- hostile and corrupt archives
def test_refused_pickle_globals_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    cmd = f"touch '{marker}'".encode()
    payload = b"cos\nsystem\n(S'" + cmd + b"'\ntR."  # protocol 0: os.system(cmd)
    raw = _raw(tmp_path / "raw", train=payload)
    with pytest.raises(DataError, match=r"cifar-100-python\.tar\.gz:train: refusing to load global os\.system"):
        CIFAR100.prepare(raw, tmp_path / "out", CFG)
    code = f"open({str(marker)!r}, 'w').close()".encode()
    exec_payload = b"\x80\x02cbuiltins\nexec\nq\x00X" + len(code).to_bytes(4, "little") + code + b"\x85R."
    raw = _raw(tmp_path / "raw2", meta=exec_payload)
    with pytest.raises(DataError, match=r":meta: refusing to load global builtins\.exec"):
        CIFAR100.prepare(raw, tmp_path / "out", CFG)
    assert not marker.exists() and not (tmp_path / "out").exists()


def _corrupt(**changes: object) -> bytes:
    return _py2({**TRAIN, **changes})


@pytest.mark.parametrize("member, blob, settings, message", [
    ("train", _corrupt(fine_labels=[100] + TRAIN["fine_labels"][1:]), {},
     r":train: 'fine_labels' must lie in 0\.\.99, got 0\.\.100"),
    ("train", _corrupt(coarse_labels=[-1] + TRAIN["coarse_labels"][1:]), {"label_mode": "coarse"},
     r":train: 'coarse_labels' must lie in 0\.\.19, got -1\.\.19"),
    ("test", _py2({**TEST, "data": np.zeros((100, 3000), np.uint8)}), {},
     r":test: 'data' must be a uint8 array of shape \(N, 3072\), got ndarray \(100, 3000\)"),
    ("train", _corrupt(fine_labels=TRAIN["fine_labels"][:-1]), {},
     r":train: 300 images but 'fine_labels' of shape \(299,\)"),
    ("train", _py2({k: v for k, v in TRAIN.items() if k != "coarse_labels"}), {"label_mode": "coarse"},
     r":train lacks 'data' or 'coarse_labels'"),
    ("meta", _py2({"fine_label_names": FINE}), {"label_mode": "coarse"},
     r":meta: 'coarse_label_names' must list 20 class names, got NoneType"),
    ("meta", _py2({"fine_label_names": FINE[:99], "coarse_label_names": COARSE}), {},
     r":meta: 'fine_label_names' must list 100 class names, got 99"),
], ids=["fine-label-out-of-range", "coarse-label-negative", "short-rows", "labels-short", "no-coarse-labels",
        "no-coarse-names", "99-fine-names"])
def test_corrupt_member_names_the_member(tmp_path: Path, member: str, blob: bytes, settings: dict,
                                         message: str) -> None:
    raw = _raw(tmp_path / "raw", **{member: blob})
    with pytest.raises(DataError, match=message):
        CIFAR100.prepare(raw, tmp_path / "out", {**CFG, **settings})
    assert not (tmp_path / "out").exists()


def test_wrong_or_incomplete_archive(tmp_path: Path) -> None:
    members = _members()
    del members["cifar-100-python/meta"]
    raw = tmp_path / "raw"
    _raw(raw)
    _tar(raw / NAME, members)
    with pytest.raises(DataError, match=r"lacks \['meta'\]; expected cifar-100-python/ with train, test, meta\. "
                                        r"Delete it and run `cnnbench download --dataset c100`"):
        CIFAR100.prepare(raw, tmp_path / "out", CFG)
    _tar(raw / NAME, {"cifar-100-python/../../evil": b"x", **_members()})
    with pytest.raises(DataError, match=r"unsafe member path .*not a genuine CIFAR-100 archive"):
        CIFAR100.prepare(raw, tmp_path / "out", CFG)
    (raw / NAME).write_bytes(b"not a tar at all")
    with pytest.raises(DataError, match=r"is not a readable tar archive.*--dataset c100"):
        CIFAR100.prepare(raw, tmp_path / "out", CFG)


def test_train_copy_of_a_test_image_is_dropped(tmp_path: Path) -> None:
    train = {**TRAIN, "data": TRAIN["data"].copy()}
    copied = 5
    train["data"][copied] = TEST["data"][0]
    train["fine_labels"] = list(TRAIN["fine_labels"])
    train["fine_labels"][copied] = TEST["fine_labels"][0]
    raw = _raw(tmp_path / "raw", train=_py2(train))
    manifest = CIFAR100.prepare(raw, tmp_path / "out", {**CFG, "val_fraction": 0.0,
                                                        "drop_train_duplicates_of_eval": True})
    assert manifest["excluded"] == [{"split": "train", "file": f"train[{copied}]", "reason":
                                     "dropped: an exact copy of test image test[0] "
                                     "(datasets.c100.drop_train_duplicates_of_eval: true)"}]
    assert manifest["splits"]["train"]["count"] == 299 and manifest["duplicates"]["dropped_train"] == 1
    listed = json.loads((tmp_path / "out" / "duplicates.json").read_text())
    assert listed["dataset"] == DATASET


# --------------------------------------------------------------------------- download and schema
def test_fetch_from_file_url_checks_md5(tmp_path: Path) -> None:
    official = _tar(tmp_path / "www" / NAME, _members())
    md5 = hashlib.md5(official.read_bytes()).hexdigest()
    out = tmp_path / "data" / "raw" / DATASET
    with pytest.raises(ChecksumError, match=f"expected md5 {'0' * 32}, got {md5}"):
        fetch.fetch_dataset(DATASET, {**CFG, "url": official.as_uri()}, out, None)
    assert not out.exists()
    record = fetch.fetch_dataset(DATASET, {**CFG, "url": official.as_uri(), "md5": md5}, out, None)
    assert record["source"] == "url" and record["location"] == official.as_uri() and record["md5"] == md5
    assert sorted(p.name for p in out.iterdir()) == [NAME, "source.json"]
    manifest = CIFAR100.prepare(out, tmp_path / "prepared", CFG)
    assert manifest["source"] == record and manifest["splits"]["test"]["count"] == 100


def test_schema_def() -> None:
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "params.schema.yaml").read_text())
    validator = jsonschema.Draft202012Validator({"$defs": schema["$defs"], "$ref": "#/$defs/cifar100"})
    official = {"source": {"url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                           "md5": "eb9058c3a382ffc7106e4002c42a8d85", "filename": NAME},
                "val_fraction": 0.1, "split_seed": 0, "near_duplicate_threshold": 0.2,
                "drop_train_duplicates_of_eval": False, "label_mode": "coarse", "noisy_classes": ["fish"],
                "train": {"augment": {"crop": "pad", "crop_padding": 4, "flip": True}}}
    validator.validate(official)
    for bad in ({"label_mode": "medium"}, {"noisy_classes": ["a", "a"]}, {"source": {"md5": "xyz"}}, {"labels": 1}):
        assert list(validator.iter_errors({**official, **bad})), bad
