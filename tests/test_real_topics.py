"""Topics as production producers write them: every codec, headers carried through, and a
record batch no client can read stopping the service cleanly (exit 2, no traceback)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Sequence

import aiokafka.codec
import confluent_kafka
import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.record.util import calc_crc32c
from kafka_helpers import Rec, batch_codecs, consume_records, produce_records, unique_name
from serve_process import ServeProcess
from test_service import running, wait_labeled
from test_service import settings_for as service_settings

from stream.config import Settings
from stream.fetch import UnreadableBatchError, fetch
from stream.output import send_labels

pytestmark = pytest.mark.integration

CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
TRACEPARENT = ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
BINARY = ("blob", bytes(range(256)))  # every byte value, not UTF-8
INPUT_HEADERS = (TRACEPARENT, BINARY, ("null", None))
# Input headers that would pass for streamkm's own: a dead letter must not carry them.
FORGED = (("streamkm.error.reason", b"forged"), ("streamkm.source.offset", b"-1"))
DLQ_NAMES = [
    "streamkm.error.reason",
    "streamkm.error.message",
    "streamkm.source.topic",
    "streamkm.source.partition",
    "streamkm.source.offset",
]


def settings_for(broker, topic: str, **kw) -> Settings:
    """test_service's settings, for small 2-D models that learn fast."""
    small = dict(k=2, dim=2, warmup=100, max_batch=4096, session_timeout=2.0, refit_every=100)
    return service_settings(broker, topic, **(small | kw))


def valid(i: int) -> bytes:
    return orjson.dumps({"id": i, "features": [float(i % 5), float(i % 3)]})


def librdkafka_produce(bootstrap: str, topic: str, records: Sequence[Rec], codec: str) -> None:
    """Write records as a librdkafka producer configured for production writes them."""
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "compression.type": codec,
            "linger.ms": 20,  # batches of many records, compressed together
            "acks": "all",
            "enable.idempotence": False,  # the embedded broker has no idempotent producers
        }
    )
    failed: list[object] = []
    for r in records:
        producer.produce(
            topic,
            value=r.value,
            key=r.key,
            headers=list(r.headers),
            on_delivery=lambda err, _: failed.append(err) if err else None,
        )
    assert producer.flush(15) == 0 and not failed, failed


def librdkafka_consume(bootstrap: str, topic: str, n: int, timeout: float = 15.0) -> list:
    """Read n records from the start of every partition with librdkafka (no group join)."""
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": unique_name("c"), "enable.auto.commit": False}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        consumer.assign(
            [
                confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                for p in partitions
            ]
        )
        out: list = []
        for _ in range(int(timeout / 0.2)):
            for msg in consumer.consume(num_messages=1000, timeout=0.2):
                assert msg.error() is None, msg.error()
                out.append(msg)
            if len(out) >= n:
                break
        assert len(out) == n, f"librdkafka read {len(out)} of {n} records of {topic!r}"
        return out
    finally:
        consumer.close()


# --- every codec in, every codec out --------------------------------------------------------


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_a_librdkafka_topic_in_any_codec_is_labeled_with_its_headers_carried(
    broker, new_topic, codec
):
    topic = await new_topic(partitions=2)
    records = [Rec(valid(i), key=b"k%d" % i, headers=INPUT_HEADERS) for i in range(300)]
    bad = {b"not json": "invalid_json", b'{"features": [1, 2, 3]}': "wrong_dimension"}
    records[150:150] = [Rec(v, key=b"bad", headers=INPUT_HEADERS + FORGED) for v in bad]
    await asyncio.to_thread(librdkafka_produce, broker.bootstrap, topic, records, codec)
    assert await batch_codecs(broker.bootstrap, topic) == {CODEC_IDS[codec]}

    s = settings_for(broker, topic)
    async with running(s) as service:
        await wait_labeled(service, len(records))
    assert (service.labeled, service.invalid) == (300, 2)

    labels = await consume_records(broker.bootstrap, s.output_topic, 300)
    assert {orjson.loads(r.value)["id"] for r in labels} == set(range(300))
    assert all(r.headers == INPUT_HEADERS for r in labels)
    for dead in await consume_records(broker.bootstrap, s.dlq, len(bad)):
        names = [name for name, _ in dead.headers]
        assert names == ["traceparent", "blob", "null", *DLQ_NAMES]
        assert dead.headers[:3] == INPUT_HEADERS
        assert dict(dead.headers)["streamkm.error.reason"] == bad[dead.value].encode()
        assert dict(dead.headers)["streamkm.source.topic"] == topic.encode()


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
async def test_what_serve_writes_with_any_compression_type_is_read_by_plain_consumers(
    broker, new_topic, compression
):
    topic = await new_topic(partitions=2)
    first = [Rec(valid(i), key=b"k%d" % i, headers=(TRACEPARENT,)) for i in range(200)]
    first.append(Rec(b"not json", key=b"bad", headers=(BINARY,)))
    s = settings_for(broker, topic, compression_type=compression, snapshot_every=2)
    await produce_records(broker.bootstrap, topic, first)
    async with running(s) as service:
        await wait_labeled(service, len(first))
        # Keeps working: a second wave is labeled by a model that read back its own updates.
        await produce_records(broker.bootstrap, topic, [valid(i) for i in range(200, 400)])
        await wait_labeled(service, len(first) + 200)
        assert service.replica.version > 1
    # The snapshot of the clean stop is written too, with the same codec.
    expected = {CODEC_IDS[compression]}
    for written in (s.output_topic, s.dlq, s.updates_topic, s.snapshots_topic):
        assert await batch_codecs(broker.bootstrap, written) == expected, written

    by_aiokafka = await consume_records(broker.bootstrap, s.output_topic, 400)
    by_librdkafka = await asyncio.to_thread(
        librdkafka_consume, broker.bootstrap, s.output_topic, 400
    )
    assert sorted(r.value for r in by_aiokafka) == sorted(m.value() for m in by_librdkafka)
    assert {orjson.loads(r.value)["id"] for r in by_aiokafka} == set(range(400))
    traced = [m for m in by_librdkafka if m.headers()]
    assert len(traced) == 200 and all(m.headers() == [TRACEPARENT] for m in traced)
    (dead,) = await asyncio.to_thread(librdkafka_consume, broker.bootstrap, s.dlq, 1)
    assert dead.value() == b"not json" and dead.headers()[0] == BINARY


async def test_label_batches_split_when_full_and_keep_every_header(broker, new_topic):
    topic, output = await new_topic(), await new_topic()
    inputs = [Rec(b"", key=b"k%d" % i, headers=((f"h{i}", b"v"),)) for i in range(200)]
    await produce_records(broker.bootstrap, topic, inputs)
    records = await consume_records(broker.bootstrap, topic, len(inputs))
    values = [b"label-%d" % i for i in range(200)]
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, max_batch_size=2048)
    await producer.start()
    try:
        futures = await send_labels(producer, output, records, values, np.zeros(200, np.int64))
        assert len(futures) > 1  # 200 records of ~30 bytes do not fit one 2 KB batch
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    out = await consume_records(broker.bootstrap, output, 200)
    assert [(r.key, r.value, r.headers) for r in out] == [
        (r.key, v, r.headers) for r, v in zip(records, values, strict=True)
    ]


# --- a batch no client can read -------------------------------------------------------------

_HEADER_BYTES = 61  # a v2 record batch's header; its records follow


def _truncated(encode: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    return lambda records: encode(records)[:-6]


# (codec id, records bytes -> batch payload, CRC to flip): what a broken producer or disk writes.
UNREADABLE = {
    "gzip-truncated": (1, _truncated(aiokafka.codec.gzip_encode), False),
    "snappy-truncated": (2, _truncated(aiokafka.codec.snappy_encode), False),
    "lz4-truncated": (3, _truncated(aiokafka.codec.lz4_encode), False),
    "zstd-truncated": (4, _truncated(aiokafka.codec.zstd_encode), False),
    "zstd-not-records": (4, lambda _: aiokafka.codec.zstd_encode(b"x" * 50), False),
    "crc-mismatch": (0, lambda records: records, True),
}


async def write_unreadable_batch(
    bootstrap: str, topic: str, kind: str, n: int = 3, partition: int = 0
) -> int:
    """Write one record batch of n records that no client can read; returns its first offset.

    aiokafka builds a valid batch; its payload, codec bits and CRC are then rewritten (the
    embedded broker stores batches as they come; Apache Kafka would refuse these at produce).
    """
    codec, payload, flip_crc = UNREADABLE[kind]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        batch = producer.create_batch()
        for i in range(n):
            batch.append(key=b"lost", value=valid(i), timestamp=None)
        raw = bytes(batch._build())  # aiokafka sends this buffer as the batch's bytes
        buf = bytearray(raw[:_HEADER_BYTES] + payload(raw[_HEADER_BYTES:]))
        struct.pack_into(">i", buf, 8, len(buf) - 12)  # batch length
        attributes = struct.unpack_from(">h", buf, 21)[0]
        struct.pack_into(">h", buf, 21, attributes & ~0x07 | codec)
        struct.pack_into(">I", buf, 17, calc_crc32c(bytes(buf[21:])) ^ flip_crc)
        batch._buffer = buf
        return (await (await producer.send_batch(batch, topic, partition=partition))).offset
    finally:
        await producer.stop()


@pytest.mark.parametrize("kind", list(UNREADABLE))
async def test_an_unreadable_batch_is_reported_with_its_partition_offsets_and_a_way_past(
    broker, new_topic, kind
):
    topic = await new_topic(partitions=2)
    await produce_records(broker.bootstrap, topic, [Rec(valid(i), partition=1) for i in range(7)])
    first = await write_unreadable_batch(broker.bootstrap, topic, kind, n=3, partition=1)
    assert first == 7
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 1)])
        with pytest.raises(UnreadableBatchError) as caught:
            for _ in range(50):
                await fetch(consumer, 100, 100, group="the-group", bootstrap="kafka:9092")
    finally:
        await consumer.stop()
    err = caught.value
    assert (err.tp, err.offset) == (TopicPartition(topic, 1), 7)
    message = str(err)
    assert f"offsets 7-9 of partition 1 of {topic!r}" in message
    name = {i: name for name, i in CODEC_IDS.items()}[UNREADABLE[kind][0]]
    assert f"compression {name}" in message
    assert (
        "kafka-consumer-groups.sh --bootstrap-server kafka:9092 --group the-group "
        f"--topic {topic}:1 --reset-offsets --to-offset 10 --execute" in message
    )


async def test_a_codec_whose_library_is_missing_is_blamed_on_the_installation(
    broker, topic, monkeypatch
):
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, compression_type="snappy")
    await producer.start()
    await (await producer.send(topic, valid(0)))
    await producer.stop()
    monkeypatch.setattr(aiokafka.codec, "has_snappy", lambda: False)  # the reader only
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        with pytest.raises(UnreadableBatchError, match="install the `cramjam` package"):
            for _ in range(50):
                await fetch(consumer, 100, 100, group="g", bootstrap="kafka:9092")
    finally:
        await consumer.stop()


async def test_serve_stops_at_an_unreadable_batch_with_exit_2_until_the_group_is_moved_past_it(
    broker, new_topic, tmp_path
):
    topic = await new_topic(partitions=1)
    await produce_records(broker.bootstrap, topic, [valid(i) for i in range(150)])
    group = unique_name("g")
    # Short sessions: the embedded broker holds each join for about as long (embedded-broker.md).
    s = settings_for(broker, topic, group=group, session_timeout=1.0)
    serve = ServeProcess(
        broker.bootstrap, tmp_path / "serve.log",
        "--input-topic", topic, "--output-topic", s.output_topic, "--group", group,
        "--model", s.model, "--k", "2", "--dim", "2", "--warmup", "100", "--session-timeout", "1",
    )  # fmt: skip
    try:
        serve.wait_ready(timeout=60)
        await consume_records(broker.bootstrap, s.output_topic, 150)
        bad = await write_unreadable_batch(broker.bootstrap, topic, "gzip-truncated")
        await produce_records(broker.bootstrap, topic, [valid(i) for i in range(150, 160)])
        code = await asyncio.to_thread(serve.proc.wait, 60)
    finally:
        serve.close()
    log = serve.output()
    assert code == 2, log[-3000:]
    assert "Traceback" not in log
    assert f"ERROR streamkm.fetch: cannot read the record batch at offsets {bad}-{bad + 2}" in log
    await consume_records(broker.bootstrap, s.output_topic, 150)  # nothing after it labeled
    tp = TopicPartition(topic, 0)
    # What the logged kafka-consumer-groups.sh line does, as a member of the group: Tansu refuses
    # that tool's member-less commit once a group has had members (docs/embedded-broker.md).
    member = AIOKafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        session_timeout_ms=1000,
        heartbeat_interval_ms=300,
    )
    await member.start()
    try:
        member.subscribe([topic])
        async with asyncio.timeout(20):
            while tp not in member.assignment():
                await asyncio.sleep(0.05)
        assert await member.committed(tp) == bad  # everything before it, nothing after
        await member.commit({tp: bad + 3})
    finally:
        await member.stop()
    async with running(s) as service:
        await wait_labeled(service, 10)
    await consume_records(broker.bootstrap, s.output_topic, 160)
