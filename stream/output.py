"""Writing one batch's results: labels to the output topic, rejects to the dead-letter topic."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from .codec import Reject, dlq_headers
from .produce import murmur2_partitions


def output_partitions(records: Sequence[ConsumerRecord], n_partitions: int) -> np.ndarray:
    """Partition of each output record: Kafka's default for its key, so per-key order holds.

    Records without a key keep their input partition (modulo the output's partition count),
    which keeps their relative order too.
    """
    keys = [r.key for r in records]
    parts = np.empty(len(records), np.int64)
    keyed = [i for i, k in enumerate(keys) if k is not None]
    if keyed:
        parts[keyed] = murmur2_partitions([keys[i] for i in keyed], n_partitions)
    unkeyed = [i for i, k in enumerate(keys) if k is None]
    if unkeyed:
        parts[unkeyed] = [records[i].partition % n_partitions for i in unkeyed]
    return parts


async def send_labels(
    producer: AIOKafkaProducer,
    topic: str,
    records: Sequence[ConsumerRecord],
    values: Sequence[bytes],
    partitions: np.ndarray,
) -> list[asyncio.Future[Any]]:
    """Send values as record batches, one per output partition; returns delivery futures.

    Each output record keeps its input record's key and timestamp.
    """
    futures: list[asyncio.Future[Any]] = []
    order = np.argsort(partitions, kind="stable")
    sorted_parts = partitions[order]
    bounds = np.flatnonzero(np.diff(sorted_parts)) + 1
    for group in np.split(order, bounds):
        if group.size == 0:
            continue
        partition = int(partitions[group[0]])
        batch = producer.create_batch()
        for i in group.tolist():
            rec = records[i]
            # BatchBuilder.append takes milliseconds (docs/embedded-broker.md).
            if batch.append(key=rec.key, value=values[i], timestamp=rec.timestamp) is None:
                batch.close()
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=rec.key, value=values[i], timestamp=rec.timestamp) is None:
                    raise ValueError(
                        f"an output record of {len(values[i])} bytes exceeds the batch size"
                    )
        batch.close()
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


async def send_rejects(
    producer: AIOKafkaProducer,
    topic: str,
    records: Sequence[ConsumerRecord],
    rejects: Sequence[Reject],
) -> list[asyncio.Future[Any]]:
    """Send each rejected record, unchanged, to the dead-letter topic with the reason headers."""
    futures = []
    for rej in rejects:
        rec = records[rej.index]
        headers = dlq_headers(rej.reason, rej.message, rec.topic, rec.partition, rec.offset)
        futures.append(
            await producer.send(
                topic, key=rec.key, value=rec.value, headers=headers, timestamp_ms=rec.timestamp
            )
        )
    return futures
