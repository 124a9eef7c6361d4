"""Checks at the estimators' edge: scikit-learn's validation, then arrays as `engine` takes them."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import _check_sample_weight, check_array, validate_data

FLOATS = [np.float64, np.float32]
"""Input dtypes kept as they are (anything else numeric becomes float64), as in scikit-learn."""


def checked_X(estimator: Any, X: Any, *, reset: bool, finite: bool = True) -> np.ndarray:
    """X as a 2-D float64/float32 array; sets or checks `n_features_in_` and
    `feature_names_in_` (reset=True at fit). finite=False leaves NaN and infinity to the
    engine, which finds them in the first pass's sums instead of a pass of its own (fit)."""
    return validate_data(estimator, X, dtype=FLOATS, reset=reset, ensure_all_finite=finite)


def checked_init(init: Any, X: np.ndarray) -> Any:
    """`init` as the engine takes it: a method's name as it is, centres as a copy in X's dtype."""
    return init if isinstance(init, str) else check_array(init, dtype=X.dtype, copy=True)


def checked_weights(sample_weight: Any, X: np.ndarray) -> np.ndarray | None:
    """One weight per row in X's dtype (scikit-learn's rules: a scalar counts for every row),
    or None when none are given: the engine's unweighted kernels are then used."""
    if sample_weight is None:
        return None
    return _check_sample_weight(sample_weight, X, dtype=X.dtype)


def same_clustering(a: np.ndarray, b: np.ndarray) -> bool:
    """True when labels `a` map onto labels `b` (each label of `a` always meets one of `b`)."""
    pairs = np.unique(np.stack([a, b]), axis=1)
    return bool(pairs.shape[1] == np.unique(a).size)
