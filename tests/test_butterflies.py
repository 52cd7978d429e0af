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
    with pytest.raises(ValueError) as err:
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
    with pytest.raises(ValueError, match="class id 1 of label 'ALPHA'"):
        butterflies.prepare(raw, tmp_path / "out", _cfg())


def test_unknown_noisy_class(tmp_path: Path) -> None:
    raw = _raw_dir(tmp_path / "raw")
    _make_zip(raw / ZIP, [])
    with pytest.raises(ValueError, match=f"{KEY}.noisy_classes.*'ALPHS'"):
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
    with pytest.raises(ValueError, match="unsafe member") as err:
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
    with pytest.raises(ValueError, match="'train/ALPHA/link.jpg'.*symbolic link"):
        butterflies.prepare(raw, tmp_path / "out", _cfg())


def test_zip_bomb_refused(tmp_path: Path) -> None:
    raw = _raw_dir(tmp_path / "raw")
    _make_zip(raw / ZIP, [], extra={"train/ALPHA/huge.jpg": b"\0" * 3_000_000})  # deflates to a few KB
    assert (raw / ZIP).stat().st_size < 1_000_000
    with pytest.raises(ValueError, match=f"{KEY}.max_uncompressed_bytes = 2000000"):
        butterflies.prepare(raw, tmp_path / "out", _cfg(max_uncompressed_bytes=2_000_000))
    assert not (tmp_path / "out").exists()


def test_bad_config_and_missing_inputs(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="cnnbench download --dataset butterflies"):
        butterflies.prepare(tmp_path, tmp_path / "out", _cfg())
    _make_zip(tmp_path / ZIP, [])
    with pytest.raises(FileNotFoundError, match="source.json"):
        butterflies.prepare(tmp_path, tmp_path / "out", _cfg())
    _raw_dir(tmp_path)
    with pytest.raises(ValueError, match=f"{KEY}.on_bad_image"):
        butterflies.prepare(tmp_path, tmp_path / "out", _cfg(on_bad_image="ignore"))
    (tmp_path / ZIP).write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable zip"):
        butterflies.prepare(tmp_path, tmp_path / "out", _cfg())
