"""The update rule: mini-batch Lloyd with optional forgetting, as a pure deterministic function.

For cluster j with weight w_j, batch count n_j and batch sum s_j, and decay
a = 0.5 ** (n / half_life) for statistics covering n rows (a = 1 without a half-life):

    w_j' = a * w_j + n_j
    c_j' = (a * w_j * c_j + s_j) / w_j'
    q_j' = a * q_j + sq_j              (q: decayed sum of squared distances)

A model that standardizes features keeps its centres in original units and updates its scaler
with the same decay (engine/scaling.py); q is then measured in standardized units.

A cluster whose weight falls below `reseed_fraction` of the largest is re-seeded at one of the
farthest rows the statistics carry, with the smallest live weight (scikit-learn's
MiniBatchKMeans rule). Only element-wise IEEE operations are used, so every replica applying
the same statistics to the same state gets bit-identical centres (Sculley 2010, "Web-scale
k-means clustering", with exponential forgetting).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from .state import ModelState
from .stats import BatchStats

DEFAULT_RESEED_FRACTION = 1e-3


@dataclass(frozen=True)
class UpdateResult:
    """A new state and what the update did to it."""

    state: ModelState
    shift: float  # total distance moved by all centres
    reseeded: tuple[int, ...]  # clusters re-seeded by this update


def decay_factor(n: float, half_life: float | None) -> float:
    """Weight kept by old statistics after n new rows (or that much summed row weight)."""
    if half_life is None or n == 0:
        return 1.0
    return float(0.5 ** (n / half_life))


def apply_update(
    state: ModelState,
    stats: BatchStats,
    half_life: float | None = None,
    reseed_fraction: float = DEFAULT_RESEED_FRACTION,
) -> UpdateResult:
    """Apply one batch's statistics to a state; version + 1."""
    if stats.sums.shape != state.centers.shape:
        raise ValueError(
            f"statistics for k={stats.k}, d={stats.d} do not fit a model with "
            f"k={state.k}, d={state.d}"
        )
    if state.scaler is not None and stats.feature_m2 is None:
        raise ValueError("statistics carry no feature moments, but the model standardizes features")
    a = 1.0 if half_life is None else decay_factor(stats.n, half_life)
    centers, weights, sq_sums, shift, lightest, heaviest = _lloyd_step(
        state.centers, state.weights, state.sq_sums, stats.counts, stats.sums, stats.sq_sums, a
    )
    reseeded: tuple[int, ...] = ()
    if heaviest > 0 and reseed_fraction > 0 and lightest < reseed_fraction * heaviest:
        reseeded = _reseed(centers, weights, sq_sums, stats, reseed_fraction)
        shift = float(np.sqrt(((centers - state.centers) ** 2).sum(axis=1)).sum())
    for arr in (centers, weights, sq_sums):
        arr.setflags(write=False)
    scaler = state.scaler
    if scaler is not None:
        assert stats.feature_m2 is not None
        scaler = scaler.updated(int(stats.n), stats.sums, stats.feature_m2, a)
    return UpdateResult(
        ModelState(centers, weights, sq_sums, state.version + 1, scaler), float(shift), reseeded
    )


@njit(cache=True)
def _lloyd_step(centers, weights, sq_sums, counts, sums, sq, a):
    """The element-wise arithmetic of one update (no fast-math: every replica gets the same
    bits): new centres, weights, squared-distance sums, total shift, lightest and heaviest weight.
    """
    k, d = centers.shape
    new_c = np.empty((k, d))
    new_w = np.empty(k)
    new_q = np.empty(k)
    shift = 0.0
    for j in range(k):
        old_w = a * weights[j]
        w = old_w + counts[j]
        new_w[j] = w
        moved = 0.0
        for t in range(d):
            # a cluster with no weight at all keeps its centre
            c = (old_w * centers[j, t] + sums[j, t]) / w if w > 0 else centers[j, t]
            new_c[j, t] = c
            moved += (c - centers[j, t]) ** 2
        shift += np.sqrt(moved)
        new_q[j] = a * sq_sums[j] + sq[j]
    return new_c, new_w, new_q, shift, new_w.min(), new_w.max()


def _reseed(
    centers: np.ndarray,
    weights: np.ndarray,
    sq_sums: np.ndarray,
    stats: BatchStats,
    fraction: float,
) -> tuple[int, ...]:
    """Move dead clusters onto the farthest rows of the batch, in place; returns their ids."""
    top = weights.max()
    if top <= 0 or fraction <= 0 or weights.min() >= fraction * top:
        return ()
    dead = np.flatnonzero(weights < fraction * top)
    live = weights >= fraction * top
    candidates = stats.far_points[stats.far_sq > 0]
    n = min(dead.size, candidates.shape[0])
    if n == 0:
        return ()
    new_weight = weights[live].min()
    overall_ms = sq_sums[live].sum() / weights[live].sum()
    for j, point in zip(dead[:n], candidates[:n], strict=True):
        centers[j] = point
        weights[j] = new_weight
        sq_sums[j] = new_weight * overall_ms
    return tuple(int(j) for j in dead[:n])


def anomaly_scores(
    state: ModelState, labels: np.ndarray, sq_dist: np.ndarray, rms: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Distances and anomaly scores (distance / the cluster's running RMS distance).

    `rms` may pass `state.rms()` computed once per model version (the request path scores a
    few rows at a time, where recomputing it dominates).
    """
    distance = np.sqrt(sq_dist.astype(np.float64))
    rms = (state.rms() if rms is None else rms)[labels]
    score = np.divide(distance, rms, out=np.zeros_like(distance), where=rms > 0)
    # A model with no spread at all yet: any non-zero distance is maximally surprising.
    score[(rms <= 0) & (distance > 0)] = np.finfo(np.float64).max
    return distance, score
