"""Benchmark named-field decoding: drain rate of transaction events against `features` arrays.

Run: .venv/bin/python bench/bench_fields.py [--runs 3] [--count 200000] [--no-write]

Two topics of ``--count`` records each (4 partitions) are preloaded on the embedded broker:
- *fields*: card transactions from ``stream.transactions`` (JSON objects with named, mixed-scale
  fields plus an id, a category, a segment and ``is_fraud``), served with
  ``--fields TRANSACTION_FIELDS`` (8 fields, ``log1p`` on three of them) and ``--scale standard``;
- *features*: ``{"id", "features": [8 numbers], "truth"}`` records from ``streamkm produce``,
  served as before (no fields, no scaling).
An in-process ``Service`` (k = 8, max_batch = 4096) drains each; the rate is steady records/s from
its first labeled batch to the last. Each run restarts the broker and alternates which topic is
drained first. The figure the issue asks for is fields / features per run, and its median.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid

from aiokafka import AIOKafkaProducer
from bench_service import serve_gc  # bench/bench_service.py
from report import listed, machine_facts, run_and_report, runs_parser  # bench/report.py

from engine import warmup
from model.topics import TopicSpec, ensure_topics
from stream.broker import EmbeddedBroker
from stream.compiled import quiet_worker_threads
from stream.config import Settings
from stream.produce import BlobStream, encode_block, produce_blobs
from stream.service import Service
from stream.transactions import TRANSACTION_FIELDS, TransactionStream, encode_transactions

K, DIM, PARTITIONS, MAX_BATCH = 8, 8, 4, 4096


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def preload_transactions(bootstrap: str, topic: str, count: int) -> None:
    """Write `count` transaction events, spread round-robin over the partitions."""
    await ensure_topics(bootstrap, [TopicSpec(topic, PARTITIONS)], {"bootstrap_servers": bootstrap})
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=512 * 1024)
    await producer.start()
    try:
        futures = []
        for blk in TransactionStream(seed=0).blocks(count):
            values = encode_transactions(blk)
            for p in range(PARTITIONS):
                batch = producer.create_batch()
                for v in values[p::PARTITIONS]:
                    if batch.append(key=None, value=v, timestamp=None) is None:
                        batch.close()
                        futures.append(await producer.send_batch(batch, topic, partition=p))
                        batch = producer.create_batch()
                        batch.append(key=None, value=v, timestamp=None)
                batch.close()
                futures.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def drain(settings: Settings, count: int) -> float:
    """Steady records/s of a service draining `count` preloaded records."""
    service = Service(settings)
    task = asyncio.create_task(service.run())
    t_first, n_first = None, 0
    t0 = time.perf_counter()
    try:
        with serve_gc():
            while (done := service.labeled + service.invalid) < count:
                if task.done():
                    task.result()
                    raise RuntimeError(f"service stopped after {done} of {count} records")
                if t_first is None and done:
                    t_first, n_first = time.perf_counter(), done
                if time.perf_counter() - t0 > 300:
                    raise RuntimeError(f"service labeled {done} of {count} records in 300 s")
                await asyncio.sleep(0.002)
            t_end = time.perf_counter()
    finally:
        service.stopping.set()
        await asyncio.wait_for(task, 60)
    assert t_first is not None
    return (count - n_first) / (t_end - t_first)


def drain_settings(bootstrap: str, topic: str, **kw: object) -> Settings:
    """A drain's settings: fresh group and model, k = K and max_batch = MAX_BATCH unless `kw`
    says otherwise, no metrics port."""
    given: dict[str, object] = {
        "bootstrap": bootstrap,
        "input_topic": topic,
        "output_topic": f"{topic}.labels",
        "group": _name("g"),
        "model": _name("m"),
        "k": K,
        "max_batch": MAX_BATCH,
        "metrics_port": 0,
        "session_timeout": 3.0,
    }
    return Settings(**{**given, **kw})  # type: ignore[arg-type]


async def main(args: argparse.Namespace) -> str:
    quiet_worker_threads()  # as `streamkm serve` starts: idle OpenMP workers sleep
    warmup()
    rates: dict[str, list[float]] = {"fields": [], "features": []}
    broker = EmbeddedBroker()
    try:
        for run in range(args.runs):
            broker.restart()
            b = broker.bootstrap
            t_fields, t_features = _name("tx"), _name("vec")
            await preload_transactions(b, t_fields, args.count)
            await produce_blobs(b, t_features, args.count, dim=DIM, k=K, seed=run, partitions=4)
            plan = {
                "fields": drain_settings(b, t_fields, fields=TRANSACTION_FIELDS, scale="standard"),
                "features": drain_settings(b, t_features, dim=DIM),
            }
            order = list(plan) if run % 2 == 0 else list(plan)[::-1]
            for name in order:
                rates[name].append(await drain(plan[name], args.count))
                print(f"run {run + 1} {name}: {rates[name][-1]:,.0f} rec/s", file=sys.stderr)
    finally:
        broker.stop()
    return report(args, rates)


def value_sizes() -> dict[str, float]:
    """Mean value size in bytes of the two kinds of records (the first 4096 of each)."""
    tx = encode_transactions(TransactionStream(seed=0).block(0, 4096))
    vec = encode_block(next(BlobStream(DIM, K, seed=0).blocks(4096)), "json")
    return {"fields": statistics.fmean(map(len, tx)), "features": statistics.fmean(map(len, vec))}


def report(args: argparse.Namespace, rates: dict[str, list[float]]) -> str:
    sizes = value_sizes()
    ratios = [f / v for f, v in zip(rates["fields"], rates["features"], strict=True)]

    return "\n".join(
        [
            "## Named-field events against feature arrays (issue 12)",
            "",
            machine_facts(f"{args.count:,} records per drain, {args.runs} runs, k={K}, d={DIM}."),
            "",
            "Command: `.venv/bin/python bench/bench_fields.py "
            f"--runs {args.runs} --count {args.count}`",
            "",
            "| input | steady drain, median (rec/s) | runs |",
            "| --- | ---: | --- |",
            f"| transactions, `--fields` (8 fields, 3 x log1p) + `--scale standard` | "
            f"{statistics.median(rates['fields']):,.0f} | {listed(rates['fields'], '{:,.0f}')} |",
            f"| `features` arrays, d = 8 | {statistics.median(rates['features']):,.0f} | "
            f"{listed(rates['features'], '{:,.0f}')} |",
            f"| **ratio fields / features** (target ≥ 0.70) | **{statistics.median(ratios):.2f}** | "
            f"{listed(ratios, '{:.2f}')} |",
            "",
            f"Mean value size: transactions {sizes['fields']:.0f} bytes, feature arrays "
            f"{sizes['features']:.0f} bytes; a transaction also carries fields that are not "
            "features (id, category, segment, is_fraud), which are parsed all the same.",
        ]
    )


if __name__ == "__main__":
    run_and_report("fields", main, runs_parser(__doc__, runs=3, count=200_000))
