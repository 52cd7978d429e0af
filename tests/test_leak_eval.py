"""Regression floors of the leak audit's precision and recall on labelled sets made from the real mirror.

`cnnbench.data.leak_eval` copies source images of the real archives with every transform of
`leak_eval.TRANSFORMS` (re-encoding, crops, rescaling, colour changes, mirroring) and audits
copies and sources together; the floors are the documented ones (docs/duplicates.md) at the
default threshold. A smaller labelled set than the documented measurement (``per_case=4``: 100
copies per data set) keeps this at about half a minute per data set.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from cnnbench.data import duplicates, leak_eval

ARCHIVES = {
    "butterflies": Path("butterflies") / "butterfly-images40-species.zip",
    "cifar10": Path("cifar10") / "cifar-10-python.tar.gz",
}
RECALL_FLOOR = {"butterflies": 0.95, "cifar10": 0.85}
PRECISION_FLOOR = {"butterflies": 0.95, "cifar10": 0.95}
PER_CASE = 4
SEED = 0


@pytest.mark.parametrize("dataset", sorted(ARCHIVES))
def test_precision_and_recall_floors(mirror_dir: Path, dataset: str) -> None:
    archive = mirror_dir / ARCHIVES[dataset]
    if not archive.is_file():
        pytest.skip(f"{archive} not in the mirror")
    started = time.perf_counter()
    sources = leak_eval.load_sources(dataset, archive)
    lab = leak_eval.evaluate(dataset, sources, per_case=PER_CASE, seed=SEED)
    score = lab.score(duplicates.DEFAULT_THRESHOLD)
    seconds = time.perf_counter() - started

    cases = sum(len(strengths) for _, strengths in leak_eval.TRANSFORMS.values())
    assert score.copies == len(lab.base_of) == PER_CASE * cases  # every transform and strength, PER_CASE times
    assert score.source_images == len(sources) and score.threshold == duplicates.DEFAULT_THRESHOLD
    assert score.true_pairs >= score.copies and 0 <= score.found_true <= score.true_pairs
    assert score.hard_negatives > 0  # same-class look-alikes did reach verification
    assert not math.isnan(score.recall) and not math.isnan(score.precision)
    message = (f"{dataset}: recall {score.recall:.3f} ({score.found_true}/{score.true_pairs}), precision "
               f"{score.precision:.3f} ({score.false_pairs} false pair(s)), {seconds:.1f} s; per transform: "
               f"{score.per_transform}")
    assert score.recall >= RECALL_FLOOR[dataset], message
    assert score.precision >= PRECISION_FLOOR[dataset], message
    # the scores are monotone in the threshold: a stricter one finds no more
    strict = lab.score(0.1)
    assert strict.found_true <= score.found_true and strict.false_pairs <= score.false_pairs
