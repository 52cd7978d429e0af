"""cnnbench.data.cifar, the CIFAR-10 kind: the real mirror archive, a safe unpickler, and Python-2 style batches."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from cnnbench.data import cifar, packed
from cnnbench.data.cifar import CIFAR10
from cnnbench.errors import ConfigError, DataError

NAME = "cifar-10-python.tar.gz"
CFG = {"url": "unused", "md5": "0" * 32, "filename": NAME, "val_fraction": 0.1, "split_seed": 0, "train": {}}
SOURCE = {"dataset": "cifar10", "source": "mirror", "location": "test", "filename": NAME, "sha256": "x", "bytes": 1}


def _raw_dir(path: Path, archive: Path | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if archive is not None:
        (path / NAME).symlink_to(archive)
    (path / "source.json").write_text(json.dumps(SOURCE))
    return path


def _hashes(images: np.ndarray) -> list[str]:
    return [hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in images]


# --------------------------------------------------------------------------- the real mirror
@pytest.fixture(scope="module")
def real(mirror_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("cifar_real")
    raw = _raw_dir(root / "raw", mirror_dir / "cifar10" / NAME)
    manifest = CIFAR10.prepare(raw, root / "prepared", CFG)
    return raw, root / "prepared", manifest


def test_real_counts_and_classes(real: tuple[Path, Path, dict]) -> None:
    _, out, manifest = real
    counts = {s: manifest["splits"][s]["count"] for s in packed.SPLITS}
    assert counts["train"] + counts["val"] == 5085 and counts["test"] == 1017
    assert manifest["classes"] == [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
    ]
    assert manifest["dataset"] == "cifar10" and manifest["noisy_classes"] == [] and manifest["excluded"] == []
    assert manifest["source"] == SOURCE and manifest["image_size"] == [32, 32]
    assert any("subset" in note for note in manifest["notes"])
    for split in packed.SPLITS:
        images, labels, classes = packed.load_split(out, split)
        assert images.shape == (counts[split], 32, 32, 3) and images.dtype == np.uint8
        assert len(classes) == 10 and labels.min() >= 0 and labels.max() <= 9


def test_real_val_is_a_stratified_disjoint_holdout(real: tuple[Path, Path, dict]) -> None:
    _, out, manifest = real
    train_x, _, _ = packed.load_split(out, "train")
    val_x, _, _ = packed.load_split(out, "val")
    total = manifest["splits"]["train"]["per_class"]
    held = manifest["splits"]["val"]["per_class"]
    for name in manifest["classes"]:
        n = total[name] + held[name]
        assert held[name] == round(0.1 * n)  # stratified: 10 % of every class
    assert abs(len(val_x) / (len(val_x) + len(train_x)) - 0.1) < 0.005
    train_h, val_h = set(_hashes(train_x)), set(_hashes(val_x))
    assert len(train_h) + len(val_h) == 5085  # every image distinct ...
    assert not train_h & val_h  # ... and none in both splits


def test_real_is_deterministic_and_seeded(real: tuple[Path, Path, dict], tmp_path: Path) -> None:
    raw, out, manifest = real
    again = CIFAR10.prepare(raw, tmp_path / "again", CFG)
    assert again == manifest
    for split in packed.SPLITS:
        a, la, _ = packed.load_split(out, split)
        b, lb, _ = packed.load_split(tmp_path / "again", split)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    other = CIFAR10.prepare(raw, tmp_path / "other", {**CFG, "split_seed": 1})
    assert other["splits"]["val"]["count"] == manifest["splits"]["val"]["count"]
    assert set(_hashes(packed.load_split(out, "val")[0])) != set(_hashes(packed.load_split(tmp_path / "other", "val")[0]))


# --------------------------------------------------------------------------- handcrafted archives
def _batch(n: int, offset: int, py2: bool) -> bytes:
    data = ((np.arange(n * 3072, dtype=np.int64) + offset) % 251).astype(np.uint8).reshape(n, 3072)
    labels = [(i + offset) % 10 for i in range(n)]
    if py2:
        blob = pickle.dumps({b"batch_label": b"batch", b"labels": labels, b"data": data}, protocol=2)
        # Python 2's numpy named its module numpy.core; make the pickle say so, as the official files do.
        blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        assert b"cnumpy.core.multiarray\n_reconstruct" in blob
        return blob
    return pickle.dumps({"batch_label": "batch", "labels": labels, "data": data}, protocol=2)


def _meta(py2: bool) -> bytes:
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    if py2:
        return pickle.dumps({b"label_names": [n.encode() for n in names], b"num_vis": 3072}, protocol=2)
    return pickle.dumps({"label_names": names, "num_vis": 3072}, protocol=2)


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    """A .tar.gz of ``members`` (name -> bytes) at ``path`` (test_cifar100 uses it too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _members(py2: bool = False, **replace: bytes) -> dict[str, bytes]:
    members = {f"cifar-10-batches-py/data_batch_{i}": _batch(20, i * 100, py2) for i in range(1, 6)}
    members["cifar-10-batches-py/test_batch"] = _batch(10, 7, py2)
    members["cifar-10-batches-py/batches.meta"] = _meta(py2)
    members["cifar-10-batches-py/readme.html"] = b"<html></html>"
    for name, data in replace.items():
        members[f"cifar-10-batches-py/{name}"] = data
    return members


@pytest.mark.parametrize("py2", [True, False], ids=["python2_bytes_keys", "python3_str_keys"])
def test_handcrafted_batches(tmp_path: Path, py2: bool) -> None:
    raw = _raw_dir(tmp_path / "raw")
    _tar(raw / NAME, _members(py2))
    manifest = CIFAR10.prepare(raw, tmp_path / "out", {**CFG, "val_fraction": 0.2})
    assert manifest["classes"][0] == "airplane" and len(manifest["classes"]) == 10
    assert manifest["splits"]["train"]["count"] + manifest["splits"]["val"]["count"] == 100
    assert manifest["splits"]["val"]["count"] == 20  # 10 per class, 2 of each held out
    test_x, test_y, _ = packed.load_split(tmp_path / "out", "test")
    # CIFAR rows are 1024 R, 1024 G, 1024 B (row-major): pixel (y, x, c) = row[c*1024 + y*32 + x].
    row = ((np.arange(3072) + 7) % 251).astype(np.uint8)
    for y, x, c in [(0, 0, 0), (5, 17, 1), (31, 31, 2)]:
        assert test_x[0, y, x, c] == row[c * 1024 + y * 32 + x]
    assert test_y.tolist() == [(i + 7) % 10 for i in range(10)]


def test_restricted_unpickler_reads_both_dialects() -> None:
    for py2 in (True, False):
        batch = cifar.load_pickle(_batch(3, 0, py2))
        assert set(batch) == {"batch_label", "labels", "data"}
        assert batch["data"].shape == (3, 3072) and batch["data"].dtype == np.uint8


def _malicious(marker: Path) -> list[bytes]:
    """Pickles that would create `marker` if their globals were honoured."""
    cmd = f"touch '{marker}'".encode()
    code = f"open({str(marker)!r}, 'w').close()".encode()
    return [
        b"cos\nsystem\n(S'" + cmd.replace(b"'", b"\\'") + b"'\ntR.",  # protocol 0, os.system
        b"cposix\nsystem\n(S'" + cmd.replace(b"'", b"\\'") + b"'\ntR.",  # what os.system pickles as on Linux
        b"\x80\x02cbuiltins\nexec\nq\x00X" + len(code).to_bytes(4, "little") + code + b"\x85R.",  # protocol 2, exec
    ]


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payloads = _malicious(marker)
    for payload, name in zip(payloads, ["os.system", "posix.system", "builtins.exec"]):
        with pytest.raises(pickle.UnpicklingError, match=name):
            cifar.RestrictedUnpickler(io.BytesIO(payload)).load()
    # The same payload hidden in an otherwise valid archive.
    raw = _raw_dir(tmp_path / "raw")
    _tar(raw / NAME, _members(data_batch_3=payloads[0]))
    with pytest.raises(DataError, match=r"data_batch_3.*os\.system"):
        CIFAR10.prepare(raw, tmp_path / "out", CFG)
    raw2 = _raw_dir(tmp_path / "raw2")
    _tar(raw2 / NAME, _members(**{"batches.meta": payloads[2]}))
    with pytest.raises(DataError, match="builtins.exec"):
        CIFAR10.prepare(raw2, tmp_path / "out", CFG)
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad_name", ["../evil", "/tmp/cnnbench-evil", "cifar-10-batches-py/../../evil"])
def test_unsafe_member_paths_rejected(tmp_path: Path, bad_name: str) -> None:
    raw = _raw_dir(tmp_path / "raw")
    members = _members()
    members[bad_name] = b"evil"
    _tar(raw / NAME, members)
    with pytest.raises(DataError, match="unsafe member path"):
        CIFAR10.prepare(raw, tmp_path / "out", CFG)
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil").exists()


def test_incomplete_archive_and_bad_batches(tmp_path: Path) -> None:
    raw = _raw_dir(tmp_path / "raw")
    members = _members()
    del members["cifar-10-batches-py/test_batch"]
    _tar(raw / NAME, members)
    with pytest.raises(DataError, match="lacks \\['test_batch'\\]"):
        CIFAR10.prepare(raw, tmp_path / "out", CFG)
    bad = pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, protocol=2)
    _tar(raw / NAME, _members(data_batch_2=bad))
    with pytest.raises(DataError, match=r"data_batch_2.*\(N, 3072\)"):
        CIFAR10.prepare(raw, tmp_path / "out", CFG)


def test_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cnnbench download --dataset cifar10"):
        CIFAR10.prepare(tmp_path, tmp_path / "out", CFG)
    _tar(tmp_path / NAME, _members())
    with pytest.raises(DataError, match="source.json.*cnnbench download --dataset cifar10"):
        CIFAR10.prepare(tmp_path, tmp_path / "out", CFG)
    (tmp_path / "source.json").write_text("{}")
    with pytest.raises(ConfigError, match="val_fraction"):
        CIFAR10.prepare(tmp_path, tmp_path / "out", {**CFG, "val_fraction": 1.0})


# --------------------------------------------------------------------------- leak audit
def _distinct_batch(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """n unrelated natural-ish 32x32 pictures (smooth random colours plus grain) as (n, 32, 32, 3), labels."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = np.empty((n, 32, 32, 3), np.uint8)
    for k in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).resize((32, 32), Image.Resampling.BICUBIC)
        images[k] = np.clip(np.asarray(coarse, np.float64) + rng.normal(0, 10, (32, 32, 3)), 0, 255).astype(np.uint8)
    return images, [(seed + k) % 10 for k in range(n)]


def _pickled(images: np.ndarray, labels: list[int]) -> bytes:
    data = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), 3072)  # NHWC -> CIFAR rows
    return pickle.dumps({"batch_label": "batch", "labels": labels, "data": data}, protocol=2)


def _jpeg_shifted(image: np.ndarray) -> np.ndarray:
    """The picture moved one pixel left (last column repeated) and saved as JPEG quality 90."""
    from PIL import Image

    moved = np.ascontiguousarray(np.concatenate([image[:, 1:], image[:, -1:]], axis=1))
    buf = io.BytesIO()
    Image.fromarray(moved).save(buf, "JPEG", quality=90)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


@pytest.mark.parametrize("drop", [False, True])
def test_leak_audit_finds_planted_test_copies(tmp_path: Path, drop: bool) -> None:
    train = [_distinct_batch(20, 10 * b) for b in range(1, 6)]
    test_x, test_y = _distinct_batch(10, 99)
    all_train_y = np.concatenate([np.array(y) for _, y in train])
    keep, held = cifar.stratified_holdout(all_train_y, 0.1, 0)
    # Two train images that stay in train (not held out for val): their copies go into the test batch.
    src_near, src_exact = int(keep[3]), int(keep[57])
    (bn, rn), (be, re_) = divmod(src_near, 20), divmod(src_exact, 20)
    test_x[4], test_y[4] = _jpeg_shifted(train[bn][0][rn]), train[bn][1][rn]  # re-encoded, shifted copy
    test_x[7], test_y[7] = train[be][0][re_], train[be][1][re_]  # exact copy
    members = {f"cifar-10-batches-py/data_batch_{b + 1}": _pickled(*train[b]) for b in range(5)}
    members["cifar-10-batches-py/test_batch"] = _pickled(test_x, test_y)
    members["cifar-10-batches-py/batches.meta"] = _meta(False)
    raw = _raw_dir(tmp_path / "raw")
    _tar(raw / NAME, members)

    out = tmp_path / "out"
    manifest = CIFAR10.prepare(raw, out, {**CFG, "near_duplicate_threshold": 0.2, "drop_train_duplicates_of_eval": drop})
    listed = json.loads((out / "duplicates.json").read_text())
    names = {f"data_batch_{bn + 1}[{rn}]": "near", f"data_batch_{be + 1}[{re_}]": "exact"}
    assert listed["format"] == "cnnbench-duplicates-v2" and listed["dataset"] == "cifar10"
    groups = listed["groups"]
    # exactly the two planted pairs: a train image and its test copy, same class
    assert sorted(([m["file"] for m in g["members"]], [p["kind"] for p in g["pairs"]]) for g in groups) == sorted([
        ([f"data_batch_{bn + 1}[{rn}]", "test_batch[4]"], ["near"]),
        ([f"data_batch_{be + 1}[{re_}]", "test_batch[7]"], ["exact"]),
    ])
    near = next(p for g in groups for p in g["pairs"] if p["kind"] == "near")
    assert 0 < near["distance"] <= 0.2
    assert all(not g["label_conflict"] and g["splits"] == ["train", "test"] for g in groups)
    summary = manifest["duplicates"]
    assert summary["images_audited"] == {"train": len(keep), "val": len(held), "test": 10}
    assert summary["train_duplicates_of_eval"] == 2 and summary["cross_split_groups"] == 2
    assert summary["drop_train_duplicates_of_eval"] is drop and summary["near_duplicate_threshold"] == 0.2
    assert len(summary["pairs"]) == 18
    assert {(r["splits"], r["kind"]): r["same_class"] for r in summary["pairs"] if r["same_class"] or r["different_class"]} \
        == {("train-test", "exact"): 1, ("train-test", "near"): 1}
    train_x, _, _ = packed.load_split(out, "train")
    kept_hashes = set(_hashes(train_x))
    source_hashes = {name: _hashes(train[int(name[11]) - 1][0][[int(name.split("[")[1][:-1])]])[0] for name in names}
    if drop:
        assert listed["test_leaked"] == [] and summary["test_clean_count"] == 10
        excluded = {e["file"]: e for e in manifest["excluded"]}
        assert set(excluded) == set(names) and all(e["split"] == "train" for e in excluded.values())
        exact_name = f"data_batch_{be + 1}[{re_}]"
        assert excluded[exact_name]["reason"] == (
            "dropped: an exact copy of test image test_batch[7] (datasets.cifar10.drop_train_duplicates_of_eval: true)")
        assert excluded[f"data_batch_{bn + 1}[{rn}]"]["reason"].startswith(
            f"dropped: a near-duplicate (distance {near['distance']:.3f}) of test image test_batch[4]")
        assert manifest["splits"]["train"]["count"] == len(keep) - 2 == len(train_x)
        assert not kept_hashes & set(source_hashes.values())  # the train copies are gone
        assert all(m["dropped"] and m["index"] is None for g in groups for m in g["members"] if m["split"] == "train")
    else:
        assert listed["test_leaked"] == [4, 7] and summary["test_clean_count"] == 8
        assert manifest["excluded"] == [] and manifest["splits"]["train"]["count"] == len(keep)
        assert set(source_hashes.values()) <= kept_hashes
        for g in groups:  # the stored index of each train member is that image
            m = g["members"][0]
            assert _hashes(train_x[[m["index"]]])[0] == source_hashes[m["file"]]
    assert manifest["duplicates"]["dropped_train"] == (2 if drop else 0)
