"""The imagefolder and csv kinds (cnnbench.data.imagefolder, .imagecsv, .images, .archive, .splits) on
synthetic image folders (tests/image_fixtures.py) packed as a folder, a zip and a tar.gz."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnbench.data import duplicates, fetch, imagecsv, imagefolder, images, packed, splits
from cnnbench.errors import ConfigError, DataError
from image_fixtures import encode, make_image_folder, pack, write_csv_index

NAME = "shapes"
KEY = f"datasets.{NAME}"


def _settings(kind: str = "imagefolder", filename: str = "shapes.zip", **overrides: object) -> dict:
    settings = {"name": NAME, "kind": kind, "archive": None, "sha256": None, "filename": filename, "image_size": 24}
    settings.update(overrides)
    return settings


def _fetch(source: Path, root: Path, filename: str = "shapes.zip") -> Path:
    """`source` (a folder or an archive file) downloaded as data/raw/shapes/<filename> would be."""
    raw = root / "raw"
    fetch.fetch_dataset(NAME, {"archive": str(source), "filename": filename}, raw, None)
    return raw


def _prepare(module, raw: Path, out: Path, **overrides: object) -> dict:
    filename = next(p.name for p in raw.iterdir() if p.name != "source.json")
    return module.prepare(raw, out, _settings("csv" if module is imagecsv else "imagefolder", filename, **overrides))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("shapes") / "shapes"
    return root, make_image_folder(root, classes=3, per_class=8, test_per_class=3, corrupt=3)


def _copy(folder: tuple[Path, dict], dest: Path) -> Path:
    shutil.copytree(folder[0], dest)
    return dest


# --------------------------------------------------------------------------- imagefolder
@pytest.mark.parametrize("form", ["folder", "zip", "tar.gz"])
def test_imagefolder_from_folder_zip_and_targz(folder: tuple[Path, dict], tmp_path: Path, form: str) -> None:
    src, info = folder
    if form == "folder":
        source, filename = src, "shapes.zip"
    else:  # the tar.gz has everything under one top-level folder, as `tar czf shapes.tar.gz shapes/` makes it
        source, filename = pack(src, tmp_path / f"shapes.{form}", top="shapes" if form == "tar.gz" else ""), f"shapes.{form}"
    raw = _fetch(source, tmp_path, filename)
    manifest = _prepare(imagefolder, raw, tmp_path / "out", val_fraction=0.25)
    assert manifest["classes"] == ["circle", "square", "triangle"] and manifest["kind"] == "imagefolder"
    assert manifest["layout"] == {"root": "shapes/" if form == "tar.gz" else "",
                                  "splits": {"train": "train/", "val": None, "test": "test/"}}
    assert manifest["archive_kind"] == ("tar" if form == "tar.gz" else "zip")
    # The corrupt files are skipped and listed with their reasons; nothing else is left out.
    bad = {e["file"]: e["reason"] for e in manifest["excluded"]}
    assert sorted(bad) == sorted(info["corrupt"])
    assert {bad[f].split(" (")[0] for f in bad} == {"corrupt or truncated PNG", "not a readable image", "empty file"}
    # val is carved from the file list (corrupt files included): round(0.25 * 9) = 2 of each class's 9 files.
    counts = {s: manifest["splits"][s]["count"] for s in packed.SPLITS}
    assert counts["train"] + counts["val"] == info["counts"]["train"] and counts["test"] == info["counts"]["test"]
    assert manifest["val_fraction"] == 0.25 and manifest["split_seed"] == 0
    assert counts["val"] + sum(1 for e in manifest["excluded"] if e["split"] == "val") == 6
    # Every non-RGB image is listed with the mode it had.
    converted = {c["file"]: c["from_mode"] for c in manifest["converted"]}
    assert converted == {f: m for f, m in info["modes"].items() if m != "RGB"}
    assert {"L", "RGBA", "P", "CMYK", "LA", "I;16"} <= set(manifest["converted_modes"])
    images_, labels, classes = packed.load_split(tmp_path / "out", "test")
    assert images_.shape == (9, 24, 24, 3) and labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert manifest["duplicates"]["images_audited"]["test"] == 9
    assert (tmp_path / "out" / duplicates.FILE).is_file()


def test_the_three_forms_pack_the_same_images(folder: tuple[Path, dict], tmp_path: Path) -> None:
    stored = []
    for form in ("folder", "zip", "tar.gz"):
        source = folder[0] if form == "folder" else pack(folder[0], tmp_path / f"s.{form}")
        raw = _fetch(source, tmp_path / form, "shapes.zip" if form == "folder" else f"s.{form}")
        _prepare(imagefolder, raw, tmp_path / form / "out")
        stored.append({s: packed.load_split(tmp_path / form / "out", s)[:2] for s in packed.SPLITS})
    for other in stored[1:]:
        for s in packed.SPLITS:
            np.testing.assert_array_equal(other[s][0], stored[0][s][0])
            np.testing.assert_array_equal(other[s][1], stored[0][s][1])


def test_val_folder_is_used_and_valid_is_accepted(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_image_folder(src, classes=2, per_class=4, test_per_class=2, with_val=True, val_per_class=2, corrupt=0)
    (src / "val").rename(src / "valid")
    (src / "README.txt").write_text("shapes\n")
    (src / "train" / ".DS_Store").write_bytes(b"\0")
    manifest = _prepare(imagefolder, _fetch(src, tmp_path), tmp_path / "out")
    assert manifest["layout"]["splits"]["val"] == "valid/" and "val_fraction" not in manifest
    assert {s: manifest["splits"][s]["count"] for s in packed.SPLITS} == {"train": 8, "val": 4, "test": 4}
    assert {e["file"]: e["reason"] for e in manifest["excluded"]} == {
        "README.txt": "ignored: not inside a train/, val/ or test/ class folder",
        "train/.DS_Store": "ignored: hidden or system file",
    }


def test_carved_val_is_seeded_stratified_and_deterministic(folder: tuple[Path, dict], tmp_path: Path) -> None:
    raw = _fetch(folder[0], tmp_path)
    val = {}
    for run, seed in (("a", 0), ("b", 0), ("c", 1)):
        manifest = _prepare(imagefolder, raw, tmp_path / run, val_fraction=0.4, split_seed=seed, on_bad_image="skip")
        val[run] = packed.load_split(tmp_path / run, "val")[0]
        # 9 files per class in train/ (3 of them corrupt, one in each class): round(0.4 * 9) = 4 chosen per class,
        # fewer kept where a corrupt one was chosen
        assert all(2 <= n <= 4 for n in manifest["splits"]["val"]["per_class"].values())
    np.testing.assert_array_equal(val["a"], val["b"])
    assert val["a"].shape != val["c"].shape or not np.array_equal(val["a"], val["c"])


def test_stratified_splits() -> None:
    labels = np.array(["a"] * 10 + ["b"] * 20 + ["c"] * 3)
    keep, held = splits.stratified_holdout(labels, 0.2, 7)
    assert sorted(np.concatenate([keep, held]).tolist()) == list(range(33))
    assert [int((labels[held] == c).sum()) for c in "abc"] == [2, 4, 1]
    assert np.array_equal(held, splits.stratified_holdout(labels, 0.2, 7)[1])
    train, val, test = splits.stratified_carve(labels, 0.1, 0.2, 3)
    assert [int((labels[test] == c).sum()) for c in "abc"] == [2, 4, 1]
    assert [int((labels[val] == c).sum()) for c in "abc"] == [1, 2, 0]
    assert len(train) + len(val) + len(test) == 33 and not set(train) & set(val) | set(val) & set(test)
    with pytest.raises(ValueError):
        splits.stratified_carve(labels, 0.5, 0.5, 0)


def test_corrupt_images_are_fatal_with_fail(folder: tuple[Path, dict], tmp_path: Path) -> None:
    raw = _fetch(folder[0], tmp_path)
    with pytest.raises(DataError, match=rf"bad image 'train/circle/bad00.png' .*{KEY}.on_bad_image: skip"):
        _prepare(imagefolder, raw, tmp_path / "out", on_bad_image="fail")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case, message", [
    ("empty_class", r"empty class folder 'train/star/'"),
    ("test_only_class", r"class folder 'test/star/' .* no counterpart in 'train/'.*add train/star/"),
    ("no_test", r"no test/ folder beside 'train/'.*Add test/<class>/<images>"),
    ("no_train", r"no train/ folder at its root or under one top-level folder"),
    ("all_bad", r"class 'star' has no usable training image"),
])
def test_imagefolder_layout_errors(folder: tuple[Path, dict], tmp_path: Path, case: str, message: str) -> None:
    src = _copy(folder, tmp_path / "src")
    if case == "empty_class":
        (src / "train" / "star").mkdir()
    elif case == "test_only_class":
        (src / "test" / "star").mkdir()
        shutil.copy(src / "test" / "circle" / "000.png", src / "test" / "star" / "0.png")
    elif case == "no_test":
        shutil.rmtree(src / "test")
    elif case == "no_train":
        (src / "train").rename(src / "training")
    else:
        (src / "train" / "star").mkdir()
        (src / "train" / "star" / "0.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=message):
        _prepare(imagefolder, _fetch(src, tmp_path), tmp_path / "out")


def test_unknown_noisy_class_and_settings(folder: tuple[Path, dict], tmp_path: Path) -> None:
    raw = _fetch(folder[0], tmp_path)
    with pytest.raises(ConfigError, match=rf"{KEY}.noisy_classes names \['star'\]"):
        _prepare(imagefolder, raw, tmp_path / "out", noisy_classes=["circle", "star"])
    manifest = _prepare(imagefolder, raw, tmp_path / "out", noisy_classes=["circle"])
    assert manifest["noisy_classes"] == ["circle"] and manifest["splits_without_noisy"]["test"] == {"count": 6, "num_classes": 2}
    for key, value in (("image_size", None), ("resize", "crop"), ("on_bad_image", "warn"), ("val_fraction", 1.0),
                       ("drop_train_duplicates_of_eval", "yes")):
        with pytest.raises(ConfigError, match=rf"{KEY}.{key}"):
            _prepare(imagefolder, raw, tmp_path / "out", **{key: value})


def test_describe_and_defaults() -> None:
    assert imagefolder.describe(_settings(image_size=48)) == {"image_size": 48, "num_classes": None, "title": NAME}
    assert imagecsv.describe(_settings("csv", title="My shapes"))["title"] == "My shapes"
    with pytest.raises(ConfigError, match=rf"{KEY}.image_size"):
        imagefolder.describe({"name": NAME, "kind": "imagefolder"})
    assert imagefolder.DEFAULT_TRAIN == imagecsv.DEFAULT_TRAIN == {
        "normalize": None, "augment": {"crop": "resized", "min_scale": 0.35, "flip": True}}


def test_duplicate_of_a_test_image_in_train_is_dropped(folder: tuple[Path, dict], tmp_path: Path) -> None:
    src = _copy(folder, tmp_path / "src")
    original = sorted((src / "test" / "square").iterdir())[0]
    shutil.copy(original, src / "train" / "square" / ("copy" + original.suffix))
    manifest = _prepare(imagefolder, _fetch(src, tmp_path), tmp_path / "out")
    dropped = [e for e in manifest["excluded"] if e["reason"].startswith("dropped:")]
    assert [e["file"] for e in dropped] == [f"train/square/copy{original.suffix}"]
    assert f"{KEY}.drop_train_duplicates_of_eval: true" in dropped[0]["reason"]
    assert manifest["duplicates"]["dropped_train"] == 1 and manifest["duplicates"]["test_clean_count"] == 9
    kept = _prepare(imagefolder, _fetch(src, tmp_path / "k"), tmp_path / "kept", drop_train_duplicates_of_eval=False)
    assert kept["duplicates"]["test_clean_count"] == 8
    assert json.loads((tmp_path / "kept" / duplicates.FILE).read_text())["test_leaked"] != []


# --------------------------------------------------------------------------- archives
def test_unreadable_archives(tmp_path: Path, folder: tuple[Path, dict]) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "source.json").write_text(json.dumps({"dataset": NAME, "source": "path"}))
    (raw / "shapes.zip").write_bytes(b"neither a zip nor a tar" * 40)
    with pytest.raises(DataError, match=r"shapes.zip is not a readable archive.*cnnbench download --dataset shapes"):
        imagefolder.prepare(raw, tmp_path / "out", _settings())
    whole = pack(folder[0], tmp_path / "whole.tar.gz").read_bytes()
    (raw / "shapes.tar.gz").write_bytes(whole[: len(whole) // 2])  # truncated
    with pytest.raises(DataError, match=r"shapes.tar.gz is not a readable archive"):
        imagefolder.prepare(raw, tmp_path / "out", _settings(filename="shapes.tar.gz"))
    assert not (tmp_path / "out").exists()


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(member, io.BytesIO(data) if data else None)
    return path


@pytest.mark.parametrize("kind, problem", [("symlink", "symbolic link -> '/etc/passwd'"), ("dotdot", "'..'"),
                                           ("absolute", "absolute path"), ("hardlink", "hard link")])
def test_unsafe_tar_members_are_refused(tmp_path: Path, kind: str, problem: str) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "source.json").write_text("{}")
    member = tarfile.TarInfo({"dotdot": "train/../../evil.png", "absolute": "/tmp/evil.png"}.get(kind, "train/a/x.png"))
    if kind in ("symlink", "hardlink"):
        member.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
        member.linkname = "/etc/passwd"
        _tar_with(raw / "s.tar.gz", member)
    else:
        member.size = 3
        _tar_with(raw / "s.tar.gz", member, b"abc")
    with pytest.raises(DataError, match="unsafe member") as err:
        imagefolder.prepare(raw, tmp_path / "out", _settings(filename="s.tar.gz"))
    assert problem in str(err.value) and member.name in str(err.value)


def test_archive_size_limit(folder: tuple[Path, dict], tmp_path: Path) -> None:
    raw = _fetch(pack(folder[0], tmp_path / "s.tar"), tmp_path, "s.tar")
    with pytest.raises(DataError, match=rf"{KEY}.max_uncompressed_bytes = 1000\b"):
        _prepare(imagefolder, raw, tmp_path / "out", max_uncompressed_bytes=1000)


# --------------------------------------------------------------------------- colour and size
def _stripes() -> Image.Image:
    """40 x 20: red x < 10, green 10 <= x < 30, blue x >= 30."""
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :10, 0] = 255
    a[:, 10:30, 1] = 255
    a[:, 30:, 2] = 255
    return Image.fromarray(a)


def test_resize_policies_on_a_known_image() -> None:
    crop = np.asarray(images.fit(_stripes(), 20, "shorter-side+center-crop"))
    assert crop.shape == (20, 20, 3) and (crop == [0, 255, 0]).all()  # the centred 20x20: all green, exactly
    stretch = np.asarray(images.fit(_stripes(), 20, "stretch")).astype(int)
    assert stretch.shape == (20, 20, 3)
    assert (stretch[:, :4] == [255, 0, 0]).all() and (stretch[:, 6:14] == [0, 255, 0]).all()
    assert (stretch[:, 16:] == [0, 0, 255]).all()  # squeezed 2:1, each stripe keeps its share of the width
    small = np.asarray(images.fit(_stripes(), 10, "shorter-side+center-crop")).astype(int)
    assert small.shape == (10, 10, 3) and (small[:, 1:-1] == [0, 255, 0]).all()  # shrunk, still the centre


def test_resize_policy_through_prepare(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for split in ("train", "test"):
        (src / split / "stripes").mkdir(parents=True)
        _stripes().save(src / split / "stripes" / "a.png")
    # crop: the centred 20 columns, all green; stretch: green is 10 columns wide, the two at its edges blended
    for policy, green_columns in (("shorter-side+center-crop", 20), ("stretch", 8)):
        out = tmp_path / policy
        manifest = _prepare(imagefolder, _fetch(src, tmp_path / f"raw-{policy}"), out, image_size=20, resize=policy,
                            val_fraction=0.0, drop_train_duplicates_of_eval=False)
        assert manifest["resize"] == policy and manifest["source_sizes"] == {"min": [20, 40], "max": [20, 40]}
        stored = packed.load_split(out, "test")[0][0].astype(int)
        assert int((stored[0] == [0, 255, 0]).all(axis=1).sum()) == green_columns


@pytest.mark.parametrize("mode, fmt", [("L", "PNG"), ("LA", "PNG"), ("RGBA", "PNG"), ("P", "GIF"), ("CMYK", "JPEG"),
                                       ("I;16", "PNG"), ("RGB", "BMP")])
def test_every_mode_becomes_rgb(mode: str, fmt: str) -> None:
    im = Image.new("RGBA", (30, 20), (200, 100, 50, 255))
    im.putpixel((0, 0), (0, 0, 0, 0))  # transparent
    result = images.decode(encode(im, mode, fmt), 20, "stretch", 20)
    assert isinstance(result, images.Decoded)
    assert result.array.shape == (20, 20, 3) and result.source_size == (30, 20)
    assert result.from_mode == (None if mode == "RGB" else mode)


def test_alpha_is_composited_on_white_and_16_bit_grey_scaled() -> None:
    rgba = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 255, 0))
    out, mode = images.to_rgb(rgba)
    assert mode == "RGBA" and np.asarray(out).tolist() == [[[255, 0, 0], [255, 255, 255]]]
    grey = Image.fromarray(np.array([[0, 257 * 100, 65535]], np.uint16))
    out, mode = images.to_rgb(grey)
    assert mode == grey.mode and np.asarray(out)[0, :, 0].tolist() == [0, 100, 255]
    p = Image.new("P", (2, 1), 1)
    p.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    p.info["transparency"] = 0
    p.putpixel((0, 0), 0)
    out, mode = images.to_rgb(p)
    assert mode == "P" and np.asarray(out).tolist() == [[[255, 255, 255], [10, 20, 30]]]
    rgb = Image.new("RGB", (1, 1), (1, 2, 3))
    assert images.to_rgb(rgb) == (rgb, None)


def test_bad_image_reasons() -> None:
    good = encode(Image.new("RGBA", (30, 30), (1, 2, 3, 255)), "RGB", "PNG")
    assert images.decode(b"", 8, "stretch", 8) == "empty file (0 bytes)"
    assert str(images.decode(b"plain text", 8, "stretch", 8)).startswith("not a readable image")
    assert str(images.decode(good[:60], 8, "stretch", 8)).startswith("corrupt or truncated PNG")


# --------------------------------------------------------------------------- csv
def _csv_source(folder: tuple[Path, dict], dest: Path, with_split: bool = True, rows: list[str] | None = None,
                images_dir: str = "") -> Path:
    """The fixture folder with a labels.csv beside it (or its images under `images_dir`)."""
    src = dest / "src"
    _copy(folder, src / images_dir if images_dir else src)
    csv_path = write_csv_index(src / images_dir if images_dir else src, with_split=with_split)
    if images_dir:
        csv_path.rename(src / "labels.csv")
    if rows is not None:
        with open(src / "labels.csv", "a", encoding="utf-8") as f:
            f.write("\n".join(rows) + "\n")
    return src


def test_csv_with_split_column(folder: tuple[Path, dict], tmp_path: Path) -> None:
    src = _csv_source(folder, tmp_path)
    (src / "notes.txt").write_text("unlisted\n")
    manifest = _prepare(imagecsv, _fetch(src, tmp_path), tmp_path / "out", csv="labels.csv", val_fraction=0.25)
    assert manifest["kind"] == "csv" and manifest["csv"] == "labels.csv" and manifest["image_root"] == ""
    assert manifest["split_column"] is True and manifest["classes"] == ["circle", "square", "triangle"]
    bad = sorted(e["file"] for e in manifest["excluded"] if not e["reason"].startswith("ignored:"))
    assert bad == sorted(folder[1]["corrupt"])
    assert [e["file"] for e in manifest["excluded"] if e["reason"] == "ignored: not listed in the CSV"] == ["notes.txt"]
    counts = {s: manifest["splits"][s]["count"] for s in packed.SPLITS}
    assert counts["test"] == 9 and counts["train"] + counts["val"] == 24 and counts["val"] > 0
    assert {c["file"] for c in manifest["converted"]} == {f for f, m in folder[1]["modes"].items() if m != "RGB"}


def test_csv_without_split_column_is_carved(folder: tuple[Path, dict], tmp_path: Path) -> None:
    src = _csv_source(folder, tmp_path, with_split=False, images_dir="images")
    raw = _fetch(pack(src, tmp_path / "s.zip", top="mydata"), tmp_path, "s.zip")
    manifest = _prepare(imagecsv, raw, tmp_path / "out", csv="labels.csv", image_root="images", test_fraction=0.3,
                        on_bad_image="skip", split_seed=3)
    assert manifest["csv"] == "mydata/labels.csv" and manifest["image_root"] == "mydata/images/"
    assert manifest["split_column"] is False and manifest["test_fraction"] == 0.3 and manifest["split_seed"] == 3
    # per class: 12 files listed (one corrupt each), round(0.3 * 12) = 4 to test, round(0.1 * 12) = 1 to val
    audited = manifest["duplicates"]["images_audited"]
    assert sum(audited.values()) == 33
    assert audited["test"] + sum(1 for e in manifest["excluded"] if e["split"] == "test") == 12
    assert audited["val"] + sum(1 for e in manifest["excluded"] if e["split"] == "val") == 3
    again = _prepare(imagecsv, raw, tmp_path / "again", csv="labels.csv", image_root="images", test_fraction=0.3,
                     split_seed=3)
    assert again["splits"] == manifest["splits"]
    np.testing.assert_array_equal(packed.load_split(tmp_path / "again", "test")[0],
                                  packed.load_split(tmp_path / "out", "test")[0])


@pytest.mark.parametrize("row, message", [
    (",circle,train", r"labels.csv:\d+: label 'circle' has no image"),
    ("train/circle/nope.png,circle,train", r"labels.csv:\d+: file 'train/circle/nope.png' \(label 'circle'\) is not in"),
    ("../outside.png,circle,train", r"labels.csv:\d+: file '../outside.png' is outside the image root"),
    ("/etc/passwd,circle,train", r"labels.csv:\d+: file '/etc/passwd' is outside the image root"),
    ("train/circle/000.png,circle,holdout", r"labels.csv:\d+: unknown split 'holdout'"),
    ("train/circle/000.png,circle,train", r"labels.csv:\d+: file 'train/circle/000.png' is listed again"),
])
def test_csv_row_errors_name_the_line(folder: tuple[Path, dict], tmp_path: Path, row: str, message: str) -> None:
    src = _csv_source(folder, tmp_path, rows=[row])
    last = len((src / "labels.csv").read_text().strip().splitlines())
    with pytest.raises(DataError, match=message) as err:
        _prepare(imagecsv, _fetch(src, tmp_path), tmp_path / "out", csv="labels.csv")
    assert f"labels.csv:{last}:" in str(err.value)


def test_csv_label_only_in_test(folder: tuple[Path, dict], tmp_path: Path) -> None:
    src = _csv_source(folder, tmp_path)
    text = (src / "labels.csv").read_text().replace("test/circle/000.png,circle,test", "test/circle/000.png,star,test")
    (src / "labels.csv").write_text(text)
    with pytest.raises(DataError, match=r"labels.csv:\d+: label 'star' \(test\) has no train row"):
        _prepare(imagecsv, _fetch(src, tmp_path), tmp_path / "out", csv="labels.csv")


def test_csv_settings_errors(folder: tuple[Path, dict], tmp_path: Path) -> None:
    raw = _fetch(_csv_source(folder, tmp_path), tmp_path)
    with pytest.raises(DataError, match=rf"{KEY}.csv = 'index.csv' is not in .*CSV files there: \['labels.csv'\]"):
        _prepare(imagecsv, raw, tmp_path / "out", csv="index.csv")
    with pytest.raises(ConfigError, match=rf"{KEY}.test_fraction is set but .* has a split column"):
        _prepare(imagecsv, raw, tmp_path / "out", csv="labels.csv", test_fraction=0.2)
    with pytest.raises(ConfigError, match=rf"{KEY}.image_root = '../x' has an '..' path component"):
        _prepare(imagecsv, raw, tmp_path / "out", csv="labels.csv", image_root="../x")
    with pytest.raises(ConfigError, match=rf"{KEY}.csv must be a path inside the archive"):
        _prepare(imagecsv, raw, tmp_path / "out")


def test_csv_without_test_rows(folder: tuple[Path, dict], tmp_path: Path) -> None:
    src = _csv_source(folder, tmp_path)
    lines = [ln for ln in (src / "labels.csv").read_text().splitlines() if not ln.endswith(",test")]
    (src / "labels.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="has a split column but no test row"):
        _prepare(imagecsv, _fetch(src, tmp_path), tmp_path / "out", csv="labels.csv")


def test_read_table() -> None:
    header, rows = images.read_table("File, Label ,extra\n\na.png,x,1\n", "t.csv", ["file", "label"], ["split"])
    assert header == ["file", "label", "extra"] and rows == [(3, {"file": "a.png", "label": "x"})]
    for text, message in (("", "t.csv is empty"), ("file\na\n", r"lacks column\(s\) \['label'\]"),
                          ("file,label\na\n", "t.csv:2: expected 2 columns"), ("file,label\n", "no data rows")):
        with pytest.raises(DataError, match=message):
            images.read_table(text, "t.csv", ["file", "label"])


def test_zip_with_folder_members_and_empty_class(tmp_path: Path) -> None:
    """A zip made elsewhere, with explicit folder members: an empty class folder is still seen."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "source.json").write_text("{}")
    png = encode(Image.new("RGBA", (30, 30), (1, 2, 3, 255)), "RGB", "PNG")
    with zipfile.ZipFile(raw / "s.zip", "w") as zf:
        for name in ("data/", "data/train/", "data/train/a/", "data/train/b/", "data/test/", "data/test/a/"):
            zf.writestr(name, b"")
        zf.writestr("data/train/a/1.png", png)
        zf.writestr("data/test/a/1.png", png)
    with pytest.raises(DataError, match=r"empty class folder 'data/train/b/'"):
        imagefolder.prepare(raw, tmp_path / "out", _settings(filename="s.zip"))
