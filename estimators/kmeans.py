"""`KMeans`: scikit-learn's batch k-means estimator, computed by `engine.KMeans`."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

import engine

from .centres import NearestCentres
from .inputs import checked_init, checked_weights, checked_X, same_clustering


class KMeans(NearestCentres, ClassNamePrefixFeaturesOutMixin, ClusterMixin, BaseEstimator):
    """K-means clustering (Lloyd's algorithm), a drop-in for `sklearn.cluster.KMeans`.

    Each of `n_init` runs seeds k centres ("k-means++", "random" or given), then repeats
    Lloyd's step (assign every row to its nearest centre, move each centre to the weighted
    mean of its rows) in one fused parallel pass of `engine`, until no label changes or the
    centres move less than `tol` times the data's mean variance. The run with the lowest
    inertia is kept. Seeding uses scikit-learn's arithmetic and random draws, so the same
    `random_state` gives scikit-learn's labels, in float64 and in float32.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters k.
    init : {"k-means++", "random"} or array of shape (n_clusters, n_features)
        Greedy k-means++, k distinct rows drawn by weight, or the initial centres.
    n_init : "auto" or int, default="auto"
        Runs with different seeds; "auto" is 10 for "random" and 1 otherwise.
    max_iter : int, default=300
        Most Lloyd iterations per run.
    tol : float, default=1e-4
        Relative tolerance on the centre shift (times the mean feature variance).
    random_state : int, RandomState or None
        Seeds the initialisations; runs draw one after the other from it.

    Attributes
    ----------
    cluster_centers_ : ndarray (n_clusters, n_features), in X's dtype
    labels_ : ndarray (n_samples,) int32
    inertia_ : float, the weighted sum of squared distances to the nearest centre
    n_iter_ : int, iterations of the kept run
    n_features_in_, feature_names_in_ : as every scikit-learn estimator

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> km = KMeans(n_clusters=2, random_state=0).fit(X)
    >>> sorted(np.bincount(km.labels_).tolist())
    [2, 2]
    >>> km.transform([[5.0, 5.0]]).shape
    (1, 2)
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: str | Any = "k-means++",
        n_init: str | int = "auto",
        max_iter: int = 300,
        tol: float = 1e-4,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> KMeans:
        """Cluster X, each row counted `sample_weight` times (ones when None); returns self."""
        X = checked_X(self, X, reset=True, finite=False)
        w = checked_weights(sample_weight, X)
        init = checked_init(self.init, X)
        runs = self._runs(init)
        random_state = check_random_state(self.random_state)
        best: engine.KMeans | None = None
        for _ in range(runs):
            run = engine.KMeans(
                self.n_clusters, init=init, max_iter=self.max_iter, tol=self.tol,
                seed=random_state,
            ).fit(X, sample_weight=w)  # fmt: skip
            # A lower inertia that is the same clustering relabelled is rounding, not better.
            if best is None or (
                run.inertia_ < best.inertia_ and not same_clustering(run.labels_, best.labels_)
            ):
                best = run
        assert best is not None
        # Counting labels takes a pass over them (2 ms for 1M rows); the last Lloyd pass has
        # counted them already, unless a cluster holds only rows of weight 0.
        found = self.n_clusters
        if not (best.cluster_weights_ > 0).all():
            found = int(np.count_nonzero(np.bincount(best.labels_, minlength=self.n_clusters)))
        if found < self.n_clusters:
            warnings.warn(
                f"found {found} distinct clusters of n_clusters={self.n_clusters}: X has "
                "fewer distinct points",
                ConvergenceWarning,
                stacklevel=2,
            )
        self.cluster_centers_ = best.cluster_centers_
        self.labels_ = best.labels_
        self.inertia_ = best.inertia_
        self.n_iter_ = best.n_iter_
        self._n_features_out = self.cluster_centers_.shape[0]
        return self

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray:
        """Fit, then return the labels of the training rows."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def fit_transform(self, X: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray:
        """Fit, then return the distances of the training rows to the centres."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def _runs(self, init: Any) -> int:
        if self.n_init == "auto":
            return 10 if isinstance(init, str) and init == "random" else 1
        if isinstance(self.n_init, bool) or not isinstance(self.n_init, int | np.integer):
            raise ValueError(f"n_init must be 'auto' or an integer >= 1, got {self.n_init!r}")
        if self.n_init < 1:
            raise ValueError(f"n_init must be >= 1, got {self.n_init}")
        if not isinstance(init, str) and self.n_init != 1:
            warnings.warn(
                f"explicit initial centres: one run instead of n_init={self.n_init}",
                RuntimeWarning,
                stacklevel=3,
            )
            return 1
        return int(self.n_init)
