"""Numba kernels: nearest-centre assignment and the per-cluster statistics of one pass.

Arrays in, arrays out; these functions know nothing of estimators. Rows are walked in fixed
blocks whose partial sums are reduced in block order at the end (no atomics, no shared writes),
so results do not depend on the number of threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .simd import ROWS, centre_blocks, nearest_rows
from .views import borrowed
from .wide import HUGE, WIDE_ROWS, exact_nearest, wide_centres, wide_rows, wide_scratch

# Rows handled by one parallel task. Small enough to balance two to sixteen threads, large
# enough that the per-task overhead disappears.
_BLOCK_ROWS = 8192
# A pass goes to all threads from this much work (rows x centres x features), and from at least
# _PARALLEL_MIN_ROWS rows but at most _PARALLEL_MAX_ROWS; below that, waking the thread pool
# costs more than the second core saves. Serial time over parallel time (two blocks, two cores;
# OpenMP's default wait policy / PASSIVE, as `serve` sets it): (k, d) = (8, 16): 1.20 / 1.09 at
# 8,192 rows (1M of work), 1.16 / 0.80 at 4,096; (16, 32): 1.64 / 1.30 at 8,192, 1.52 / 0.85
# at 4,096; (3, 13): 0.87 / 0.81 at 16,384 rows (0.6M); (8, 2): 0.91 / 1.02 at 16,384 (0.3M).
_PARALLEL_MIN_SMALL_WORK = 1 << 20
_PARALLEL_MIN_ROWS = 8192
_PARALLEL_MAX_ROWS = 65536
# ... and wide rows from fewer: from this much work a pass is split into blocks of at least
# _MIN_BLOCK_ROWS rows with about this much work each.
_PARALLEL_MIN_WORK = 1 << 24
_MIN_BLOCK_ROWS = 256
# Upper bound on the memory of the per-block partial sums (bytes), whatever k and d are, but
# for two blocks: about a core's L2. Partials beyond it are evicted by the rows streaming
# through and come back from memory: 10,000 rows at (k, d) = (64, 384) took 6.8 ms a pass in
# 15 blocks (2.9 MB of partials), 4.4 ms in 10 (1.9 MB), 4.3 in 2 (two cores).
_PARTIALS_BUDGET = 2 * 1024 * 1024
# Elements (float64 / int64) of space between two blocks' partial sums: 64 bytes, one cache
# line, so no two threads write the same line. Without it all blocks' counts of a small model
# share one line: 20,000 rows at (k, d) = (8, 16) in 2 blocks took 0.50 ms a pass, 0.24 ms
# padded (10,000 rows at (3, 13): 0.58 and 0.13 ms).
_PAD = 8
# The dot-product form (engine/wide.py) from these shapes on. Measured on 50,000 float32 rows
# (AVX-512, two cores), its speed over the vector loops: 1.4x at (d, k) = (64, 64) or (16, 256),
# 1.1x at (128, 32), 1.0x at (16, 128) or (32, 64), 0.9x at (8, 256) or (64, 32).
_WIDE_MIN_D = 16
_WIDE_MIN_K = 32
_WIDE_MIN_KD = 4096
# reassoc lets LLVM vectorise the inner reduction; no flag that changes NaN/inf semantics.
_FASTMATH = {"reassoc", "contract"}


@njit(fastmath=_FASTMATH, inline="always")
def _nearest(X, i, C, zero, d):
    """Index and squared distance of the centre nearest to row i (d: X's feature count)."""
    k = C.shape[0]
    best = zero + np.float32(np.inf)  # in X's dtype: no conversion in the comparisons
    best_j = 0
    for j in range(k):
        diff = X[i, 0] - C[j, 0]
        s = diff * diff  # not zero + ...: the same bits, one addition fewer per centre
        for t in range(1, d):
            diff = X[i, t] - C[j, t]
            s += diff * diff
        # Selects, not a branch: which centre wins is as good as random (1.2x on 2-D rows).
        closer = s < best
        best_j = j if closer else best_j
        best = s if closer else best
    return best_j, best


@njit(fastmath=_FASTMATH, inline="always")
def _assign_rows(X, C, zero, start, stop, labels, dist, store_dist, d):
    bad = 0
    for i in range(start, stop):
        j, s = _nearest(X, i, C, zero, d)
        labels[i] = j
        if store_dist:
            dist[i] = s
        bad += not np.isfinite(s)
    return bad


# The two ways to find a group of rows' nearest centres, chosen by the type of W (None: the
# vector loops, ROWS rows a call; the product form's centres: WIDE_ROWS rows) when a kernel is
# compiled, so that each compiled kernel holds one of them with its group size as a constant.
def _group_rows(W):  # pragma: no cover - replaced by its overload in compiled code
    """Rows per group."""


def _group_scratch(X, W):  # pragma: no cover
    """Scratch of the product form (None for the vector loops)."""


def _group_blocks(C, W):  # pragma: no cover
    """The vector loops' centre blocks (None for the product form, whose blocks W holds)."""


def _nearest_group(X, i, C, B, W, zero, S, out_dist, out_label):  # pragma: no cover
    """Nearest centres and squared distances of the group of rows from i."""


def _nearest_rest(X, start, stop, C, W, zero, S, out_dist, out_label):  # pragma: no cover
    """The same for the rows [start, stop) left after the last whole group."""


@overload(_group_rows, inline="always")
def _group_rows_impl(W):
    rows = ROWS if isinstance(W, types.NoneType) else WIDE_ROWS
    return lambda W: rows


@overload(_group_scratch, inline="always")
def _group_scratch_impl(X, W):
    if isinstance(W, types.NoneType):
        return lambda X, W: None
    return lambda X, W: wide_scratch(X)


@overload(_group_blocks, inline="always")
def _group_blocks_impl(C, W):
    if isinstance(W, types.NoneType):
        return lambda C, W: centre_blocks(C)
    return lambda C, W: None


@overload(_nearest_group, inline="always")
def _nearest_group_impl(X, i, C, B, W, zero, S, out_dist, out_label):
    if isinstance(W, types.NoneType):

        def vector(X, i, C, B, W, zero, S, out_dist, out_label):
            nearest_rows(X, i, B, out_dist, out_label)

        return vector

    def product(X, i, C, B, W, zero, S, out_dist, out_label):
        wide_rows(X, i, C, zero, W, S, out_dist, out_label)

    return product


@overload(_nearest_rest, inline="always")
def _nearest_rest_impl(X, start, stop, C, W, zero, S, out_dist, out_label):
    if isinstance(W, types.NoneType):
        # Narrow rows: the scalar scan, the same sums as the vector lanes, costs little.
        def scalar(X, start, stop, C, W, zero, S, out_dist, out_label):
            for r in range(stop - start):
                out_label[r], out_dist[r] = exact_nearest(X, start + r, C, zero)

        return scalar

    # Wide rows: a whole group of them, padded with zeros (a row's answer never depends on the
    # rows beside it); the scalar scan took 37 us a row at (k, d) = (64, 384), 0.5 us this way.
    def padded(X, start, stop, C, W, zero, S, out_dist, out_label):
        if stop > start:  # most blocks end on a whole group: nothing to pad, no group to run
            pad = np.zeros((WIDE_ROWS, X.shape[1]), X.dtype)
            pad[: stop - start] = X[start:stop]
            wide_rows(pad, 0, C, zero, W, S, out_dist, out_label)

    return padded


@njit(fastmath=_FASTMATH)
def _assign_vector(X, C, B, W, zero, start, stop, labels, dist, store_dist):
    """Rows [start, stop), ROWS at a time with the vector code of engine/simd.py, or with the
    product form of engine/wide.py where W (its centres) is given."""
    out_dist = np.empty(WIDE_ROWS, X.dtype)
    out_label = np.empty(WIDE_ROWS, np.int32)
    S = _group_scratch(X, W)
    step = _group_rows(W)
    bad = 0
    i = start
    while i + step <= stop:
        _nearest_group(X, i, C, B, W, zero, S, out_dist, out_label)
        for r in range(step):
            labels[i + r] = out_label[r]
            if store_dist:
                dist[i + r] = out_dist[r]
            bad += not np.isfinite(out_dist[r])
        i += step
    # The rows left over: the same answers as in a group, so that a row's never depends on
    # where a block ends.
    _nearest_rest(X, i, stop, C, W, zero, S, out_dist, out_label)
    for r in range(stop - i):
        labels[i + r] = out_label[r]
        if store_dist:
            dist[i + r] = out_dist[r]
        bad += not np.isfinite(out_dist[r])
    return bad


@njit(cache=True, fastmath=_FASTMATH)
def _assign_range(X, C, B, W, zero, start, stop, labels, dist, store_dist):
    """Assign rows [start, stop), writing squared distances if `store_dist`; returns the
    number of rows whose distance is not finite (NaN or infinity in X, or overflow).

    Up to 3 features the feature count is a constant of the compiled loop, which the compiler
    unrolls (1.6x faster on 2-D data than the generic loop); wider rows use the vector code,
    which compares a row with eight centres at once.
    """
    # Per-row helpers would otherwise take and drop a reference to each array every call: two
    # atomic operations per array on counters both threads share (see engine/views.py).
    X, C, B, labels, dist = borrowed(X), borrowed(C), borrowed(B), borrowed(labels), borrowed(dist)
    d = X.shape[1]
    if d == 1:
        return _assign_rows(X, C, zero, start, stop, labels, dist, store_dist, 1)
    if d == 2:
        return _assign_rows(X, C, zero, start, stop, labels, dist, store_dist, 2)
    if d == 3:
        return _assign_rows(X, C, zero, start, stop, labels, dist, store_dist, 3)
    return _assign_vector(X, C, B, W, zero, start, stop, labels, dist, store_dist)


@njit(cache=True, fastmath=_FASTMATH)
def _assign_serial(X, C, W, zero, labels, dist, store_dist):
    B = _group_blocks(C, W)
    return _assign_range(X, C, B, W, zero, 0, X.shape[0], labels, dist, store_dist)


@njit(cache=True, fastmath=_FASTMATH, parallel=True)
def _assign_parallel(X, C, W, zero, labels, dist, store_dist, rows):
    B = _group_blocks(C, W)
    n = X.shape[0]
    n_blocks = (n + rows - 1) // rows
    bad = np.zeros(n_blocks, np.int64)
    for b in prange(n_blocks):
        start, stop = b * rows, min(n, (b + 1) * rows)
        bad[b] = _assign_range(X, C, B, W, zero, start, stop, labels, dist, store_dist)
    return bad.sum()


@njit(fastmath=_FASTMATH, inline="always")
def _nearest4(X, i, C, zero, d):
    """`_nearest` for rows i..i+3 at once: (j0, j1, j2, j3, s0, s1, s2, s3).

    The four rows' distances to a centre are independent, so the compiler interleaves them
    (1.9x on 2-D rows, one thread); each row's arithmetic is `_nearest`'s, to the bit.
    """
    k = C.shape[0]
    b0 = b1 = b2 = b3 = zero + np.float32(np.inf)
    j0 = j1 = j2 = j3 = 0
    for j in range(k):
        c = C[j, 0]
        e0, e1, e2, e3 = X[i, 0] - c, X[i + 1, 0] - c, X[i + 2, 0] - c, X[i + 3, 0] - c
        s0, s1, s2, s3 = e0 * e0, e1 * e1, e2 * e2, e3 * e3
        for t in range(1, d):
            c = C[j, t]
            e0, e1 = X[i, t] - c, X[i + 1, t] - c
            e2, e3 = X[i + 2, t] - c, X[i + 3, t] - c
            s0 += e0 * e0
            s1 += e1 * e1
            s2 += e2 * e2
            s3 += e3 * e3
        j0, b0 = _keep_nearer(j, s0, j0, b0)
        j1, b1 = _keep_nearer(j, s1, j1, b1)
        j2, b2 = _keep_nearer(j, s2, j2, b2)
        j3, b3 = _keep_nearer(j, s3, j3, b3)
    return j0, j1, j2, j3, b0, b1, b2, b3


@njit(fastmath=_FASTMATH, inline="always")
def _keep_nearer(j, s, best_j, best):
    """(j, s) if s is nearer than best, else (best_j, best): selects, not a branch."""
    closer = s < best
    return (j if closer else best_j), (s if closer else best)


@njit(fastmath=_FASTMATH, inline="always")
def _stats_rows(X, C, zero, start, stop, labels, dist, store_dist, counts, sums, sq, w, wsum, d):
    """The fused pass over rows [start, stop) for d <= 3 (a literal: loops unrolled)."""
    changed = 0
    i = start
    while i + 4 <= stop:
        j0, j1, j2, j3, s0, s1, s2, s3 = _nearest4(X, i, C, zero, d)
        changed += _take_row(X, i, j0, s0, labels, dist, store_dist, counts, sums, sq, w, wsum, d)
        changed += _take_row(
            X, i + 1, j1, s1, labels, dist, store_dist, counts, sums, sq, w, wsum, d
        )
        changed += _take_row(
            X, i + 2, j2, s2, labels, dist, store_dist, counts, sums, sq, w, wsum, d
        )
        changed += _take_row(
            X, i + 3, j3, s3, labels, dist, store_dist, counts, sums, sq, w, wsum, d
        )
        i += 4
    for row in range(i, stop):
        j, s = _nearest(X, row, C, zero, d)
        changed += _take_row(X, row, j, s, labels, dist, store_dist, counts, sums, sq, w, wsum, d)
    return changed


@njit(fastmath=_FASTMATH, inline="always")
def _take_row(X, i, j, s, labels, dist, store_dist, counts, sums, sq, w, wsum, d):
    """Record row i's centre j and squared distance s and add the row to j's sums; returns
    whether its label changed. d must be a literal for the loop to unroll."""
    changed = labels[i] != j  # no branch: while centres move, labels change at random
    labels[i] = j
    if store_dist:
        dist[i] = s
    counts[j] += 1
    if w.shape[0] == 0:  # every row weighs 1
        sq[j] += s
        for t in range(d):
            sums[j, t] += X[i, t]
    else:
        wi = w[i]
        wsum[j] += wi
        sq[j] += wi * s
        for t in range(d):
            sums[j, t] += wi * X[i, t]
    return changed


@njit(fastmath=_FASTMATH)
def _stats_vector(
    X, C, B, W, zero, start, stop, labels, dist, store_dist, counts, sums, sq, w, wsum
):
    d = X.shape[1]
    out_dist = np.empty(WIDE_ROWS, X.dtype)
    out_label = np.empty(WIDE_ROWS, np.int32)
    S = _group_scratch(X, W)
    step = _group_rows(W)
    changed = 0
    i = start
    while i + step <= stop:
        _nearest_group(X, i, C, B, W, zero, S, out_dist, out_label)
        for r in range(step):
            j = out_label[r]
            s = out_dist[r]
            changed += labels[i + r] != j  # no branch: new labels are as good as random
            labels[i + r] = j
            if store_dist:
                dist[i + r] = s
            counts[j] += 1  # written out: an inlined helper measured 1.8x slower on 16-D rows
            if w.shape[0] == 0:
                sq[j] += s
                for t in range(d):
                    sums[j, t] += X[i + r, t]
            else:
                wi = w[i + r]
                wsum[j] += wi
                sq[j] += wi * s
                for t in range(d):
                    sums[j, t] += wi * X[i + r, t]
        i += step
    # The rows left over: the same answers as in a group (see _assign_vector).
    _nearest_rest(X, i, stop, C, W, zero, S, out_dist, out_label)
    for r in range(stop - i):
        changed += _take_row(
            X, i + r, out_label[r], out_dist[r], labels, dist, store_dist, counts, sums, sq, w,
            wsum, d,
        )  # fmt: skip
    return changed


@njit(cache=True, fastmath=_FASTMATH)
def _stats_block(
    X, C, B, W, zero, start, stop, labels, dist, store_dist, counts, sums, sq, w, wsum
):
    """Assign rows [start, stop) and accumulate their statistics; returns labels changed.

    The same two ways to find the nearest centre as `_assign_range`, with borrowed views too.
    """
    X, C, B, labels, dist = borrowed(X), borrowed(C), borrowed(B), borrowed(labels), borrowed(dist)
    counts, sums, sq = borrowed(counts), borrowed(sums), borrowed(sq)
    w, wsum = borrowed(w), borrowed(wsum)
    d = X.shape[1]
    if d == 1:
        return _stats_rows(
            X, C, zero, start, stop, labels, dist, store_dist, counts, sums, sq, w, wsum, 1
        )
    if d == 2:
        return _stats_rows(
            X, C, zero, start, stop, labels, dist, store_dist, counts, sums, sq, w, wsum, 2
        )
    if d == 3:
        return _stats_rows(
            X, C, zero, start, stop, labels, dist, store_dist, counts, sums, sq, w, wsum, 3
        )
    return _stats_vector(
        X, C, B, W, zero, start, stop, labels, dist, store_dist, counts, sums, sq, w, wsum
    )


@njit(cache=True, fastmath=_FASTMATH)
def _stats_serial(X, C, W, zero, labels, dist, store_dist, w):
    B = _group_blocks(C, W)
    k, d = C.shape
    counts = np.zeros(k, np.int64)
    sums = np.zeros((k, d), np.float64)
    sq = np.zeros(k, np.float64)
    wsum = np.zeros(k, np.float64)
    changed = _stats_block(
        X, C, B, W, zero, 0, X.shape[0], labels, dist, store_dist, counts, sums, sq, w, wsum
    )
    return counts, sums, sq, wsum, changed


@njit(cache=True, fastmath=_FASTMATH, parallel=True)
def _stats_parallel(X, C, W, zero, labels, dist, store_dist, w, n_blocks):
    B = _group_blocks(C, W)
    n = X.shape[0]
    k, d = C.shape
    rows = (n + n_blocks - 1) // n_blocks
    # Each block zeroes its own partial sums, on the thread that fills them: zeroing them all
    # up front, and reducing them on one thread, cost 0.1 ms per block of k x d = 64 x 384
    # sums here (memory-bound), a third of the pass at 15 blocks.
    p_counts = np.empty((n_blocks, k + _PAD), np.int64)
    p_sums = np.empty((n_blocks, k + (_PAD + d - 1) // d, d), np.float64)
    p_sq = np.empty((n_blocks, k + _PAD), np.float64)
    p_wsum = np.empty((n_blocks, k + _PAD), np.float64)
    p_changed = np.zeros(n_blocks, np.int64)
    for b in prange(n_blocks):
        p_counts[b] = 0
        p_sums[b] = 0.0
        p_sq[b] = 0.0
        p_wsum[b] = 0.0
        start = b * rows
        stop = min(n, start + rows)
        p_changed[b] = _stats_block(
            X, C, B, W, zero, start, stop, labels, dist, store_dist,
            p_counts[b, :k], p_sums[b, :k], p_sq[b, :k], w, p_wsum[b, :k],
        )  # fmt: skip
    # Reduce in block order, each cluster on any thread: the same bits whatever the thread
    # count (each sum is ((block 0 + block 1) + block 2) + ..., as a serial loop adds them).
    counts = np.empty(k, np.int64)
    sums = np.empty((k, d), np.float64)
    sq = np.empty(k, np.float64)
    wsum = np.empty(k, np.float64)
    for j in prange(k):
        counts[j] = p_counts[0, j]
        sq[j] = p_sq[0, j]
        wsum[j] = p_wsum[0, j]
        sums[j] = p_sums[0, j]
        for b in range(1, n_blocks):
            counts[j] += p_counts[b, j]
            sq[j] += p_sq[b, j]
            wsum[j] += p_wsum[b, j]
            for t in range(d):
                sums[j, t] += p_sums[b, j, t]
    return counts, sums, sq, wsum, p_changed.sum()


def _block_rows(n: int, k: int, d: int) -> int:
    """Rows per parallel task of a pass over n rows: _BLOCK_ROWS, fewer for wide rows (about
    _PARALLEL_MIN_WORK), and at most half the pass: a parallel pass splits at least in two."""
    return max(_MIN_BLOCK_ROWS, min(_BLOCK_ROWS, _PARALLEL_MIN_WORK // (k * d), -(-n // 2)))


def parallel_rows(k: int, d: int) -> int:
    """The fewest rows of a pass against k centres of d features that go to all threads: those
    holding _PARALLEL_MIN_SMALL_WORK (within the row bounds), or fewer (but two blocks) once
    they hold _PARALLEL_MIN_WORK."""
    small = -(-_PARALLEL_MIN_SMALL_WORK // (k * d))
    wide = max(2 * _MIN_BLOCK_ROWS, -(-_PARALLEL_MIN_WORK // (k * d)))
    return min(max(_PARALLEL_MIN_ROWS, min(_PARALLEL_MAX_ROWS, small)), wide)


def _parallel(n: int, k: int, d: int) -> bool:
    """Is a pass over n rows worth the thread pool's wake-up?"""
    return n >= parallel_rows(k, d)


def _n_blocks(n: int, k: int, d: int) -> int:
    """Deterministic block count for a pass: depends on the shapes only, never on threads."""
    by_rows = -(-n // _block_rows(n, k, d))
    by_memory = max(2, _PARTIALS_BUDGET // (8 * k * (d + 2)) // 2 * 2)  # even: two threads
    return min(by_rows, by_memory, 256)


def _wide(k: int, d: int) -> bool:
    """Does the dot-product form (engine/wide.py) beat the vector loops at this shape?"""
    return d >= _WIDE_MIN_D and k >= _WIDE_MIN_K and k * d >= _WIDE_MIN_KD


def _prepare(
    X: np.ndarray, centers: np.ndarray
) -> tuple[np.ndarray, np.ndarray, tuple | None, np.generic]:
    """Match the centres' dtype to X (float32 or float64), prepare the product form's centres
    where the shape takes it (None otherwise), and pick the accumulator zero."""
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    C = np.ascontiguousarray(centers, dtype=X.dtype)
    W = None
    if _wide(*C.shape):
        W = wide_centres(C)
        if not W[2] < HUGE:  # centres so far out that the products may overflow
            W = None
    return X, C, W, X.dtype.type(0)


def assign(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label each row of X with its nearest centre: returns (labels int32, squared distances).

    X is float32 or float64 (other dtypes are converted to float64), C- or F-contiguous or
    strided; squared distances come back in X's dtype. Memory used is O(n), whatever k and d.
    """
    labels, dist, _ = _assign(np.asarray(X), np.asarray(centers), store_dist=True)
    return labels, dist


def assign_labels(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels only, as `assign` gives them, and the number of rows whose squared distance is
    not finite (NaN or infinity in X): no distance array is written or read back."""
    labels, _, bad = _assign(np.asarray(X), np.asarray(centers), store_dist=False)
    return labels, bad


def _assign(
    X: np.ndarray, centers: np.ndarray, store_dist: bool
) -> tuple[np.ndarray, np.ndarray, int]:
    X, C, W, zero = _prepare(X, centers)
    n = X.shape[0]
    labels = np.empty(n, np.int32)
    dist = np.empty(n if store_dist else 0, X.dtype)
    k, d = C.shape
    if _parallel(n, k, d):
        rows = _block_rows(n, k, d)
        bad = _assign_parallel(X, C, W, zero, labels, dist, store_dist, rows)
    else:
        bad = _assign_serial(X, C, W, zero, labels, dist, store_dist)
    return labels, dist, int(bad)


def assign_stats(
    X: np.ndarray,
    centers: np.ndarray,
    labels: np.ndarray,
    dist: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One fused pass: assign rows to centres and sum them per cluster.

    Writes labels (int32, updated in place) and, when given, squared distances into `dist`.
    Returns (counts int64 (k,), coordinate sums float64 (k, d), squared-distance sums
    float64 (k,), number of labels that changed). With `weights` (float64 (n,), one per row)
    sums and squared-distance sums are weighted and the first array is the summed weight of
    each cluster (float64) instead of its row count.
    """
    X, C, W, zero = _prepare(X, centers)
    store = dist is not None
    out = dist if dist is not None else np.empty(0, X.dtype)
    w = NO_WEIGHTS if weights is None else _row_weights(weights, X.shape[0])
    n, d = X.shape
    if _parallel(n, C.shape[0], d):
        counts, sums, sq, wsum, changed = _stats_parallel(
            X, C, W, zero, labels, out, store, w, _n_blocks(n, C.shape[0], d)
        )
    else:
        counts, sums, sq, wsum, changed = _stats_serial(X, C, W, zero, labels, out, store, w)
    return (counts if weights is None else wsum), sums, sq, int(changed)


NO_WEIGHTS = np.empty(0, np.float64)
"""The kernels' "every row weighs 1" (writeable, as weights are: one compiled type)."""


def _row_weights(weights: np.ndarray, n: int) -> np.ndarray:
    """Weights as the kernels take them: float64, contiguous, writeable (one compiled type)."""
    w = np.ascontiguousarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weights have shape {w.shape}; expected ({n},), one per row")
    return w if w.flags.writeable else w.copy()


@njit(cache=True, parallel=True)
def _column_variance_parallel(X):
    n, d = X.shape
    n_blocks = max(1, min(64, (n + _BLOCK_ROWS - 1) // _BLOCK_ROWS))
    rows = (n + n_blocks - 1) // n_blocks
    p_sum = np.zeros((n_blocks, d), np.float64)
    for b in prange(n_blocks):
        for i in range(b * rows, min(n, (b + 1) * rows)):
            for t in range(d):
                p_sum[b, t] += X[i, t]
    mean = p_sum.sum(axis=0) / n
    p_sq = np.zeros((n_blocks, d), np.float64)
    for b in prange(n_blocks):
        for i in range(b * rows, min(n, (b + 1) * rows)):
            for t in range(d):
                diff = X[i, t] - mean[t]
                p_sq[b, t] += diff * diff
    return p_sq.sum(axis=0) / n


@njit(cache=True, parallel=True)
def _distances(X, C, out):
    n, d = X.shape
    k = C.shape[0]
    for i in prange(n):
        for j in range(k):
            s = 0.0
            for t in range(d):
                diff = np.float64(X[i, t]) - C[j, t]
                s += diff * diff
            out[i, j] = np.sqrt(s)


def distances(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Euclidean distance of every row of X to every centre, shape (n, k) in X's dtype
    (float32 or float64; other dtypes become float64), summed in float64 row by row."""
    X = np.asarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    out = np.empty((X.shape[0], centers.shape[0]), X.dtype)
    _distances(X, np.ascontiguousarray(centers, dtype=np.float64), out)
    return out


def column_variance(X: np.ndarray) -> np.ndarray:
    """Per-column population variance (float64), two-pass for accuracy."""
    return _column_variance_parallel(X)


def warmup_kernels() -> None:
    """Compile (or load from the on-disk cache) every kernel here for float32 and float64."""
    for dtype in (np.float32, np.float64):
        for layout in ("C", "F"):
            # Narrow rows (the vector loops) and wide ones (the dot-product form), each on one
            # thread and on many.
            for n, k, d in ((8, 2, 2), (parallel_rows(2, 2), 2, 2), (8, 256, 16), (512, 256, 128)):
                X = np.zeros((n, d), dtype=dtype, order=layout)
                C = np.zeros((k, d), dtype=dtype)
                assign(X, C)
                assign_stats(X, C, np.zeros(n, np.int32), np.empty(n, dtype))
                assign_stats(X, C, np.zeros(n, np.int32))
                C.setflags(write=False)  # a model's centres, as the request path passes them
                assign(X, C)
            column_variance(X)
