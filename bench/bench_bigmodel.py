"""Benchmark a big model, k = 600, d = 1024 (f32), against k = 8 on the same records (issue 13).

Run: .venv/bin/python bench/bench_bigmodel.py [--runs 2] [--count 30000] [--no-write]

``--count`` f32 records (d = 1024, 600 Gaussian blobs, 4 partitions) are preloaded on the
embedded broker. An in-process ``Service`` (max_batch = 4096, refit every 2,048 records,
otherwise defaults) drains them with k = 600 and, as the baseline in the same run, with k = 8:
fresh group and model each, alternating which goes first. For each drain:

- steady drain rate: records/s from the first labeled batch to the last;
- update rate: model versions applied per second over the same span;
- the stats messages as written to ``<model>.updates``: bytes and records (parts) per message,
  and the largest record (key + value + headers) on both model topics;
- publishing one stats message: writing its records one by one, acks=all (the service waits
  for this in its loop once per refit);
- start from the snapshot the service wrote on shutdown: the time a new instance takes to read
  it and replay the log after it (``open_model``, what `serve` does before joining the group),
  against replaying the whole log with no snapshot;
- the labeling ceiling: ``engine.model_batch_stats`` alone on 4096-record batches, no Kafka.

Each run gets a fresh broker. The table goes between the markers in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaProducer
from bench_service import serve_gc  # bench/bench_service.py
from report import listed, machine_facts, run_and_report, runs_parser  # bench/report.py

from engine import ModelState, model_batch_stats, warmup
from model.log import open_model, publish_message
from model.messages import STATS, ModelReplica, encode_snapshot, message_type
from model.parts import read_part
from stream.broker import EmbeddedBroker
from stream.compiled import quiet_worker_threads
from stream.config import Settings
from stream.produce import produce_blobs
from stream.service import Service

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from kafka_helpers import all_records

DIM, BIG_K, BASE_K, PARTITIONS, MAX_BATCH, REFIT = 1024, 600, 8, 4, 4096, 2048


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Drain:
    """What one drain measured."""

    k: int
    rate: float  # records/s, steady
    updates_per_s: float  # model versions applied per second, same span
    versions: int
    stats_bytes: float  # median bytes of a stats message
    stats_parts: float  # median records per stats message
    largest_record: int  # bytes (key + value + headers) on the model topics
    publish_ms: float  # one stats message written, median
    labeling_ceiling: float  # records/s of model_batch_stats alone
    snapshot_bytes: int
    snapshot_start_s: float  # open_model from the latest snapshot
    scratch_start_s: float  # open_model with no snapshot: the whole log
    log_records: int


async def drain(settings: Settings, count: int) -> tuple[float, float, int]:
    """(steady records/s, versions/s, versions applied) of a service draining `count` records."""
    service = Service(settings)
    task = asyncio.create_task(service.run())
    t_first = n_first = v_first = None
    t0 = time.perf_counter()
    try:
        with serve_gc():
            while (done := service.labeled + service.invalid) < count:
                if task.done():
                    task.result()
                    raise RuntimeError(f"service stopped after {done} of {count} records")
                if t_first is None and done:
                    t_first, n_first, v_first = time.perf_counter(), done, service.replica.version
                if time.perf_counter() - t0 > 300:
                    raise RuntimeError(f"service labeled {done} of {count} records in 300 s")
                await asyncio.sleep(0.002)
            t_end, v_end = time.perf_counter(), service.replica.version
    finally:
        service.stopping.set()
        await asyncio.wait_for(task, 120)
    assert t_first is not None and n_first is not None and v_first is not None
    span = t_end - t_first
    return (count - n_first) / span, (v_end - v_first) / span, service.replica.version


def record_bytes(rec) -> int:  # type: ignore[no-untyped-def]
    headers = sum(len(k.encode()) + len(v or b"") for k, v in rec.headers or ())
    return len(rec.key or b"") + len(rec.value or b"") + headers


def stats_messages(records: list) -> list[tuple[int, int]]:
    """(bytes, records) of every stats message in the updates log."""
    messages: dict[str, list[int]] = defaultdict(list)
    out = []
    for rec in records:
        if message_type(rec.headers) != STATS:
            continue
        part = read_part(rec.headers)
        if part is None:
            out.append((len(rec.value), 1))
            continue
        messages[part.split].append(len(rec.value))
        if part.index == part.count:
            out.append((sum(messages[part.split]), part.count))
    return out


async def start_time(s: Settings, snapshots_topic: str) -> tuple[float, ModelReplica, int]:
    """(seconds, replica, records replayed after the snapshot) of bringing a fresh replica to
    the end of the log the way `serve` starts."""
    replica = ModelReplica()
    t0 = time.perf_counter()
    log, snapshot = await open_model(
        replica, s.updates_topic, snapshots_topic, s.model, s.kafka_client_kwargs()
    )
    seconds = time.perf_counter() - t0
    await log.stop()
    first = 0 if snapshot is None else snapshot.next_offset
    return seconds, replica, replica.next_offset - first


async def publish_ms(bootstrap: str, size: int, times: int = 7) -> float:
    """Median ms to write a stats message of `size` bytes as the service does."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=512 * 1024)
    await producer.start()
    body, topic, spent = np.random.default_rng(0).bytes(size), _name("scratch"), []
    try:
        for _ in range(times):
            t0 = time.perf_counter()
            await publish_message(producer, topic, STATS, body)
            spent.append(time.perf_counter() - t0)
    finally:
        await producer.stop()
    return statistics.median(spent) * 1000


def labeling_ceiling(state: ModelState) -> float:
    """Records/s of assigning 4096-record f32 batches and gathering their statistics."""
    X = np.random.default_rng(0).normal(size=(MAX_BATCH, state.d)).astype(np.float32)
    model_batch_stats(X, state)
    t0, n = time.perf_counter(), 5
    for _ in range(n):
        model_batch_stats(X, state)
    return n * MAX_BATCH / (time.perf_counter() - t0)


async def measure(bootstrap: str, topic: str, k: int, count: int) -> Drain:
    s = Settings(
        bootstrap=bootstrap,
        input_topic=topic,
        output_topic=_name("labels"),
        group=_name("g"),
        model=_name(f"k{k}"),
        k=k,
        dim=DIM,
        input_format="f32",
        max_batch=MAX_BATCH,
        refit_every=REFIT,
        metrics_port=0,
        session_timeout=3.0,
    )
    rate, updates, versions = await drain(s, count)
    records = await all_records(bootstrap, s.updates_topic)
    stats = stats_messages(records)
    snaps = await all_records(bootstrap, s.snapshots_topic)
    snap_s, replica, _ = await start_time(s, s.snapshots_topic)
    scratch_s, _, _ = await start_time(s, _name("no-snapshots"))
    assert replica.state is not None
    stats_bytes = statistics.median(b for b, _ in stats)
    return Drain(
        k=k,
        rate=rate,
        updates_per_s=updates,
        versions=versions,
        stats_bytes=stats_bytes,
        stats_parts=statistics.median(p for _, p in stats),
        largest_record=max(map(record_bytes, records + snaps)),
        publish_ms=await publish_ms(bootstrap, int(stats_bytes)),
        labeling_ceiling=labeling_ceiling(replica.state),
        snapshot_bytes=len(encode_snapshot(replica.snapshot())),
        snapshot_start_s=snap_s,
        scratch_start_s=scratch_s,
        log_records=replica.next_offset,
    )


async def main(args: argparse.Namespace) -> str:
    quiet_worker_threads()  # as `streamkm serve` starts: idle OpenMP workers sleep
    warmup()
    results: dict[int, list[Drain]] = {BIG_K: [], BASE_K: []}
    broker = EmbeddedBroker()
    try:
        for run in range(args.runs):
            broker.restart()
            topic = _name("f32")
            await produce_blobs(
                broker.bootstrap, topic, args.count, dim=DIM, k=BIG_K, seed=run, fmt="f32",
                partitions=PARTITIONS,
            )  # fmt: skip
            order = [BIG_K, BASE_K] if run % 2 == 0 else [BASE_K, BIG_K]
            for k in order:
                d = await measure(broker.bootstrap, topic, k, args.count)
                results[k].append(d)
                print(
                    f"run {run + 1} k={k}: {d.rate:,.0f} rec/s, {d.updates_per_s:.1f} updates/s, "
                    f"stats {d.stats_bytes:,.0f} B in {d.stats_parts:.0f} records, start "
                    f"{d.snapshot_start_s:.2f} s from snapshot / {d.scratch_start_s:.2f} s without",
                    file=sys.stderr,
                )
    finally:
        broker.stop()
    return report(args, results)


def report(args: argparse.Namespace, results: dict[int, list[Drain]]) -> str:
    def med(k: int, field: str) -> float:
        return statistics.median(getattr(d, field) for d in results[k])

    def runs(k: int, field: str, fmt: str) -> str:
        return listed((getattr(d, field) for d in results[k]), fmt)

    rows = [
        ("steady drain (rec/s)", "rate", "{:,.0f}"),
        ("model updates applied per second", "updates_per_s", "{:.1f}"),
        ("model versions at the end of the drain", "versions", "{:,.0f}"),
        ("stats message, median (bytes)", "stats_bytes", "{:,.0f}"),
        ("records per stats message (parts)", "stats_parts", "{:.0f}"),
        ("largest model-topic record, key + value + headers (bytes)", "largest_record", "{:,.0f}"),
        ("publish one stats message, acks=all (ms)", "publish_ms", "{:.1f}"),
        ("labeling ceiling: engine alone, no Kafka (rec/s)", "labeling_ceiling", "{:,.0f}"),
        ("snapshot (bytes)", "snapshot_bytes", "{:,.0f}"),
        ("start from the shutdown snapshot + replay (s)", "snapshot_start_s", "{:.2f}"),
        ("start with no snapshot: replay the whole log (s)", "scratch_start_s", "{:.2f}"),
        ("updates-log records in all", "log_records", "{:,.0f}"),
    ]
    table = [
        f"| measure | k = {BIG_K}, d = {DIM} | k = {BASE_K}, d = {DIM} (baseline) | runs (k = {BIG_K}) |",
        "| --- | ---: | ---: | --- |",
    ]  # fmt: skip
    for label, field, fmt in rows:
        table.append(
            f"| {label} | {fmt.format(med(BIG_K, field))} | {fmt.format(med(BASE_K, field))} | "
            f"{runs(BIG_K, field, fmt)} |"
        )
    ratio = med(BIG_K, "rate") / med(BASE_K, "rate")
    largest = max(d.largest_record for drains in results.values() for d in drains)
    fits = (
        "Every record on the model topics stayed under 1,000,000 bytes."
        if largest <= 1_000_000
        else f"**A record on the model topics took {largest:,} bytes, over 1,000,000.**"
    )
    per_record_us = {
        "drain": 1e6 / med(BIG_K, "rate"),
        "labeling": 1e6 / med(BIG_K, "labeling_ceiling"),
        "reading": 1e6 / med(BASE_K, "rate"),
        "publishing": 1e3 * med(BIG_K, "publish_ms") / REFIT,
    }
    return "\n".join(
        [
            "## Big models: k = 600, d = 1024 on a 1 MB broker limit (issue 13)",
            "",
            machine_facts(
                f"{args.count:,} f32 records (d = {DIM}) per drain, {args.runs} runs, "
                f"max_batch {MAX_BATCH}, refit every {REFIT}."
            ),
            "",
            f"Command: `.venv/bin/python bench/bench_bigmodel.py --runs {args.runs} "
            f"--count {args.count}`",
            "",
            *table,
            "",
            f"The big model drains at {ratio:.2f}x the rate of k = {BASE_K} on the same records, "
            f"{per_record_us['drain']:.0f} µs per record: labeling alone takes "
            f"{per_record_us['labeling']:.0f} µs (k·d = {BIG_K * DIM:,} multiply-adds), reading "
            f"and writing the 4 KB records about {per_record_us['reading']:.0f} µs (the k = "
            f"{BASE_K} drain), publishing the statistics {per_record_us['publishing']:.0f} µs, and "
            "the rest is the round trip of each stats message through the updates log (read back "
            "in parts and applied, which a backlog drain waits for under `--max-staleness`). "
            f"{fits} The shutdown "
            "snapshot covers the whole log, so starting from it replays nothing; without it a "
            "replica replays every message. Medians of the runs; start times are those of a fresh "
            "in-process replica (`open_model`), consumer start-up included.",
        ]
    )


if __name__ == "__main__":
    run_and_report("bigmodel", main, runs_parser(__doc__, runs=2, count=30_000))
