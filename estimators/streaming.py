"""`StreamingKMeans`: mini-batch k-means with forgetting as a scikit-learn estimator, computed
by `engine.StreamingKMeans` (the update rule the service's replicated model applies)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
)
from sklearn.utils import check_random_state

import engine
from engine.update import DEFAULT_RESEED_FRACTION
from engine.validation import check_n_clusters

from .centres import NearestCentres, weighted_inertia
from .inputs import checked_init, checked_weights, checked_X


class StreamingKMeans(NearestCentres, ClassNamePrefixFeaturesOutMixin, ClusterMixin, BaseEstimator):
    """Online k-means (Sculley 2010) with exponential forgetting, for data that arrives in
    batches: `partial_fit` learns from one batch, `fit` streams X through in batches.

    The first batch seeds k centres (k-means++ in scikit-learn's arithmetic, or "random", or
    given). Every batch is assigned to the current centres and each centre moves to the
    weighted mean of its old position (weight w_j) and the rows it received, each counted
    `sample_weight` times. With `half_life`, old weight halves every `half_life` rows (of
    summed weight), so the model follows drifting data. A cluster lighter than
    `reseed_fraction` of the heaviest moves onto one of the batch's farthest rows.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters k.
    init : {"k-means++", "random"} or array of shape (n_clusters, n_features)
        How the first batch seeds the centres.
    half_life : float or None, default=None
        Rows after which old statistics weigh half; None keeps all history.
    batch_size : int, default=1024
        Rows per update in `fit`.
    max_iter : int, default=1
        Passes of `fit` over X.
    reseed_fraction : float, default=0.01
        Weight, as a fraction of the heaviest cluster's, below which a cluster is re-seeded.
    random_state : int, RandomState or None
        Seeds the first batch's initialisation.

    Attributes
    ----------
    cluster_centers_ : ndarray (n_clusters, n_features) float64
    weights_ : ndarray (n_clusters,), the decayed weight each centre has absorbed
    labels_, inertia_ : the training rows' labels and inertia after `fit`; the last batch's
        after `partial_fit`
    n_steps_ : int, batches learnt from; n_iter_ : int, passes `fit` made

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 1, (500, 2)), rng.normal(20, 1, (500, 2))])
    >>> skm = StreamingKMeans(n_clusters=2, random_state=0)
    >>> for batch in np.array_split(rng.permutation(X), 10):
    ...     _ = skm.partial_fit(batch)
    >>> sorted(np.round(skm.cluster_centers_[:, 0]).astype(int).tolist())
    [0, 20]
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: str | Any = "k-means++",
        half_life: float | None = None,
        batch_size: int = 1024,
        max_iter: int = 1,
        reseed_fraction: float = DEFAULT_RESEED_FRACTION,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.half_life = half_life
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.reseed_fraction = reseed_fraction
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> StreamingKMeans:
        """Learn from X afresh: `max_iter` passes in batches of `batch_size`; returns self."""
        X = checked_X(self, X, reset=True)
        w = checked_weights(sample_weight, X)
        batch = _whole(self.batch_size, "batch_size")
        passes = _whole(self.max_iter, "max_iter")
        check_n_clusters(self.n_clusters, X.shape[0])
        model = self._new_model(X)
        # The first batch seeds k centres, so it holds at least k rows.
        first = max(batch, int(self.n_clusters))
        for _ in range(passes):
            bounds = [0, *range(first, X.shape[0], batch), X.shape[0]]
            for start, stop in itertools.pairwise(bounds):
                model.partial_fit(X[start:stop], None if w is None else w[start:stop])
            first = batch
        self._keep(model, X, w)
        self.n_iter_ = passes
        return self

    def partial_fit(self, X: Any, y: Any = None, sample_weight: Any = None) -> StreamingKMeans:
        """Learn from one batch (the first one seeds the centres); returns self."""
        first = not hasattr(self, "_model")
        X = checked_X(self, X, reset=first)
        w = checked_weights(sample_weight, X)
        model = self._new_model(X) if first else self._model
        model.partial_fit(X, w)
        self._keep(model, X, w)
        return self

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray:
        """Fit, then return the labels of the training rows against the final centres."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def fit_transform(self, X: Any, y: Any = None, sample_weight: Any = None) -> np.ndarray:
        """Fit, then return the distances of the training rows to the final centres."""
        return self.fit(X, sample_weight=sample_weight).transform(X)

    def _new_model(self, X: np.ndarray) -> engine.StreamingKMeans:
        init = checked_init(self.init, X)
        return engine.StreamingKMeans(
            self.n_clusters, half_life=self.half_life, init=init,
            seed=check_random_state(self.random_state), reseed_fraction=self.reseed_fraction,
        )  # fmt: skip

    def _keep(self, model: engine.StreamingKMeans, X: np.ndarray, w: np.ndarray | None) -> None:
        """The fitted attributes after learning from X: centres, weights, X's labels."""
        self._model = model
        self.cluster_centers_ = model.cluster_centers_
        self.weights_ = model.weights_
        self.n_steps_ = model.version - 1  # the init is the model's first message
        self.labels_, self.inertia_ = weighted_inertia(X, self.cluster_centers_, w)
        self._n_features_out = self.cluster_centers_.shape[0]


def _whole(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)
