"""Quality against known labels, for the demo and the benchmarks: clustering (adjusted Rand
index) and how well an anomaly score ranks the known anomalies (ROC AUC, precision at the top).

Pure NumPy: scikit-learn is only a test dependency, and the tests check these against it.
"""

from __future__ import annotations

import math
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


def roc_auc(labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` ranking the positive ``labels`` first.

    The Mann-Whitney U statistic over the number of (positive, negative) pairs: the chance that a
    random positive scores above a random negative, ties counting one half (average ranks). It
    equals scikit-learn's `roc_auc_score` (trapezoids under the ROC curve) to rounding.
    """
    y, s = _binary_and_scores(labels, scores)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs both positive and negative labels")
    order = np.argsort(s, kind="stable")
    ranked = s[order]
    # Tied scores share the mean of the ranks they span (1-based ranks start+1 .. end).
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    ends = np.r_[starts[1:], s.size]
    ranks = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    u = ranks[y[order]].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def precision_at_top(
    labels: Sequence[bool] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    fraction: float = 0.01,
) -> float:
    """Share of positives among the ``fraction`` of items with the highest scores.

    The top holds ceil(fraction * n) items (at least one). When tied scores straddle its edge,
    the tied items count in proportion (the expectation over every order of the ties), so the
    result does not depend on how the items happen to be ordered.
    """
    y, s = _binary_and_scores(labels, scores)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if s.size == 0:
        raise ValueError("precision at the top needs at least one item")
    m = max(1, math.ceil(fraction * s.size - 1e-9))
    edge = np.partition(s, s.size - m)[s.size - m]  # the m-th highest score
    above = s > edge
    tied = s == edge
    needed = m - int(above.sum())  # taken from the tied items, 1..their number
    hits = int(y[above].sum()) + needed * float(y[tied].mean())
    return hits / m


def _binary_and_scores(
    labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Labels as a bool array and scores as float64, checked to match and to be NaN-free."""
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} and {s.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be binary: True/False or 1/0")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return y.astype(bool), s
