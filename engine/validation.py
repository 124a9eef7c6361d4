"""Argument checks shared by the estimators: run once at the public edge, never in kernels."""

from __future__ import annotations

import math

import numpy as np
from numba import njit


def check_data(
    X: object, *, name: str = "X", dim: int | None = None, finite: bool = True
) -> np.ndarray:
    """Return X as a 2-D float32/float64 array, or raise ValueError saying what to fix.

    float32 and float64 arrays pass through without a copy (any contiguity); other numeric
    input becomes float64. With finite=False the caller checks finiteness itself, usually for
    free on the results of a pass it makes anyway (see `check_finite_result`).
    """
    arr = np.asarray(X)
    if arr.dtype not in (np.float32, np.float64):
        if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"{name} must hold numbers, got dtype {arr.dtype}")
        if np.issubdtype(arr.dtype, np.complexfloating):
            raise ValueError(f"{name} must hold real numbers, got dtype {arr.dtype}")
        arr = arr.astype(np.float64)
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_features), got shape {arr.shape}; "
            "reshape a single sample with x.reshape(1, -1)"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one sample and one feature, got {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has {arr.shape[1]} features but the model was fitted with {dim}")
    if finite and not np.isfinite(arr).all():
        raise_not_finite(arr, name)
    return arr


def raise_not_finite(X: np.ndarray, name: str = "X") -> None:
    """Raise the ValueError for NaN or infinity in X, naming the first bad row."""
    rows = np.flatnonzero(~np.isfinite(X).all(axis=1))
    where = f" (first in row {int(rows[0])})" if rows.size else ""
    raise ValueError(
        f"{name} contains NaN or infinity{where}, or values so large that squared distances "
        "overflow; drop, impute or rescale them"
    )


def check_finite_result(X: np.ndarray, result: np.ndarray, name: str = "X") -> None:
    """NaN or infinity anywhere in X propagates into the distances; check those instead of X."""
    if not np.isfinite(result).all():
        raise_not_finite(X, name)


def check_n_clusters(n_clusters: object, n_samples: int | None = None) -> int:
    """Validate the number of clusters against the number of samples."""
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, int | np.integer):
        raise ValueError(f"n_clusters must be an integer >= 1, got {n_clusters!r}")
    k = int(n_clusters)
    if k < 1:
        raise ValueError(f"n_clusters must be >= 1, got {k}")
    if n_samples is not None and k > n_samples:
        raise ValueError(
            f"n_samples={n_samples} should be >= n_clusters={k}; "
            "pass more samples or ask for fewer clusters"
        )
    return k


def check_positive(value: object, name: str, *, allow_none: bool = False) -> float | None:
    """Validate a strictly positive finite number (or None where allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    v = float(value)
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def check_weights(sample_weight: object, n_samples: int) -> np.ndarray:
    """Validate one non-negative finite weight per sample (not all zero); float64 (n,).

    One pass over the weights (a partial_fit of 1024 rows takes about 45 us; checking its
    weights with NumPy, one reduction per rule, took 7 us).
    """
    w = np.asarray(sample_weight)
    if w.dtype.kind not in "fiu":
        raise ValueError(f"sample_weight must hold real numbers, got dtype {w.dtype}")
    if w.shape != (n_samples,):
        raise ValueError(
            f"sample_weight has shape {w.shape}; expected ({n_samples},), one weight per sample"
        )
    w = np.ascontiguousarray(w, dtype=np.float64)
    total = _total_unless_negative(w)
    if not math.isfinite(total):  # NaN or infinity anywhere makes the sum so, as does overflow
        raise ValueError("sample_weight contains NaN or infinity, or sums beyond float64")
    if total < 0:
        raise ValueError(f"sample_weight must be >= 0; row {int(np.argmax(w < 0))} is negative")
    if not total > 0:
        raise ValueError("sample_weight sums to 0: at least one sample must weigh something")
    return w if w.flags.writeable else w.copy()


@njit(cache=True, fastmath={"reassoc"})
def _total_unless_negative(w):
    """The sum of the weights (NaN and infinity show in it), or -1.0 when one is negative.

    One pass whose two sums run in vector lanes: 1024 weights in 0.5 us, against 1.0 us
    counting negatives as integers and 2.1 us with a running minimum (the order of a sum
    checked only for sign and finiteness does not matter).
    """
    below = 0.0
    total = 0.0
    for i in range(w.shape[0]):
        v = w[i]
        below += min(v, 0.0)
        total += v
    return -1.0 if below < 0.0 else total  # a NaN weight leaves below NaN: reported as NaN
