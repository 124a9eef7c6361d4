"""Streaming k-means: mini-batch Lloyd updates with optional exponential forgetting."""

from __future__ import annotations

import json
import struct

import numpy as np

from .init import Seed, kmeans_plusplus, random_init
from .kernels import assign, assign_labels
from .state import ModelState
from .stats import batch_stats
from .update import DEFAULT_RESEED_FRACTION, UpdateResult, anomaly_scores, apply_update
from .validation import (
    check_data,
    check_finite_result,
    check_n_clusters,
    check_positive,
    check_weights,
    raise_not_finite,
)

_SNAPSHOT_MAGIC = b"SKMK"
_SNAPSHOT_HEADER = struct.Struct("<4sI")  # magic, length of the JSON parameter block


class StreamingKMeans:
    """Online k-means for unbounded streams (Sculley 2010, mini-batch k-means).

    The first `partial_fit` seeds k centres by k-means++ on that batch. Every call assigns the
    batch to the current centres, sums it per cluster and moves each centre to the weighted
    mean of its old position (weight w_j) and the batch rows it received (each counted
    `sample_weight` times when given). With `half_life` (in rows, or summed row weight), old
    weight decays by half every `half_life` rows, so the model follows drifting data. The same update rule, applied by `engine.update.apply_update`, drives the service's
    replicated model. `version` counts the model messages applied (the init is the first).

    Parameters
    ----------
    n_clusters : int
        Number of clusters k.
    half_life : float or None
        Rows after which old statistics weigh half; None keeps all history.
    seed : int, None or numpy.random.RandomState
        Seed of the k-means++ initialisation.
    init : {"k-means++", "random"} or array of shape (k, d)
        How the first batch seeds the centres.
    reseed_fraction : float
        A cluster lighter than this fraction of the heaviest is re-seeded.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(0, 1, (500, 2)), rng.normal(20, 1, (500, 2))])
    >>> skm = StreamingKMeans(n_clusters=2, seed=0)
    >>> for batch in np.array_split(rng.permutation(X), 10):
    ...     _ = skm.partial_fit(batch)
    >>> sorted(np.round(skm.cluster_centers_[:, 0]).astype(int).tolist())
    [0, 20]
    """

    def __init__(
        self,
        n_clusters: int = 8,
        half_life: float | None = None,
        seed: Seed = 0,
        init: str | np.ndarray = "k-means++",
        reseed_fraction: float = DEFAULT_RESEED_FRACTION,
    ) -> None:
        self.n_clusters = n_clusters
        self.half_life = half_life
        self.seed = seed
        self.init = init
        self.reseed_fraction = reseed_fraction
        self._state: ModelState | None = None
        self.last_update: UpdateResult | None = None

    @property
    def state(self) -> ModelState:
        """The current model state (centres, weights, squared-distance sums, version)."""
        if self._state is None:
            raise ValueError("this StreamingKMeans has seen no data yet; call partial_fit(X)")
        return self._state

    @property
    def cluster_centers_(self) -> np.ndarray:
        """Current centres, float64 (k, d)."""
        return self.state.centers

    @property
    def weights_(self) -> np.ndarray:
        """Decayed number of rows each centre has absorbed."""
        return self.state.weights

    @property
    def version(self) -> int:
        """Number of model messages applied (0 before the first partial_fit)."""
        return 0 if self._state is None else self._state.version

    def partial_fit(self, X: object, sample_weight: object = None) -> StreamingKMeans:
        """Update the model with one mini-batch, each row counted `sample_weight` times;
        returns self."""
        first = self._state is None
        # After the first batch, finiteness is checked on the batch's sums: NaN or infinity in
        # X shows up there.
        X = check_data(X) if first else check_data(X, dim=self.state.d, finite=False)
        w = None if sample_weight is None else check_weights(sample_weight, X.shape[0])
        if self._state is None:
            self._state = ModelState.initial(self._seed_centers(X, w))
        _, _, stats = batch_stats(X, self._state.centers, sample_weight=w)
        check_finite_result(X, stats.sq_sums)
        self.last_update = apply_update(self._state, stats, self._half_life(), self.reseed_fraction)
        self._state = self.last_update.state
        return self

    def predict(self, X: object) -> np.ndarray:
        """Index (int32) of the nearest centre for each row of X."""
        X = check_data(X, dim=self.state.d, finite=False)
        labels, non_finite = assign_labels(X, self.state.centers)
        if non_finite:
            raise_not_finite(X)
        return labels

    def score_samples(self, X: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(labels, distances, anomaly scores) of each row: score = distance / cluster RMS."""
        X = check_data(X, dim=self.state.d, finite=False)
        labels, sq = assign(X, self.state.centers)
        check_finite_result(X, sq)
        distance, score = anomaly_scores(self.state, labels, sq)
        return labels, distance, score

    def to_bytes(self) -> bytes:
        """Snapshot of parameters and state; `from_bytes` restores it exactly (no pickle)."""
        params = {
            "n_clusters": self.n_clusters,
            "half_life": self.half_life,
            # a generator's position is not a parameter: a restored model seeds afresh
            "seed": None if isinstance(self.seed, np.random.RandomState) else self.seed,
            "reseed_fraction": self.reseed_fraction,
        }
        blob = json.dumps(params).encode()
        state = b"" if self._state is None else self._state.to_bytes()
        return _SNAPSHOT_HEADER.pack(_SNAPSHOT_MAGIC, len(blob)) + blob + state

    @classmethod
    def from_bytes(cls, data: bytes) -> StreamingKMeans:
        """Restore a model written by `to_bytes`."""
        if len(data) < _SNAPSHOT_HEADER.size:
            raise ValueError("not a StreamingKMeans snapshot (too short)")
        magic, size = _SNAPSHOT_HEADER.unpack_from(data)
        if magic != _SNAPSHOT_MAGIC or _SNAPSHOT_HEADER.size + size > len(data):
            raise ValueError("not a StreamingKMeans snapshot (bad header)")
        start = _SNAPSHOT_HEADER.size
        try:
            params = json.loads(data[start : start + size])
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"corrupt StreamingKMeans snapshot parameters: {exc}") from exc
        model = cls(**params)
        rest = data[start + size :]
        if rest:
            model._state = ModelState.from_bytes(rest)
        return model

    def _half_life(self) -> float | None:
        return check_positive(self.half_life, "half_life", allow_none=True)

    def _seed_centers(self, X: np.ndarray, w: np.ndarray | None) -> np.ndarray:
        k = check_n_clusters(self.n_clusters, X.shape[0])
        check_positive(self.half_life, "half_life", allow_none=True)
        if isinstance(self.init, str):
            if self.init == "k-means++":  # exact: no BLAS threads left spinning (see init.py)
                return kmeans_plusplus(X, k, self.seed, sample_weight=w, exact=True)
            if self.init == "random":
                return random_init(X, k, self.seed, w)
            raise ValueError(f"init must be 'k-means++', 'random' or an array, got {self.init!r}")
        centers = check_data(self.init, name="init")
        if centers.shape != (k, X.shape[1]):
            raise ValueError(f"init has shape {centers.shape}, expected ({k}, {X.shape[1]})")
        return centers
