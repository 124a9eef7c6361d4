"""The service over a real broker: N records in, N labels out, bad ones dead-lettered, restartable."""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
import orjson
import pytest
from kafka_helpers import Rec, consume_records, produce_records, unique_name

from engine import assign
from stream.config import Settings
from stream.produce import produce_blobs
from stream.service import Service

pytestmark = pytest.mark.integration


def settings_for(broker, input_topic, **kw) -> Settings:
    base = dict(
        bootstrap=broker.bootstrap,
        input_topic=input_topic,
        output_topic=f"{input_topic}.labels",
        group=unique_name("g"),
        model=unique_name("m"),
        k=3,
        warmup=256,
        max_batch=1024,
        metrics_port=0,
        session_timeout=3.0,
        refit_every=512,
        refit_interval=0.2,
    )
    base.update(kw)
    return Settings(**base)


@contextlib.asynccontextmanager
async def running(settings: Settings):
    service = Service(settings)
    task = asyncio.create_task(service.run())
    try:
        yield service
    finally:
        service.stopping.set()
        await asyncio.wait_for(task, 30)


async def wait_labeled(service: Service, n: int, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while service.labeled + service.invalid < n:
        assert asyncio.get_running_loop().time() < deadline, (
            f"only {service.labeled} labeled + {service.invalid} invalid of {n}"
        )
        await asyncio.sleep(0.05)


async def test_every_record_gets_one_label_with_its_key_id_and_timestamp(broker, new_topic):
    topic = await new_topic(partitions=4)
    report = await produce_blobs(broker.bootstrap, topic, 3000, dim=4, k=3, seed=1, partitions=4)
    s = settings_for(broker, topic)
    async with running(s) as service:
        await wait_labeled(service, 3000)
    inputs = await consume_records(broker.bootstrap, topic, report.count)
    outputs = await consume_records(broker.bootstrap, s.output_topic, report.count)
    by_key_in = {r.key: r for r in inputs}
    seen_ids = set()
    for out in outputs:
        src = by_key_in[out.key]
        body = orjson.loads(out.value)
        assert body["id"] == orjson.loads(src.value)["id"]
        assert out.timestamp == src.timestamp
        assert 0 <= body["cluster"] < 3
        assert body["distance"] >= 0 and body["score"] >= 0
        assert body["model_version"] >= 1
        seen_ids.add(body["id"])
    assert seen_ids == set(range(3000))


async def test_labels_match_the_centres_of_the_model_version_that_produced_them(broker, new_topic):
    topic = await new_topic(partitions=1)
    await produce_blobs(broker.bootstrap, topic, 2000, dim=3, k=3, seed=2, partitions=1)
    s = settings_for(broker, topic, refit_every=10**6, refit_interval=3600.0)
    async with running(s) as service:
        await wait_labeled(service, 2000)
        centers = service.replica.centers().copy()
        version = service.replica.version
    inputs = await consume_records(broker.bootstrap, topic, 2000)
    outputs = await consume_records(broker.bootstrap, s.output_topic, 2000)
    X = np.array([orjson.loads(r.value)["features"] for r in inputs], np.float32)
    bodies = [orjson.loads(r.value) for r in outputs]
    assert {b["model_version"] for b in bodies} == {version} == {1}
    expected, _ = assign(X, centers)
    got = {b["id"]: b["cluster"] for b in bodies}
    ids = [orjson.loads(r.value)["id"] for r in inputs]
    assert [got[i] for i in ids] == expected.tolist()


async def test_bad_records_go_to_dlq_with_reason_and_source_headers(broker, new_topic):
    topic = await new_topic(partitions=1)
    good = [orjson.dumps({"id": i, "features": [float(i % 7), 1.0]}) for i in range(300)]
    bad = {
        b"not json": "invalid_json",
        b'{"id": 1}': "missing_features",
        b'{"features": [1, 2, 3]}': "wrong_dimension",
        b'{"features": [1e300, 1]}': "non_finite",
    }
    records = [Rec(v, key=f"g{i}".encode()) for i, v in enumerate(good)]
    records[150:150] = [Rec(v, key=f"b{i}".encode()) for i, v in enumerate(bad)]
    await produce_records(broker.bootstrap, topic, records)
    s = settings_for(broker, topic, k=2, dim=2, warmup=100)
    async with running(s) as service:
        await wait_labeled(service, len(records))
    dead = await consume_records(broker.bootstrap, s.dlq, len(bad))
    labeled = await consume_records(broker.bootstrap, s.output_topic, len(good))
    assert len(labeled) == len(good)
    for rec in dead:
        headers = {k: v.decode() for k, v in rec.headers}
        assert headers["streamkm.error.reason"] == bad[rec.value]
        assert headers["streamkm.error.message"]
        assert headers["streamkm.source.topic"] == topic
        assert headers["streamkm.source.partition"] == "0"
        assert int(headers["streamkm.source.offset"]) >= 150
    assert service.invalid == len(bad)


async def test_a_restarted_service_continues_from_committed_offsets(broker, new_topic):
    topic = await new_topic(partitions=2)
    await produce_blobs(broker.bootstrap, topic, 1500, dim=2, k=3, seed=3, partitions=2)
    s = settings_for(broker, topic)
    async with running(s) as service:
        await wait_labeled(service, 1500)
    await produce_blobs(broker.bootstrap, topic, 1500, dim=2, k=3, seed=4, partitions=2)
    async with running(s) as second:
        await wait_labeled(second, 1500)
        await asyncio.sleep(0.5)
        assert second.labeled == 1500
        assert second.replica.version > 1
    await consume_records(broker.bootstrap, s.output_topic, 3000)


async def test_records_before_the_model_exists_wait_and_are_all_labeled(broker, new_topic):
    topic = await new_topic(partitions=2)
    # Fewer records than the warm-up sample: the model starts from what there is, none is lost.
    await produce_blobs(broker.bootstrap, topic, 300, dim=2, k=3, seed=5, partitions=2)
    s = settings_for(broker, topic, warmup=1000, max_pending=1000)
    async with running(s) as service:
        await wait_labeled(service, 300)
        assert service.replica.ready
    outputs = await consume_records(broker.bootstrap, s.output_topic, 300)
    assert {orjson.loads(r.value)["id"] for r in outputs} == set(range(300))


async def test_service_creates_its_topics_with_the_snapshots_topic_compacted(broker, new_topic):
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    topic = await new_topic(partitions=3)
    await produce_blobs(broker.bootstrap, topic, 100, dim=2, k=3, seed=6, partitions=3)
    s = settings_for(broker, topic, warmup=50)
    async with running(s) as service:
        await wait_labeled(service, 100)
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([s.output_topic, s.dlq, s.updates_topic])
        partitions = {t["topic"]: len(t["partitions"]) for t in described}
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, s.snapshots_topic)]
        )
    finally:
        await admin.close()
    assert partitions == {s.output_topic: 3, s.dlq: 3, s.updates_topic: 1}
    entries = {c[0]: c[1] for c in configs[0].resources[0][4]}
    assert entries.get("cleanup.policy") == "compact"
