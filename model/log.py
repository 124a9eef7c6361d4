"""The model's topics on Kafka: follow `<model>.updates` into a replica; read and write snapshots."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

from engine import BatchStats, ModelState

from .messages import (
    INIT,
    STATS,
    TYPE_HEADER,
    AppliedUpdate,
    ModelMessageError,
    ModelParams,
    ModelReplica,
    Snapshot,
    decode_snapshot,
    encode_init,
    encode_snapshot,
)
from .parts import (
    PART_BYTES,
    Part,
    PartError,
    new_split_id,
    part_headers,
    read_part,
    split_body,
)

log = logging.getLogger("streamkm.modellog")

_FOLLOW_WAIT_MS = 10
OnApplied = Callable[[ModelReplica, AppliedUpdate], None]


class UpdateLog:
    """Follows one model's updates log with a group-less consumer and applies every record."""

    def __init__(
        self,
        topic: str,
        client_kwargs: dict[str, Any],
        replica: ModelReplica,
        on_applied: OnApplied | None = None,
        fetch_wait_ms: int = _FOLLOW_WAIT_MS,
    ) -> None:
        self.topic = topic
        self.replica = replica
        self._tp = TopicPartition(topic, 0)
        # A short fetch wait by default: an instance pacing a backlog (--max-staleness) waits
        # for its own statistics to come back, and the embedded broker holds a fetch for its
        # full wait (Apache Kafka answers as soon as a record arrives).
        self._consumer = AIOKafkaConsumer(
            **client_kwargs,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=fetch_wait_ms,
        )
        self._on_applied = on_applied
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.lag = 0

    async def start(self) -> None:
        """Connect and position at the replica's next offset (0 for an empty replica)."""
        await self._consumer.start()
        self._consumer.assign([self._tp])
        if self.replica.next_offset:
            self._consumer.seek(self._tp, self.replica.next_offset)
        else:
            await self._consumer.seek_to_beginning(self._tp)

    async def catch_up(self, timeout: float = 30.0) -> None:
        """Apply every record up to the log's current end."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = await self._poll(200)
            high = self._consumer.highwater(self._tp)
            if not got and high is not None and self.replica.next_offset >= high:
                return
        log.warning("updates log %s not fully read after %.0fs; continuing", self.topic, timeout)

    def follow(self) -> None:
        """Keep applying new records in a background task until `stop`."""
        self._task = asyncio.create_task(self._follow(), name="updates-log")

    async def wait_until(self, predicate: Callable[[ModelReplica], bool], timeout: float) -> bool:
        """Wait until the replica satisfies `predicate` (True) or the timeout passes (False)."""
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: predicate(self.replica)), timeout
                )
            except TimeoutError:
                return False
        return True

    async def wake(self) -> None:
        """Make waiters check their predicate again: something it reads besides the replica
        changed (for the service, the acknowledgement of its own statistics)."""
        async with self._changed:
            self._changed.notify_all()

    async def stop(self) -> None:
        """Stop following and close the consumer."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def _follow(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._poll(500)
                backoff = 0.1
            except KafkaError as exc:
                log.warning("reading %s failed (%s); retrying in %.1fs", self.topic, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _poll(self, timeout_ms: int) -> bool:
        batches = await self._consumer.getmany(self._tp, timeout_ms=timeout_ms, max_records=1000)
        records = batches.get(self._tp, [])
        for rec in records:
            applied = self.replica.apply_record(rec.offset, rec.headers, rec.value, rec.timestamp)
            if applied is not None and self._on_applied is not None:
                self._on_applied(self.replica, applied)
        high = self._consumer.highwater(self._tp)
        if high is not None:
            self.lag = max(0, high - self.replica.next_offset)
        if records:
            async with self._changed:
                self._changed.notify_all()
        return bool(records)


async def send_alone(
    producer: AIOKafkaProducer,
    topic: str,
    value: bytes | None,
    *,
    key: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
    partition: int = 0,
) -> RecordMetadata:
    """Send one record in a record batch of its own and wait until it is written.

    Kafka's size limit (`message.max.bytes`) applies to a record batch: two parts of a split
    message in one batch would break it, whatever the producer's batch size. Waiting for each
    part also keeps any produce request from carrying two of them.
    """
    batch = producer.create_batch()
    batch.append(timestamp=None, key=key, value=value, headers=headers or [])
    batch.close()
    future = await producer.send_batch(batch, topic, partition=partition)
    return await future


async def publish_message(producer: AIOKafkaProducer, topic: str, kind: str, body: bytes) -> int:
    """Append a model message to the updates log, in parts if it is larger than one record;
    returns the offset it takes effect at (its last part's)."""
    parts = split_body(body)
    if len(parts) == 1:
        meta = await send_alone(producer, topic, body, headers=[(TYPE_HEADER, kind.encode())])
        return int(meta.offset)
    split = new_split_id()
    for i, chunk in enumerate(parts, 1):
        headers = part_headers(kind, Part(split, i, len(parts)))
        meta = await send_alone(producer, topic, chunk, headers=headers)
    return int(meta.offset)


async def publish_init(
    producer: AIOKafkaProducer, topic: str, state: ModelState, params: ModelParams, origin: str
) -> int:
    """Append an `init` message; only the first init in the log takes effect. Returns its
    offset."""
    return await publish_message(producer, topic, INIT, encode_init(state, params, origin))


async def publish_stats(producer: AIOKafkaProducer, topic: str, stats: BatchStats) -> int:
    """Append a `stats` message of merged mini-batch statistics; returns its log offset."""
    return await publish_message(producer, topic, STATS, stats.to_bytes())


# --- snapshots ---------------------------------------------------------------------------------
#
# A snapshot that fits in one record is written as before: key = the model name. A larger one is
# written as parts (stream/modelparts.py), each under a key of its own, `<model>/<split>/<i>`
# (model names cannot hold "/"), with the header `streamkm.snapshot.offset` giving the updates
# offset it covers. Its last part completes it: a reader uses only snapshots whose n parts are
# all there, so a writer that dies half-way leaves the previous snapshot the latest. The writer
# then tombstones the parts of snapshots that the new one supersedes (stream/snapshots.py).

SNAPSHOT = "snapshot"  # the streamkm.type of a snapshot's parts
OFFSET_HEADER = "streamkm.snapshot.offset"


@dataclass(frozen=True)
class SnapshotParts:
    """The records of one snapshot written in parts."""

    split: str
    next_offset: int
    keys: tuple[bytes, ...]


async def publish_snapshot(
    producer: AIOKafkaProducer, topic: str, model: str, snapshot: Snapshot
) -> SnapshotParts | None:
    """Write a snapshot: one record keyed by the model name (the topic is compacted on that
    key) when it fits, else its parts in order; returns the parts written (None for one
    record)."""
    value = encode_snapshot(snapshot)
    if len(value) <= PART_BYTES:
        await producer.send_and_wait(topic, key=model.encode(), value=value)
        return None
    split, chunks = new_split_id(), split_body(value)
    keys = []
    for i, chunk in enumerate(chunks, 1):
        key = f"{model}/{split}/{i}".encode()
        headers = part_headers(SNAPSHOT, Part(split, i, len(chunks)))
        headers.append((OFFSET_HEADER, str(snapshot.next_offset).encode()))
        await send_alone(producer, topic, chunk, key=key, headers=headers)
        keys.append(key)
    return SnapshotParts(split, snapshot.next_offset, tuple(keys))


async def tombstone(
    producer: AIOKafkaProducer, topic: str, superseded: list[SnapshotParts]
) -> None:
    """Delete the parts of snapshots a newer complete one supersedes (null values: compaction
    removes them and the keys)."""
    futures = [
        await producer.send(topic, key=key, value=None, partition=0)
        for parts in superseded
        for key in parts.keys
    ]
    await asyncio.gather(*futures)


async def read_latest_snapshot(
    topic: str, model: str, client_kwargs: dict[str, Any], timeout: float = 15.0
) -> Snapshot | None:
    """The complete snapshot of `model` covering the most updates, or None."""
    latest, _ = await scan_snapshots(topic, model, client_kwargs, timeout)
    return latest


async def scan_snapshots(
    topic: str, model: str, client_kwargs: dict[str, Any], timeout: float = 15.0
) -> tuple[Snapshot | None, list[SnapshotParts]]:
    """The complete snapshot of `model` covering the most updates (or None), and every
    snapshot of it whose parts are still on the topic, complete or not.

    Reads the whole topic, keeping the last value of each key: Kafka compacts it to about one
    snapshot per model, and brokers that do not compact (the embedded one) still give the right
    answer, only slower. Of two snapshots covering the same updates, the later one wins.
    """
    consumer = AIOKafkaConsumer(**client_kwargs, enable_auto_commit=False, fetch_max_wait_ms=10)
    await consumer.start()
    scan = _SnapshotScan(topic, model)
    try:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return None, []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=100, max_records=1000)
            for records in batches.values():
                for rec in records:
                    scan.add(rec.offset, rec.key, rec.value, rec.headers)
            if await _at_end(consumer, tps):
                break
        else:
            log.warning("snapshots topic %s not fully read after %.0fs", topic, timeout)
        return scan.latest(), scan.part_sets()
    finally:
        await consumer.stop()


class _SnapshotScan:
    """The snapshots of one model found on its topic, records fed in order."""

    def __init__(self, topic: str, model: str) -> None:
        self.topic = topic
        self._key = model.encode()
        self._prefix = self._key + b"/"
        self._seen = 0
        self._whole: list[tuple[int, int, Snapshot]] = []  # (next offset, order, snapshot)
        # The live parts: key -> (part, next offset, value, order).
        self._parts: dict[bytes, tuple[Part, int, bytes, int]] = {}

    def add(self, offset: int, key: bytes | None, value: bytes | None, headers: Any) -> None:
        self._seen += 1
        if key == self._key:
            if not value:
                return
            try:
                snap = decode_snapshot(value)
            except ModelMessageError as exc:
                log.warning("skipping snapshot at %s:%d: %s", self.topic, offset, exc)
                return
            self._whole.append((snap.next_offset, self._seen, snap))
        elif key is not None and key.startswith(self._prefix):
            if value is None:
                self._parts.pop(key, None)
                return
            try:
                part = read_part(headers)
                covers = dict(headers or ()).get(OFFSET_HEADER)
                if part is None or covers is None:
                    raise PartError(f"no {OFFSET_HEADER} or split headers")
                self._parts[key] = (part, int(bytes(covers)), value, self._seen)
            except (PartError, ValueError) as exc:
                log.warning("skipping snapshot part at %s:%d: %s", self.topic, offset, exc)

    def _groups(self) -> dict[str, list[tuple[bytes, Part, int, bytes, int]]]:
        groups: dict[str, list[tuple[bytes, Part, int, bytes, int]]] = {}
        for key, (part, covers, value, seen) in self._parts.items():
            groups.setdefault(part.split, []).append((key, part, covers, value, seen))
        return groups

    def part_sets(self) -> list[SnapshotParts]:
        """Every snapshot with parts on the topic, complete or not."""
        return [
            SnapshotParts(split, min(g[2] for g in group), tuple(g[0] for g in group))
            for split, group in self._groups().items()
        ]

    def latest(self) -> Snapshot | None:
        """The complete snapshot covering the most updates (the later one on a tie)."""
        candidates: list[tuple[int, int, Snapshot | list[bytes]]] = list(self._whole)
        for group in self._groups().values():
            group.sort(key=lambda g: g[1].index)
            count = group[0][1].count
            complete = [g[1].index for g in group] == list(range(1, count + 1)) and all(
                (g[1].count, g[2]) == (count, group[0][2]) for g in group
            )
            if complete:
                candidates.append((group[0][2], max(g[4] for g in group), [g[3] for g in group]))
        for _, _, found in sorted(candidates, key=lambda c: (c[0], c[1]), reverse=True):
            if isinstance(found, Snapshot):
                return found
            try:
                return decode_snapshot(b"".join(found))
            except ModelMessageError as exc:
                log.warning("skipping a snapshot in parts on %s: %s", self.topic, exc)
        return None


async def _at_end(consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> bool:
    """True once every partition's position has reached its high watermark."""
    for tp in tps:
        high = consumer.highwater(tp)
        if high is None or await consumer.position(tp) < high:
            return False
    return True


async def open_model(
    replica: ModelReplica,
    updates_topic: str,
    snapshots_topic: str,
    model: str,
    client_kwargs: dict[str, Any],
    on_applied: OnApplied | None = None,
    fetch_wait_ms: int = _FOLLOW_WAIT_MS,
) -> tuple[UpdateLog, Snapshot | None]:
    """Bring `replica` to the model as every instance sees it now: the latest snapshot, then
    the updates log after it, read to its end. Returns the started log (the caller follows or
    stops it, its fetches waiting up to `fetch_wait_ms` for records) and the snapshot it
    started from."""
    snapshot = await read_latest_snapshot(snapshots_topic, model, client_kwargs)
    if snapshot is not None:
        replica.restore(snapshot)
        log.info(
            "loaded snapshot of model %r: version %d, updates offset %d",
            model,
            snapshot.state.version,
            snapshot.next_offset,
        )
    updates = UpdateLog(updates_topic, client_kwargs, replica, on_applied, fetch_wait_ms)
    await updates.start()
    try:
        await updates.catch_up()
    except BaseException:
        await updates.stop()
        raise
    return updates, snapshot
