"""cnnbench.data.butterflies: the real mirror zip, bad images, CSV/folder mismatches, unsafe archives."""

from __future__ import annotations

import io
import json
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnbench.data import butterflies, packed
from cnnbench.errors import ConfigError, DataError

ZIP = "butterfly-images40-species.zip"
NOISY = [
    "BLUE SPOTTED CROW",
    "CLEARWING MOTH",
    "COMMON BANDED AWL",
    "COPPER TAIL",
    "HUMMING BIRD HAWK MOTH",
    "SIXSPOT BURNET MOTH",
]
KEY = "datasets.butterflies"


def _cfg(**overrides: object) -> dict:
    cfg = {
        "kaggle_handle": "gpiosenka/butterfly-images40-species",
        "archive": None,
        "sha256": None,
        "filename": ZIP,
        "image_size": 224,
        "on_bad_image": "skip",
        "max_uncompressed_bytes": 8 * 2**30,
        "noisy_classes": [],
        "drop_train_duplicates_of_eval": True,
        "train": {},
    }
    cfg.update(overrides)
    return cfg


def _raw_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "source.json").write_text(json.dumps({"dataset": "butterflies", "source": "path", "sha256": "x"}))
    return path


# --------------------------------------------------------------------------- the real mirror
@pytest.fixture(scope="module")
def real(mirror_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("butterflies_real")
    raw = _raw_dir(root / "raw")
    (raw / ZIP).symlink_to(mirror_dir / "butterflies" / ZIP)  # no copy of the 79 MB archive
    out = root / "prepared"
    return out, butterflies.prepare(raw, out, _cfg(image_size=64, noisy_classes=NOISY))


def test_real_mirror(real: tuple[Path, dict]) -> None:
    out, manifest = real
    assert {s: manifest["splits"][s]["count"] for s in packed.SPLITS} == {"train": 2000, "val": 500, "test": 500}
    assert len(manifest["classes"]) == 100 and manifest["classes"] == sorted(manifest["classes"])
    assert manifest["noisy_classes"] == NOISY
    assert manifest["excluded"] == [] and manifest["dropped_classes"] == []
    assert manifest["image_size"] == [64, 64] and manifest["source_image_size"] == [224, 224]
    assert manifest["csv"] == "butterflies and moths.csv" and manifest["csv_has_class_id"] is True
    for split, per_class in (("train", 20), ("val", 5), ("test", 5)):
        assert set(manifest["splits"][split]["per_class"].values()) == {per_class}
    assert manifest["splits_without_noisy"] == {
        "train": {"count": 1880, "num_classes": 94},
        "val": {"count": 470, "num_classes": 94},
        "test": {"count": 470, "num_classes": 94},
    }
    images, labels, classes = packed.load_split(out, "val")
    assert images.shape == (500, 64, 64, 3) and images.dtype == np.uint8 and len(classes) == 100
    assert 20 < float(images.mean()) < 235  # real pictures, not blank arrays
    images, labels, classes = packed.load_split(out, "train", exclude_classes=manifest["noisy_classes"])
    assert len(classes) == 94 and len(images) == 1880 and labels.max() == 93


def _pair_counts(groups: list[dict]) -> dict[tuple[str, str, str], int]:
    """(split pair, kind, same_class|different_class) -> number of image pairs, recomputed from the groups."""
    order = {s: i for i, s in enumerate(packed.SPLITS)}
    counts: dict[tuple[str, str, str], int] = {}
    for group in groups:
        members = group["members"]
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                a_, b_ = sorted((a, b), key=lambda m: order[m["split"]])
                key = (
                    f"{a_['split']}-{b_['split']}",
                    "exact" if a["mirrored"] == b["mirrored"] else "flip",
                    "same_class" if a["class"] == b["class"] else "different_class",
                )
                counts[key] = counts.get(key, 0) + 1
    return counts


def _listed_counts(pairs: list[dict]) -> dict[tuple[str, str, str], int]:
    return {
        (row["splits"], row["kind"], cls): row[cls]
        for row in pairs
        for cls in ("same_class", "different_class")
        if row[cls]
    }


def test_real_mirror_duplicate_counts_are_consistent(real: tuple[Path, dict]) -> None:
    out, manifest = real
    summary = manifest["duplicates"]
    listed = json.loads((out / butterflies.DUPLICATES_FILE).read_text())
    groups = listed.pop("groups")
    assert listed.pop("format") == "cnnbench-duplicates-v1" and listed.pop("dataset") == "butterflies"
    assert {k: v for k, v in summary.items() if k != "examples"} == listed
    assert summary["examples"] == groups[:10]
    # Every count is what the listed groups give.
    assert summary["group_count"] == len(groups)
    assert summary["images_in_groups"] == sum(len(g["members"]) for g in groups)
    assert summary["label_conflict_groups"] == sum(1 for g in groups if len({m["class"] for m in g["members"]}) > 1)
    assert _listed_counts(summary["pairs"]) == _pair_counts(groups)
    assert len(summary["pairs"]) == 12  # 6 split pairs x {exact, flip}, zero rows included
    folder = {"train": "train/", "val": "valid/", "test": "test/"}
    for group in groups:
        assert len(group["members"]) >= 2
        for m in group["members"]:
            assert m["file"].startswith(folder[m["split"]] + m["class"] + "/")
    # Every decoded image was hashed; the train copies of valid/test images are the dropped ones.
    dropped = [e["file"] for e in manifest["excluded"] if e["reason"].startswith("dropped:")]
    assert summary["drop_train_duplicates_of_eval"] is True
    assert summary["dropped_train"] == summary["train_duplicates_of_eval"] == len(dropped)
    assert sorted(dropped) == sorted(m["file"] for g in groups for m in g["members"] if m["dropped"])
    assert summary["images_hashed"] == {
        s: manifest["splits"][s]["count"] + (len(dropped) if s == "train" else 0) for s in packed.SPLITS
    }
    assert sum(summary["images_hashed"].values()) == 3000


# --------------------------------------------------------------------------- handcrafted archives
def _jpeg(mode: str = "RGB", size: tuple[int, int] = (224, 224), seed: int = 0, fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "CMYK": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    im = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _good() -> dict[str, tuple[str, str, bytes]]:
    """relative path -> (label, data set, bytes) of the well-formed images."""
    good = {}
    for c, cls in enumerate(("ALPHA", "BETA")):
        for s, (split, n) in enumerate((("train", 2), ("valid", 1), ("test", 1))):
            for i in range(n):  # a distinct seed each: equal seeds would make duplicate images
                good[f"{split}/{cls}/{i}.jpg"] = (cls, split, _jpeg(seed=100 + 10 * c + 3 * s + i))
    return good


# name -> (relative path, label for the CSV row or None, bytes in the zip or None, reason keyword)
BAD = {
    "truncated": ("train/ALPHA/truncated.jpg", "ALPHA", "truncated", "truncated"),
    "empty": ("train/ALPHA/empty.jpg", "ALPHA", b"", "0 bytes"),
    "png": ("train/ALPHA/png.jpg", "ALPHA", "png", "not a JPEG"),
    "cmyk": ("train/BETA/cmyk.jpg", "BETA", "cmyk", "CMYK"),
    "gray": ("train/BETA/gray.jpg", "BETA", "gray", "mode L"),
    "small": ("valid/BETA/small.jpg", "BETA", "small", "100x100"),
    "missing_file": ("train/BETA/missing.jpg", "BETA", None, "missing from the archive"),
    "class_without_folder": ("train/GAMMA/0.jpg", "GAMMA", None, "GAMMA"),
    "folder_not_in_csv": ("test/DELTA/0.jpg", None, "good", "DELTA"),
}


def _bad_bytes(kind: bytes | str | None) -> bytes | None:
    if kind is None or isinstance(kind, bytes):
        return kind
    full = _jpeg(seed=7)
    return {
        "truncated": full[: len(full) // 2],
        "png": _jpeg(fmt="PNG"),
        "cmyk": _jpeg("CMYK"),
        "gray": _jpeg("L"),
        "small": _jpeg(size=(100, 100)),
        "good": _jpeg(seed=8),
    }[kind]


def _make_zip(
    path: Path,
    bad: list[str],
    *,
    csv_name: str = "butterflies and moths.csv",
    class_id: bool = True,
    root: str = "",
    h5: bool = True,
    extra: dict[str, bytes] | None = None,
) -> Path:
    good = _good()
    rows: list[tuple[str, str, str]] = [(rel, label, split) for rel, (label, split, _) in good.items()]
    files = {rel: data for rel, (_, _, data) in good.items()}
    for name in bad:
        rel, label, kind, _ = BAD[name]
        split = rel.split("/")[0]
        if label is not None:
            rows.append((rel, label, split))
        data = _bad_bytes(kind)
        if data is not None:
            files[rel] = data
    labels = sorted({label for _, label, _ in rows})
    lines = ["class id,filepaths,labels,data set" if class_id else "filepaths,labels,data set"]
    for rel, label, split in rows:
        fields = [rel, label, split]
        lines.append(",".join(([str(labels.index(label))] if class_id else []) + fields))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(root + csv_name, "\n".join(lines) + "\n")
        for rel, data in files.items():
            zf.writestr(root + rel, data)
        if h5:
            zf.writestr(root + "EfficientNetB0-100-(224 X 224)- 97.59.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
        for rel, data in (extra or {}).items():
            zf.writestr(rel, data)
    return path


def test_skip_lists_every_bad_item_with_its_reason(tmp_path: Path) -> None:
    raw = _raw_dir(tmp_path / "raw")
    _make_zip(raw / ZIP, list(BAD))
    manifest = butterflies.prepare(raw, tmp_path / "out", _cfg(noisy_classes=["BETA"]))
    excluded = {e["file"]: e for e in manifest["excluded"]}
    for name, (rel, _, _, keyword) in BAD.items():
        assert rel in excluded, name
        assert keyword in excluded[rel]["reason"], (name, excluded[rel]["reason"])
    h5 = excluded["EfficientNetB0-100-(224 X 224)- 97.59.h5"]
    assert h5["split"] == "" and ".h5" in h5["reason"]
    reasons = [e["reason"] for e in manifest["excluded"]]
    assert len(reasons) == len(BAD) + 1 == len(set(reasons))  # one entry each, all distinct
    assert excluded["valid/BETA/small.jpg"]["split"] == "val"
    # Only the good images are kept; GAMMA (no images) is dropped from the classes.
    assert manifest["classes"] == ["ALPHA", "BETA"] and manifest["dropped_classes"] == ["GAMMA"]
    assert {s: manifest["splits"][s]["count"] for s in packed.SPLITS} == {"train": 4, "val": 2, "test": 2}
    assert manifest["noisy_classes"] == ["BETA"]
    assert manifest["splits_without_noisy"]["train"] == {"count": 2, "num_classes": 1}
    images, labels, classes = packed.load_split(tmp_path / "out", "train")
    good = _good()
    expected = np.asarray(Image.open(io.BytesIO(good["train/ALPHA/0.jpg"][2])).convert("RGB"))
    np.testing.assert_array_equal(images[0], expected)  # 224: stored exactly as decoded
    assert labels.tolist() == [0, 0, 1, 1]
    with open(tmp_path / "out" / "excluded.csv") as f:
        assert len(f.read().strip().splitlines()) == len(BAD) + 2  # header + entries


@pytest.mark.parametrize("name", list(BAD))
def test_fail_names_the_bad_file(tmp_path: Path, name: str) -> None:
    raw = _raw_dir(tmp_path / "raw")
    _make_zip(raw / ZIP, [name])
    with pytest.raises(DataError) as err:
        butterflies.prepare(raw, tmp_path / "out", _cfg(on_bad_image="fail"))
    assert BAD[name][0] in str(err.value) and f"{KEY}.on_bad_image" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_fail_mode_accepts_a_clean_archive_with_model_file(tmp_path: Path) -> None:
    raw = _raw_dir(tmp_path / "raw")
    _make_zip(raw / ZIP, [], h5=True)
    manifest = butterflies.prepare(raw, tmp_path / "out", _cfg(on_bad_image="fail", image_size=32))
    assert [e["split"] for e in manifest["excluded"]] == [""]  # just the ignored .h5
    images, _, _ = packed.load_split(tmp_path / "out", "test")
    assert images.shape == (2, 32, 32, 3)


def test_old_csv_format_under_a_top_level_folder(tmp_path: Path) -> None:
    raw = _raw_dir(tmp_path / "raw")
    _make_zip(raw / ZIP, [], csv_name="butterflies.csv", class_id=False, root="butterflies/")
    manifest = butterflies.prepare(raw, tmp_path / "out", _cfg())
    assert manifest["csv"] == "butterflies/butterflies.csv" and manifest["csv_has_class_id"] is False
    assert manifest["classes"] == ["ALPHA", "BETA"]
    assert {s: manifest["splits"][s]["count"] for s in packed.SPLITS} == {"train": 4, "val": 2, "test": 2}


def test_inconsistent_class_id_rejected(tmp_path: Path) -> None:
    raw = _raw_dir(tmp_path / "raw")
    path = _make_zip(tmp_path / "ok.zip", [], h5=False)
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(raw / ZIP, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith(".csv"):
                data = data.replace(b"\n0,train/ALPHA/0.jpg", b"\n1,train/ALPHA/0.jpg")
            dst.writestr(info, data)
    with pytest.raises(DataError, match="class id 1 of label 'ALPHA'"):
        butterflies.prepare(raw, tmp_path / "out", _cfg())


def test_unknown_noisy_class(tmp_path: Path) -> None:
    raw = _raw_dir(tmp_path / "raw")
    _make_zip(raw / ZIP, [])
    with pytest.raises(ConfigError, match=f"{KEY}.noisy_classes.*'ALPHS'"):
        butterflies.prepare(raw, tmp_path / "out", _cfg(noisy_classes=["ALPHA", "ALPHS"]))


@pytest.mark.parametrize(
    "member, problem",
    [
        ("../evil.jpg", "'..'"),
        ("train/../../evil.jpg", "'..'"),
        ("/tmp/cnnbench-evil.jpg", "absolute path"),
        ("C:/evil.jpg", "drive letter"),
    ],
)
def test_unsafe_member_paths_rejected(tmp_path: Path, member: str, problem: str) -> None:
    raw = _raw_dir(tmp_path / "work" / "raw")
    path = _make_zip(raw / ZIP, [])
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(zipfile.ZipInfo(member), _jpeg())
    with pytest.raises(DataError, match="unsafe member") as err:
        butterflies.prepare(raw, tmp_path / "work" / "out", _cfg())
    assert member in str(err.value) and problem in str(err.value)
    assert not (tmp_path / "work" / "out").exists()
    assert not list(tmp_path.rglob("evil.jpg")) and not Path("/tmp/cnnbench-evil.jpg").exists()


def test_symlink_member_rejected(tmp_path: Path) -> None:
    raw = _raw_dir(tmp_path / "raw")
    path = _make_zip(raw / ZIP, [])
    with zipfile.ZipFile(path, "a") as zf:
        info = zipfile.ZipInfo("train/ALPHA/link.jpg")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match="'train/ALPHA/link.jpg'.*symbolic link"):
        butterflies.prepare(raw, tmp_path / "out", _cfg())


def test_zip_bomb_refused(tmp_path: Path) -> None:
    raw = _raw_dir(tmp_path / "raw")
    _make_zip(raw / ZIP, [], extra={"train/ALPHA/huge.jpg": b"\0" * 3_000_000})  # deflates to a few KB
    assert (raw / ZIP).stat().st_size < 1_000_000
    with pytest.raises(DataError, match=f"{KEY}.max_uncompressed_bytes = 2000000"):
        butterflies.prepare(raw, tmp_path / "out", _cfg(max_uncompressed_bytes=2_000_000))
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- duplicates
def _blocky_jpeg(seed: int, mirror: bool = False) -> bytes:
    """A 224x224 JPEG of flat 8x8 blocks, stored 4:4:4: it decodes to exactly the mirror image of
    the same picture encoded with ``mirror=True`` (a re-encoded mirror of a photo would not)."""
    blocks = np.random.default_rng(seed).integers(0, 256, size=(28, 28, 3), dtype=np.uint8)
    pixels = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)
    buf = io.BytesIO()
    Image.fromarray(pixels[:, ::-1] if mirror else pixels).save(buf, "JPEG", quality=95, subsampling=0)
    return buf.getvalue()


def _decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# relative path -> (label, bytes): on top of the 8 distinct images of _good()
A, B, C, D = (_blocky_jpeg(seed) for seed in (1, 2, 3, 4))
DUPS = {
    "train/ALPHA/2.jpg": ("ALPHA", A),
    "train/ALPHA/3.jpg": ("ALPHA", A),  # exact copy within train
    "train/BETA/2.jpg": ("BETA", B),
    "test/BETA/1.jpg": ("BETA", _blocky_jpeg(2, mirror=True)),  # mirror image across train-test
    "train/ALPHA/4.jpg": ("ALPHA", C),
    "valid/BETA/1.jpg": ("BETA", C),  # exact copy across train-valid with another label
    "valid/ALPHA/1.jpg": ("ALPHA", D),
    "test/ALPHA/1.jpg": ("ALPHA", _blocky_jpeg(4, mirror=True)),  # mirror image across valid-test
}


def _dup_zip(path: Path) -> Path:
    entries = {rel: (label, split, data) for rel, (label, split, data) in _good().items()}
    for rel, (label, data) in DUPS.items():
        entries[rel] = (label, rel.split("/")[0], data)
    labels = sorted({label for label, _, _ in entries.values()})
    lines = ["class id,filepaths,labels,data set"]
    lines += [f"{labels.index(label)},{rel},{label},{split}" for rel, (label, split, _) in entries.items()]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("butterflies and moths.csv", "\n".join(lines) + "\n")
        for rel, (_, _, data) in entries.items():
            zf.writestr(rel, data)
    return path


def test_pixel_key_is_flip_aware() -> None:
    im = Image.open(io.BytesIO(B))
    mirror = Image.open(io.BytesIO(_blocky_jpeg(2, mirror=True)))
    np.testing.assert_array_equal(_decoded(_blocky_jpeg(2, mirror=True)), _decoded(B)[:, ::-1])  # the premise
    (d1, m1, s1), (d2, m2, s2) = butterflies.pixel_key(im), butterflies.pixel_key(mirror)
    assert d1 == d2 and m1 != m2 and not s1 and not s2
    assert butterflies.pixel_key(Image.open(io.BytesIO(A)))[0] != d1  # another picture, another digest
    symmetric = Image.fromarray(np.tile(np.array([[[9, 8, 7]], [[1, 2, 3]]], np.uint8), (1, 4, 1)))
    assert butterflies.pixel_key(symmetric)[2] is True


@pytest.mark.parametrize("drop", [True, False])
def test_duplicates_found_counted_and_dropped(tmp_path: Path, drop: bool) -> None:
    raw = _raw_dir(tmp_path / "raw")
    _dup_zip(raw / ZIP)
    manifest = butterflies.prepare(raw, tmp_path / "out", _cfg(drop_train_duplicates_of_eval=drop, image_size=32))
    summary = manifest["duplicates"]
    listed = json.loads((tmp_path / "out" / butterflies.DUPLICATES_FILE).read_text())
    groups = listed["groups"]
    # The label conflict first, then groups across splits, then within one split.
    assert [[(m["file"], m["class"], m["mirrored"]) for m in g["members"]] for g in groups] == [
        [("train/ALPHA/4.jpg", "ALPHA", False), ("valid/BETA/1.jpg", "BETA", False)],
        [("train/BETA/2.jpg", "BETA", False), ("test/BETA/1.jpg", "BETA", True)],
        [("valid/ALPHA/1.jpg", "ALPHA", False), ("test/ALPHA/1.jpg", "ALPHA", True)],
        [("train/ALPHA/2.jpg", "ALPHA", False), ("train/ALPHA/3.jpg", "ALPHA", False)],
    ]
    assert [g["label_conflict"] for g in groups] == [True, False, False, False]
    assert [g["kinds"] for g in groups] == [["exact"], ["flip"], ["flip"], ["exact"]]
    assert [g["splits"] for g in groups] == [["train", "val"], ["train", "test"], ["val", "test"], ["train"]]
    assert _listed_counts(summary["pairs"]) == {
        ("train-val", "exact", "different_class"): 1,
        ("train-test", "flip", "same_class"): 1,
        ("val-test", "flip", "same_class"): 1,
        ("train-train", "exact", "same_class"): 1,
    }
    assert summary["group_count"] == 4 and summary["label_conflict_groups"] == 1 and summary["images_in_groups"] == 8
    assert summary["images_hashed"] == {"train": 8, "val": 4, "test": 4}
    assert summary["train_duplicates_of_eval"] == 2 and summary["examples"] == groups
    assert summary["drop_train_duplicates_of_eval"] is drop and listed["dropped_train"] == summary["dropped_train"]

    dropped = {e["file"]: e["reason"] for e in manifest["excluded"] if e["reason"].startswith("dropped:")}
    flagged = {m["file"] for g in groups for m in g["members"] if m["dropped"]}
    images, labels, classes = packed.load_split(tmp_path / "out", "train")
    train_names = [rel for rel in [*_good(), *DUPS] if rel.startswith("train/")]
    if drop:
        assert dropped == {
            "train/ALPHA/4.jpg": f"dropped: an exact copy of val image valid/BETA/1.jpg ({KEY}.drop_train_duplicates_of_eval: true)",
            "train/BETA/2.jpg": f"dropped: a mirror image of test image test/BETA/1.jpg ({KEY}.drop_train_duplicates_of_eval: true)",
        }
        assert all(e["split"] == "train" for e in manifest["excluded"] if e["file"] in dropped)
        assert flagged == set(dropped) and summary["dropped_train"] == 2
        train_names = [rel for rel in train_names if rel not in dropped]
    else:
        assert dropped == {} and flagged == set() and summary["dropped_train"] == 0
    assert {s: manifest["splits"][s]["count"] for s in packed.SPLITS} == {"train": len(train_names), "val": 4, "test": 4}
    assert labels.tolist() == [classes.index(rel.split("/")[1]) for rel in train_names]
    # The stored images are the kept ones, in CSV order (compare at the stored 32 px).
    everything = {**{rel: data for rel, (_, _, data) in _good().items()}, **{rel: data for rel, (_, data) in DUPS.items()}}
    for stored, rel in zip(images, train_names):
        expected = Image.open(io.BytesIO(everything[rel])).resize((32, 32), Image.Resampling.BILINEAR)
        np.testing.assert_array_equal(stored, np.asarray(expected))
    assert manifest["excluded"] == [] or drop  # nothing but the dropped copies is excluded


@pytest.mark.parametrize("value", ["yes", None, 1])
def test_drop_switch_must_be_boolean(tmp_path: Path, value: object) -> None:
    raw = _raw_dir(tmp_path / "raw")
    _make_zip(raw / ZIP, [])
    with pytest.raises(ConfigError, match=f"{KEY}.drop_train_duplicates_of_eval must be true or false, got {value!r}"):
        butterflies.prepare(raw, tmp_path / "out", _cfg(drop_train_duplicates_of_eval=value))
    assert not (tmp_path / "out").exists()


def test_bad_config_and_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cnnbench download --dataset butterflies"):
        butterflies.prepare(tmp_path, tmp_path / "out", _cfg())
    _make_zip(tmp_path / ZIP, [])
    with pytest.raises(DataError, match="source.json"):
        butterflies.prepare(tmp_path, tmp_path / "out", _cfg())
    _raw_dir(tmp_path)
    with pytest.raises(ConfigError, match=f"{KEY}.on_bad_image"):
        butterflies.prepare(tmp_path, tmp_path / "out", _cfg(on_bad_image="ignore"))
    (tmp_path / ZIP).write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable zip"):
        butterflies.prepare(tmp_path, tmp_path / "out", _cfg())
