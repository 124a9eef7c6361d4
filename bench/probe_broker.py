"""Probe how aiokafka behaves against the embedded Tansu broker; findings go to docs/embedded-broker.md.

Run: .venv/bin/python bench/probe_broker.py [--records 100000]
Each probe prints one or more "name: result" lines. Throughput numbers are rough (one machine,
shared cores); they are for choosing between APIs, not for quoting.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from model.topics import TopicSpec, ensure_topics, partition_count
from stream.broker import EmbeddedBroker


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def probe_topics(bs: str) -> None:
    t = _name("a")
    await ensure_topics(bs, [TopicSpec(t, 4), TopicSpec(t + "-c", 1, compact=True)])
    print("a. 4-partition topic partitions:", await partition_count(bs, t))
    admin = AIOKafkaAdminClient(bootstrap_servers=bs)
    await admin.start()
    try:
        resp = await admin.create_topics([NewTopic(t, 4, 1)])
        print("a. re-create existing topic ->", resp.topic_errors)
        try:
            from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

            cfg = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t + "-c")])
            print("a. describe_configs compact topic ->", cfg)
        except Exception as exc:
            print("a. describe_configs failed:", type(exc).__name__, exc)
    finally:
        await admin.close()
    # Compaction: write two values for one key, read back everything.
    p = AIOKafkaProducer(bootstrap_servers=bs)
    await p.start()
    for v in (b"old", b"new"):
        await p.send_and_wait(t + "-c", v, key=b"k")
    await p.stop()
    got = await _consume_all(bs, t + "-c", 2, timeout=5)
    print("a. compacted topic, 2 writes same key, read back:", [r.value for r in got])


async def _consume_all(bs: str, topic: str, n: int, timeout: float, **kw) -> list:
    c = AIOKafkaConsumer(topic, bootstrap_servers=bs, auto_offset_reset="earliest", **kw)
    await c.start()
    out: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < n and time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=200, max_records=10000)
            for recs in batch.values():
                out.extend(recs)
    finally:
        await c.stop()
    return out


async def probe_roundtrip(bs: str) -> None:
    t = _name("b")
    await ensure_topics(bs, [TopicSpec(t, 1)])
    p = AIOKafkaProducer(bootstrap_servers=bs)
    await p.start()
    ts = 1_600_000_000_123
    md = await p.send_and_wait(
        t, b"value", key=b"key", headers=[("h1", b"x"), ("h2", b"")], timestamp_ms=ts
    )
    print("b. send metadata:", md)
    batch = p.create_batch()
    batch.append(key=b"bk", value=b"bv", timestamp=ts + 1, headers=[("hb", b"y")])
    fut = await p.send_batch(batch, t, partition=0)
    print("c. send_batch metadata:", await fut)
    await p.stop()
    got = await _consume_all(bs, t, 2, timeout=5)
    for r in got:
        print(
            f"b/c. got key={r.key!r} value={r.value!r} headers={r.headers!r} "
            f"timestamp={r.timestamp!r} type={r.timestamp_type!r}"
        )


async def probe_throughput(bs: str, n: int) -> None:
    value = b"x" * 100
    for acks in (1, "all"):
        t = _name("c")
        await ensure_topics(bs, [TopicSpec(t, 4)])
        p = AIOKafkaProducer(bootstrap_servers=bs, acks=acks, linger_ms=5)
        await p.start()
        start = time.perf_counter()
        futs = [await p.send(t, value, key=str(i).encode()) for i in range(n)]
        await asyncio.gather(*futs)
        dt = time.perf_counter() - start
        print(f"c. send() per record, acks={acks}: {n / dt:,.0f} rec/s")
        await p.stop()

        t = _name("c")
        await ensure_topics(bs, [TopicSpec(t, 4)])
        p = AIOKafkaProducer(bootstrap_servers=bs, acks=acks)
        await p.start()
        start = time.perf_counter()
        futs = []
        i = 0
        while i < n:
            for part in range(4):
                b = p.create_batch()
                while (
                    i < n and b.append(key=str(i).encode(), value=value, timestamp=None) is not None
                ):
                    i += 1
                b.close()
                futs.append(await p.send_batch(b, t, partition=part))
                if i >= n:
                    break
        await asyncio.gather(*futs)
        dt = time.perf_counter() - start
        print(f"c. send_batch, acks={acks}: {n / dt:,.0f} rec/s ({len(futs)} batches)")
        await p.stop()
    # consume-only rate on the last topic
    c = AIOKafkaConsumer(t, bootstrap_servers=bs, auto_offset_reset="earliest")
    await c.start()
    start = time.perf_counter()
    got = 0
    while got < n:
        batch = await c.getmany(timeout_ms=500, max_records=10000)
        got += sum(len(v) for v in batch.values())
    dt = time.perf_counter() - start
    print(f"d. getmany consume-only: {got / dt:,.0f} rec/s ({got} records)")
    await c.stop()


async def probe_group(bs: str) -> None:
    t, g = _name("d"), _name("g")
    await ensure_topics(bs, [TopicSpec(t, 4)])
    p = AIOKafkaProducer(bootstrap_servers=bs)
    await p.start()
    for i in range(400):
        await p.send(t, str(i).encode(), key=str(i).encode())
    await p.flush()
    await p.stop()

    def consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            t,
            bootstrap_servers=bs,
            group_id=g,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )

    c1, c2 = consumer(), consumer()
    await c1.start()
    await c2.start()
    start = time.monotonic()
    while time.monotonic() - start < 15:
        await asyncio.gather(c1.getmany(timeout_ms=200), c2.getmany(timeout_ms=200))
        a1, a2 = c1.assignment(), c2.assignment()
        if a1 and a2 and len(a1 | a2) == 4 and not (a1 & a2):
            break
    print(
        f"d. two members after {time.monotonic() - start:.1f}s:",
        sorted(tp.partition for tp in c1.assignment()),
        sorted(tp.partition for tp in c2.assignment()),
    )
    # c1 reads and commits its share; then leaves.
    got1 = 0
    for _ in range(10):
        b = await c1.getmany(timeout_ms=200)
        got1 += sum(len(v) for v in b.values())
    await c1.commit()
    committed = {tp.partition: await c1.committed(tp) for tp in c1.assignment()}
    print("d. c1 read", got1, "committed", committed)
    await c1.stop()
    start = time.monotonic()
    while time.monotonic() - start < 20:
        await c2.getmany(timeout_ms=200)
        if len(c2.assignment()) == 4:
            break
    print(
        f"d. after c1 left, c2 holds {sorted(tp.partition for tp in c2.assignment())} "
        f"after {time.monotonic() - start:.1f}s"
    )
    positions = {tp.partition: await c2.position(tp) for tp in c2.assignment()}
    print("d. c2 positions (c1's partitions should start at committed offsets):", positions)
    await c2.stop()
    # restart from committed offsets
    c3 = consumer()
    await c3.start()
    got3 = 0
    for _ in range(20):
        b = await c3.getmany(timeout_ms=200)
        got3 += sum(len(v) for v in b.values())
    print("d. restarted member (same group) read", got3, "records (uncommitted rest)")
    await c3.stop()


async def probe_offsets(bs: str) -> None:
    t = _name("e")
    await ensure_topics(bs, [TopicSpec(t, 2)])
    p = AIOKafkaProducer(bootstrap_servers=bs)
    await p.start()
    for i in range(10):
        await p.send(t, b"v", partition=i % 2)
    await p.flush()
    await p.stop()
    c = AIOKafkaConsumer(bootstrap_servers=bs, enable_auto_commit=False)
    await c.start()
    tps = [TopicPartition(t, 0), TopicPartition(t, 1)]
    c.assign(tps)
    print("e. end_offsets:", await c.end_offsets(tps))
    print("e. beginning_offsets:", await c.beginning_offsets(tps))
    await c.seek_to_beginning()
    print("e. position after seek_to_beginning:", [await c.position(tp) for tp in tps])
    b = await c.getmany(timeout_ms=1000)
    print("e. read", sum(len(v) for v in b.values()), "records with manual assign")
    print(
        "e. highwater:",
        [c.highwater(tp) for tp in tps],
        "last_stable",
        [c.last_stable_offset(tp) for tp in tps],
    )
    print("e. offsets_for_times(0):", await c.offsets_for_times({tps[0]: 0}))
    await c.stop()


async def probe_idempotence(bs: str) -> None:
    t = _name("f")
    await ensure_topics(bs, [TopicSpec(t, 1)])
    p = AIOKafkaProducer(bootstrap_servers=bs, acks="all")
    await p.start()
    print("f. acks=all, idempotence off:", await p.send_and_wait(t, b"v"))
    await p.stop()
    p = AIOKafkaProducer(bootstrap_servers=bs, enable_idempotence=True)
    try:
        await asyncio.wait_for(p.start(), 15)
        md = await asyncio.wait_for(p.send_and_wait(t, b"v"), 15)
        print("f. idempotent producer sent:", md)
    except Exception as exc:
        print("f. idempotent producer failed:", type(exc).__name__, exc)
    finally:
        await p.stop()


async def probe_restart(broker: EmbeddedBroker) -> None:
    bs = broker.bootstrap
    t = _name("g")
    await ensure_topics(bs, [TopicSpec(t, 1)])
    p = AIOKafkaProducer(bootstrap_servers=bs, request_timeout_ms=5000)
    await p.start()
    c = AIOKafkaConsumer(
        t, bootstrap_servers=bs, auto_offset_reset="earliest", request_timeout_ms=5000
    )
    await c.start()
    await p.send_and_wait(t, b"before")
    print(
        "g. consumer got before kill:",
        [r.value for v in (await c.getmany(timeout_ms=2000)).values() for r in v],
    )
    broker.kill()
    try:
        md = await asyncio.wait_for(p.send_and_wait(t, b"while-down"), 8)
        print("g. send while down:", md)
    except Exception as exc:
        print("g. send while down raised:", type(exc).__name__, exc)
    try:
        b = await asyncio.wait_for(c.getmany(timeout_ms=2000), 8)
        print("g. getmany while down returned", sum(len(v) for v in b.values()), "records")
    except Exception as exc:
        print("g. getmany while down raised:", type(exc).__name__, exc)
    broker.start()
    print("g. broker restarted (empty: topics lost)")
    try:
        md = await asyncio.wait_for(p.send_and_wait(t, b"after"), 15)
        print("g. send after restart:", md)
    except Exception as exc:
        print("g. send after restart raised:", type(exc).__name__, exc)
    try:
        got = []
        for _ in range(10):
            b = await asyncio.wait_for(c.getmany(timeout_ms=500), 8)
            got += [r.value for v in b.values() for r in v]
        print(
            "g. consumer after restart got:",
            got,
            "position",
            await c.position(TopicPartition(t, 0)),
        )
    except Exception as exc:
        print("g. getmany after restart raised:", type(exc).__name__, exc)
    await c.stop()
    await p.stop()


async def probe_blob_producer(bs: str, n: int) -> None:
    from stream.produce import produce_blobs

    for fmt in ("json", "f32"):
        t = _name("blobs")
        report = await produce_blobs(bs, t, n, dim=8, k=5, fmt=fmt, partitions=4)
        print(f"c. produce_blobs {fmt} dim=8: {report.rate:,.0f} rec/s ({n} records)")
    c = AIOKafkaConsumer(t, bootstrap_servers=bs, auto_offset_reset="earliest")
    await c.start()
    start = time.perf_counter()
    got = 0
    while got < n:
        batch = await c.getmany(timeout_ms=500, max_records=10000)
        got += sum(len(v) for v in batch.values())
    dt = time.perf_counter() - start
    print(f"d. getmany(max_records=10000) consume-only: {got / dt:,.0f} rec/s ({got} records)")
    await c.stop()


async def probe_fetch_wait(bs: str, sends: int = 60) -> None:
    """Does a fetch held by the broker return when data arrives, or only when its wait is over?"""
    import statistics

    for wait_ms in (1, 5, 10, 50, 200):
        t = _name("wait")
        await ensure_topics(bs, [TopicSpec(t, 1)])
        p = AIOKafkaProducer(bootstrap_servers=bs, acks="all")
        c = AIOKafkaConsumer(bootstrap_servers=bs, fetch_max_wait_ms=wait_ms)
        await p.start()
        await c.start()
        c.assign([TopicPartition(t, 0)])
        await c.seek_to_beginning()
        lat: list[float] = []

        async def read(c=c, lat=lat) -> None:
            while len(lat) < sends:
                batch = await c.getmany(timeout_ms=1000)
                now = time.time() * 1000
                lat.extend(now - r.timestamp for rs in batch.values() for r in rs)

        reader = asyncio.create_task(read())
        await asyncio.sleep(0.3)
        for _ in range(sends):
            await (await p.send(t, b"x", timestamp_ms=int(time.time() * 1000)))
            await asyncio.sleep(0.037)
        await reader
        await c.stop()
        await p.stop()
        print(
            f"h. fetch_max_wait_ms={wait_ms}: send -> consumer median "
            f"{statistics.median(lat):.1f} ms, max {max(lat):.1f} ms ({sends} single sends)"
        )


async def probe_idle_fetch_cpu(broker: EmbeddedBroker, seconds: float = 5.0) -> None:
    """CPU an idle consumer of 4 partitions costs, itself and the broker, by fetch wait."""
    import resource

    def broker_cpu_s() -> float:
        assert broker._proc is not None
        fields = Path(f"/proc/{broker._proc.pid}/stat").read_text().split()
        return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")

    def own_cpu_s() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    t = _name("idle")
    await ensure_topics(broker.bootstrap, [TopicSpec(t, 4)])
    for wait_ms in (1, 2, 5, 10):
        c = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, fetch_max_wait_ms=wait_ms)
        await c.start()
        c.assign([TopicPartition(t, p) for p in range(4)])
        await c.getmany(timeout_ms=500)
        own, brk, start = own_cpu_s(), broker_cpu_s(), time.monotonic()
        while time.monotonic() - start < seconds:
            await c.getmany(timeout_ms=100)
        wall = time.monotonic() - start
        print(
            f"h. idle consumer, fetch_max_wait_ms={wait_ms}: client "
            f"{100 * (own_cpu_s() - own) / wall:.0f}% of a core, broker "
            f"{100 * (broker_cpu_s() - brk) / wall:.0f}%"
        )
        await c.stop()


async def main(records: int) -> None:
    with EmbeddedBroker() as broker:
        bs = broker.bootstrap
        print("broker", bs, "log", broker.log_path)
        await probe_topics(bs)
        await probe_roundtrip(bs)
        await probe_offsets(bs)
        await probe_idempotence(bs)
        await probe_group(bs)
        await probe_throughput(bs, records)
        await probe_blob_producer(bs, 2 * records)
        await probe_fetch_wait(bs)
        await probe_idle_fetch_cpu(broker)
        await probe_restart(broker)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    asyncio.run(main(parser.parse_args().records))
