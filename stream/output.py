"""Writing one batch's results: labels to the output topic, rejects to the dead-letter topic."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from .codec import Reject, dlq_headers


def output_partitions(records: Sequence[ConsumerRecord], n_partitions: int) -> np.ndarray:
    """Output partition of each record: its input partition (modulo the output's count).

    Every record of one key sits in one input partition, so they all land in one output
    partition, in order, whatever partitioner the input's producer used; with equal partition
    counts the output is co-partitioned with the input (the Kafka Streams convention), and no
    key needs hashing.
    """
    return np.fromiter((r.partition for r in records), np.int64, len(records)) % n_partitions


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
