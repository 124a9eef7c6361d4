"""Nearest centres of wide rows by dot product, settled exactly.

For wide rows and many centres (k x d large) the (x - c)^2 loops of engine/simd.py lose to the
dot-product form of engine/product.py (one multiply-add per feature and centre instead of two
operations, on independent chains). That form rounds differently from the exact kernel, so it
only *nominates*: when the gap between a row's smallest and second smallest product-form value
exceeds twice a bound on both forms' rounding errors, the smallest is the exact kernel's answer
too, and only its distance is computed, with the exact kernel's own arithmetic (the same
sequential sum of (x - c)^2 in fused multiply-adds as the vector code). Any other row (a near
tie, a row that is not finite, products that may overflow) is scanned by the exact arithmetic
over every centre. Labels and squared distances are therefore the exact kernel's, bit for bit;
near ties and large offsets only cost time, never another answer.

The bound, per row, in float64 (u: the input's unit roundoff, 2^-24 for float32): the dot
product of d terms errs by at most d u ||x|| ||c||, so the value ||c||^2 - 2 x.c by twice that
plus its own two roundings (u each of ||c||^2 + 2 ||x|| ||c||); the exact kernel's sum errs by at
most (d + 2) u times the distance, itself at most ||x||^2 + ||c||^2 + 2 ||x|| ||c||. Every term
is multiplied by a safety factor of 4, with the largest centre norm standing for ||c||.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .product import ROWS, product_blocks, product_rows
from .settle import ROWS as SETTLE_ROWS
from .settle import settle_sums
from .simd import ROWS as SCAN_ROWS
from .simd import centre_blocks, nearest_rows

WIDE_ROWS = ROWS  # rows per call of `wide_rows`
assert SETTLE_ROWS == ROWS and ROWS % SCAN_ROWS == 0

_SAFETY = 4.0
# Rows with ||x|| ||c|| beyond this are scanned exactly: their products may overflow float32.
HUGE = 1e30


@njit(cache=True)
def wide_centres(C):
    """Everything `wide_rows` needs of the centres, computed once per pass: the product blocks,
    their norms, the largest centre norm and squared norm, the unit roundoff, and the exact
    kernel's centre blocks (engine/simd.py) for the rows the product form cannot decide."""
    blocks, norms = product_blocks(C)
    c_sq_max = 0.0
    for b in range(norms.shape[0]):
        for q in range(norms.shape[1]):
            v = np.float64(norms[b, q])
            if v < np.inf:
                c_sq_max = max(c_sq_max, v)
    unit = np.finfo(C.dtype).eps / 2.0
    return (
        blocks,
        norms,
        np.sqrt(c_sq_max),
        c_sq_max,
        unit,
        centre_blocks(C),
    )


@njit(inline="always")
def wide_scratch(X):
    """What `wide_rows` writes between its two steps, for one thread: values, runner-up values
    and centres of ROWS rows, and their squared norms."""
    return (
        np.empty(ROWS, X.dtype),
        np.empty(ROWS, X.dtype),
        np.empty(ROWS, np.int32),
        np.empty(ROWS, np.float64),
    )


@njit(fastmath={"contract"}, inline="always")
def exact_distance(X, i, C, j, zero):
    """The exact kernel's squared distance: features in order, (x - c)^2 added one by one."""
    s = zero
    for t in range(X.shape[1]):
        diff = X[i, t] - C[j, t]
        s += diff * diff
    return s


@njit(fastmath={"contract"})
def exact_nearest(X, i, C, zero):
    """The exact kernel's scan, one row: the same sums as the vector code's lanes, ties to the
    lower index, a row that is not finite to centre 0 at +inf. Compiled apart (never inlined)
    so that the caller's fastmath flags cannot reorder its sums."""
    best = np.inf
    best_j = 0
    for j in range(C.shape[0]):
        s = exact_distance(X, i, C, j, zero)
        if s < best:
            best = s
            best_j = j
    return best_j, best


@njit(fastmath={"contract"})
def _settle(X, i0, C, W, S, out_dist, out_label):
    """Rows i0 .. i0 + ROWS - 1: the nominated centre's exact distance where the row's gap
    clears the bound (engine/settle.py: eight chains side by side, each in the exact kernel's
    order), the exact scan for any other row."""
    _, _, c_norm_max, c_sq_max, unit, exact_blocks = W
    best, second, label, x_sqs = S
    d = X.shape[1]
    settle_sums(X, i0, C, label, out_dist, x_sqs)
    scan = 0  # bit r: row r goes to the exact scan
    for r in range(ROWS):
        out_label[r] = label[r]
        # ||x||^2 is summed in float32 for float32 rows: its relative error (d u at most) is
        # far inside the safety factor, and a sum that overflows sends the row to the scan.
        x_sq = x_sqs[r]
        cross = np.sqrt(x_sq) * c_norm_max
        if cross < HUGE:  # false for NaN and infinity too
            bound = (
                _SAFETY
                * unit
                * (
                    2.0 * d * cross
                    + (c_sq_max + 2.0 * cross)
                    + (d + 2) * (x_sq + c_sq_max + 2.0 * cross)
                )
            )
            if np.float64(second[r]) - np.float64(best[r]) > 2.0 * bound:
                continue
        scan |= 1 << r
    # The exact scan by the vector code, SCAN_ROWS rows a call (centres side by side: 1.7 us a
    # row at (k, d) = (64, 384), where the scalar scan of one row took 37 us). It rewrites the
    # other rows of its call with the same bits.
    for h in range(0, ROWS, SCAN_ROWS):
        if scan >> h & (1 << SCAN_ROWS) - 1:
            nearest_rows(X, i0 + h, exact_blocks, out_dist[h:], out_label[h:])


@njit(fastmath={"contract"}, inline="always")
def wide_rows(X, i0, C, zero, W, S, out_dist, out_label):
    """Rows i0 .. i0 + ROWS - 1: the exact kernel's nearest centre into out_label and squared
    distance into out_dist, found by the product form. W comes from `wide_centres(C)`, S from
    `wide_scratch(X)`."""
    best, second, label, _ = S
    product_rows(X, i0, W[0], W[1], best, second, label)
    _settle(X, i0, C, W, S, out_dist, out_label)
