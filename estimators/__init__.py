"""scikit-learn estimators over streamkm's engine: `KMeans` and `StreamingKMeans`.

They subclass scikit-learn's `BaseEstimator`, `ClusterMixin` and `TransformerMixin`, take
scikit-learn's parameter names and pass its `check_estimator`; every computation is
`engine`'s. scikit-learn is needed for them alone: `pip install 'streamkm[sklearn]'`.
"""

try:
    import sklearn  # noqa: F401
except ImportError as exc:  # pragma: no cover - the extra is installed wherever tests run
    raise ImportError(
        "streamkm's estimators need scikit-learn: pip install 'streamkm[sklearn]'"
    ) from exc

from .kmeans import KMeans
from .streaming import StreamingKMeans

__all__ = ["KMeans", "StreamingKMeans"]
