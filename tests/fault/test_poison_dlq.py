"""A dead letter the DLQ cannot take: nothing is committed past it, and the service keeps going.

Tansu accepts every produce request (any topic name streamkm allows, any size, internal topics),
so the one dead-letter write that fails for good here is a record larger than the service's
producer may send (4 MiB): the codec rejects it as `too_large` and the DLQ send is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import orjson
import pytest
from aiokafka import TopicPartition
from fault_helpers import produce_large, read_all
from kafka_helpers import unique_name

from stream.config import Settings
from stream.service import Service

pytestmark = pytest.mark.integration

BEFORE, AFTER = 300, 5000
MAX_BATCH = 100
POISON = b"[" + b"1," * (2_600_000) + b"1]"  # about 5 MiB of JSON


@contextlib.asynccontextmanager
async def running(settings: Settings):
    service = Service(settings)
    task = asyncio.create_task(service.run())
    try:
        yield service, task
    finally:
        service.stopping.set()
        await asyncio.wait_for(task, 30)


async def test_an_undeliverable_dead_letter_is_never_committed_and_fetching_stops(
    broker, new_topic, caplog
):
    topic = await new_topic(partitions=1)
    good = lambda i: (b"%d" % i, orjson.dumps({"id": i, "features": [i % 5, 1.0]}))  # noqa: E731
    await produce_large(
        broker.bootstrap,
        topic,
        [good(i) for i in range(BEFORE)] + [(b"poison", POISON)]
        + [good(i) for i in range(BEFORE, BEFORE + AFTER)],
    )  # fmt: skip
    s = Settings(
        bootstrap=broker.bootstrap, input_topic=topic, output_topic=f"{topic}.labels",
        group=unique_name("g"), model=unique_name("m"), k=2, dim=2, warmup=100,
        max_batch=MAX_BATCH, metrics_port=0, session_timeout=3.0,
    )  # fmt: skip
    tp = TopicPartition(topic, 0)
    with caplog.at_level(logging.INFO, logger="streamkm"):
        async with running(s) as (service, task):
            while service.labeled < BEFORE:
                assert not task.done(), task
                await asyncio.sleep(0.05)
            await asyncio.sleep(4.0)  # several retries with backoff
            assert not task.done()
            ready, reason = service.readiness()
            committed = await service.consumer.committed(tp)
            position = await service.consumer.position(tp)
    labels = await read_all(broker.bootstrap, s.output_topic)
    repeats = len(labels) - len({orjson.loads(r.value)["id"] for r in labels})
    reports = [r for r in caplog.records if "unavailable" in r.getMessage()]
    print(
        f"\ncommitted {committed}, position {position}, poison at offset {BEFORE}; "
        f"{len(labels)} labels ({repeats} repeated), ready={ready} ({reason!r}), "
        f"{len(reports)} reports: {[r.getMessage()[:120] for r in reports]}"
    )
    assert committed <= BEFORE  # the poison record (offset BEFORE) is still to be handled
    assert not ready and "kafka" in reason
    assert len(reports) == 1
    # While the head batch cannot be delivered, fetching waits instead of piling up records.
    assert position - committed <= 2 * MAX_BATCH
