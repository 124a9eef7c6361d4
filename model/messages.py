"""Messages of the `<model>.updates` log and the replica that applies them (DESIGN.md §2).

Pure code, no Kafka: every instance feeds the log's records, in order, to a `ModelReplica`, and
all replicas hold bit-identical state at the same log offset.

Wire format: the Kafka header `streamkm.type` says `init`, `replace` or `stats`; the body is
- init:    4-byte little-endian length L, L bytes of JSON parameters
           ({"k", "d", "half_life", "reseed_fraction", "fields", "scale", "origin"}), then a
           serialised ModelState (with its scaler when "scale" is "standard");
- replace: the same body as an init (`streamkm model import --replace`);
- stats:   a serialised engine.BatchStats.
A body larger than one Kafka record is split across several (stream/modelparts.py) and applied
at the offset of its last part.

Snapshots (`<model>.snapshots`, compacted) hold the state a replica reached and the updates-log
offset it covers: 4 bytes `SKSN`, a format byte, 3 reserved bytes, the next updates offset (u64
little-endian), then the body of an `init` record (parameters and state) whose JSON also carries
`"history"`: the replica's ModelHistory, so that `model show` and `/model` list re-seeds and
replaces from before the snapshot. Format 2, written only while split messages are half read,
puts their parts between the two: a u64 length P, then P bytes of `encode_pending`.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from engine import BatchStats, ModelState, StateFormatError, StatsFormatError, apply_update
from engine.update import DEFAULT_RESEED_FRACTION, UpdateResult

from .parts import (
    Part,
    PartAssembler,
    PartError,
    PendingMessage,
    decode_pending,
    encode_pending,
    read_part,
)

log = logging.getLogger("streamkm.model")

TYPE_HEADER = "streamkm.type"
INIT = "init"
REPLACE = "replace"
STATS = "stats"
RESEED = "reseed"  # an event kind only, never a record type
_LEN = struct.Struct("<I")
_SNAPSHOT = struct.Struct("<4sBxxxQ")
_PENDING_LEN = struct.Struct("<Q")
_SNAPSHOT_MAGIC = b"SKSN"
# Re-seeds and replaces are rare; the last 100 say enough about label stability.
HISTORY_LENGTH = 100


class ModelMessageError(ValueError):
    """A record of the updates log that cannot be decoded."""


@dataclass(frozen=True)
class ModelParams:
    """Parameters fixed by a model's `init`: every replica applies updates with these."""

    k: int
    d: int
    half_life: float | None
    reseed_fraction: float = DEFAULT_RESEED_FRACTION
    # The schema (DESIGN.md §7): named fields `path[:transform]` (None: events carry vectors)
    # and the scaling ("none", or "standard" with a scaler in the state).
    fields: tuple[str, ...] | None = None
    scale: str = "none"

    def to_json(self) -> dict[str, Any]:
        """The parameters as an `init` record and a model file write them."""
        return {
            "k": self.k,
            "d": self.d,
            "half_life": self.half_life,
            "reseed_fraction": self.reseed_fraction,
            # The schema (DESIGN.md §7); centres stay in original units, scaled or not.
            "fields": None if self.fields is None else list(self.fields),
            "scale": self.scale,
        }

    def schema_difference(self, fields: tuple[str, ...] | None, scale: str) -> str | None:
        """How a schema differs from this model's, in words; None when it is the same."""
        if fields != self.fields:

            def show(f: tuple[str, ...] | None) -> str:
                return "a features vector (no --fields)" if f is None else "--fields " + ",".join(f)

            return f"the model reads {show(self.fields)}; this instance reads {show(fields)}"
        if scale != self.scale:
            return f"the model has --scale {self.scale}; this instance has --scale {scale}"
        return None


def encode_init(
    state: ModelState, params: ModelParams, origin: str, extra: dict[str, Any] | None = None
) -> bytes:
    """Value of an `init` (or `replace`) record: parameters and the initial state."""
    meta = orjson.dumps(
        {
            **params.to_json(),
            "origin": origin,
            **(extra or {}),
        }
    )
    return _LEN.pack(len(meta)) + meta + state.to_bytes()


def decode_init(value: bytes) -> tuple[ModelParams, ModelState, str]:
    """Inverse of encode_init; raises ModelMessageError."""
    params, state, meta = _decode_body(value)
    return params, state, str(meta.get("origin", ""))


def _decode_body(value: bytes) -> tuple[ModelParams, ModelState, dict[str, Any]]:
    try:
        (size,) = _LEN.unpack_from(value)
        meta = orjson.loads(value[_LEN.size : _LEN.size + size])
        params = ModelParams(
            k=int(meta["k"]),
            d=int(meta["d"]),
            half_life=None if meta["half_life"] is None else float(meta["half_life"]),
            reseed_fraction=float(meta["reseed_fraction"]),
            fields=None if meta.get("fields") is None else tuple(str(f) for f in meta["fields"]),
            scale=str(meta.get("scale", "none")),
        )
        state = ModelState.from_bytes(value[_LEN.size + size :])
    except (struct.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ModelMessageError(f"undecodable init record: {exc}") from exc
    if (state.k, state.d) != (params.k, params.d):
        raise ModelMessageError(
            f"init says k={params.k}, d={params.d} but holds {state.k}x{state.d}"
        )
    if params.fields is not None and len(params.fields) != params.d:
        raise ModelMessageError(f"init names {len(params.fields)} fields for d={params.d}")
    if (params.scale == "standard") != (state.scaler is not None):
        raise ModelMessageError(f"init says scale={params.scale!r} but its state disagrees")
    return params, state, meta


@dataclass(frozen=True)
class ModelEvent:
    """A change of the model that gives labels a new meaning: an init, a re-seed, a replace."""

    version: int  # the model version the event produced
    kind: str  # INIT, RESEED or REPLACE
    clusters: tuple[int, ...]  # the clusters whose centres changed meaning (all, for init/replace)
    offset: int  # updates-log offset of the record
    at: float | None = None  # record timestamp, seconds since the epoch

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON object."""
        return {
            "version": self.version,
            "kind": self.kind,
            "clusters": list(self.clusters),
            "offset": self.offset,
            "at": self.at,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ModelEvent:
        """Inverse of to_json."""
        at = obj.get("at")
        return cls(
            version=int(obj["version"]),
            kind=str(obj["kind"]),
            clusters=tuple(int(c) for c in obj["clusters"]),
            offset=int(obj["offset"]),
            at=None if at is None else float(at),
        )


@dataclass(frozen=True)
class ModelHistory:
    """What happened to a model so far, beyond its current state; part of every snapshot."""

    events: tuple[ModelEvent, ...] = ()  # the last HISTORY_LENGTH events, oldest first
    reseeds: int = 0  # clusters re-seeded in total
    replaces: int = 0  # replace records applied in total
    base_offset: int | None = None  # offset of the init or replace the centres descend from
    updated_at: float | None = None  # timestamp (s) of the last applied record

    def to_json(self) -> dict[str, Any]:
        """The history as a JSON object."""
        return {
            "events": [e.to_json() for e in self.events],
            "reseeds": self.reseeds,
            "replaces": self.replaces,
            "base_offset": self.base_offset,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ModelHistory:
        """Inverse of to_json; raises ModelMessageError."""
        try:
            base, at = obj.get("base_offset"), obj.get("updated_at")
            return cls(
                events=tuple(ModelEvent.from_json(e) for e in obj.get("events", ())),
                reseeds=int(obj.get("reseeds", 0)),
                replaces=int(obj.get("replaces", 0)),
                base_offset=None if base is None else int(base),
                updated_at=None if at is None else float(at),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ModelMessageError(f"undecodable model history: {exc}") from exc


@dataclass(frozen=True)
class Snapshot:
    """A replica's model at one point of the updates log."""

    params: ModelParams
    state: ModelState
    next_offset: int  # the updates-log offset after the last record the state includes
    origin: str = ""
    history: ModelHistory = ModelHistory()
    # Split messages begun before next_offset and not finished: the replica's parts of them.
    pending: tuple[PendingMessage, ...] = ()


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """The snapshot as bytes (format 1, or 2 when it holds parts of unfinished messages)."""
    fmt = 2 if snapshot.pending else 1
    header = _SNAPSHOT.pack(_SNAPSHOT_MAGIC, fmt, snapshot.next_offset)
    if snapshot.pending:
        pending = encode_pending(snapshot.pending)
        header += _PENDING_LEN.pack(len(pending)) + pending
    extra = {"history": snapshot.history.to_json()}
    return header + encode_init(snapshot.state, snapshot.params, snapshot.origin, extra)


def decode_snapshot(value: bytes) -> Snapshot:
    """Inverse of encode_snapshot; raises ModelMessageError."""
    if len(value) < _SNAPSHOT.size:
        raise ModelMessageError(f"snapshot too short ({len(value)} bytes)")
    magic, fmt, next_offset = _SNAPSHOT.unpack_from(value)
    if magic != _SNAPSHOT_MAGIC or fmt not in (1, 2):
        raise ModelMessageError("not a streamkm snapshot (bad magic or format)")
    start = _SNAPSHOT.size
    pending: tuple[PendingMessage, ...] = ()
    if fmt == 2:
        try:
            (size,) = _PENDING_LEN.unpack_from(value, start)
            start += _PENDING_LEN.size
            pending = decode_pending(value[start : start + size])
        except (struct.error, PartError) as exc:
            raise ModelMessageError(f"undecodable snapshot: {exc}") from exc
        start += size
    params, state, meta = _decode_body(value[start:])
    history = meta.get("history")
    # Snapshots written before histories existed have none: start an empty one.
    hist = ModelHistory() if history is None else ModelHistory.from_json(history)
    return Snapshot(params, state, int(next_offset), str(meta.get("origin", "")), hist, pending)


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
    event: ModelEvent | None = None  # set when labels changed meaning (init, re-seed, replace)


class ModelReplica:
    """The model as the updates log defines it, up to the last offset applied.

    Rules, identical on every replica: the first valid `init` creates the model and later
    ones are ignored; a `replace` swaps parameters and state for its own (any k and d; it
    creates the model if there is none); `stats` before the model exists, or of another shape
    (such as those labeled with the centres a replace just swapped out), are ignored; anything
    undecodable is skipped with a warning. A message split across records is applied at its
    last part (stream/modelparts.py). The version is the number of messages applied.
    """

    def __init__(self) -> None:
        self.params: ModelParams | None = None
        self.state: ModelState | None = None
        self.next_offset = 0  # log offset after the last record seen
        self.updated_at: float | None = None  # timestamp (s) of the last applied record
        self.events: deque[ModelEvent] = deque(maxlen=HISTORY_LENGTH)
        self.reseeds = 0  # clusters re-seeded in total
        self.replaces = 0  # replace records applied in total
        self.base_offset: int | None = None  # the init or replace the centres descend from
        self._parts = PartAssembler()

    def restore(self, snapshot: Snapshot) -> None:
        """Start from a snapshot instead of the beginning of the log."""
        self.params = snapshot.params
        self.state = snapshot.state
        self.next_offset = snapshot.next_offset
        self._parts = PartAssembler(snapshot.pending)
        h = snapshot.history
        self.events = deque(h.events, maxlen=HISTORY_LENGTH)
        self.reseeds, self.replaces = h.reseeds, h.replaces
        self.base_offset, self.updated_at = h.base_offset, h.updated_at

    def history(self) -> ModelHistory:
        """Events, counts and last update time, as kept in snapshots."""
        return ModelHistory(
            tuple(self.events), self.reseeds, self.replaces, self.base_offset, self.updated_at
        )

    def snapshot(self, origin: str = "") -> Snapshot:
        """The current model as a snapshot (raises if the model does not exist yet)."""
        if self.state is None or self.params is None:
            raise RuntimeError("the model has no init yet")
        return Snapshot(
            self.params,
            self.state,
            self.next_offset,
            origin,
            self.history(),
            self._parts.pending(),
        )

    @property
    def pending_parts(self) -> int:
        """Parts held of split messages not yet complete."""
        return sum(len(p.parts) for p in self._parts.pending())

    @property
    def ready(self) -> bool:
        """True once an init has been applied."""
        return self.state is not None

    @property
    def version(self) -> int:
        """Model messages applied so far."""
        return 0 if self.state is None else self.state.version

    def apply_record(
        self, offset: int, headers: object, value: bytes | None, timestamp_ms: int | None = None
    ) -> AppliedUpdate | None:
        """Apply the log record at `offset` as Kafka returned it, headers and all."""
        try:
            part = read_part(headers)  # type: ignore[arg-type]
        except PartError as exc:
            if offset >= self.next_offset:
                log.warning("skipping updates-log record at offset %d: %s", offset, exc)
                self._advance(offset)
            return None
        return self.apply(offset, message_type(headers), value, timestamp_ms, part)

    def apply(
        self,
        offset: int,
        kind: str | None,
        value: bytes | None,
        timestamp_ms: int | None = None,
        part: Part | None = None,
    ) -> AppliedUpdate | None:
        """Apply the log record at `offset` (a whole message, or `part` of one); returns what
        it did, or None if it was ignored or its message is not complete yet."""
        if offset < self.next_offset:
            return None  # already applied (a re-read after a seek)
        self._advance(offset)
        at = None if timestamp_ms is None else timestamp_ms / 1000.0
        try:
            if part is not None:
                body = self._parts.add(offset, kind, part, value or b"")
                if body is None:
                    return None
                value = body
            applied = self._apply(kind, value or b"", offset, at)
        except (ModelMessageError, StatsFormatError, StateFormatError, ValueError) as exc:
            log.warning("skipping updates-log record at offset %d: %s", offset, exc)
            return None
        if applied is not None:
            if at is not None:
                self.updated_at = at
            if applied.event is not None:
                self.events.append(applied.event)
        return applied

    def _advance(self, offset: int) -> None:
        """Move past the record at `offset`: every record counts for the crash rule."""
        self.next_offset = offset + 1
        self._parts.evict(offset)

    def _apply(
        self, kind: str | None, value: bytes, offset: int, at: float | None
    ) -> AppliedUpdate | None:
        if kind == INIT:
            if self.state is not None:
                return None
            return self._swap(INIT, value, offset, at)
        if kind == REPLACE:
            return self._swap(REPLACE, value, offset, at)
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
            if not result.reseeded:
                return AppliedUpdate(STATS, result)
            self.reseeds += len(result.reseeded)
            log.warning(
                "model version %d re-seeded dead clusters %s: their labels now mean new centres",
                result.state.version,
                list(result.reseeded),
            )
            event = ModelEvent(result.state.version, RESEED, result.reseeded, offset, at)
            return AppliedUpdate(STATS, result, event)
        raise ModelMessageError(f"unknown record type {kind!r}")

    def _swap(self, kind: str, value: bytes, offset: int, at: float | None) -> AppliedUpdate:
        """Apply an init or a replace: the record's parameters and state become the model."""
        params, state, origin = decode_init(value)
        version = self.version + 1
        self.params = params
        self.state = ModelState(state.centers, state.weights, state.sq_sums, version, state.scaler)
        self.base_offset = offset
        if kind == REPLACE:
            self.replaces += 1
            log.warning(
                "model replaced by %s at version %d: k=%d, d=%d; every label now means a new centre",
                origin or "?",
                version,
                params.k,
                params.d,
            )
        else:
            log.info("model initialised by %s: k=%d, d=%d", origin or "?", params.k, params.d)
        event = ModelEvent(version, kind, tuple(range(params.k)), offset, at)
        return AppliedUpdate(kind, event=event)

    def centers(self) -> np.ndarray:
        """Current centres (raises if the model does not exist yet)."""
        if self.state is None:
            raise RuntimeError("the model has no init yet")
        return self.state.centers
