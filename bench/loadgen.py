"""A paced load generator whose record timestamps are the times the records were due.

Every record batch is built before the clock starts, stamped with the time its slice is
scheduled to go out; the run then only hands finished batches to the producer on schedule.
Building a batch record by record (aiokafka's ``BatchBuilder.append``) costs a few µs per
record: done on the fly, as ``stream.produce.produce_blobs(rate=...)`` does, it sits between a
record's timestamp and its arrival at the broker, and caps one process near 40,000 records/s.
A batch sent late keeps its scheduled timestamp, so any lateness of the generator counts in the
measured latency rather than hiding it (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer

from model.topics import partition_count
from stream.produce import BlobStream, encode_block, murmur2_partitions

# Build cost per record, taken generously, to put the start after the build (seconds).
_BUILD_S_PER_RECORD = 20e-6
_LEAD_S = 0.5


@dataclass(frozen=True)
class PacedRun:
    """What a paced run did."""

    count: int
    start_ms: float  # wall clock (ms) the first slice was due
    seconds: float  # first slice due -> last slice handed to the producer
    late_ms_max: float  # worst lateness of a slice against its schedule

    @property
    def rate(self) -> float:
        """Records per second actually offered."""
        return self.count / self.seconds if self.seconds > 0 else float("inf")


async def paced_load(
    bootstrap: str,
    topic: str,
    count: int,
    rate: float,
    *,
    dim: int,
    k: int,
    seed: int = 1,
    slices_per_s: float = 20.0,
) -> PacedRun:
    """Send ``count`` blob records (JSON) to ``topic`` at ``rate`` records/s, in
    ``slices_per_s`` slices a second, each record stamped with its slice's due time."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        n_parts = await partition_count(bootstrap, topic, {})
        slice_size = max(1, round(rate / slices_per_s))
        interval_ms = 1000.0 * slice_size / rate
        start_ms = time.time() * 1000 + 1000 * (_LEAD_S + _BUILD_S_PER_RECORD * count)
        slices = _build(producer, count, slice_size, n_parts, start_ms, interval_ms, dim, k, seed)
        if time.time() * 1000 > start_ms:
            raise RuntimeError("building the batches took longer than planned; start moved past")
        pending = []
        late_max = 0.0
        for i, batches in enumerate(slices):
            due_ms = start_ms + i * interval_ms
            await asyncio.sleep(max(0.0, (due_ms - time.time() * 1000) / 1000))
            late_max = max(late_max, time.time() * 1000 - due_ms)
            for partition, batch in batches:
                pending.append(await producer.send_batch(batch, topic, partition=partition))
            if len(pending) > 256:  # bound the batches held unacknowledged
                await asyncio.gather(*pending)
                pending.clear()
        seconds = (time.time() * 1000 - start_ms) / 1000
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return PacedRun(count=count, start_ms=start_ms, seconds=seconds, late_ms_max=late_max)


def _build(
    producer: AIOKafkaProducer,
    count: int,
    slice_size: int,
    n_parts: int,
    start_ms: float,
    interval_ms: float,
    dim: int,
    k: int,
    seed: int,
) -> list[list[tuple[int, object]]]:
    """Closed record batches, per slice and partition, stamped with the slice's due time."""
    keys: list[bytes] = []
    values: list[bytes] = []
    for block in BlobStream(dim, k, seed, 0.0, 0.0, "json").blocks(count):
        values += encode_block(block, "json")
        keys += [str(i).encode() for i in block.ids.tolist()]
    parts = murmur2_partitions(keys, n_parts).tolist()
    slices = []
    for i, lo in enumerate(range(0, count, slice_size)):
        stamp = int(start_ms + i * interval_ms)
        out = []
        for p in range(n_parts):
            batch = producer.create_batch()
            for j in range(lo, min(lo + slice_size, count)):
                if parts[j] != p:
                    continue
                if batch.append(key=keys[j], value=values[j], timestamp=stamp) is None:
                    batch.close()
                    out.append((p, batch))
                    batch = producer.create_batch()
                    batch.append(key=keys[j], value=values[j], timestamp=stamp)
            if batch.record_count():
                batch.close()
                out.append((p, batch))
        slices.append(out)
    return slices
