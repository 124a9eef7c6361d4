"""Produce and consume helpers for integration tests against the embedded broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import ConsumerRecord, RecordMetadata


def unique_name(prefix: str = "t") -> str:
    """A topic or group name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Rec:
    """A record to produce; ``partition`` None lets the key choose."""

    value: bytes | None
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=tuple)
    timestamp_ms: int | None = None
    partition: int | None = None


async def produce_records(
    bootstrap: str, topic: str, records: Sequence[Rec | bytes]
) -> list[RecordMetadata]:
    """Send records one by one (in order) and return their metadata once all are acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = []
        for r in records:
            rec = r if isinstance(r, Rec) else Rec(value=r)
            futures.append(
                await producer.send(
                    topic,
                    rec.value,
                    key=rec.key,
                    partition=rec.partition,
                    timestamp_ms=rec.timestamp_ms,
                    headers=list(rec.headers) or None,
                )
            )
        return [await f for f in futures]
    finally:
        await producer.stop()


async def consume_records(
    bootstrap: str, topic: str, n: int, timeout: float = 15.0
) -> list[ConsumerRecord]:
    """Read exactly ``n`` records from the start of every partition, without a group.

    Fails with a message saying how many arrived if fewer than ``n`` come within ``timeout``, and
    if more than ``n`` are there once ``n`` have been read (within a short grace read).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: list[ConsumerRecord] = []
    try:
        partitions = await _partitions(consumer, topic, timeout)
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for records in batch.values():
                out.extend(records)
        if len(out) < n:
            raise AssertionError(f"expected {n} records on {topic!r}, got {len(out)} in {timeout}s")
        extra = await consumer.getmany(timeout_ms=100)
        surplus = sum(len(v) for v in extra.values())
        if len(out) > n or surplus:
            raise AssertionError(f"expected {n} records on {topic!r}, found {len(out) + surplus}")
    finally:
        await consumer.stop()
    return sorted(out, key=lambda r: (r.partition, r.offset))


async def _partitions(consumer: AIOKafkaConsumer, topic: str, timeout: float) -> set[int]:
    """The topic's partition ids, refreshing metadata until the topic shows up."""
    deadline = time.monotonic() + timeout
    while True:
        await consumer._client.force_metadata_update()
        found = consumer.partitions_for_topic(topic)
        if found:
            return set(found)
        if time.monotonic() >= deadline:
            raise AssertionError(f"topic {topic!r} did not appear within {timeout}s")


async def batch_codecs(bootstrap: str, topic: str) -> set[int]:
    """Codec ids (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd) of every record batch stored in topic.

    Raw Fetch requests, read batch by batch: consumers hide the codec.
    """
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    codecs: set[int] = set()
    try:
        await client.force_metadata_update()
        for partition in client.cluster.partitions_for_topic(topic) or ():
            node = client.cluster.leader_for_partition(TopicPartition(topic, partition))
            offset = 0
            while True:
                # Tansu answers a Fetch with max_wait 0 with no topics at all, even when data is
                # there: wait up to 100 ms.
                request = FetchRequest(
                    100, 1, 64 << 20, 0, [(topic, [(partition, offset, 64 << 20)])]
                )
                response = await client.send(node, request)
                ((_, ((_, error, high, *_, raw),)),) = response.topics
                assert error == 0, f"fetch of {topic}[{partition}] failed with error {error}"
                start = offset
                records = MemoryRecords(raw)
                while records.has_next():
                    batch = records.next_batch()
                    codecs.add(batch.compression_type)
                    offset = batch.next_offset
                if offset == start or offset >= high:
                    break
    finally:
        await client.close()
    return codecs


async def all_records(bootstrap: str, topic: str) -> list:
    """Every record of a one-partition topic, tombstones included, up to its high watermark."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    out: list = []
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        while True:
            out += (await consumer.getmany(tp, timeout_ms=300)).get(tp, [])
            high = consumer.highwater(tp)
            if high is not None and await consumer.position(tp) >= high:
                return out
    finally:
        await consumer.stop()
