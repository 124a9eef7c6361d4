"""Seeding of initial centres: greedy k-means++ and random sampling (scikit-learn's rules)."""

from __future__ import annotations

import numpy as np
from numba import njit

from .kernels import assign


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
    closest = _sq_dist_to(X, centers[:1]).astype(np.float64)
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
        for cand in candidates:
            dist = np.minimum(closest, _sq_dist_to(X, X[cand : cand + 1]))
            pot = dist.sum()
            if pot < best_pot:
                best_pot, best_dist, best_id = pot, dist, cand
        centers[c] = X[best_id]
        closest, potential = best_dist, best_pot
    return centers


def _sq_dist_to(X: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Squared distance of every row to one centre, computed in float64."""
    return assign(X, center)[1].astype(np.float64, copy=False)


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
