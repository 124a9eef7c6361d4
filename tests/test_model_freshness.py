"""The shared model under a backlog and before it exists (issue 13): fresh labels, no silent wait."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from kafka_helpers import consume_records, produce_records
from sklearn.metrics import adjusted_rand_score
from test_service import running, settings_for, wait_labeled

from stream.codec import encode_json_records

pytestmark = pytest.mark.integration


async def test_a_topic_of_only_invalid_records_is_dead_lettered_in_full_with_no_model(
    broker, new_topic, caplog
):
    topic = await new_topic(partitions=2)
    values = [orjson.dumps({"id": i, "features": [float(i), 1.0]}) for i in range(3000)]
    values += [b"not json"] * 50
    await produce_records(broker.bootstrap, topic, values)
    s = settings_for(broker, topic, dim=3)  # a first start with the wrong --dim
    async with running(s) as service:
        await wait_labeled(service, len(values))
        assert not service.replica.ready  # no valid record, so no model was ever made
        ready, why = service.readiness()
        assert not ready and "no valid record yet" in why and "wrong_dimension 3000" in why
        service._no_valid_warned = 0.0
        service._warn_if_nothing_valid()
        assert await _all_committed(service, len(values))
    assert service.labeled == 0 and service.invalid == len(values)
    dead = await consume_records(broker.bootstrap, s.dlq, len(values))
    reasons = [dict(r.headers)["streamkm.error.reason"] for r in dead]
    assert reasons.count(b"wrong_dimension") == 3000 and reasons.count(b"invalid_json") == 50
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("no valid record so far" in m and "wrong_dimension 3000" in m for m in errors)


async def _all_committed(service, total: int, timeout: float = 10.0) -> bool:
    """Whether the committed offsets of the partitions (all from 0) add up to every record."""
    consumer = service.consumer
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        committed = [await consumer.committed(tp) or 0 for tp in consumer.assignment()]
        if sum(committed) == total:
            return True
        await asyncio.sleep(0.2)
    return False


# --- a drifting stream, live and as a backlog -------------------------------------------------

N_RECORDS, LAST = 60_000, 10_000


def drifting_stream(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four blobs; two of them travel toward the other two and end 7 noise widths from them."""
    rng = np.random.default_rng(seed)
    start = np.array([[0.0, 0.0], [0.0, 30.0], [60.0, 0.0], [60.0, 30.0]])
    truth = rng.integers(0, 4, N_RECORDS)
    progress = np.linspace(0.0, 1.0, N_RECORDS)
    moving = truth >= 2
    X = start[truth] + rng.normal(size=(N_RECORDS, 2))
    X[moving, 0] -= progress[moving] * 53.0
    return X.astype(np.float32), truth


async def _labels_of_last(broker, new_topic, live: bool) -> float:
    X, truth = drifting_stream()
    values = encode_json_records(X)
    topic = await new_topic(partitions=1)
    s = settings_for(
        broker,
        topic,
        k=4,
        warmup=1024,
        half_life=5000.0,
        max_batch=4096,
        refit_every=2048,
        refit_interval=1.0,
    )
    if not live:
        await _produce_fast(broker.bootstrap, topic, values)
    async with running(s) as service:
        if live:
            await _produce_paced(broker.bootstrap, topic, values, rate=8000.0)
        await wait_labeled(service, N_RECORDS, timeout=120)
        staleness = service.metrics.model_staleness_records._value.get()
    out = await consume_records(broker.bootstrap, s.output_topic, N_RECORDS, timeout=60)
    labels = np.empty(N_RECORDS, np.int64)
    for rec in out:
        body = orjson.loads(rec.value)
        labels[body["id"]] = body["cluster"]
    assert staleness <= s.max_staleness
    return adjusted_rand_score(truth[-LAST:], labels[-LAST:])


async def _produce_fast(bootstrap, topic, values):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, v, partition=0) for v in values]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _produce_paced(bootstrap, topic, values, rate):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    try:
        t0, chunk, futures = time.monotonic(), 200, []
        for start in range(0, len(values), chunk):
            due = t0 + start / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            futures += [
                await producer.send(topic, v, partition=0) for v in values[start : start + chunk]
            ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@pytest.mark.slow
async def test_a_drifting_backlog_is_labeled_as_well_as_the_live_feed(
    broker, new_topic, record_property
):
    live = await _labels_of_last(broker, new_topic, live=True)
    backlog = await _labels_of_last(broker, new_topic, live=False)
    record_property("ari_live", live)
    record_property("ari_backlog", backlog)
    print(f"ARI of the last {LAST:,}: live {live:.3f}, backlog {backlog:.3f}")
    assert backlog >= live - 0.05
