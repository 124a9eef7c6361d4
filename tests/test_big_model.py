"""Big models on a stock broker: k = 600, d = 1024, every model-topic record under 1,000,000 bytes.

Over the embedded broker: a `streamkm serve` process serves, learns, is killed and a second one
continues from the snapshot at the same bits; a writer dying in the middle of a split message
leaves a replica that followed the log and one restored from a snapshot taken mid-message
identical; a snapshot written half-way is never read; and what streamkm cannot serve is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.fetch import FetchRequest
from kafka_helpers import all_records, unique_name
from serve_process import ServeProcess

from engine import BatchStats, ModelState, batch_stats
from model.log import (
    OFFSET_HEADER,
    SNAPSHOT,
    UpdateLog,
    open_model,
    publish_init,
    publish_snapshot,
    publish_stats,
    read_latest_snapshot,
    scan_snapshots,
    send_alone,
)
from model.messages import STATS, ModelParams, ModelReplica, Snapshot, encode_snapshot
from model.parts import MAX_RECORD_BYTES, SPLIT_HEADER, Part, part_headers, split_body
from model.snapshots import SnapshotWriter
from stream.cli import main
from stream.produce import produce_blobs

K, D = 600, 1024


# --- reading the model topics back, raw ----------------------------------------------------


def record_bytes(rec) -> int:
    """Key, value and headers of one record."""
    headers = sum(len(k.encode()) + len(v or b"") for k, v in rec.headers or ())
    return len(rec.key or b"") + len(rec.value or b"") + headers


async def batch_sizes(bootstrap: str, topic: str) -> list[int]:
    """The size of every record batch stored in partition 0 of `topic`, as Kafka's
    `message.max.bytes` counts it (raw Fetch requests: consumers hide batches)."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    sizes: list[int] = []
    try:
        await client.force_metadata_update()
        node = client.cluster.leader_for_partition(TopicPartition(topic, 0))
        offset = 0
        while True:
            request = FetchRequest(100, 1, 64 << 20, 0, [(topic, [(0, offset, 64 << 20)])])
            ((_, ((_, error, high, *_, raw),)),) = (await client.send(node, request)).topics
            assert error == 0, f"fetch of {topic} failed with error {error}"
            raw, pos, start = bytes(raw or b""), 0, offset
            while pos + 12 <= len(raw):
                base, length = struct.unpack_from(">qi", raw, pos)
                if pos + 12 + length > len(raw):
                    break
                last_delta = struct.unpack_from(">i", raw, pos + 23)[0]  # lastOffsetDelta
                sizes.append(12 + length)
                offset = base + last_delta + 1
                pos += 12 + length
            if offset == start or offset >= high:
                return sizes
    finally:
        await client.close()


async def assert_every_record_fits(bootstrap: str, *topics: str) -> dict[str, int]:
    """Every record and record batch of the topics is at most 1,000,000 bytes; returns the
    number of split records found on each."""
    split = {}
    for topic in topics:
        records = await all_records(bootstrap, topic)
        assert records, f"{topic} is empty"
        assert max(record_bytes(r) for r in records) <= MAX_RECORD_BYTES
        assert max(await batch_sizes(bootstrap, topic)) <= MAX_RECORD_BYTES
        split[topic] = sum(any(k == SPLIT_HEADER for k, _ in r.headers or ()) for r in records)
    return split


async def replay_from_start(bootstrap: str, topic: str, upto: int | None = None) -> ModelReplica:
    """A replica built from the whole updates log, no snapshot (up to offset `upto`)."""
    replica = ModelReplica()
    for rec in await all_records(bootstrap, topic):
        if upto is None or rec.offset < upto:
            replica.apply_record(rec.offset, rec.headers, rec.value, rec.timestamp)
    return replica


def digest(replica: ModelReplica) -> str:
    assert replica.state is not None
    return hashlib.sha256(replica.state.to_bytes()).hexdigest()


# --- a k = 600, d = 1024 model served by real processes ------------------------------------


def serve_args(topic: str, model: str, group: str) -> tuple[str, ...]:
    return (
        "--input-topic", topic, "--output-topic", f"{topic}.labels", "--model", model,
        "--group", group, "--k", str(K), "--dim", str(D), "--input-format", "f32",
        "--warmup", str(K), "--refit-every", "2048", "--refit-interval", "0.5",
        "--max-batch", "1024", "--snapshot-every", "2",
    )  # fmt: skip


async def labeled(bootstrap: str, topic: str, n: int, timeout: float = 120.0) -> None:
    """Until the labels topic holds at least n records (an instance killed may have labeled
    some twice: delivery is at least once)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        deadline, count = time.monotonic() + timeout, 0
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in parts])
        await consumer.seek_to_beginning()
        while count < n:
            assert time.monotonic() < deadline, f"{count} of {n} records labeled"
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            count += sum(len(v) for v in batches.values())
    finally:
        await consumer.stop()


async def settled(proc: ServeProcess, timeout: float = 90.0) -> dict:
    """/model once the version stayed the same for a second."""
    deadline, previous = time.monotonic() + timeout, None
    while True:
        doc = proc.model()
        if previous is not None and doc["version"] == previous["version"]:
            return doc
        previous = doc
        assert time.monotonic() < deadline, "the model never settled"
        await asyncio.sleep(1.0)


@pytest.mark.integration
@pytest.mark.slow
async def test_a_big_model_serves_learns_and_restarts_from_its_snapshot(
    broker, new_topic, tmp_path
):
    topic, model = await new_topic(partitions=2), unique_name("big")
    args = serve_args(topic, model, unique_name("g"))
    first = ServeProcess(broker.bootstrap, tmp_path / "first.log", *args)
    try:
        first.wait_listening()
        await produce_blobs(
            broker.bootstrap, topic, 6000, dim=D, k=K, seed=1, fmt="f32", partitions=2
        )
        await labeled(broker.bootstrap, f"{topic}.labels", 6000)
        before = await settled(first)
        first.kill()  # no last snapshot: the next instance replays what came after the latest
    finally:
        first.close()
    assert before["version"] > 2, "the model never learned"
    # Another instance's statistics after the latest snapshot: the next one must replay them.
    updates = f"{model}.updates"
    current = await replay_from_start(broker.bootstrap, updates)
    assert current.state is not None
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        await publish_stats(producer, updates, big_stats(current.state.centers, 7))
    finally:
        await producer.stop()
    second = ServeProcess(broker.bootstrap, tmp_path / "second.log", *args)
    try:
        second.wait_ready()
        restarted = second.model()
        await produce_blobs(
            broker.bootstrap, topic, 3000, dim=D, k=K, seed=2, fmt="f32", partitions=2
        )
        await labeled(broker.bootstrap, f"{topic}.labels", 9000)
        later = await settled(second)
        assert second.terminate() == 0
    finally:
        second.close()
    assert "loaded snapshot" in second.output()
    assert restarted["version"] == before["version"] + 1
    assert restarted["updates_offset"] > before["updates_offset"]
    assert later["version"] > restarted["version"], "the restarted model did not learn"
    # Replicas that read the whole log from its first offset hold the same bits.
    scratch = await replay_from_start(broker.bootstrap, updates, restarted["updates_offset"])
    assert (scratch.version, digest(scratch)) == (restarted["version"], restarted["sha256"])
    scratch = await replay_from_start(broker.bootstrap, updates, later["updates_offset"])
    assert (scratch.version, digest(scratch)) == (later["version"], later["sha256"])
    split = await assert_every_record_fits(broker.bootstrap, updates, f"{model}.snapshots")
    assert split[updates] > 0 and split[f"{model}.snapshots"] > 0


# --- a writer killed in the middle of a split message ---------------------------------------


def big_stats(centers: np.ndarray, seed: int) -> BatchStats:
    rng = np.random.default_rng(seed)
    X = centers[rng.integers(0, K, 2048)] + rng.normal(size=(2048, D)) * 0.1
    return batch_stats(X.astype(np.float32), centers)[2]


@pytest.mark.integration
async def test_a_writer_killed_mid_message_leaves_followers_and_restored_replicas_identical(
    broker, new_topic
):
    updates, snapshots = await new_topic(), await new_topic(compact=True)
    model, kafka = unique_name("m"), {"bootstrap_servers": broker.bootstrap}
    centers = np.random.default_rng(0).normal(size=(K, D)) * 10
    producer = AIOKafkaProducer(**kafka, acks="all", max_request_size=MAX_RECORD_BYTES)
    await producer.start()
    try:
        await publish_init(
            producer, updates, ModelState.initial(centers), ModelParams(K, D, 1e5), "test"
        )
        await publish_stats(producer, updates, big_stats(centers, 1))
        # Writer "dead" is SIGKILLed after two parts; writer "late" is half-way at the snapshot.
        dead = split_body(big_stats(centers, 2).to_bytes())
        late = split_body(big_stats(centers, 3).to_bytes())
        for split, chunks, parts in (("dead", dead, (1, 2)), ("late", late, (1, 2, 3))):
            for i in parts:
                headers = part_headers(STATS, Part(split, i, len(chunks)))
                await send_alone(producer, updates, chunks[i - 1], headers=headers)
        early = ModelReplica()
        log, _ = await open_model(early, updates, snapshots, model, kafka)
        await log.stop()
        assert await publish_snapshot(producer, snapshots, model, early.snapshot("t")) is not None
        for i in range(4, len(late) + 1):
            headers = part_headers(STATS, Part("late", i, len(late)))
            await send_alone(producer, updates, late[i - 1], headers=headers)
        await publish_stats(producer, updates, big_stats(centers, 4))
    finally:
        await producer.stop()
    following = ModelReplica()
    log = UpdateLog(updates, kafka, following)
    await log.start()
    await log.catch_up()
    await log.stop()
    restored = ModelReplica()
    log, snapshot = await open_model(restored, updates, snapshots, model, kafka)
    await log.stop()
    assert snapshot is not None and [p.split for p in snapshot.pending] == ["dead", "late"]
    assert following.version == restored.version == 4  # init, stats, late, stats: never dead
    assert following.state.equals(restored.state)
    # The dead writer's parts are held alike (until the crash rule drops them) on both.
    assert encode_snapshot(following.snapshot()) == encode_snapshot(restored.snapshot())
    assert [p.split for p in following.snapshot().pending] == ["dead"]
    split = await assert_every_record_fits(broker.bootstrap, updates, snapshots)
    assert split[updates] > 2 + len(late)  # the init and whole stats were split too


# --- snapshots in parts ---------------------------------------------------------------------


def big_snapshot(next_offset: int) -> Snapshot:
    centers = np.random.default_rng(next_offset).normal(size=(K, D))
    return Snapshot(ModelParams(K, D, None), ModelState.initial(centers), next_offset, "t")


@pytest.mark.integration
async def test_a_snapshot_written_half_way_is_ignored_and_superseded_parts_are_deleted(
    broker, new_topic
):
    snapshots, model = await new_topic(compact=True), unique_name("m")
    kafka = {"bootstrap_servers": broker.bootstrap}
    producer = AIOKafkaProducer(**kafka, acks="all")
    await producer.start()
    try:
        complete = await publish_snapshot(producer, snapshots, model, big_snapshot(10))
        assert complete is not None and len(complete.keys) == 6
        # A writer dies after the first two parts of a newer snapshot.
        chunks = split_body(encode_snapshot(big_snapshot(20)))
        for i in (1, 2):
            headers = part_headers(SNAPSHOT, Part("half", i, len(chunks)))
            headers.append((OFFSET_HEADER, b"20"))
            key = f"{model}/half/{i}".encode()
            await send_alone(producer, snapshots, chunks[i - 1], key=key, headers=headers)
        latest = await read_latest_snapshot(snapshots, model, kafka)
        assert latest is not None and latest.next_offset == 10
        assert latest.state.equals(big_snapshot(10).state)
        # The next writer's snapshot supersedes both: their parts are tombstoned.
        replica = ModelReplica()
        replica.restore(big_snapshot(30))
        writer = SnapshotWriter(producer, snapshots, model, 1, "t", client_kwargs=kafka)
        assert await writer.maybe_write(replica, writer=True)
    finally:
        await producer.stop()
    latest, live = await scan_snapshots(snapshots, model, kafka)
    assert latest is not None and latest.next_offset == 30
    assert [p.next_offset for p in live] == [30]
    await assert_every_record_fits(broker.bootstrap, snapshots)


# --- what cannot be served is refused --------------------------------------------------------


@pytest.mark.parametrize(
    "argv, words",
    [
        (["serve", "--k", "1025"], "--k: must be at most 1024"),
        (["serve", "--dim", "2049"], "--dim: must be at most 2048"),
        (["demo", "--k", "5000"], "--k: must be at most 1024"),
    ],
)
def test_a_model_beyond_the_limits_is_refused_at_start(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err
    assert "Traceback" not in err


@pytest.mark.parametrize("shape", [(1025, 2), (2, 2049)])
def test_import_refuses_a_model_beyond_the_limits_before_touching_kafka(tmp_path, capsys, shape):
    path = tmp_path / "big.npy"
    np.save(path, np.ones(shape))
    assert main(["model", "import", "--bootstrap", "127.0.0.1:1", str(path)]) == 2
    err = capsys.readouterr().err
    assert "streamkm serves models of at most k=1024 centres of d=2048" in err
    assert "Traceback" not in err


@pytest.mark.integration
async def test_import_of_a_big_model_writes_it_in_parts_every_replica_reads(
    broker, tmp_path, capsys
):
    model = unique_name("m")
    centers = np.random.default_rng(5).normal(size=(K, D))
    path = tmp_path / "big.npy"
    np.save(path, centers)
    argv = ["model", "import", "--bootstrap", broker.bootstrap, "--model", model, str(path)]
    assert await asyncio.to_thread(main, argv) == 0
    assert "imported model" in capsys.readouterr().out
    replica = await replay_from_start(broker.bootstrap, f"{model}.updates")
    assert replica.state is not None and replica.state.centers.tobytes() == centers.tobytes()
    split = await assert_every_record_fits(broker.bootstrap, f"{model}.updates")
    assert split[f"{model}.updates"] == 6
