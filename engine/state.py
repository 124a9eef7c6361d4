"""The state of a streaming model: centres, decayed weights, decayed squared-distance sums."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from .scaling import Scaler

_MAGIC = b"SKMM"
_FORMAT = 1
_FORMAT_SCALED = 2  # format 1, then the scaler: weight, mean (d), m2 (d), all float64
_HEADER = struct.Struct("<4sBBHIIQ")  # magic, format, reserved, reserved, k, d, version


class StateFormatError(ValueError):
    """Raised when bytes are not a valid serialised ModelState."""


@dataclass(frozen=True, eq=False)
class ModelState:
    """Immutable model state at one model version.

    centers: float64 (k, d); weights: float64 (k,) decayed number of rows each centre has
    absorbed; sq_sums: float64 (k,) decayed sum of their squared distances to the centre;
    version: number of model messages applied; scaler: the per-feature standardization when the
    model measures distances in standardized units (centres stay in original units).
    """

    centers: np.ndarray
    weights: np.ndarray
    sq_sums: np.ndarray
    version: int
    scaler: Scaler | None = None

    @classmethod
    def initial(
        cls,
        centers: np.ndarray,
        weights: np.ndarray | None = None,
        version: int = 1,
        scaler: Scaler | None = None,
    ) -> ModelState:
        """State right after an `init`: given centres, zero (or given) weights."""
        c = np.array(centers, dtype=np.float64, order="C", copy=True)
        if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] < 1:
            raise ValueError(f"centers must be a non-empty (k, d) array, got shape {c.shape}")
        if not np.isfinite(c).all():
            raise ValueError("centers contain NaN or infinity")
        k = c.shape[0]
        w = np.zeros(k) if weights is None else np.array(weights, dtype=np.float64, copy=True)
        if w.shape != (k,) or not np.isfinite(w).all() or np.any(w < 0):
            raise ValueError(f"weights must be {k} finite non-negative numbers")
        if scaler is not None and scaler.d != c.shape[1]:
            raise ValueError(f"scaler has {scaler.d} features, centres have {c.shape[1]}")
        c.setflags(write=False)
        w.setflags(write=False)
        return cls(c, w, np.zeros(k), version, scaler)

    @property
    def k(self) -> int:
        """Number of clusters."""
        return int(self.centers.shape[0])

    @property
    def d(self) -> int:
        """Number of features."""
        return int(self.centers.shape[1])

    def rms(self) -> np.ndarray:
        """Running RMS distance of each cluster's members to its centre.

        A cluster with no distance history yet borrows the model-wide RMS, so scores stay
        meaningful right after initialisation.
        """
        total_w = self.weights.sum()
        overall = np.sqrt(self.sq_sums.sum() / total_w) if total_w > 0 else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            per = np.sqrt(self.sq_sums / self.weights)
        known = (self.weights > 0) & (self.sq_sums > 0)
        return np.where(known, per, overall)

    def equals(self, other: ModelState) -> bool:
        """True when both states are bit-identical."""
        return (
            self.version == other.version
            and self.centers.shape == other.centers.shape
            and self.centers.tobytes() == other.centers.tobytes()
            and self.weights.tobytes() == other.weights.tobytes()
            and self.sq_sums.tobytes() == other.sq_sums.tobytes()
            and (self.scaler is None) == (other.scaler is None)
            and (self.scaler is None or other.scaler is None or self.scaler.equals(other.scaler))
        )

    def to_bytes(self) -> bytes:
        """Serialise: little-endian header plus raw float64 arrays."""
        fmt = _FORMAT if self.scaler is None else _FORMAT_SCALED
        header = _HEADER.pack(_MAGIC, fmt, 0, 0, self.k, self.d, self.version)
        parts = [
            header,
            self.centers.astype("<f8").tobytes(),
            self.weights.astype("<f8").tobytes(),
            self.sq_sums.astype("<f8").tobytes(),
        ]
        if self.scaler is not None:
            sc = self.scaler
            parts += [
                np.float64(sc.weight).astype("<f8").tobytes(),
                sc.mean.astype("<f8").tobytes(),
                sc.m2.astype("<f8").tobytes(),
            ]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelState:
        """Inverse of to_bytes; raises StateFormatError on anything malformed."""
        if len(data) < _HEADER.size:
            raise StateFormatError(f"model state too short ({len(data)} bytes)")
        magic, fmt, _, _, k, d, version = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise StateFormatError("not a streamkm model state (bad magic)")
        if fmt not in (_FORMAT, _FORMAT_SCALED):
            raise StateFormatError(f"unsupported model state format {fmt}")
        expected = _HEADER.size + 8 * (k * d + 2 * k) + (8 * (1 + 2 * d) if fmt == 2 else 0)
        if k < 1 or d < 1 or len(data) != expected:
            raise StateFormatError(f"model state has {len(data)} bytes, expected {expected}")
        body = np.frombuffer(data, "<f8", offset=_HEADER.size).astype(np.float64)
        centers = body[: k * d].reshape(k, d)
        weights = body[k * d : k * d + k]
        sq = body[k * d + k : k * d + 2 * k]
        if not (np.isfinite(body).all() and np.all(weights >= 0) and np.all(sq >= 0)):
            raise StateFormatError("model state holds non-finite or negative values")
        scaler = None
        if fmt == _FORMAT_SCALED:
            rest = body[k * d + 2 * k :]
            try:
                scaler = Scaler(float(rest[0]), rest[1 : 1 + d], rest[1 + d :])
            except ValueError as exc:
                raise StateFormatError(f"model state has an invalid scaler: {exc}") from None
        for arr in (centers, weights, sq):
            arr.setflags(write=False)
        return cls(centers, weights, sq, int(version), scaler)
