"""streamkm's compute engine: Numba kernels and k-means models. Pure computation, no I/O."""

from .init import kmeans_plusplus, random_init
from .kernels import assign, distances
from .kmeans import KMeans
from .scaling import Scaler
from .state import ModelState, StateFormatError
from .stats import (
    BatchStats,
    StatsFormatError,
    batch_stats,
    model_assign,
    model_batch_stats,
    model_centers,
    scaled_batch_stats,
    seeded_state,
)
from .streaming import StreamingKMeans
from .update import UpdateResult, anomaly_scores, apply_update, decay_factor
from .warmup import warmup, warmup_model

__all__ = [
    "BatchStats",
    "KMeans",
    "ModelState",
    "Scaler",
    "StateFormatError",
    "StatsFormatError",
    "StreamingKMeans",
    "UpdateResult",
    "anomaly_scores",
    "apply_update",
    "assign",
    "batch_stats",
    "decay_factor",
    "distances",
    "kmeans_plusplus",
    "model_assign",
    "model_batch_stats",
    "model_centers",
    "random_init",
    "scaled_batch_stats",
    "seeded_state",
    "warmup",
    "warmup_model",
]
