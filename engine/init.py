"""Seeding of initial centres: greedy k-means++ and random sampling (scikit-learn's rules)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .simd import LANES, ROWS, centre_blocks, distance_rows
from .wide import exact_distance


def random_init(X: np.ndarray, n_clusters: int, seed: int | None) -> np.ndarray:
    """Pick n_clusters distinct rows at random (scikit-learn's "random" for the same seed)."""
    n = X.shape[0]
    rng = np.random.RandomState(seed)
    # RandomState.choice(n, k, replace=False, p=uniform) draws k uniforms and looks them up in
    # the cumulative distribution; `_search_uniform_cdf` does just that without building it.
    idx = _search_uniform_cdf(n, rng.random_sample(n_clusters))
    if np.unique(idx).size < n_clusters:  # a repeated draw: let choice redraw as it does
        idx = np.random.RandomState(seed).choice(n, size=n_clusters, replace=False, p=_uniform(n))
    return np.array(X[idx], dtype=X.dtype, order="C")


def kmeans_plusplus(
    X: np.ndarray, n_clusters: int, seed: int | None, n_local_trials: int | None = None
) -> np.ndarray:
    """Greedy k-means++ (Arthur & Vassilvitskii 2007, as scikit-learn implements it).

    Each new centre is the best of `2 + log(k)` candidates sampled with probability
    proportional to the squared distance to the nearest centre chosen so far.
    """
    rng = np.random.RandomState(seed)
    n, d = X.shape
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    centers = np.empty((n_clusters, d), dtype=X.dtype)
    first = rng.choice(n, p=_uniform(n))
    centers[0] = X[first]
    closest = _trial_distances(X, np.array([first]))[0]
    potential = closest.sum()
    for c in range(1, n_clusters):
        if potential <= 0:
            # Every remaining point sits on a centre: duplicates, so any point will do.
            centers[c] = X[rng.randint(n)]
            continue
        draws = rng.uniform(size=n_local_trials) * potential
        candidates = np.searchsorted(np.cumsum(closest), draws)
        np.clip(candidates, None, n - 1, out=candidates)
        best_pot, best_dist, best_id = np.inf, closest, candidates[0]
        trials = _trial_distances(X, candidates)
        for cand, trial in zip(candidates, trials, strict=True):
            dist = np.minimum(closest, trial)
            pot = dist.sum()
            if pot < best_pot:
                best_pot, best_dist, best_id = pot, dist, cand
        centers[c] = X[best_id]
        closest, potential = best_dist, best_pot
    return centers


@njit(cache=True, fastmath={"contract"}, parallel=True)
def _trial_distances(X, rows):
    """Squared distance (float64) of every row of X to each of X[rows], one row of the result
    per candidate, in the exact kernel's arithmetic ((x - c)^2 summed feature by feature in X's
    dtype), the candidates side by side in vector lanes."""
    n, d = X.shape
    m = rows.size
    C = np.empty((m, d), X.dtype)
    for q in range(m):
        C[q] = X[rows[q]]
    B = centre_blocks(C)
    out = np.empty((m, n), np.float64)
    n_blocks = (n + 1023) // 1024
    for b in prange(n_blocks):
        tmp = np.empty((ROWS, B.shape[0] * LANES), X.dtype)
        start, stop = b * 1024, min(n, (b + 1) * 1024)
        i = start
        while i < stop:
            if i + ROWS <= stop:
                distance_rows(X, i, B, tmp)
            else:
                for r in range(stop - i):
                    for q in range(m):
                        tmp[r, q] = exact_distance(X, i + r, C, q, X.dtype.type(0))
            for r in range(min(ROWS, stop - i)):
                for q in range(m):
                    out[q, i + r] = tmp[r, q]
            i += ROWS
    return out


def _uniform(n: int) -> np.ndarray:
    """Uniform sampling probabilities, computed as scikit-learn does so seeds agree."""
    weights = np.ones(n)
    return weights / weights.sum()


@njit(cache=True)
def _search_uniform_cdf(n, draws):
    """`searchsorted(cdf, draws, side="right")` on the normalised cumulative sum of n copies
    of 1/n, bit for bit as NumPy computes it (a sequential sum), without an array of n floats.
    """
    p = 1.0 / n
    total = 0.0
    for _ in range(n):
        total += p
    order = np.argsort(draws)
    idx = np.full(draws.size, n, np.int64)
    r = 0
    running = 0.0
    for j in range(n):
        running += p
        c = running / total
        while r < order.size and c > draws[order[r]]:
            idx[order[r]] = j
            r += 1
        if r == order.size:
            break
    return idx
