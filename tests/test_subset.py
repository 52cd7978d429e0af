"""The subset kind: chosen classes of another data set's packed store, a seeded draw of training
images, every val and test image of those classes, its own leak audit; and the training-split
statistics every store records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnbench.data import packed, subset
from cnnbench.errors import ConfigError

CLASSES = ["ant", "bee", "cat", "dog"]


def _parent(tmp_path: Path) -> Path:
    """A packed store of 4 classes: 10 training, 3 val and 2 test images of each, every image a
    distinct random pattern (no duplicates), labelled in class order."""
    rng = np.random.default_rng(7)
    splits = {}
    for split, per in (("train", 10), ("val", 3), ("test", 2)):
        labels = np.repeat(np.arange(4), per)
        images = rng.integers(0, 256, size=(len(labels), 16, 16, 3), dtype=np.uint8)
        splits[split] = (images, labels)
    out = tmp_path / "parent"
    packed.write_prepared(out, splits, CLASSES, {"dataset": "parent", "source": {"sha256": "abc"}})
    return out


def _settings(**over) -> dict:
    return {"name": "small", "kind": "subset", "of": "parent", "classes": ["dog", "bee"], "max_per_class": 4,
            "seed": 3, "parent": {"name": "parent"}, **over}


def test_a_subset_keeps_the_chosen_classes_in_order_a_seeded_draw_of_train_and_all_their_eval_images(tmp_path):
    parent = _parent(tmp_path)
    manifest = subset.prepare(parent, tmp_path / "small", _settings())
    assert packed.read_classes(tmp_path / "small") == ["dog", "bee"] == manifest["classes"]
    x, y, _ = packed.load_split(tmp_path / "small", "train")
    assert np.bincount(y).tolist() == [4, 4]
    # the images are the parent's: each drawn train image is one of the parent's of that class
    px, py, _ = packed.load_split(parent, "train")
    for image, label in zip(x, y):
        parent_label = CLASSES.index(["dog", "bee"][label])
        assert any((image == p).all() for p in px[py == parent_label])
    for split, per in (("val", 3), ("test", 2)):
        assert np.bincount(packed.load_split(tmp_path / "small", split)[1]).tolist() == [per, per]
    assert manifest["of"] == "parent" and manifest["seed"] == 3 and manifest["source"] == {"sha256": "abc"}
    assert manifest["duplicates"]["test_clean_count"] == 4  # no copies among random patterns
    # the same seed draws the same images; another seed other ones
    again = subset.prepare(parent, tmp_path / "again", _settings())
    other = subset.prepare(parent, tmp_path / "other", _settings(seed=4))
    assert (packed.load_split(tmp_path / "again", "train")[0] == x).all()
    assert not (packed.load_split(tmp_path / "other", "train")[0] == x).all()
    assert again["train_stats"] == manifest["train_stats"] != other["train_stats"]


def test_draw_train_is_numpys_seeded_choice_per_class_and_keeps_small_classes_whole():
    labels = np.array([0, 1, 0, 1, 0, 2, 0])
    rng = np.random.default_rng(5)
    expected = np.sort(np.concatenate([np.sort(rng.choice(np.flatnonzero(labels == 0), 2, replace=False)),
                                       np.flatnonzero(labels == 2)]))
    assert subset.draw_train(labels, [0, 2], 2, 5).tolist() == expected.tolist()
    assert subset.draw_train(labels, [1], None, 5).tolist() == [1, 3]


def test_a_class_the_parent_lacks_or_a_noisy_class_outside_the_subset_is_a_config_error(tmp_path):
    parent = _parent(tmp_path)
    with pytest.raises(ConfigError, match=r"datasets\.small\.classes: \['eel'\] are not classes of .*parent"):
        subset.prepare(parent, tmp_path / "small", _settings(classes=["dog", "eel"]))
    with pytest.raises(ConfigError, match=r"datasets\.small\.noisy_classes: \['cat'\] are not among"):
        subset.prepare(parent, tmp_path / "small", _settings(noisy_classes=["cat"]))
    assert not (tmp_path / "small").exists()


def test_a_test_image_copied_into_the_kept_training_images_is_not_clean(tmp_path):
    parent = _parent(tmp_path)
    splits = {s: tuple(np.array(a) for a in packed.load_split(parent, s)[:2]) for s in packed.SPLITS}
    splits["test"][0][0] = splits["train"][0][0]  # the first test image (class ant) is a training image
    packed.write_prepared(tmp_path / "leaky", splits, CLASSES, {"dataset": "parent"})
    kept = subset.prepare(tmp_path / "leaky", tmp_path / "all", _settings(classes=None, max_per_class=None))
    assert kept["duplicates"]["test_clean_count"] == 7
    assert packed.clean_mask(tmp_path / "all", "test").tolist()[0] is False


def test_every_store_records_its_training_split_channel_statistics(tmp_path):
    images = np.zeros((2, 2, 2, 3), dtype=np.uint8)
    images[0, ..., 0] = 255  # red: one of the two images fully on
    images[..., 2] = 51      # blue: 0.2 everywhere
    stats = packed.channel_stats(images, chunk=1)
    assert stats["mean"] == [0.5, 0.0, 0.2] and stats["std"] == [0.5, 0.0, 0.0] and stats["images"] == 2
    splits = {s: (images, np.array([0, 1])) for s in packed.SPLITS}
    packed.write_prepared(tmp_path / "p", splits, ["a", "b"], {})
    with pytest.raises(Exception, match="constant"):  # a std of 0 cannot normalise
        packed.train_normalization(tmp_path / "p")
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, size=(50, 8, 8, 3), dtype=np.uint8)
    packed.write_prepared(tmp_path / "q", {s: (real, np.zeros(50, int)) for s in packed.SPLITS}, ["a"], {})
    mean, std = packed.train_normalization(tmp_path / "q")
    pixels = real.reshape(-1, 3) / 255.0
    assert np.allclose(mean, pixels.mean(0), atol=1e-6) and np.allclose(std, pixels.std(0), atol=1e-6)


def test_a_run_without_normalize_takes_the_training_split_statistics_from_its_store(tmp_path):
    import dataclasses

    from cnnbench.config import load
    from cnnbench.train import with_data_normalization

    repo = Path(__file__).resolve().parents[1]
    train = load(repo / "params.yaml", profile="smoke").run("cifar10-resnet18").train
    assert with_data_normalization(train, tmp_path / "nowhere") is train  # params set it: the store is not read
    rng = np.random.default_rng(1)
    real = rng.integers(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)
    packed.write_prepared(tmp_path / "s", {s: (real, np.zeros(20, int)) for s in packed.SPLITS}, ["a"], {})
    resolved = with_data_normalization(dataclasses.replace(train, normalize=None), tmp_path / "s")
    assert list(resolved.normalize.mean) == packed.read_manifest(tmp_path / "s")["train_stats"]["mean"]
