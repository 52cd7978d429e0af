"""Seeded, stratified splits of a labelled list: how a data set without a val (or test) split gets one.

Both functions work per class on the positions of the labels as given (so the result depends only on
the labels' order, the fractions and the seed) and return sorted index arrays.
"""

from __future__ import annotations

import numpy as np

__all__ = ["stratified_holdout", "stratified_carve"]


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (keep, holdout), taking round(fraction * n_c) of each class c.

    Deterministic for a given seed; both index arrays are sorted ascending.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    holdout: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = int(round(fraction * len(idx)))
        holdout.append(rng.permutation(idx)[:n])
    held = np.sort(np.concatenate(holdout)) if holdout else np.empty(0, np.int64)
    mask = np.ones(len(labels), bool)
    mask[held] = False
    return np.flatnonzero(mask), held


def stratified_carve(labels: np.ndarray, val_fraction: float, test_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split indices into (train, val, test): per class c a seeded permutation of its n_c images, whose
    first round(test_fraction * n_c) go to test, the next round(val_fraction * n_c) to val, the rest to
    train. Deterministic for a given seed; each index array is sorted ascending."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"fractions val {val_fraction} and test {test_fraction} must be in [0, 1) and sum below 1")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    split = np.zeros(len(labels), np.int8)  # 0 train, 1 val, 2 test
    for c in np.unique(labels):
        order = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * len(order)))
        n_val = int(round(val_fraction * len(order)))
        split[order[:n_test]] = 2
        split[order[n_test:n_test + n_val]] = 1
    return np.flatnonzero(split == 0), np.flatnonzero(split == 1), np.flatnonzero(split == 2)
