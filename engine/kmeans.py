"""Batch k-means (Lloyd's algorithm) on the Numba kernels, with scikit-learn's semantics."""

from __future__ import annotations

import numpy as np

from .init import Seed, kmeans_plusplus, random_init
from .kernels import assign, assign_labels, assign_stats, column_variance, distances
from .validation import (
    check_data,
    check_finite_result,
    check_n_clusters,
    check_positive,
    check_weights,
    raise_not_finite,
)


class KMeans:
    """K-means clustering by Lloyd's algorithm.

    Each iteration assigns every row to its nearest centre and moves each centre to the mean
    of its rows (weighted by `sample_weight` when given), in one fused parallel pass. Iteration stops when no label changes (strict
    convergence) or when the squared centre shift falls below `tol` times the mean feature
    variance, as in scikit-learn. An empty cluster is moved to the row farthest from its
    centre.

    Parameters
    ----------
    n_clusters : int
        Number of clusters k.
    init : {"k-means++", "random"} or array of shape (k, d)
        Greedy k-means++, k distinct random rows, or explicit initial centres.
    max_iter : int
        Maximum number of Lloyd iterations.
    tol : float
        Relative tolerance on the centre shift (scaled by the data's mean variance).
    seed : int, None or numpy.random.RandomState
        Seed of the initialisation; the same seed gives the same result. A RandomState goes
        on drawing where it stands (several runs from one generator).

    After `fit`: `cluster_centers_`, `labels_`, `inertia_`, `n_iter_`, and `cluster_weights_`
    (float64 (k,): each cluster's rows, counted by their `sample_weight` when given).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> km = KMeans(n_clusters=2, seed=0).fit(X)
    >>> sorted(np.bincount(km.labels_).tolist())
    [2, 2]
    >>> bool(km.predict(np.array([[5.0, 4.9]]))[0] == km.labels_[2])
    True
    """

    def __init__(
        self,
        n_clusters: int = 8,
        init: str | np.ndarray = "k-means++",
        max_iter: int = 300,
        tol: float = 1e-4,
        seed: Seed = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed

    def fit(self, X: object, sample_weight: object = None) -> KMeans:
        """Compute the clustering of X, each row counted `sample_weight` times; returns self."""
        X = check_data(X, finite=False)  # checked on the first pass's sums instead
        n, d = X.shape
        k = check_n_clusters(self.n_clusters, n)
        w = None if sample_weight is None else check_weights(sample_weight, n)
        if (
            isinstance(self.max_iter, bool)
            or not isinstance(self.max_iter, int)
            or self.max_iter < 1
        ):
            raise ValueError(f"max_iter must be an integer >= 1, got {self.max_iter!r}")
        if self.tol != 0:
            check_positive(self.tol, "tol")
        centers = self._initial_centers(X, k, w)
        tol = float(np.mean(column_variance(X)) * self.tol) if self.tol else 0.0

        labels = np.full(n, -1, np.int32)
        strict = False
        n_iter = 0
        while n_iter < self.max_iter:
            n_iter += 1
            counts, sums, sq, changed = assign_stats(X, centers, labels, weights=w)
            if n_iter == 1:
                check_finite_result(X, np.concatenate([sums.ravel(), sq]))
            if changed == 0:
                strict = True
                break
            new = _centers_from_sums(X, centers, labels, counts, sums, w)
            shift = float(((new - centers) ** 2).sum())
            centers = new.astype(X.dtype)
            if shift <= tol:
                break
        if strict:
            inertia = float(sq.sum())
        else:
            # The last update moved the centres: label and score against the final ones.
            counts, sums, sq, _ = assign_stats(X, centers, labels, weights=w)
            inertia = float(sq.sum())
        self.cluster_centers_ = centers
        self.labels_ = labels
        self.inertia_ = inertia
        self.n_iter_ = n_iter
        self.cluster_weights_ = counts.astype(np.float64)
        self.n_features_in_ = d
        return self

    def predict(self, X: object) -> np.ndarray:
        """Index (int32) of the nearest fitted centre for each row of X."""
        centers = self._fitted()
        X = check_data(X, dim=centers.shape[1], finite=False)
        labels, non_finite = assign_labels(X, centers)
        if non_finite:
            raise_not_finite(X)
        return labels

    def fit_predict(self, X: object, sample_weight: object = None) -> np.ndarray:
        """Fit, then return the labels of the training rows."""
        return self.fit(X, sample_weight).labels_

    def transform(self, X: object) -> np.ndarray:
        """Euclidean distance of each row to each centre, shape (n, k), in X's dtype."""
        centers = self._fitted()
        X = check_data(X, dim=centers.shape[1])
        return distances(X, centers)

    def score(self, X: object, sample_weight: object = None) -> float:
        """Opposite of the (weighted) inertia of X against the fitted centres (scikit-learn's
        sign)."""
        centers = self._fitted()
        X = check_data(X, dim=centers.shape[1], finite=False)
        dist = assign(X, centers)[1]
        check_finite_result(X, dist)
        if sample_weight is None:
            return -float(dist.astype(np.float64).sum())
        return -float(dist.astype(np.float64) @ check_weights(sample_weight, X.shape[0]))

    def _fitted(self) -> np.ndarray:
        centers = getattr(self, "cluster_centers_", None)
        if centers is None:
            raise ValueError("this KMeans is not fitted yet; call fit(X) first")
        return centers

    def _initial_centers(self, X: np.ndarray, k: int, w: np.ndarray | None) -> np.ndarray:
        init = self.init
        if isinstance(init, str):
            if init == "k-means++":
                return kmeans_plusplus(X, k, self.seed, sample_weight=w)
            if init == "random":
                return random_init(X, k, self.seed, w)
            raise ValueError(f"init must be 'k-means++', 'random' or an array, got {init!r}")
        centers = check_data(init, name="init")
        if centers.shape != (k, X.shape[1]):
            raise ValueError(
                f"init has shape {centers.shape}, expected (n_clusters, n_features) = "
                f"({k}, {X.shape[1]})"
            )
        return np.array(centers, dtype=X.dtype, order="C")


def _centers_from_sums(
    X: np.ndarray,
    old: np.ndarray,
    labels: np.ndarray,
    counts: np.ndarray,
    sums: np.ndarray,
    w: np.ndarray | None = None,
) -> np.ndarray:
    """(Weighted) means of the clusters; a cluster with no weight takes the row farthest from
    its centre, with that row's weight (scikit-learn's relocation)."""
    counts = counts.astype(np.float64)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        dist = ((X - old[labels]) ** 2).sum(axis=1)
        far = np.argpartition(dist, -empty.size)[: -empty.size - 1 : -1]
        for new_id, idx in zip(empty, far, strict=True):
            weight = 1.0 if w is None else float(w[idx])
            row = X[idx].astype(np.float64) * weight
            old_id = labels[idx]
            sums[old_id] -= row
            counts[old_id] -= weight
            sums[new_id] = row
            counts[new_id] = weight
    return sums / np.where(counts > 0, counts, 1.0)[:, None]
