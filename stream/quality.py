"""Clustering quality against known labels, for the demo and the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def adjusted_rand_index(
    labels_true: Sequence[int] | np.ndarray, labels_pred: Sequence[int] | np.ndarray
) -> float:
    """Adjusted Rand index of two labelings of the same items (1: identical partitions, ~0: chance).

    Hubert & Arabie (1985), computed from the pair confusion matrix as scikit-learn does, so the
    two agree to rounding, edge cases included (every pair agreeing gives exactly 1).
    """
    a = np.asarray(labels_true).ravel()
    b = np.asarray(labels_pred).ravel()
    if a.shape != b.shape:
        raise ValueError(f"labelings differ in length: {a.size} and {b.size}")
    n = a.size
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    na, nb = (int(ai.max()) + 1, int(bi.max()) + 1) if n else (0, 0)
    table = np.bincount(ai.ravel() * nb + bi.ravel(), minlength=na * nb).reshape(na, nb)
    # Ordered pairs, in Python integers: products of pair counts overflow int64 beyond ~50k items.
    squares = int((table.astype(np.int64) ** 2).sum())
    same_a = int((table.sum(axis=1).astype(np.int64) ** 2).sum())
    same_b = int((table.sum(axis=0).astype(np.int64) ** 2).sum())
    tp = squares - n
    fp = same_b - squares  # together in b only
    fn = same_a - squares  # together in a only
    tn = n * n - fp - fn - squares
    if fp == 0 and fn == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))
