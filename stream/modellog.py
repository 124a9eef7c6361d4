"""The model's topics on Kafka: follow `<model>.updates` into a replica; read and write snapshots."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from engine import BatchStats, ModelState

from .modelmsg import (
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
    message_type,
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
    ) -> None:
        self.topic = topic
        self.replica = replica
        self._tp = TopicPartition(topic, 0)
        # A short fetch wait: an instance pacing a backlog (--max-staleness) waits for its own
        # statistics to come back, and the embedded broker holds a fetch for its full wait.
        self._consumer = AIOKafkaConsumer(
            **client_kwargs,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=_FOLLOW_WAIT_MS,
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
            applied = self.replica.apply(
                rec.offset, message_type(rec.headers), rec.value, rec.timestamp
            )
            if applied is not None and self._on_applied is not None:
                self._on_applied(self.replica, applied)
        high = self._consumer.highwater(self._tp)
        if high is not None:
            self.lag = max(0, high - self.replica.next_offset)
        if records:
            async with self._changed:
                self._changed.notify_all()
        return bool(records)


async def publish_init(
    producer: AIOKafkaProducer, topic: str, state: ModelState, params: ModelParams, origin: str
) -> None:
    """Append an `init` record; only the first init in the log takes effect."""
    await producer.send_and_wait(
        topic,
        value=encode_init(state, params, origin),
        partition=0,
        headers=[(TYPE_HEADER, INIT.encode())],
    )


async def publish_stats(producer: AIOKafkaProducer, topic: str, stats: BatchStats) -> int:
    """Append a `stats` record of merged mini-batch statistics; returns its log offset."""
    meta = await producer.send_and_wait(
        topic, value=stats.to_bytes(), partition=0, headers=[(TYPE_HEADER, STATS.encode())]
    )
    return int(meta.offset)


async def publish_snapshot(
    producer: AIOKafkaProducer, topic: str, model: str, snapshot: Snapshot
) -> None:
    """Write a snapshot keyed by the model name (the topic is compacted on that key)."""
    await producer.send_and_wait(topic, key=model.encode(), value=encode_snapshot(snapshot))


async def read_latest_snapshot(
    topic: str, model: str, client_kwargs: dict[str, Any], timeout: float = 15.0
) -> Snapshot | None:
    """The snapshot of `model` covering the most updates, or None.

    Reads the whole topic: Kafka compacts it to about one record per model, and brokers that
    do not compact (the embedded one) still give the right answer, only slower.
    """
    consumer = AIOKafkaConsumer(**client_kwargs, enable_auto_commit=False, fetch_max_wait_ms=10)
    await consumer.start()
    best: Snapshot | None = None
    try:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return None
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        key = model.encode()
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=100, max_records=1000)
            for records in batches.values():
                for rec in records:
                    if rec.key != key or not rec.value:
                        continue
                    try:
                        snap = decode_snapshot(rec.value)
                    except ModelMessageError as exc:
                        log.warning("skipping snapshot at %s:%d: %s", topic, rec.offset, exc)
                        continue
                    if best is None or snap.next_offset >= best.next_offset:
                        best = snap
            if await _at_end(consumer, tps):
                return best
        log.warning("snapshots topic %s not fully read after %.0fs", topic, timeout)
        return best
    finally:
        await consumer.stop()


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
) -> tuple[UpdateLog, Snapshot | None]:
    """Bring `replica` to the model as every instance sees it now: the latest snapshot, then
    the updates log after it, read to its end. Returns the started log (the caller follows or
    stops it) and the snapshot it started from."""
    snapshot = await read_latest_snapshot(snapshots_topic, model, client_kwargs)
    if snapshot is not None:
        replica.restore(snapshot)
        log.info(
            "loaded snapshot of model %r: version %d, updates offset %d",
            model,
            snapshot.state.version,
            snapshot.next_offset,
        )
    updates = UpdateLog(updates_topic, client_kwargs, replica, on_applied)
    await updates.start()
    try:
        await updates.catch_up()
    except BaseException:
        await updates.stop()
        raise
    return updates, snapshot
