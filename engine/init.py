"""Seeding of initial centres: greedy k-means++ and random sampling (scikit-learn's rules)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from numba import njit, prange

from .simd import LANES, ROWS, centre_blocks, distance_rows
from .validation import raise_not_finite
from .wide import exact_distance

# Most bytes of float64 copies of the rows kept during one k-means++ seeding (float32 rows).
_UPCAST_CACHE = 256 * 1024 * 1024

Seed = int | None | np.random.RandomState
"""A seed: an int, None (fresh entropy) or a RandomState whose draws continue (scikit-learn's
`random_state` across `n_init` runs)."""


def random_init(
    X: np.ndarray, n_clusters: int, seed: Seed, sample_weight: np.ndarray | None = None
) -> np.ndarray:
    """Pick n_clusters distinct rows at random, with probability proportional to their weight
    (scikit-learn's "random" for the same seed: `RandomState.choice` without replacement)."""
    rng = _random_state(seed)
    n = X.shape[0]
    if sample_weight is None and n < 2**24:
        # choice(n, k, replace=False, p=ones/ones.sum()) draws k uniforms and looks them up in
        # the cumulative distribution; `_search_uniform_cdf` does just that without building it.
        # p is 1/n in X's dtype, as scikit-learn's weights of ones in X's dtype give it.
        p = float(X.dtype.type(1) / X.dtype.type(n))
        before = rng.get_state()
        idx = _search_uniform_cdf(n, rng.random_sample(n_clusters), p)
        if np.unique(idx).size == n_clusters:
            return np.array(X[idx], dtype=X.dtype, order="C")
        rng.set_state(before)  # a repeated draw: let choice redraw as it does
    w = _seed_weights(sample_weight, n, X.dtype)
    idx = rng.choice(n, size=n_clusters, replace=False, p=w / w.sum())
    return np.array(X[idx], dtype=X.dtype, order="C")


def kmeans_plusplus(
    X: np.ndarray,
    n_clusters: int,
    seed: Seed,
    n_local_trials: int | None = None,
    sample_weight: np.ndarray | None = None,
    exact: bool = False,
) -> np.ndarray:
    """Greedy k-means++ (Arthur & Vassilvitskii 2007), in scikit-learn's arithmetic or exact.

    Each new centre is the best of `2 + log(k)` candidates sampled with probability
    proportional to weight times squared distance to the nearest centre chosen so far. By
    default distances are measured as scikit-learn measures them (on centred data, by the
    expanded product ||x||^2 - 2 x.c + ||c||^2, float32 rows upcast to float64 in its chunks)
    and potentials summed in X's dtype, so the same seed picks the same rows as
    `sklearn.cluster.KMeans` in float64 and in float32. Those products run on NumPy's BLAS,
    whose idle threads then spin for about 0.1 s and slow the Numba kernels that follow
    (1.5-2.3x for a stream's first updates). `exact=True` measures with the exact kernel's
    (x - c)^2 sums in Numba instead: no BLAS, the same draws, rows that may differ from
    scikit-learn's where two candidates' potentials round apart; what a stream's first batch
    uses (engine.StreamingKMeans).
    """
    rng = _random_state(seed)
    n = X.shape[0]
    w = _seed_weights(sample_weight, n, X.dtype)
    if n_local_trials is None:
        n_local_trials = 2 + int(np.log(n_clusters))
    measure: _Distances | _ExactDistances = _ExactDistances(X, w) if exact else _Distances(X, w)
    chosen = np.empty(n_clusters, np.int64)
    chosen[0] = rng.choice(n, p=w / w.sum())
    closest = measure.to(chosen[:1])
    potential = measure.potentials(closest, first=True)
    for c in range(1, n_clusters):
        draws = rng.uniform(size=n_local_trials) * potential
        candidates = np.searchsorted(np.cumsum(w * closest), draws)
        np.clip(candidates, None, closest.size - 1, out=candidates)
        trials = measure.to(candidates)
        np.minimum(closest, trials, out=trials)
        pots = measure.potentials(trials, first=False)
        best = int(np.argmin(pots))
        potential = pots[best]
        closest = trials[best]
        chosen[c] = candidates[best]
    return np.array(X[chosen], dtype=X.dtype, order="C")


class _ExactDistances:
    """Squared distances of every row to some of the rows, in the exact kernel's arithmetic
    (float64 (m, n)), and weighted potentials summed by NumPy without BLAS."""

    def __init__(self, X: np.ndarray, w: np.ndarray) -> None:
        if not np.isfinite(X).all():
            raise_not_finite(X)
        self.X = X
        self.w = w.astype(np.float64)

    def to(self, rows: np.ndarray) -> np.ndarray:
        return _trial_distances(self.X, rows)

    def potentials(self, D: np.ndarray, first: bool) -> np.ndarray:
        return (D * self.w).sum(axis=-1)


def _random_state(seed: Seed) -> np.random.RandomState:
    return seed if isinstance(seed, np.random.RandomState) else np.random.RandomState(seed)


def _seed_weights(sample_weight: np.ndarray | None, n: int, dtype: np.dtype) -> np.ndarray:
    """Row weights in X's dtype (ones when None), as scikit-learn's seeding sums them."""
    if sample_weight is None:
        return np.ones(n, dtype=dtype)
    return np.asarray(sample_weight, dtype=dtype).reshape(n)


class _Distances:
    """Squared distances from rows A to the rows of Y by the expanded product, clipped at 0,
    as scikit-learn computes them: float64 in one product with Y's norms given; float32 upcast
    to float64 in its chunks (about a tenth more memory than A, Y and the result, at least
    10 MiB) and rounded back. The upcast chunks of Y and their norms are the same for every A
    of a seeding, so they are made once and kept while they fit in _UPCAST_CACHE bytes (with
    the candidates of each new centre recomputing them, seeding 64 centres on 1024 rows of 384
    features took 4x the time of the 50 updates after it)."""

    def __init__(self, X: np.ndarray, w: np.ndarray) -> None:
        with np.errstate(invalid="ignore", over="ignore"):
            Y = X - X.mean(axis=0)  # scikit-learn seeds on centred data
            norms = None if Y.dtype == np.float32 else np.einsum("ij,ij->i", Y, Y)
        if not (np.isfinite(Y).all() and (norms is None or np.isfinite(norms).all())):
            raise_not_finite(X)
        self.Y = Y
        self.y_norms = norms
        self.w = w
        self.keep = 2 * Y.nbytes <= _UPCAST_CACHE
        self.chunks: dict[int, list[tuple[slice, np.ndarray, np.ndarray]]] = {}

    def potentials(self, D: np.ndarray, first: bool) -> np.ndarray:
        """Weighted sums of each row of D, by the matrix products scikit-learn uses (the first
        centre's `closest_dist_sq @ sample_weight`, the candidates' against a column)."""
        if first:
            return D @ self.w
        return D @ self.w.reshape(-1, 1)

    def to(self, rows: np.ndarray) -> np.ndarray:
        A = self.Y[rows]
        if self.Y.dtype == np.float32:
            D = self._upcast(A)
        else:
            D = -2 * (A @ self.Y.T)
            D += np.einsum("ij,ij->i", A, A)[:, None]
            D += self.y_norms.reshape(1, -1)  # type: ignore[union-attr]
        np.maximum(D, 0, out=D)
        return D

    def _upcast(self, A: np.ndarray) -> np.ndarray:
        Y = self.Y
        m, n, d = A.shape[0], Y.shape[0], Y.shape[1]
        out = np.empty((m, n), np.float32)
        maxmem = max(((m + n) * d + m * n) / 10, 10 * 2**17)
        tmp = 2 * d
        batch = max(int((-tmp + math.sqrt(tmp**2 + 4 * maxmem)) / 2), 1)
        for xs in _batches(m, batch):
            Ac = A[xs].astype(np.float64)
            AA = np.einsum("ij,ij->i", Ac, Ac)[:, None]
            for ys, Yc, YY in self._chunks(batch):
                D = -2 * (Ac @ Yc.T)
                D += AA
                D += YY
                out[xs, ys] = D.astype(np.float32, copy=False)
        return out

    def _chunks(self, batch: int) -> Iterable[tuple[slice, np.ndarray, np.ndarray]]:
        if batch in self.chunks:
            return self.chunks[batch]
        made = (self._chunk(ys) for ys in _batches(self.Y.shape[0], batch))
        if not self.keep:
            return made
        self.chunks[batch] = list(made)
        return self.chunks[batch]

    def _chunk(self, ys: slice) -> tuple[slice, np.ndarray, np.ndarray]:
        Yc = self.Y[ys].astype(np.float64)
        return ys, Yc, np.einsum("ij,ij->i", Yc, Yc)[None, :]


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


def _batches(n: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


@njit(cache=True)
def _search_uniform_cdf(n, draws, p):
    """`searchsorted(cdf, draws, side="right")` on the normalised cumulative sum of n copies
    of p (about 1/n), bit for bit as NumPy computes it (a sequential sum), without an array of
    n floats: each cumulative value comes from `_repeated_sum`, so a draw is a binary search."""
    total = _repeated_sum(p, n)
    idx = np.empty(draws.size, np.int64)
    for r in range(draws.size):
        # The first j whose normalised sum of j + 1 copies exceeds the draw (n if none does).
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) // 2
            if _repeated_sum(p, mid + 1) / total > draws[r]:
                hi = mid
            else:
                lo = mid + 1
        idx[r] = lo
    return idx


@njit(cache=True)
def _repeated_sum(p, m):
    """fl(...fl(fl(p + p) + p)... + p), m copies of p > 0 added one at a time, bit for bit,
    in a few steps per binade instead of m additions.

    While the sum stays within one binade [2^(e-1), 2^e) it is a multiple of that binade's
    ulp, so adding p rounds to the same multiple of the ulp every time (p / ulp rounded to
    nearest), unless p / ulp ends in exactly one half, where ties-to-even alternates; those
    binades, and each crossing into the next one, are stepped one addition at a time.
    1M copies: 2 ms of dependent additions become about 60 steps.
    """
    r = 0.0
    while m > 0:
        if r == 0.0:
            r = p
            m -= 1
            continue
        _, e = math.frexp(r)  # r in [2^(e-1), 2^e)
        top = math.ldexp(1.0, e)
        q = p / math.ldexp(1.0, e - 53)  # p in units of the binade's ulp
        inc = (r + p) - r  # exact: r + p lies within [r, 2r] (Sterbenz)
        if inc == 0.0:
            return r  # p is below half an ulp of r: no addition changes r any more
        steps = 0
        if q - math.floor(q) != 0.5 and inc > 0.0:
            # Whole steps that keep r + steps * inc below the binade's top (one to spare).
            steps = min(m, int((top - r) / inc) - 1)
        if steps <= 0:
            r += p
            m -= 1
            continue
        r += steps * inc  # exact: a multiple of the ulp below 2^e
        m -= steps
    return r
