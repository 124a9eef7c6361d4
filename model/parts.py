"""Model messages larger than one Kafka record: split into parts, reassembled in log order.

A stock Apache Kafka broker refuses a record batch over 1,000,000 bytes (`message.max.bytes`), and
managed services have the same kind of limit; an init, a stats message or a snapshot of a big
model is larger (k = 600, d = 1024: 4.9 MB of centres). Such a body is written as n records of
at most PART_BYTES each, every one in a record batch of its own, with the headers

    streamkm.type   the message's type, as on an unsplit record
    streamkm.split  an id unique to the message (32 hex digits)
    streamkm.part   "i/n", i = 1..n

Bodies that fit in one record are written exactly as before, with no split headers. Pure code,
no Kafka: every replica feeds the parts it reads, in log order, to a `PartAssembler`, which
decides from the log alone, so all replicas decide the same:

- A message is complete, and applied, at the offset of its last part.
- Parts of different writers may interleave (several instances publish at once): parts are
  grouped by split id. Within a message, part i + 1 must follow part i: a repeated part (a
  producer retry) is ignored; a gap, or a part that disagrees on n or the type, discards the
  message, and its later parts are ignored.
- A message whose writer died half-way is never applied. Its parts are discarded once the log
  has moved PENDING_SPAN offsets past its first part, or, oldest first, when the parts held
  exceed PENDING_BYTES, so memory stays bounded.
- The parts held belong to the replica's state and travel in its snapshots (`encode_pending`),
  so a replica restored from a snapshot taken in the middle of a message completes it exactly
  when the others do, without reading the log before the snapshot's offset.
"""

from __future__ import annotations

import logging
import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import orjson

log = logging.getLogger("streamkm.model")

SPLIT_HEADER = "streamkm.split"
PART_HEADER = "streamkm.part"
# Kafka's default limit on a record batch (`message.max.bytes`); every record streamkm writes to
# its model topics stays below it.
MAX_RECORD_BYTES = 1_000_000
# The most body bytes in one record. Kafka's 1,000,000-byte limit counts the whole record batch;
# key, headers and framing take well under 1 KB, so the margin also covers a codec that cannot
# compress float64 data and adds its own framing (zstd and lz4 add < 0.1% to random bytes).
PART_BYTES = 900_000
# Parts in one message, at most: 57 MB. The largest model served (k = 1024, d = 2048) makes
# messages of 16.8 MB (19 parts); a replica refuses to hold more for one message.
MAX_PARTS = 64
# A half-written message is dropped once the log has moved this many offsets past its first
# part. One message's parts are written back to back, one round trip each, while other writers
# add at most as many of theirs: 10,000 leaves room for hundreds of instances publishing the
# largest messages at once, and forgets a crashed writer's parts after minutes, not days.
PENDING_SPAN = 10_000
# Bytes of parts held, at most (oldest messages dropped first): 15 of the largest messages.
PENDING_BYTES = 256 * 1024 * 1024
_LEN = struct.Struct("<I")


class MessageTooLarge(ValueError):
    """A model message too large to be read back even when split."""


class PartError(ValueError):
    """A record's split headers are malformed."""


@dataclass(frozen=True)
class Part:
    """Where a record stands in a split message."""

    split: str  # the message's id
    index: int  # 1..count
    count: int


@dataclass(frozen=True)
class PendingMessage:
    """A split message whose first parts have been read, and not yet its last."""

    split: str
    kind: str | None
    count: int
    first: int  # log offset of its first part
    parts: tuple[bytes, ...]


def new_split_id() -> str:
    """An id no other message will carry."""
    return uuid.uuid4().hex


def split_body(body: bytes, size: int = PART_BYTES) -> list[bytes]:
    """The body in parts of at most `size` bytes; one part if it fits."""
    if len(body) <= size:
        return [body]
    count = -(-len(body) // size)
    if count > MAX_PARTS:
        raise MessageTooLarge(
            f"a model message of {len(body):,} bytes needs {count} parts of {size:,} bytes; "
            f"at most {MAX_PARTS} are read back"
        )
    return [body[i : i + size] for i in range(0, len(body), size)]


def part_headers(kind: str, part: Part) -> list[tuple[str, bytes]]:
    """Kafka headers of one part of a split message."""
    return [
        ("streamkm.type", kind.encode()),
        (SPLIT_HEADER, part.split.encode()),
        (PART_HEADER, f"{part.index}/{part.count}".encode()),
    ]


def read_part(headers: Iterable[tuple[str, bytes]] | None) -> Part | None:
    """The record's place in a split message, or None for an unsplit record."""
    split = text = None
    for key, val in headers or ():
        if key == SPLIT_HEADER:
            split = bytes(val).decode("ascii", "replace")
        elif key == PART_HEADER:
            text = bytes(val).decode("ascii", "replace")
    if split is None:
        return None
    index, _, count = (text or "").partition("/")
    if not (split and index.isdigit() and count.isdigit()):
        raise PartError(f"split record with a bad {PART_HEADER} header {text!r}")
    part = Part(split, int(index), int(count))
    if not 1 <= part.index <= part.count:
        raise PartError(f"split record says it is part {text!r}")
    return part


class PartAssembler:
    """Parts of the split messages a replica has begun to read, by split id in log order."""

    def __init__(self, pending: Iterable[PendingMessage] = ()) -> None:
        self._pending: dict[str, PendingMessage] = {}
        self._bytes = 0
        for p in sorted(pending, key=lambda p: p.first):
            self._pending[p.split] = p
            self._bytes += sum(len(b) for b in p.parts)

    def pending(self) -> tuple[PendingMessage, ...]:
        """The messages begun and not finished, oldest first (what a snapshot keeps)."""
        return tuple(self._pending.values())

    @property
    def held_bytes(self) -> int:
        """Bytes of parts held."""
        return self._bytes

    def evict(self, offset: int) -> None:
        """Forget messages begun more than PENDING_SPAN offsets before `offset`."""
        while self._pending:
            oldest = next(iter(self._pending.values()))
            if offset - oldest.first <= PENDING_SPAN:
                return
            self._drop(oldest, f"the log moved {PENDING_SPAN:,} offsets past its first part")

    def add(self, offset: int, kind: str | None, part: Part, value: bytes) -> bytes | None:
        """Take the part read at `offset`; returns the message's body once it is complete."""
        held = self._pending.get(part.split)
        if held is None:
            if part.index != 1:
                return None  # a part of a message dropped, or begun before this replica
            if part.count > MAX_PARTS:
                log.warning(
                    "skipping a split message of %d parts at offset %d (at most %d are read)",
                    part.count,
                    offset,
                    MAX_PARTS,
                )
                return None
            held = PendingMessage(part.split, kind, part.count, offset, ())
        elif part.index <= len(held.parts):
            return None  # a repeated part: the writer's producer retried a send
        elif part.index != len(held.parts) + 1 or (kind, part.count) != (held.kind, held.count):
            self._drop(held, f"part {part.index}/{part.count} ({kind}) came at offset {offset}")
            return None
        parts = (*held.parts, value)
        self._bytes += len(value)
        if len(parts) == held.count:
            self._pending.pop(held.split, None)
            self._bytes -= sum(len(b) for b in parts)
            return b"".join(parts)
        self._pending[held.split] = PendingMessage(
            held.split, held.kind, held.count, held.first, parts
        )
        while self._bytes > PENDING_BYTES:
            oldest = next(iter(self._pending.values()))
            self._drop(oldest, f"more than {PENDING_BYTES:,} bytes of parts were held")
        return None

    def _drop(self, held: PendingMessage, why: str) -> None:
        self._pending.pop(held.split)
        self._bytes -= sum(len(b) for b in held.parts)
        log.warning(
            "discarding split %s message %s begun at offset %d (%d of %d parts read): %s",
            held.kind,
            held.split,
            held.first,
            len(held.parts),
            held.count,
            why,
        )


def encode_pending(pending: Iterable[PendingMessage]) -> bytes:
    """Messages begun, as bytes: 4-byte length L, L bytes of JSON, then every part's bytes."""
    pending = tuple(pending)
    meta = orjson.dumps(
        [
            {
                "split": p.split,
                "kind": p.kind,
                "count": p.count,
                "first": p.first,
                "sizes": [len(b) for b in p.parts],
            }
            for p in pending
        ]
    )
    return b"".join([_LEN.pack(len(meta)), meta, *(b for p in pending for b in p.parts)])


def decode_pending(data: bytes) -> tuple[PendingMessage, ...]:
    """Inverse of encode_pending; raises PartError."""
    try:
        (size,) = _LEN.unpack_from(data)
        meta = orjson.loads(data[_LEN.size : _LEN.size + size])
        offset = _LEN.size + size
        out = []
        for m in meta:
            parts = []
            for n in m["sizes"]:
                if n < 0 or offset + n > len(data):
                    raise PartError("pending parts run past the end of the snapshot")
                parts.append(bytes(data[offset : offset + n]))
                offset += n
            kind = m["kind"]
            out.append(
                PendingMessage(
                    str(m["split"]),
                    None if kind is None else str(kind),
                    int(m["count"]),
                    int(m["first"]),
                    tuple(parts),
                )
            )
    except (struct.error, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise PartError(f"undecodable pending parts: {exc}") from exc
    if offset != len(data):
        raise PartError(f"pending parts hold {len(data) - offset} bytes too many")
    return tuple(out)
