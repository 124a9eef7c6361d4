"""The embedded broker, topic administration, and the aiokafka behaviours streamkm relies on.

docs/embedded-broker.md explains each behaviour; bench/probe_broker.py measures the rest.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from kafka_helpers import Rec, consume_records, produce_records, unique_name

from model.topics import (
    BrokerUnreachable,
    TopicError,
    TopicSpec,
    ensure_topics,
    partition_count,
    wait_for_broker,
)
from stream.broker import BrokerError, EmbeddedBroker, answers_metadata, run_broker

pytestmark = pytest.mark.integration


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


# --- the broker process -------------------------------------------------------------------


def test_broker_answers_metadata_on_its_bootstrap_address(broker):
    host, port = broker.bootstrap.split(":")
    assert broker.running
    assert answers_metadata(host, int(port))


def test_stopped_broker_no_longer_answers():
    b = EmbeddedBroker().start()
    b.stop()
    assert not b.running
    assert not answers_metadata(b.host, b.port)


async def test_restart_keeps_the_port_and_loses_every_topic(private_broker, new_topic):
    name = unique_name()
    await ensure_topics(private_broker.bootstrap, [TopicSpec(name, 2)])
    port = private_broker.port
    private_broker.restart()
    assert private_broker.port == port
    with pytest.raises(TopicError, match="does not exist"):
        await partition_count(private_broker.bootstrap, name)


def test_start_on_a_taken_port_names_the_port():
    with _listening_socket() as sock:
        port = sock.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port}.*already in use"):
            EmbeddedBroker(port=port).start()


def test_run_broker_on_a_taken_port_exits_2_with_a_message(capsys):
    with _listening_socket() as sock:
        assert run_broker("127.0.0.1", sock.getsockname()[1]) == 2
    assert "already in use" in capsys.readouterr().err


def test_run_broker_prints_its_address_and_exits_0_on_sigterm():
    port = EmbeddedBroker().port
    code = (
        f"from stream.broker import run_broker; raise SystemExit(run_broker('127.0.0.1', {port}))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f"listening on 127.0.0.1:{port}" in first
        assert answers_metadata("127.0.0.1", port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not answers_metadata("127.0.0.1", port)


# --- topics -------------------------------------------------------------------------------


async def test_topics_get_the_requested_partitions_and_ensuring_twice_is_harmless(broker):
    specs = [TopicSpec(unique_name(), 4), TopicSpec(unique_name(), 1, compact=True)]
    await ensure_topics(broker.bootstrap, specs)
    await ensure_topics(broker.bootstrap, specs)
    assert [await partition_count(broker.bootstrap, s.name) for s in specs] == [4, 1]


async def test_client_kwargs_may_carry_their_own_bootstrap_servers(broker):
    name = unique_name()
    kwargs = {"bootstrap_servers": broker.bootstrap, "client_id": "streamkm-test"}
    await ensure_topics(broker.bootstrap, [TopicSpec(name, 2)], client_kwargs=kwargs)
    assert await partition_count(broker.bootstrap, name, client_kwargs=kwargs) == 2


async def test_partition_count_of_a_missing_topic_is_a_topic_error(broker):
    with pytest.raises(TopicError, match="does not exist"):
        await partition_count(broker.bootstrap, unique_name("missing"))


async def test_wait_for_broker_returns_once_the_broker_answers(broker):
    await wait_for_broker(broker.bootstrap, timeout=5)


async def test_wait_for_broker_gives_up_naming_the_address():
    port = EmbeddedBroker().port  # free, nothing listens there
    with pytest.raises(BrokerUnreachable, match=f"127.0.0.1:{port}"):
        await wait_for_broker(f"127.0.0.1:{port}", timeout=1.0)


# --- what aiokafka gets from Tansu --------------------------------------------------------


async def test_key_value_headers_and_create_time_survive_send(broker, topic):
    ts = 1_600_000_000_123
    sent = Rec(b"value", key=b"key", headers=[("h1", b"x"), ("h2", b"")], timestamp_ms=ts)
    await produce_records(broker.bootstrap, topic, [sent])
    [got] = await consume_records(broker.bootstrap, topic, 1)
    assert (got.key, got.value, got.headers) == (b"key", b"value", (("h1", b"x"), ("h2", b"")))
    assert (got.timestamp, got.timestamp_type) == (ts, 0)  # 0 = CreateTime


async def test_key_value_headers_and_timestamps_survive_send_batch(broker, topic):
    ts = 1_600_000_000_000
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        batch = producer.create_batch()
        for i in range(3):
            # BatchBuilder.append takes milliseconds, though its docstring says seconds.
            batch.append(
                key=b"k%d" % i, value=b"v%d" % i, timestamp=ts + i, headers=[("h", b"%d" % i)]
            )
        batch.close()
        await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()
    got = await consume_records(broker.bootstrap, topic, 3)
    assert [(r.key, r.value, r.headers, r.timestamp) for r in got] == [
        (b"k%d" % i, b"v%d" % i, (("h", b"%d" % i),), ts + i) for i in range(3)
    ]


async def test_highwater_counts_every_record_of_a_multi_record_batch(broker, topic):
    await produce_records(broker.bootstrap, topic, [b"a"])
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    batch = producer.create_batch()
    for _ in range(5):
        batch.append(key=None, value=b"v", timestamp=None)
    batch.close()
    await (await producer.send_batch(batch, topic, partition=0))
    await producer.stop()
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning()
        got = await consumer.getmany(tp, timeout_ms=5000)
        assert len(got[tp]) == 6
        assert consumer.highwater(tp) == 6
        assert await consumer.position(tp) == 6
        # Tansu answers ListOffsets(latest) with the last batch's base offset + 1, so
        # end_offsets undercounts here: lag must come from highwater(), not end_offsets().
        assert (await consumer.end_offsets([tp]))[tp] == 2
    finally:
        await consumer.stop()


async def test_acks_all_works_but_idempotent_producers_are_refused(broker, topic):
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        assert (await producer.send_and_wait(topic, b"v")).offset == 0
    finally:
        await producer.stop()
    idempotent = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True)
    try:
        with pytest.raises(KafkaError):  # UnknownError from InitProducerId, raised by start()
            await idempotent.start()
    finally:
        await idempotent.stop()


async def test_producing_to_an_unknown_topic_creates_it(broker):
    name = unique_name("auto")
    await produce_records(broker.bootstrap, name, [b"v"])
    assert await partition_count(broker.bootstrap, name) >= 1


async def _drain(consumer: AIOKafkaConsumer, seconds: float) -> int:
    got, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        batch = await consumer.getmany(timeout_ms=100)
        got += sum(len(v) for v in batch.values())
    return got


async def _until_assigned(consumer: AIOKafkaConsumer, n: int, timeout: float) -> int:
    """Poll until the consumer owns n partitions; return the records read meanwhile."""
    got, deadline = 0, time.monotonic() + timeout
    while len(consumer.assignment()) != n:
        assert time.monotonic() < deadline, f"never got {n} partitions: {consumer.assignment()}"
        batch = await consumer.getmany(timeout_ms=100)
        got += sum(len(v) for v in batch.values())
    return got


async def test_group_splits_partitions_and_a_leaver_hands_over_at_committed_offsets(
    broker, new_topic
):
    topic = await new_topic(partitions=4)
    group = unique_name("g")
    await produce_records(broker.bootstrap, topic, [Rec(b"v", partition=i % 4) for i in range(40)])

    def member() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Tansu holds each join for about half the session timeout: keep it short.
            session_timeout_ms=2000,
            heartbeat_interval_ms=300,
        )

    first, second = member(), member()
    await first.start()
    await second.start()
    try:
        await asyncio.gather(_until_assigned(first, 2, 30), _until_assigned(second, 2, 30))
        assert first.assignment().isdisjoint(second.assignment())
        await _drain(first, 1.0)
        await first.commit()
        committed = {tp: await first.committed(tp) for tp in first.assignment()}
        assert all(offset == 10 for offset in committed.values())
        await first.stop()
        await _until_assigned(second, 4, 30)
        assert {tp: await second.position(tp) for tp in committed} == committed
    finally:
        await first.stop()
        await second.stop()


async def test_clients_reconnect_after_the_broker_restarts(private_broker):
    bootstrap, name = private_broker.bootstrap, unique_name()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    await producer.start()
    try:
        await producer.send_and_wait(name, b"before")
        private_broker.kill()
        with pytest.raises(KafkaError):
            await producer.send_and_wait(name, b"while down")
        private_broker.start()
        # The restarted broker is empty; the topic comes back by auto-creation, offsets from 0.
        assert (await producer.send_and_wait(name, b"after")).offset == 0
    finally:
        await producer.stop()
