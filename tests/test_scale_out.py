"""One model for many instances: real `streamkm serve` processes sharing a model through Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterator

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka_helpers import all_records, consume_records, unique_name
from serve_process import ServeProcess

from engine import BatchStats
from model.messages import STATS, message_type
from stream.produce import produce_blobs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WAITING = "waiting for the model's init"


@contextlib.contextmanager
def instances(broker, tmp_path, n: int, *args: str) -> Iterator[list[ServeProcess]]:
    procs = [
        ServeProcess(broker.bootstrap, tmp_path / f"serve-{unique_name('i')}.log", *args)
        for _ in range(n)
    ]
    try:
        yield procs
    finally:
        for p in procs:
            p.close()


def serve_args(topic: str, model: str, group: str, *extra: str) -> tuple[str, ...]:
    return (
        "--input-topic", topic, "--output-topic", f"{topic}.labels", "--model", model,
        "--group", group, "--k", "4", "--warmup", "256", "--refit-every", "1024",
        "--refit-interval", "0.5", "--max-batch", "1024", *extra,
    )  # fmt: skip


async def until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.25)


def all_assigned(procs: list[ServeProcess]) -> bool:
    """Every instance holds partitions: the group is formed (readiness says so)."""
    states = [p.readiness() for p in procs]
    return all(ready or reason == WAITING for ready, reason in states)


async def settled_models(procs: list[ServeProcess], timeout: float = 60.0) -> list[dict]:
    """/model of every instance once all report the same version twice in a row."""
    deadline = time.monotonic() + timeout
    previous = None
    while True:
        docs = [p.model() for p in procs]
        versions = {d["version"] for d in docs}
        if len(versions) == 1 and previous == versions:
            return docs
        previous = versions
        assert time.monotonic() < deadline, f"versions never converged: {versions}"
        await asyncio.sleep(1.0)


async def ids_on(bootstrap: str, topic: str, n: int) -> list[int]:
    return [orjson.loads(r.value)["id"] for r in await consume_records(bootstrap, topic, n, 120)]


async def ids_until(bootstrap: str, topic: str, expected: set[int], timeout: float = 120.0):
    """Ids labeled on `topic` (duplicates allowed) once they include `expected`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    seen: set[int] = set()
    try:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in parts])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout
        while not expected <= seen:
            assert time.monotonic() < deadline, f"{len(expected - seen)} records never labeled"
            for recs in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                seen.update(orjson.loads(r.value)["id"] for r in recs)
    finally:
        await consumer.stop()
    return seen


@pytest.mark.parametrize("scaling", [(), ("--scale", "standard")], ids=["raw", "standardized"])
async def test_three_instances_label_every_record_once_and_hold_identical_centroids(
    broker, new_topic, tmp_path, scaling
):
    # The digest covers the whole serialised state: with --scale standard, the scaler too.
    topic = await new_topic(partitions=6)
    args = serve_args(topic, unique_name("m"), unique_name("g"), *scaling)
    with instances(broker, tmp_path, 3, *args) as procs:
        await until(lambda: all_assigned(procs), 90, "all three to join the group")
        report = await produce_blobs(
            broker.bootstrap, topic, 30_000, dim=4, k=4, seed=2, partitions=6
        )
        ids = await ids_on(broker.bootstrap, f"{topic}.labels", report.count)
        docs = await settled_models(procs)
    assert Counter(ids) == Counter(range(report.count))  # every record exactly once
    assert all(d["labeled"] > 0 for d in docs), "an instance got no partitions"
    assert len({d["sha256"] for d in docs}) == 1
    assert docs[0]["centers"] == docs[1]["centers"] == docs[2]["centers"]
    assert docs[0]["version"] > 2


async def test_a_killed_instance_loses_nothing_and_a_newcomer_labels_with_the_current_model(
    broker, new_topic, tmp_path
):
    topic = await new_topic(partitions=4)
    args = serve_args(topic, unique_name("m"), unique_name("g"))
    out = f"{topic}.labels"
    with instances(broker, tmp_path, 2, *args) as (victim, survivor):
        await until(lambda: all_assigned([victim, survivor]), 90, "both to join the group")
        producing = asyncio.create_task(
            produce_blobs(
                broker.bootstrap, topic, 20_000, dim=3, k=4, seed=4, rate=4000, partitions=4
            )
        )
        await until(lambda: victim.model()["labeled"] > 2000, 60, "the victim to label records")
        victim.kill()
        await producing
        # Only if the survivor took over the victim's partitions can all of these be labeled.
        await ids_until(broker.bootstrap, out, set(range(20_000)))
        version_before = survivor.model()["version"]
        newcomer = ServeProcess(broker.bootstrap, tmp_path / "newcomer.log", *args)
        try:
            newcomer.wait_listening()
            await until(lambda: all_assigned([newcomer, survivor]), 90, "the newcomer to join")
            await produce_blobs(broker.bootstrap, topic, 8000, dim=3, k=4, seed=5, partitions=4)
            await until(lambda: newcomer.model()["labeled"] > 0, 90, "the newcomer to label")
            first = newcomer.model()["first_labeled_version"]
        finally:
            newcomer.close()
    assert first >= version_before > 1


async def test_restarting_every_instance_continues_the_model_from_snapshot_and_replay(
    broker, new_topic, tmp_path
):
    topic = await new_topic(partitions=2)
    args = serve_args(topic, unique_name("m"), unique_name("g"), "--snapshot-every", "5")
    with instances(broker, tmp_path, 2, *args) as procs:
        await until(lambda: all_assigned(procs), 90, "both to join the group")
        report = await produce_blobs(
            broker.bootstrap, topic, 12_000, dim=2, k=4, seed=6, partitions=2
        )
        await ids_on(broker.bootstrap, f"{topic}.labels", report.count)
        before = (await settled_models(procs))[0]
        codes = [p.terminate() for p in procs]
        assert codes == [0, 0], "\n".join(p.output()[-6000:] for p in procs)
    with instances(broker, tmp_path, 2, *args) as procs:
        for p in procs:
            p.wait_ready()
        after = [p.model() for p in procs]
        logs = [p.output() for p in procs]
    assert [a["version"] for a in after] == [before["version"]] * 2
    assert [a["sha256"] for a in after] == [before["sha256"]] * 2
    assert all("loaded snapshot" in log for log in logs)


async def test_two_models_on_one_broker_never_see_each_others_updates(broker, new_topic, tmp_path):
    topic_a, topic_b = await new_topic(partitions=2), await new_topic(partitions=2)
    model_a, model_b = unique_name("a"), unique_name("b")
    with (
        instances(broker, tmp_path, 1, *serve_args(topic_a, model_a, unique_name("g"))) as (a,),
        instances(broker, tmp_path, 1, *serve_args(topic_b, model_b, unique_name("g"))) as (b,),
    ):
        await produce_blobs(broker.bootstrap, topic_a, 3000, dim=2, k=4, seed=7, partitions=2)
        await produce_blobs(broker.bootstrap, topic_b, 3000, dim=5, k=4, seed=8, partitions=2)
        await ids_on(broker.bootstrap, f"{topic_a}.labels", 3000)
        await ids_on(broker.bootstrap, f"{topic_b}.labels", 3000)
        doc_a, doc_b = a.model(), b.model()
    assert (doc_a["d"], doc_b["d"]) == (2, 5)
    for model, d in ((model_a, 2), (model_b, 5)):
        records = await all_records(broker.bootstrap, f"{model}.updates")
        shapes = {
            BatchStats.from_bytes(r.value).d for r in records if message_type(r.headers) == STATS
        }
        assert shapes == {d}
