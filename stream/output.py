"""Writing one batch's results: labels to the output topic, rejects to the dead-letter topic."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from .codec import Reject, dlq_headers

_NO_HEADERS: list[tuple[str, bytes]] = []  # read, never written, by aiokafka's batch builder


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

    Each output record keeps its input record's key, timestamp and headers (a W3C
    `traceparent`, say, reaches whoever reads the labels).
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
            # Headers go in as a list only; records without any share one empty list.
            headers = list(rec.headers) if rec.headers else _NO_HEADERS
            # BatchBuilder.append takes milliseconds (docs/embedded-broker.md); None: batch full.
            while (
                batch.append(key=rec.key, value=values[i], timestamp=rec.timestamp, headers=headers)
                is None
            ):
                if not batch.record_count():
                    raise ValueError(
                        f"an output record of {len(values[i])} bytes exceeds the batch size"
                    )
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
        batch.close()
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


async def send_rejects(
    producer: AIOKafkaProducer,
    topic: str,
    records: Sequence[ConsumerRecord],
    rejects: Sequence[Reject],
) -> list[asyncio.Future[Any]]:
    """Send each rejected record, unchanged, to the dead-letter topic with the reason headers.

    The input record's own headers come first; any whose key is one of streamkm's DLQ header
    names is dropped, so those names are unambiguous.
    """
    futures = []
    for rej in rejects:
        rec = records[rej.index]
        own = dlq_headers(rej.reason, rej.message, rec.topic, rec.partition, rec.offset)
        names = {name for name, _ in own}
        headers = [h for h in rec.headers if h[0] not in names] + own
        futures.append(
            await producer.send(
                topic, key=rec.key, value=rec.value, headers=headers, timestamp_ms=rec.timestamp
            )
        )
    return futures
