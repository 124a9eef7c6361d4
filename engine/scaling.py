"""Per-feature standardization that learns with the model: decayed mean and spread per feature.

A `Scaler` holds a decayed row count W, the per-feature mean m and the decayed sum of squared
deviations M2 (so the variance is M2 / W and the scale sqrt(M2 / W), the `mean_` and `scale_` of a
scikit-learn `StandardScaler` fitted on the same rows). It is updated from the statistics of a
batch of n rows (their feature sums and squared deviations about their own mean) with the model's
decay a (Chan et al.'s parallel variance merge, with the old side weighed by a):

    W' = a W + n,   m' = m + (m_b - m) n / W',   M2' = a M2 + M2_b + (m_b - m)^2 a W n / W'

Centres stay in original units, so a scaler update changes the metric, never the centres: a
record's distance is measured in standardized units, ||(x - c) / scale||, computed as the plain
distance between z = (x - m) / scale and (c - m) / scale. The arithmetic runs in a Numba kernel
in a fixed order without fast-math, so every replica applying the same statistics holds the same
bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = ["Scaler", "feature_m2"]

# scikit-learn's rule (`_handle_zeros_in_scale`): a feature with no spread keeps scale 1.
_TINY_SCALE = 10 * np.finfo(np.float64).eps


@dataclass(frozen=True, eq=False)
class Scaler:
    """Decayed per-feature location and spread: weight W, mean (d,), M2 (d,), all float64."""

    weight: float
    mean: np.ndarray
    m2: np.ndarray

    def __post_init__(self) -> None:
        if self.mean.shape != self.m2.shape or self.mean.ndim != 1:
            raise ValueError(f"scaler mean {self.mean.shape} and m2 {self.m2.shape} differ")
        if not (
            np.isfinite(self.weight)
            and self.weight >= 0
            and np.isfinite(self.mean).all()
            and np.isfinite(self.m2).all()
            and np.all(self.m2 >= 0)
        ):
            raise ValueError("scaler holds non-finite or negative values")

    @classmethod
    def fit(cls, X: np.ndarray) -> Scaler:
        """The scaler of the rows of X (float32 or float64, (n, d), n >= 1)."""
        A = np.asarray(X, dtype=np.float64)
        mean = A.mean(axis=0)
        return cls(float(A.shape[0]), _frozen(mean), _frozen(((A - mean) ** 2).sum(axis=0)))

    @classmethod
    def from_scale(cls, mean: np.ndarray, scale: np.ndarray, weight: float) -> Scaler:
        """The scaler with this mean and scale, as if learnt from `weight` rows."""
        m = np.array(mean, dtype=np.float64)
        s = np.array(scale, dtype=np.float64)
        if m.shape != s.shape or m.ndim != 1:
            raise ValueError(f"scaler mean {m.shape} and scale {s.shape} must both be (d,)")
        if not (np.isfinite(s).all() and np.all(s > 0)):
            raise ValueError("every scale must be a positive finite number")
        return cls(float(weight), _frozen(m), _frozen(s * s * weight))

    @property
    def d(self) -> int:
        """Number of features."""
        return int(self.mean.shape[0])

    @property
    def var(self) -> np.ndarray:
        """Per-feature variance M2 / W (zeros before any row)."""
        if self.weight <= 0:
            return np.zeros_like(self.m2)
        return self.m2 / self.weight

    @property
    def scale(self) -> np.ndarray:
        """Per-feature standard deviation; 1 for a feature with no spread (as scikit-learn)."""
        s = np.sqrt(self.var)
        return np.where(s < _TINY_SCALE, 1.0, s)

    def standardize(self, X: np.ndarray) -> np.ndarray:
        """(X - mean) / scale as float32, C-contiguous: what the assignment kernels see."""
        return np.ascontiguousarray((X - self.mean) / self.scale, dtype=np.float32)

    def to_standard(self, centers: np.ndarray) -> np.ndarray:
        """Centres (or any rows) in original units -> standardized units, float64."""
        return np.ascontiguousarray((np.asarray(centers, np.float64) - self.mean) / self.scale)

    def to_original(self, Z: np.ndarray) -> np.ndarray:
        """Rows in standardized units -> original units, float64."""
        return np.ascontiguousarray(np.asarray(Z, np.float64) * self.scale + self.mean)

    def updated(self, n: int, sums: np.ndarray, m2: np.ndarray, a: float) -> Scaler:
        """The scaler after n more rows whose per-cluster coordinate sums are `sums` (k, d) and
        whose squared deviations about their own mean are `m2` (d,); old rows weigh `a`."""
        if n <= 0:
            return self
        w, mean, new_m2 = _merge(self.weight, self.mean, self.m2, n, sums, m2, a)
        return Scaler(w, _frozen(mean), _frozen(new_m2))

    def equals(self, other: Scaler) -> bool:
        """True when both are bit-identical."""
        return (
            np.float64(self.weight).tobytes() == np.float64(other.weight).tobytes()
            and self.mean.tobytes() == other.mean.tobytes()
            and self.m2.tobytes() == other.m2.tobytes()
        )


def feature_m2(X: np.ndarray) -> np.ndarray:
    """Per-feature sum of squared deviations of the rows of X about their own mean (float64)."""
    return _feature_m2(np.asarray(X))


@njit(cache=True)
def _feature_m2(X):
    n, d = X.shape
    mean = np.zeros(d)
    for i in range(n):
        for t in range(d):
            mean[t] += X[i, t]
    for t in range(d):
        mean[t] /= max(n, 1)
    m2 = np.zeros(d)
    for i in range(n):
        for t in range(d):
            dev = X[i, t] - mean[t]
            m2[t] += dev * dev
    return m2


@njit(cache=True)
def _merge(weight, mean, m2, n, sums, batch_m2, a):
    """The update of the module docstring in a fixed order (no fast-math: identical bits)."""
    k, d = sums.shape
    old_w = a * weight
    new_w = old_w + n
    new_mean = np.empty(d)
    new_m2 = np.empty(d)
    for t in range(d):
        total = 0.0
        for j in range(k):
            total += sums[j, t]
        delta = total / n - mean[t]
        new_mean[t] = mean[t] + delta * (n / new_w)
        new_m2[t] = a * m2[t] + batch_m2[t] + delta * delta * (old_w * n / new_w)
    return new_w, new_mean, new_m2


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    a.setflags(write=False)
    return a
