"""cnnbench.data.duplicates: the leak audit's parts, each against a known answer."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnbench.data import duplicates as dup
from cnnbench.errors import ConfigError

FLIP = Image.Transpose.FLIP_LEFT_RIGHT
BUTTERFLY_ZIP = Path("butterflies") / "butterfly-images40-species.zip"
KEY = "datasets.example"


def _smooth(seed: int, side: int = 64) -> Image.Image:
    """A natural-ish picture: random 6x6 colours enlarged smoothly, plus a little fine grain (distinct per seed)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((side, side), Image.Resampling.BICUBIC)
    grain = rng.normal(0, 12, (side, side, 3))
    return Image.fromarray(np.clip(np.asarray(coarse, np.float64) + grain, 0, 255).astype(np.uint8))


def _jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _shift(im: Image.Image) -> Image.Image:
    """The picture moved one pixel left (the last column repeated)."""
    x = np.asarray(im)
    return Image.fromarray(np.ascontiguousarray(np.concatenate([x[:, 1:], x[:, -1:]], axis=1)))


def _prints(images: list[Image.Image]) -> dup.Fingerprints:
    side = dup.thumb_side(*images[0].size)
    prints = dup.Fingerprints(len(images), side)
    for im in images:
        prints.add(dup.fingerprint(im, side))
    return prints


# --------------------------------------------------------------------------- one image
def test_pixel_key_is_flip_aware() -> None:
    im = _smooth(1)
    mirror = im.transpose(FLIP)
    (d1, m1, s1), (d2, m2, s2) = dup.pixel_key(im), dup.pixel_key(mirror)
    assert d1 == d2 and m1 != m2 and not s1 and not s2  # one digest, opposite orientation
    assert dup.pixel_key(im.copy()) == (d1, m1, s1)  # an exact copy: the same key
    assert dup.pixel_key(_smooth(2))[0] != d1  # another picture, another digest
    assert dup.pixel_key(_jpeg(im, 95))[0] != d1  # re-encoded: not an exact copy (the near search's job)
    symmetric = Image.fromarray(np.tile(np.array([[[9, 8, 7]], [[1, 2, 3]]], np.uint8), (1, 4, 1)))
    digest, mirrored, sym = dup.pixel_key(symmetric)
    assert sym is True and mirrored is False


def test_fingerprint_and_thumbnails() -> None:
    im = _smooth(3, side=100)
    fp = dup.fingerprint(im, dup.thumb_side(*im.size))
    assert dup.thumb_side(224, 224) == dup.THUMB == 64 and dup.thumb_side(32, 32) == 32 and dup.thumb_side(4, 4) == 8
    assert fp.thumb.shape == (64, 64) and fp.thumb.dtype == np.uint8
    assert fp.desc.shape == (63,) and fp.desc.dtype == np.float32
    assert abs(float(np.linalg.norm(fp.desc)) - 1.0) < 1e-5
    assert fp.digest == dup.pixel_key(im)[0]
    with pytest.raises(ValueError, match="no pixels"):
        dup.fingerprint(Image.new("RGB", (0, 5)), 8)
    prints = dup.Fingerprints(2, 32)
    with pytest.raises(ValueError, match="one size"):
        prints.add(fp)  # a 64 px thumbnail in a 32 px store


def test_grey_of_is_pillows_luma() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (3, 17, 19, 3), dtype=np.uint8)
    expected = np.stack([np.asarray(Image.fromarray(x).convert("L")) for x in rgb])
    np.testing.assert_array_equal(dup.grey_of(rgb), expected)


# --------------------------------------------------------------------------- candidates
def test_mirror_descriptor_is_the_descriptor_of_the_mirror() -> None:
    x = np.random.default_rng(0).integers(0, 256, (6, 64, 64)).astype(np.float32)
    x[0] = np.asarray(_smooth(5).convert("L"), np.float32)
    mirrored = dup.descriptor(np.ascontiguousarray(x[:, :, ::-1]))
    np.testing.assert_allclose(dup.mirror_descriptor(dup.descriptor(x)), mirrored, atol=1e-5)
    # and it is not the identity: mirroring changes the descriptor of a picture that is not symmetric
    assert np.abs(dup.descriptor(x) - mirrored).max() > 0.05


def test_candidate_pairs_find_planted_copies_once() -> None:
    images = [_smooth(100 + k) for k in range(40)]
    images.append(_jpeg(images[7], 60))  # 40: a re-encoded copy of 7
    images.append(images[23].transpose(FLIP))  # 41: the mirror image of 23
    prints = _prints(images)
    rows = dup.candidate_pairs(prints.desc[: len(prints)])
    assert rows.shape[1] == 4 and len(rows)
    i, j = rows[:, 0].astype(int), rows[:, 1].astype(int)
    assert (i < j).all()  # never an image with itself, always the lower position first
    assert len(set(zip(i.tolist(), j.tolist()))) == len(rows)  # each pair once
    assert (rows[:, 3] >= dup.MIN_SIMILARITY).all() and (rows[:, 3] <= 1.0 + 1e-5).all()
    found = {(a, b): (flip, sim) for a, b, flip, sim in rows.tolist()}
    assert found[7, 40][0] == 0 and found[7, 40][1] > 0.99
    assert found[23, 41][0] == 1 and found[23, 41][1] > 0.99  # found through the mirror
    # at most NEIGHBOURS per image from its own side: no more than n * NEIGHBOURS pairs in all
    assert len(rows) <= len(images) * dup.NEIGHBOURS
    assert dup.candidate_pairs(prints.desc[:1]).shape == (0, 4)  # one image: nobody to pair with
    assert len(dup.candidate_pairs(prints.desc[:5], min_similarity=1.01)) == 0


# --------------------------------------------------------------------------- verification
@pytest.fixture(scope="module")
def photos(mirror_dir: Path) -> list[Image.Image]:
    """Two real, unrelated photographs (224 px) of the butterfly mirror."""
    with zipfile.ZipFile(mirror_dir / BUTTERFLY_ZIP) as zf:
        return [Image.open(io.BytesIO(zf.read(n))).convert("RGB")
                for n in ("train/ADONIS/004.jpg", "valid/MONARCH/3.jpg")]


@pytest.mark.parametrize("size", [224, 32])
def test_verify_distances(photos: list[Image.Image], size: int) -> None:
    a, b = (im.resize((size, size), Image.Resampling.BILINEAR) for im in photos)
    images = [a, a.copy(), _jpeg(a, 50 if size == 224 else 90), _shift(a), b, a.transpose(FLIP)]
    prints = _prints(images)
    pairs = np.array([[0, 1, 0, 1], [0, 2, 0, 1], [0, 3, 0, 1], [0, 4, 0, 1], [0, 5, 1, 1], [0, 5, 0, 1]], float)
    same, jpeg, shifted, other, mirror, unflipped = dup.verify(prints.thumbs_of, pairs).tolist()
    assert same == pytest.approx(0.0, abs=1e-5)
    assert mirror == pytest.approx(0.0, abs=1e-5)  # the flip flag compares j's mirror
    assert 0 < jpeg < 0.2 and 0 < shifted < 0.2
    assert other > 0.5 and unflipped > 0.5
    assert dup.verify(prints.thumbs_of, np.empty((0, 4))).shape == (0,)


# --------------------------------------------------------------------------- the audit
def _small_set() -> tuple[list[dup.ImageRef], list[Image.Image]]:
    """0 train X, 1 val exact copy of X, 2 test mirror of X with another label; 3 train Y, 4 test Y
    shifted and re-encoded; 5 train Z, 8 train exact copy of Z; 6, 7 unrelated."""
    x, y, z = _smooth(11), _smooth(12), _smooth(13)
    items = [
        ("train", "t/x", "A", 0, x),
        ("val", "v/x", "A", 0, x.copy()),
        ("test", "s/x-mirror", "B", 0, x.transpose(FLIP)),
        ("train", "t/y", "C", 1, y),
        ("test", "s/y-near", "C", 1, _jpeg(_shift(y), 85)),
        ("train", "t/z", "D", 2, z),
        ("val", "v/other", "E", 1, _smooth(14)),
        ("test", "s/other", "F", 2, _smooth(15)),
        ("train", "t/z-copy", "D", 3, z.copy()),
    ]
    return [dup.ImageRef(s, n, c, i) for s, n, c, i, _ in items], [im for *_, im in items]


@pytest.fixture(scope="module")
def small() -> tuple[dup.Audit, list[Image.Image]]:
    refs, images = _small_set()
    return dup.audit(refs, _prints(images), progress=False), images


def test_audit_kinds_and_groups(small: tuple[dup.Audit, list[Image.Image]]) -> None:
    result, _ = small
    assert [(p.a, p.b, p.kind) for p in result.pairs] == [
        (0, 1, "exact"), (0, 2, "flip"), (1, 2, "flip"), (3, 4, "near"), (5, 8, "exact"),
    ]
    near = result.pairs[3]
    assert 0 < near.distance <= dup.DEFAULT_THRESHOLD
    assert all(p.distance == 0.0 for p in result.pairs if p.kind != "near")
    assert result.threshold == dup.DEFAULT_THRESHOLD
    # connected components, each sorted by split then name
    assert sorted(result.groups) == [[0, 1, 2], [3, 4], [5, 8]]


def test_audit_counts_leaks_and_partners(small: tuple[dup.Audit, list[Image.Image]]) -> None:
    result, _ = small
    rows = result.counts()
    assert len(rows) == len(dup.SPLIT_PAIRS) * len(dup.KINDS) == 18
    assert [r["splits"] for r in rows[::3]] == ["train-train", "val-val", "test-test", "train-val", "train-test", "val-test"]
    nonzero = {(r["splits"], r["kind"]): (r["same_class"], r["different_class"])
               for r in rows if r["same_class"] or r["different_class"]}
    assert nonzero == {
        ("train-val", "exact"): (1, 0),
        ("train-test", "flip"): (0, 1),
        ("val-test", "flip"): (0, 1),
        ("train-test", "near"): (1, 0),
        ("train-train", "exact"): (1, 0),
    }
    assert result.leaked("test") == {2, 4}
    assert result.leaked("test", dropped=[0]) == {4}
    assert result.leaked("test", dropped=[0, 3]) == set()
    assert result.leaked("val") == {1}
    partners = result.eval_partners()
    assert set(partners) == {0, 3}  # 5 and 8 only duplicate each other
    assert partners[0][0] in (1, 2) and partners[0][1].distance == 0.0
    assert partners[3][0] == 4 and partners[3][1].kind == "near"


def test_audit_rejects_bad_arguments() -> None:
    refs, images = _small_set()
    prints = _prints(images)
    with pytest.raises(ValueError, match="threshold"):
        dup.audit(refs, prints, 1.0, progress=False)
    with pytest.raises(ValueError, match="8 image references but 9 fingerprints"):
        dup.audit(refs[:-1], prints, progress=False)


def test_audit_threshold_zero_keeps_only_copies() -> None:
    refs, images = _small_set()
    result = dup.audit(refs, _prints(images), 0.0, progress=False)
    assert {p.kind for p in result.pairs} == {"exact", "flip"} and len(result.pairs) == 4


def test_group_records(small: tuple[dup.Audit, list[Image.Image]]) -> None:
    result, _ = small
    records = result.group_records(dropped=[3])
    assert [r["id"] for r in records] == [0, 1, 2]
    conflict, near, within = records  # the label conflict first, then across splits, then within one split
    assert conflict["label_conflict"] and conflict["classes"] == ["A", "B"]
    assert conflict["kinds"] == ["exact", "flip"] and conflict["splits"] == ["train", "val", "test"]
    assert [m["file"] for m in conflict["members"]] == ["t/x", "v/x", "s/x-mirror"]
    assert [(p["a"], p["b"], p["kind"]) for p in conflict["pairs"]] == [(0, 1, "exact"), (0, 2, "flip"), (1, 2, "flip")]
    assert near["kinds"] == ["near"] and [m["dropped"] for m in near["members"]] == [True, False]
    assert near["pairs"][0]["distance"] == round(result.pairs[3].distance, 4) > 0
    assert within["splits"] == ["train"] and not within["label_conflict"]
    assert [(m["file"], m["index"]) for m in within["members"]] == [("t/z", 2), ("t/z-copy", 3)]


# --------------------------------------------------------------------------- what preprocess writes
def _arrays(images: list[Image.Image], refs: list[dup.ImageRef]) -> dict[str, np.ndarray]:
    out = {}
    for split in ("train", "val", "test"):
        mine = sorted((r.index, np.asarray(im)) for r, im in zip(refs, images) if r.split == split)
        out[split] = np.stack([a for _, a in mine])
    return out


@pytest.mark.parametrize("drop", [True, False])
def test_outcome(small: tuple[dup.Audit, list[Image.Image]], drop: bool) -> None:
    result, images = small
    arrays = _arrays(images, result.refs)
    out = dup.outcome("example", result, arrays, drop, f"{KEY}.drop_train_duplicates_of_eval")
    by_file = {m["file"]: m for g in out.record["groups"] for m in g["members"]}
    if drop:
        assert set(out.dropped) == {0, 1}  # train positions of t/x and t/y
        assert out.dropped[0] in (
            f"dropped: an exact copy of val image v/x ({KEY}.drop_train_duplicates_of_eval: true)",
            f"dropped: a mirror image of test image s/x-mirror ({KEY}.drop_train_duplicates_of_eval: true)",
        )
        distance = f"{result.pairs[3].distance:.3f}"
        assert out.dropped[1] == (f"dropped: a near-duplicate (distance {distance}) of test image s/y-near "
                                  f"({KEY}.drop_train_duplicates_of_eval: true)")
        # the kept train images move up: t/z 2 -> 0, t/z-copy 3 -> 1; the dropped ones have no index
        assert {f: (by_file[f]["index"], by_file[f]["dropped"]) for f in ("t/x", "t/y", "t/z", "t/z-copy")} == {
            "t/x": (None, True), "t/y": (None, True), "t/z": (0, False), "t/z-copy": (1, False)}
        assert out.record["test_leaked"] == [] and out.summary["test_clean_count"] == 3
        assert out.summary["dropped_train"] == 2
    else:
        assert out.dropped == {}
        assert {f: by_file[f]["index"] for f in ("t/x", "t/y", "t/z", "t/z-copy")} == {
            "t/x": 0, "t/y": 1, "t/z": 2, "t/z-copy": 3}
        assert not any(m["dropped"] for m in by_file.values())
        assert out.record["test_leaked"] == [0, 1]  # stored test positions of s/x-mirror and s/y-near
        assert out.summary["test_clean_count"] == 1 and out.summary["dropped_train"] == 0
    assert by_file["v/x"]["index"] == 0 and by_file["s/y-near"]["index"] == 1  # val and test never move
    summary = out.summary
    assert summary["images_audited"] == {"train": 4, "val": 2, "test": 3}
    assert summary["group_count"] == 3 and summary["cross_split_groups"] == 2 and summary["label_conflict_groups"] == 1
    assert summary["images_in_groups"] == 7 and summary["train_duplicates_of_eval"] == 2
    assert summary["drop_train_duplicates_of_eval"] is drop and summary["near_duplicate_threshold"] == 0.2
    assert summary["pairs"] == result.counts() and summary["file"] == dup.FILE
    assert summary["examples"] == out.record["groups"][:10]
    assert out.record["format"] == "cnnbench-duplicates-v2" and out.record["dataset"] == "example"
    assert {k: v for k, v in summary.items() if k != "examples"} == {
        k: v for k, v in out.record.items() if k not in ("format", "dataset", "test_leaked", "thumbs_file", "groups")}
    # thumbnails: the members of the groups across splits, in order; none for the train-only group
    thumbs = [m["thumb"] for g in out.record["groups"] for m in g["members"]]
    assert thumbs == [0, 1, 2, 3, 4, None, None]
    assert out.thumbs.shape == (5, dup.REPORT_THUMB, dup.REPORT_THUMB, 3) and out.thumbs.dtype == np.uint8
    for g in out.record["groups"]:
        for m in g["members"]:
            if m["thumb"] is not None:  # 64 px images: the thumbnail is the image
                original = next(im for r, im in zip(result.refs, images) if r.name == m["file"])
                np.testing.assert_array_equal(out.thumbs[m["thumb"]], np.asarray(original))
    note = dup.note(summary, f"{KEY}.drop_train_duplicates_of_eval")
    assert "3 group(s) of 7 images, 2 across splits, 1 with conflicting labels" in note
    assert re.search(r"2 dropped|kept", note)


def test_keep_rows_compacts_in_place() -> None:
    array = np.arange(20, dtype=np.int64).reshape(10, 2)
    kept = dup.keep_rows(array, {0, 4, 9})
    assert kept.tolist() == [[2, 3], [4, 5], [6, 7], [10, 11], [12, 13], [14, 15], [16, 17]]
    assert np.shares_memory(kept, array) and (array[:7] == kept).all()  # compacted in place: no second copy
    untouched = np.arange(6).reshape(3, 2)
    assert dup.keep_rows(untouched, []) is untouched
    assert dup.keep_rows(np.arange(3), {0, 1, 2}).shape == (0,)


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, "x", True, None, [0.2]])
def test_threshold_setting_refuses(value: object) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{KEY}.near_duplicate_threshold must be a number in [0, 1), got {value!r}")):
        dup.threshold_setting({"near_duplicate_threshold": value}, KEY)


@pytest.mark.parametrize("value, expected", [(0, 0.0), (0.5, 0.5), (0.2, 0.2)])
def test_threshold_setting_accepts(value: object, expected: float) -> None:
    got = dup.threshold_setting({"near_duplicate_threshold": value}, KEY)
    assert got == expected and isinstance(got, float)
    assert dup.threshold_setting({}, KEY) == dup.DEFAULT_THRESHOLD


def test_outcome_bounds_the_thumbnails(small: tuple[dup.Audit, list[Image.Image]], monkeypatch: pytest.MonkeyPatch) -> None:
    result, images = small
    monkeypatch.setattr(dup, "THUMB_GROUPS", 1)
    monkeypatch.setattr(dup, "THUMB_MEMBERS", 2)
    out = dup.outcome("example", result, _arrays(images, result.refs), False, f"{KEY}.drop_train_duplicates_of_eval")
    assert [[m["thumb"] for m in g["members"]] for g in out.record["groups"]] == [[0, 1, None], [None, None], [None, None]]
    assert out.thumbs.shape == (2, dup.REPORT_THUMB, dup.REPORT_THUMB, 3)
