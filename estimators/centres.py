"""What a fitted set of centres answers, shared by both estimators: labels, distances, score."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import TransformerMixin
from sklearn.utils.validation import check_is_fitted

import engine

from .inputs import FLOATS, checked_weights, checked_X


class NearestCentres(TransformerMixin):
    """predict, transform and score against `cluster_centers_` (engine's kernels).

    A TransformerMixin itself: scikit-learn wraps `transform` for `set_output` only in the
    class that defines it.
    """

    cluster_centers_: np.ndarray

    def predict(self, X: Any) -> np.ndarray:
        """Index (int32) of the nearest centre for each row of X."""
        check_is_fitted(self)
        X = checked_X(self, X, reset=False)
        return engine.assign(X, self.cluster_centers_)[0]

    def transform(self, X: Any) -> np.ndarray:
        """Euclidean distance of each row to each centre, (n_samples, n_clusters) in X's dtype."""
        check_is_fitted(self)
        X = checked_X(self, X, reset=False)
        return engine.distances(X, self.cluster_centers_)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Opposite of the (weighted) inertia of X against the centres: higher is better."""
        check_is_fitted(self)
        X = checked_X(self, X, reset=False)
        return -weighted_inertia(X, self.cluster_centers_, checked_weights(sample_weight, X))[1]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = [np.dtype(t).name for t in FLOATS]
        return tags


def weighted_inertia(
    X: np.ndarray, C: np.ndarray, w: np.ndarray | None
) -> tuple[np.ndarray, float]:
    """Labels of X's rows and the (weighted) sum of their squared distances to their centres."""
    labels, sq = engine.assign(X, C)
    sq = sq.astype(np.float64)
    return labels, float(sq.sum() if w is None else sq @ w.astype(np.float64))
