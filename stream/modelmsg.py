"""Messages of the `<model>.updates` log and the replica that applies them (DESIGN.md §2).

Pure code, no Kafka: every instance feeds the log's records, in order, to a `ModelReplica`, and
all replicas hold bit-identical state at the same log offset.

Wire format: the Kafka header `streamkm.type` says `init` or `stats`; the value is
- init:  4-byte little-endian length L, L bytes of JSON parameters
         ({"k", "d", "half_life", "reseed_fraction", "origin"}), then a serialised ModelState;
- stats: a serialised engine.BatchStats.

Snapshots (`<model>.snapshots`, compacted, key = model name) hold the state a replica reached and
the updates-log offset it covers: 4 bytes `SKSN`, a format byte, 3 reserved bytes, the next
updates offset (u64 little-endian), then the body of an `init` record (parameters and state).
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

import numpy as np
import orjson

from engine import BatchStats, ModelState, StateFormatError, StatsFormatError, apply_update
from engine.update import DEFAULT_RESEED_FRACTION, UpdateResult

log = logging.getLogger("streamkm.model")

TYPE_HEADER = "streamkm.type"
INIT = "init"
STATS = "stats"
_LEN = struct.Struct("<I")
_SNAPSHOT = struct.Struct("<4sBxxxQ")
_SNAPSHOT_MAGIC = b"SKSN"


class ModelMessageError(ValueError):
    """A record of the updates log that cannot be decoded."""


@dataclass(frozen=True)
class ModelParams:
    """Parameters fixed by a model's `init`: every replica applies updates with these."""

    k: int
    d: int
    half_life: float | None
    reseed_fraction: float = DEFAULT_RESEED_FRACTION


def encode_init(state: ModelState, params: ModelParams, origin: str) -> bytes:
    """Value of an `init` record: parameters and the initial state."""
    meta = orjson.dumps(
        {
            "k": params.k,
            "d": params.d,
            "half_life": params.half_life,
            "reseed_fraction": params.reseed_fraction,
            "origin": origin,
        }
    )
    return _LEN.pack(len(meta)) + meta + state.to_bytes()


def decode_init(value: bytes) -> tuple[ModelParams, ModelState, str]:
    """Inverse of encode_init; raises ModelMessageError."""
    try:
        (size,) = _LEN.unpack_from(value)
        meta = orjson.loads(value[_LEN.size : _LEN.size + size])
        params = ModelParams(
            k=int(meta["k"]),
            d=int(meta["d"]),
            half_life=None if meta["half_life"] is None else float(meta["half_life"]),
            reseed_fraction=float(meta["reseed_fraction"]),
        )
        state = ModelState.from_bytes(value[_LEN.size + size :])
    except (struct.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ModelMessageError(f"undecodable init record: {exc}") from exc
    if (state.k, state.d) != (params.k, params.d):
        raise ModelMessageError(
            f"init says k={params.k}, d={params.d} but holds {state.k}x{state.d}"
        )
    return params, state, str(meta.get("origin", ""))


@dataclass(frozen=True)
class Snapshot:
    """A replica's model at one point of the updates log."""

    params: ModelParams
    state: ModelState
    next_offset: int  # the updates-log offset after the last record the state includes
    origin: str = ""


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """Value of a `<model>.snapshots` record."""
    header = _SNAPSHOT.pack(_SNAPSHOT_MAGIC, 1, snapshot.next_offset)
    return header + encode_init(snapshot.state, snapshot.params, snapshot.origin)


def decode_snapshot(value: bytes) -> Snapshot:
    """Inverse of encode_snapshot; raises ModelMessageError."""
    if len(value) < _SNAPSHOT.size:
        raise ModelMessageError(f"snapshot too short ({len(value)} bytes)")
    magic, fmt, next_offset = _SNAPSHOT.unpack_from(value)
    if magic != _SNAPSHOT_MAGIC or fmt != 1:
        raise ModelMessageError("not a streamkm snapshot (bad magic or format)")
    params, state, origin = decode_init(value[_SNAPSHOT.size :])
    return Snapshot(params, state, int(next_offset), origin)


def message_type(headers: object) -> str | None:
    """The `streamkm.type` header of a record, if any."""
    for key, val in headers or ():  # type: ignore[attr-defined]
        if key == TYPE_HEADER:
            return bytes(val).decode("ascii", "replace")
    return None


@dataclass
class AppliedUpdate:
    """What applying one log record did."""

    kind: str
    result: UpdateResult | None = None  # set for applied stats


class ModelReplica:
    """The model as the updates log defines it, up to the last offset applied.

    Rules, identical on every replica: the first valid `init` creates the model and later
    ones are ignored; `stats` before the init, or of another shape, are ignored; anything
    undecodable is skipped with a warning. The version is the number of messages applied.
    """

    def __init__(self) -> None:
        self.params: ModelParams | None = None
        self.state: ModelState | None = None
        self.next_offset = 0  # log offset after the last record seen
        self.updated_at: float | None = None  # timestamp (s) of the last applied record

    def restore(self, snapshot: Snapshot) -> None:
        """Start from a snapshot instead of the beginning of the log."""
        self.params = snapshot.params
        self.state = snapshot.state
        self.next_offset = snapshot.next_offset

    def snapshot(self, origin: str = "") -> Snapshot:
        """The current model as a snapshot (raises if the model does not exist yet)."""
        if self.state is None or self.params is None:
            raise RuntimeError("the model has no init yet")
        return Snapshot(self.params, self.state, self.next_offset, origin)

    @property
    def ready(self) -> bool:
        """True once an init has been applied."""
        return self.state is not None

    @property
    def version(self) -> int:
        """Model messages applied so far."""
        return 0 if self.state is None else self.state.version

    def apply(
        self, offset: int, kind: str | None, value: bytes | None, timestamp_ms: int | None = None
    ) -> AppliedUpdate | None:
        """Apply the log record at `offset`; returns what it did, or None if it was ignored."""
        if offset < self.next_offset:
            return None  # already applied (a re-read after a seek)
        self.next_offset = offset + 1
        try:
            applied = self._apply(kind, value or b"")
        except (ModelMessageError, StatsFormatError, StateFormatError, ValueError) as exc:
            log.warning("skipping updates-log record at offset %d: %s", offset, exc)
            return None
        if applied is not None and timestamp_ms is not None:
            self.updated_at = timestamp_ms / 1000.0
        return applied

    def _apply(self, kind: str | None, value: bytes) -> AppliedUpdate | None:
        if kind == INIT:
            if self.state is not None:
                return None
            params, state, origin = decode_init(value)
            self.params = params
            self.state = ModelState(state.centers, state.weights, state.sq_sums, 1)
            log.info("model initialised by %s: k=%d, d=%d", origin or "?", params.k, params.d)
            return AppliedUpdate(INIT)
        if kind == STATS:
            if self.state is None or self.params is None:
                return None
            stats = BatchStats.from_bytes(value)
            if (stats.k, stats.d) != (self.params.k, self.params.d):
                raise ModelMessageError(
                    f"stats for k={stats.k}, d={stats.d} do not fit the model "
                    f"(k={self.params.k}, d={self.params.d})"
                )
            result = apply_update(
                self.state, stats, self.params.half_life, self.params.reseed_fraction
            )
            self.state = result.state
            if result.reseeded:
                log.info("re-seeded dead clusters %s", list(result.reseeded))
            return AppliedUpdate(STATS, result)
        raise ModelMessageError(f"unknown record type {kind!r}")

    def centers(self) -> np.ndarray:
        """Current centres (raises if the model does not exist yet)."""
        if self.state is None:
            raise RuntimeError("the model has no init yet")
        return self.state.centers
