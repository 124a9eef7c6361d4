"""Hand-written contenders for streamkm, as teams write them, on the same broker and topics.

Each contender is a coroutine that drains ``count`` records of a preloaded topic of JSON records
``{"id", "features", "truth"}`` (as ``stream.produce.produce_blobs`` writes them) and returns a
``Contender``: time from its start (client creation, group join) and from the first record
fetched, both to the last output acknowledged.

- ``per_record``: a group consumer with auto-commit; per record ``json.loads``, a fitted
  scikit-learn ``KMeans.predict`` on a 1-row array, ``json.dumps`` of the output dict and
  ``send_and_wait``.
- ``batched``: ``getmany(max_records=4096)``; per batch orjson per record, NumPy stacking,
  ``MiniBatchKMeans.partial_fit`` then ``predict``, one ``send`` per record (all futures awaited
  at the end of the batch) and one commit.
- ``consume_ceiling`` / ``produce_ceiling``: what the broker does with no processing at all.

The consumers use the settings the embedded broker needs (docs/embedded-broker.md: session
timeout 3 s, heartbeat 1 s) and producers ``acks="all"``, as the service does; everything else is
aiokafka's default, as a team would leave it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sklearn.cluster import KMeans, MiniBatchKMeans

from stream.produce import BlobStream, encode_block

__all__ = [
    "Contender",
    "batched",
    "blob_values",
    "consume_ceiling",
    "fit_sample",
    "per_record",
    "produce_ceiling",
]

PARTITIONS = 4
SESSION_TIMEOUT_MS, HEARTBEAT_MS = 3000, 1000
BATCHED_MAX_RECORDS = 4096
CEILING_MAX_RECORDS = 10_000
DEADLINE_S = 600.0


@dataclass(frozen=True)
class Contender:
    """One drain by one contender."""

    name: str
    count: int
    startup_s: float  # contender started -> first record fetched
    total_s: float  # contender started -> last output acknowledged

    @property
    def steady_s(self) -> float:
        return self.total_s - self.startup_s

    @property
    def steady_rate(self) -> float:
        """Records/s from the first record fetched to the last output acknowledged."""
        return self.count / self.steady_s

    @property
    def total_rate(self) -> float:
        """Records/s including start-up."""
        return self.count / self.total_s


def fit_sample(dim: int, k: int, n: int = 10_000, seed: int = 0) -> KMeans:
    """A scikit-learn KMeans fitted beforehand on ``n`` records of the same blob stream."""
    X = np.concatenate([b.X for b in BlobStream(dim, k, seed).blocks(n)]).astype(np.float64)
    return KMeans(n_clusters=k, n_init=1, random_state=0).fit(X)


def _group_consumer(bootstrap: str, topic: str, **extra: object) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"baseline-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=HEARTBEAT_MS,
        **extra,
    )


def _check_deadline(t0: float, done: int, count: int, name: str) -> None:
    if time.perf_counter() - t0 > DEADLINE_S:
        raise RuntimeError(f"{name} drained {done} of {count} records in {DEADLINE_S:.0f} s")


async def per_record(
    bootstrap: str, topic: str, out_topic: str, count: int, model: KMeans
) -> Contender:
    """Decode, label, encode and send each record on its own, waiting for every send."""
    t0 = time.perf_counter()
    consumer = _group_consumer(bootstrap, topic, enable_auto_commit=True)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    await consumer.start()
    t_first = None
    try:
        done = 0
        async for msg in consumer:
            if t_first is None:
                t_first = time.perf_counter()
            event = json.loads(msg.value)
            x = np.array([event["features"]], dtype=np.float64)
            cluster = int(model.predict(x)[0])
            distance = float(np.linalg.norm(x[0] - model.cluster_centers_[cluster]))
            out = {"id": event["id"], "cluster": cluster, "distance": distance}
            await producer.send_and_wait(
                out_topic, json.dumps(out).encode(), key=msg.key, timestamp_ms=msg.timestamp
            )
            done += 1
            if done >= count:
                break
            if done % 1000 == 0:
                _check_deadline(t0, done, count, "per-record")
        t_end = time.perf_counter()
    finally:
        await consumer.stop()
        await producer.stop()
    assert t_first is not None
    return Contender("per-record", count, t_first - t0, t_end - t0)


async def batched(bootstrap: str, topic: str, out_topic: str, count: int, k: int) -> Contender:
    """Fetch up to 4096 records, label them as one array, send per record, commit per batch."""
    t0 = time.perf_counter()
    consumer = _group_consumer(bootstrap, topic, enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    model = MiniBatchKMeans(n_clusters=k, random_state=0, n_init=1)
    await producer.start()
    await consumer.start()
    t_first = None
    try:
        done = 0
        while done < count:
            batches = await consumer.getmany(timeout_ms=500, max_records=BATCHED_MAX_RECORDS)
            records = [r for rs in batches.values() for r in rs]
            if not records:
                _check_deadline(t0, done, count, "batched")
                continue
            if t_first is None:
                t_first = time.perf_counter()
            events = [orjson.loads(r.value) for r in records]
            X = np.array([e["features"] for e in events], dtype=np.float64)
            model.partial_fit(X)
            labels = model.predict(X)
            distances = np.linalg.norm(X - model.cluster_centers_[labels], axis=1)
            futures = [
                await producer.send(
                    out_topic,
                    orjson.dumps({"id": e["id"], "cluster": c, "distance": d}),
                    key=r.key,
                    timestamp_ms=r.timestamp,
                )
                for r, e, c, d in zip(
                    records, events, labels.tolist(), distances.tolist(), strict=True
                )
            ]
            await asyncio.gather(*futures)
            await consumer.commit()
            done += len(records)
        t_end = time.perf_counter()
    finally:
        await consumer.stop()
        await producer.stop()
    assert t_first is not None
    return Contender("batched", count, t_first - t0, t_end - t0)


async def consume_ceiling(bootstrap: str, topic: str, count: int) -> Contender:
    """A group-less consumer of all partitions reading ``count`` records without processing."""
    t0 = time.perf_counter()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    t_first = None
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        done = 0
        while done < count:
            t_call = time.perf_counter()
            batches = await consumer.getmany(timeout_ms=500, max_records=CEILING_MAX_RECORDS)
            n = sum(len(rs) for rs in batches.values())
            if n and t_first is None:
                t_first = t_call  # the first fetch holds up to 10,000 records: it counts
            done += n
            _check_deadline(t0, done, count, "consume ceiling")
        t_end = time.perf_counter()
    finally:
        await consumer.stop()
    assert t_first is not None
    return Contender("consume ceiling", count, t_first - t0, t_end - t0)


async def produce_ceiling(bootstrap: str, topic: str, values: list[bytes]) -> Contender:
    """Send prepared values round-robin as one ``send_batch`` per partition and slice of 4096.

    Start-up here is the producer's connection; the steady part is from the first send on.
    """
    t0 = time.perf_counter()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    t_first = time.perf_counter()
    try:
        pending: list[asyncio.Future[object]] = []
        now_ms = int(time.time() * 1000)  # BatchBuilder.append takes milliseconds
        for lo in range(0, len(values), BATCHED_MAX_RECORDS):
            for p in range(PARTITIONS):
                batch = producer.create_batch()
                for v in values[lo + p : lo + BATCHED_MAX_RECORDS : PARTITIONS]:
                    if batch.append(key=None, value=v, timestamp=now_ms) is None:
                        batch.close()
                        pending.append(await producer.send_batch(batch, topic, partition=p))
                        batch = producer.create_batch()
                        batch.append(key=None, value=v, timestamp=now_ms)
                batch.close()
                pending.append(await producer.send_batch(batch, topic, partition=p))
            if len(pending) > 256:  # bound the unacknowledged batches, as produce_blobs does
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        t_end = time.perf_counter()
    finally:
        await producer.stop()
    return Contender("produce ceiling", len(values), t_first - t0, t_end - t0)


def blob_values(count: int, dim: int, k: int, seed: int = 0) -> list[bytes]:
    """The JSON values produce_blobs would write, encoded up front."""
    return [v for b in BlobStream(dim, k, seed).blocks(count) for v in encode_block(b, "json")]
