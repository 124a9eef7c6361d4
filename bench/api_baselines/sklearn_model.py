"""The baselines' model: scikit-learn's `KMeans` holding the centres streamkm serves.

`fit` on the centres themselves with ``init=centres, n_init=1, max_iter=1`` leaves them unchanged
(each centre is its own cluster's mean), so both servers answer with the same model. The outputs
are what streamkm answers: the nearest cluster, the distance to it, and that distance over a
per-cluster scale (streamkm's running RMS distance; here a fixed array, as a team would ship).
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

__all__ = ["fitted_kmeans", "score_rows"]


def fitted_kmeans(centers: np.ndarray) -> KMeans:
    """A fitted KMeans whose cluster_centers_ are `centers`, unchanged."""
    centers = np.asarray(centers, dtype=np.float32)
    km = KMeans(n_clusters=len(centers), init=centers, n_init=1, max_iter=1)
    km.fit(centers)
    if not np.allclose(km.cluster_centers_, centers):
        raise RuntimeError("fitting KMeans on its own centres moved them")
    return km


def score_rows(km: KMeans, X: np.ndarray, scale: np.ndarray) -> dict[str, np.ndarray]:
    """cluster (int32), distance and score (float32) of the rows of X."""
    cluster = km.predict(X).astype(np.int32)
    distance = np.linalg.norm(X - km.cluster_centers_[cluster], axis=1).astype(np.float32)
    return {"cluster": cluster, "distance": distance, "score": distance / scale[cluster]}
