"""Benchmark the service on the embedded broker: drain rate, end-to-end latency, stage split.

Run: .venv/bin/python bench/bench_service.py [--runs 3] [--count 200000] [--latency-seconds 20]
     [--rate 5000] [--skip-latency] [--skip-metrics-off] [--no-write]

1. Drain: ``--count`` JSON records (d = 8, k = 8, 4 partitions) are preloaded, then an in-process
   ``Service`` (k = 8, max_batch = 4096, session timeout 3 s) labels them all. Timed from the
   service's creation ("incl. start-up") and from its first labeled batch ("steady"). The baseline
   in the same run is the consume-only ceiling: a group-less AIOKafkaConsumer reading the same
   records without processing. Repeated for ``--input-format f32``.
2. Latency: the service runs first and is warmed up; a child process then offers ``--rate``
   records/s (bench/loadgen.py) while another reads the output topic and records arrival time -
   record timestamp; the service notes when each batch was fetched, sent and acknowledged.
3. Stage split: the sums of ``streamkm_stage_seconds`` over the JSON drains, as % of loop wall time.
4. Metrics cost: each run also drains a JSON topic with the metrics off (``NullMetrics``, a
   ``ServiceMetrics`` whose updates do nothing), in alternating order with the metrics-on drain,
   and ``record_batch`` of a 4096-record batch is timed on its own against the time per batch.

Each run gets a fresh broker (restarted, so nothing from earlier runs stays in its memory) and
fresh topics, group and model. The table goes between the markers in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import multiprocessing as mp
import shlex
import statistics
import sys
import time
import timeit
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from loadgen import paced_load  # bench/loadgen.py
from report import BENCHMARKS, machine_facts, write_section  # bench/report.py

from engine import warmup
from metrics import ServiceMetrics, histogram_quantile
from metrics.service_metrics import STAGES
from stream.batches import Fetched, Sent
from stream.broker import EmbeddedBroker
from stream.compiled import quiet_worker_threads
from stream.config import Settings
from stream.produce import produce_blobs
from stream.service import GC_THRESHOLDS, Service

DIM, K, PARTITIONS, MAX_BATCH, SESSION_TIMEOUT = 8, 8, 4, 4096, 3.0
WARMUP_BURST = 4096


@contextlib.contextmanager
def serve_gc() -> Iterator[None]:
    """The GC thresholds `streamkm serve` sets for itself, for the in-process service only.

    The hand-written baselines share this process and keep Python's defaults, as a team's
    consumer would.
    """
    before = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _settings(bootstrap: str, topic: str, fmt: str) -> Settings:
    return Settings(
        bootstrap=bootstrap,
        input_topic=topic,
        output_topic=f"{topic}.labels",
        group=_name("g"),
        model=_name("m"),
        k=K,
        dim=DIM,
        input_format=fmt,
        max_batch=MAX_BATCH,
        metrics_port=0,
        session_timeout=SESSION_TIMEOUT,
    )


# --- 1. drain ---------------------------------------------------------------------------------


@dataclass
class Drain:
    """One drain of a preloaded topic."""

    fmt: str
    metrics: bool  # False: NullMetrics, every metric update a no-op
    count: int
    startup_s: float  # service created -> first labeled batch seen
    total_s: float  # service created -> last record labeled
    steady_rate: float  # records/s after the first labeled batch
    ceiling_rate: float  # consume-only baseline on the same topic
    steady_s: float  # first labeled batch seen -> last record labeled
    stages: dict[str, float]  # seconds per stage summed over the batches of the steady window

    @property
    def total_rate(self) -> float:
        return self.count / self.total_s


def stage_sums(service: Service) -> dict[str, float]:
    """Seconds recorded so far in each stage of ``streamkm_stage_seconds``."""
    return {stage: service.metrics.stage_seconds.snapshot(stage)[1] for stage in STAGES}


async def consume_only(bootstrap: str, topic: str, count: int) -> float:
    """Records/s of a group-less consumer reading ``count`` records from the start, no processing."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        seen, t0 = 0, time.perf_counter()
        while seen < count:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            seen += sum(len(records) for records in batches.values())
            if time.perf_counter() - t0 > 120:
                raise RuntimeError(f"consume-only read {seen} of {count} records in 120 s")
        return count / (time.perf_counter() - t0)
    finally:
        await consumer.stop()


class NullMetrics(ServiceMetrics):
    """Metrics whose every update does nothing: the service with the metrics off."""

    def record_batch(self, **_: object) -> None:
        pass

    def set_model(self, *_: object) -> None:
        pass

    def set_lag(self, *_: object) -> None:
        pass

    def set_updates_lag(self, *_: object) -> None:
        pass

    def inc_reseeds(self, *_: object) -> None:
        pass


async def drain(bootstrap: str, count: int, fmt: str, metrics: bool = True) -> Drain:
    """Preload a fresh topic, take the consume-only ceiling, then time the service over it."""
    topic = _name(f"drain-{fmt}")
    await produce_blobs(bootstrap, topic, count, dim=DIM, k=K, fmt=fmt, partitions=PARTITIONS)
    ceiling = await consume_only(bootstrap, topic, count)
    with serve_gc():
        return await _drain_service(bootstrap, topic, count, fmt, metrics, ceiling)


async def _drain_service(
    bootstrap: str, topic: str, count: int, fmt: str, metrics: bool, ceiling: float
) -> Drain:
    service = Service(_settings(bootstrap, topic, fmt), None if metrics else NullMetrics())
    t_start = time.perf_counter()
    task = asyncio.create_task(service.run())
    t_first = None
    n_first, at_first = 0, {}
    try:
        while (done := service.labeled + service.invalid) < count:
            if task.done():
                task.result()
                raise RuntimeError(f"service stopped after {done} of {count} records")
            now = time.perf_counter()
            if t_first is None and done:
                t_first, n_first, at_first = now, done, stage_sums(service)
            if now - t_start > 300:
                raise RuntimeError(f"service labeled {done} of {count} records in 300 s")
            await asyncio.sleep(0.002)
        t_end = time.perf_counter()
    finally:
        service.stopping.set()
        await asyncio.wait_for(task, 60)
    assert t_first is not None
    at_end = stage_sums(service)
    return Drain(
        fmt=fmt,
        metrics=metrics,
        count=count,
        startup_s=t_first - t_start,
        total_s=t_end - t_start,
        steady_rate=(count - n_first) / (t_end - t_first),
        ceiling_rate=ceiling,
        steady_s=t_end - t_first,
        stages={stage: at_end[stage] - at_first[stage] for stage in STAGES},
    )


# --- 2. latency -------------------------------------------------------------------------------


async def _arrival_latencies(
    bootstrap: str, topic: str, since_ms: int, n: int, fetch_max_wait_ms: int, ready
) -> np.ndarray:
    """Arrival time - record timestamp (ms) of the first ``n`` records of ``topic`` >= since_ms."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        ready()
        lat: list[float] = []
        deadline = time.monotonic() + 120 + n / 1000
        while len(lat) < n and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=100)
            now_ms = time.time() * 1000.0
            for records in batches.values():
                lat.extend(now_ms - r.timestamp for r in records if r.timestamp >= since_ms)
        return np.asarray(lat, np.float64)
    finally:
        await consumer.stop()


def _read_latencies(
    bootstrap: str, in_topic: str, out_topic: str, since_ms: int, n: int, floor: bool, ready, out
) -> None:
    """Child process: latencies seen by a reader of the output (5 ms fetch wait, the headline)
    and, with ``floor``, by a reader of the input with the same 5 ms fetch wait: the floor set
    by the broker and the load generator. (At high rates the second reader is left out: on two
    cores its CPU would be taken from the service it measures.)"""

    async def read() -> tuple[np.ndarray, np.ndarray]:
        started: list[int] = []
        readers = 2 if floor else 1

        def one_ready() -> None:
            started.append(1)
            if len(started) == readers:
                ready.set()

        output = _arrival_latencies(bootstrap, out_topic, since_ms, n, 5, one_ready)
        if not floor:
            return await output, np.zeros(0)
        return await asyncio.gather(
            output, _arrival_latencies(bootstrap, in_topic, since_ms, n, 5, one_ready)
        )

    out.put(asyncio.run(read()))


def _produce_paced(bootstrap: str, topic: str, count: int, rate: float, out) -> None:
    """Child process: offer ``count`` records at ``rate`` records/s (bench/loadgen.py: batches
    built ahead, each record stamped with the time it was due); report the rate achieved."""
    run = asyncio.run(paced_load(bootstrap, topic, count, rate, dim=DIM, k=K))
    out.put(run.rate)


class TimedService(Service):
    """The service, noting for each batch when (wall clock, ms) it came back from ``getmany``,
    went to the producer and was acknowledged, to split the end-to-end latency by stage."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.timeline: list[tuple[np.ndarray, float, float, float]] = []

    async def _send(self, f: Fetched) -> Sent:
        fetched_ms = 1000 * (time.time() - (time.monotonic() - f.at) - f.decode_s)
        sent = await super()._send(f)
        sent_ms = time.time() * 1000
        stamps = sent.stamps_ms

        def acked(_: object) -> None:
            self.timeline.append((stamps, fetched_ms, sent_ms, time.time() * 1000))

        sent.done.add_done_callback(acked)
        return sent


@dataclass
class Latency:
    """End-to-end latency at a steady input rate."""

    rate: float
    achieved_rate: float
    count: int
    reader_ms: np.ndarray  # per output record, as seen by the separate reader
    input_ms: np.ndarray  # per input record, as seen by a consume-only reader, 5 ms fetch wait
    hist_p50_ms: float
    hist_p99_ms: float
    hist_count: int
    mean_batch: float
    window_s: float  # wall time of the paced run, from the first to the last metrics snapshot
    stages: dict[str, float]  # seconds per stage over that window
    ack_ms: np.ndarray  # per labeled record: acknowledged - input timestamp (the service's view)
    split_ms: dict[str, float]  # median per batch of each step from timestamp to acknowledged


def _split(timeline: list[tuple[np.ndarray, float, float, float]]) -> dict[str, float]:
    """Median per batch: timestamp -> fetched (median record), fetched -> sent, sent -> acked."""
    rows = [(f - float(np.median(st)), s - f, a - s) for st, f, s, a in timeline if len(st)]
    if not rows:
        return {}
    med = np.median(np.array(rows), axis=0)
    return {"to fetched": med[0], "fetched to sent": med[1], "sent to acknowledged": med[2]}


async def latency(bootstrap: str, seconds: float, rate: float, floor: bool = True) -> Latency:
    """Warm the service up, then produce at ``rate`` from a child process and read the outputs."""
    topic = _name("latency")
    s = _settings(bootstrap, topic, "json")
    await produce_blobs(bootstrap, topic, 0, dim=DIM, k=K, partitions=PARTITIONS)  # creates it
    service = TimedService(s)
    gc_settings = serve_gc()
    gc_settings.__enter__()
    task = asyncio.create_task(service.run())
    ctx = mp.get_context("spawn")
    try:
        await produce_blobs(bootstrap, topic, WARMUP_BURST, dim=DIM, k=K, partitions=PARTITIONS)
        while service.labeled + service.invalid < WARMUP_BURST or not service.readiness()[0]:
            if task.done():
                task.result()
                raise RuntimeError("service stopped during warm-up")
            await asyncio.sleep(0.05)
        e2e, batches = service.metrics.e2e_latency_seconds, service.metrics.batch_records
        before, (b_counts, b_sum) = e2e.snapshot()[0], batches.snapshot()
        stages_before, t_before = stage_sums(service), time.perf_counter()
        service.timeline.clear()
        count = int(rate * seconds)
        ready, results = ctx.Event(), ctx.Queue()
        since_ms = int(time.time() * 1000)
        reader = ctx.Process(
            target=_read_latencies,
            args=(bootstrap, topic, s.output_topic, since_ms, count, floor, ready, results),
        )
        reader.start()
        while not ready.is_set():
            await asyncio.sleep(0.05)
        produced = ctx.Queue()
        producer = ctx.Process(
            target=_produce_paced, args=(bootstrap, topic, count, rate, produced)
        )
        producer.start()
        # The queues are read from a thread: the service must keep running on this loop meanwhile.
        achieved = await asyncio.to_thread(produced.get, True, seconds * 3 + 120)
        reader_ms, input_ms = await asyncio.to_thread(results.get, True, 180)
        await asyncio.to_thread(producer.join)
        await asyncio.to_thread(reader.join)
        after = e2e.snapshot()[0]
        a_counts, a_sum = batches.snapshot()
        stages_after, t_after = stage_sums(service), time.perf_counter()
    finally:
        service.stopping.set()
        await asyncio.wait_for(task, 60)
        gc_settings.__exit__(None, None, None)
    counts = after - before
    n_batches = int((a_counts - b_counts).sum())
    return Latency(
        rate=rate,
        achieved_rate=achieved,
        count=count,
        reader_ms=reader_ms,
        input_ms=input_ms,
        hist_p50_ms=1000 * histogram_quantile(0.5, e2e.upper_bounds, counts),
        hist_p99_ms=1000 * histogram_quantile(0.99, e2e.upper_bounds, counts),
        hist_count=int(counts.sum()),
        mean_batch=(a_sum - b_sum) / n_batches if n_batches else float("nan"),
        window_s=t_after - t_before,
        stages={st: stages_after[st] - stages_before[st] for st in STAGES},
        ack_ms=np.concatenate([a - st for st, _, _, a in service.timeline] or [np.zeros(0)]),
        split_ms=_split(service.timeline),
    )


# --- 4. metrics cost -------------------------------------------------------------------------


@dataclass
class CallCost:
    """Microseconds per call of the metrics updates, timed alone (median of repeats)."""

    record_batch_us: float  # one 4096-record batch: counts, latencies, anomalies, stages, DLQ
    set_model_us: float  # one model update, k clusters
    render_us: float  # one scrape of /metrics, on the server thread (holds the GIL meanwhile)


def call_cost(repeats: int = 7, number: int = 500) -> CallCost:
    """Time the per-batch, per-update and per-scrape metrics calls on their own."""
    rng = np.random.default_rng(0)
    m = ServiceMetrics()
    latencies = rng.uniform(0.001, 0.05, MAX_BATCH)
    stages = dict.fromkeys(STAGES, 0.001)
    weights = rng.uniform(100, 1000, K)

    def record() -> None:
        m.record_batch(
            n_labeled=MAX_BATCH - 4,
            n_invalid=4,
            latencies_s=latencies,
            n_anomalies=20,
            stage_seconds=stages,
            dlq_reasons={"invalid_json": 3, "wrong_dimension": 1},
        )

    def best_us(fn, n: int) -> float:
        return 1e6 * statistics.median(timeit.repeat(fn, number=n, repeat=repeats)) / n

    return CallCost(
        record_batch_us=best_us(record, number),
        set_model_us=best_us(lambda: m.set_model(7, weights, 0.01, 1.5), number),
        render_us=best_us(m.render, max(1, number // 10)),
    )


def metrics_cost_table(drains: list[Drain], cost: CallCost) -> list[str]:
    on = [d.steady_rate for d in drains if d.fmt == "json" and d.metrics]
    off = [d.steady_rate for d in drains if d.fmt == "json" and not d.metrics]
    # Runs pair up: each run drains metrics-on and metrics-off on the same fresh broker.
    ratios = [a / b for a, b in zip(on, off, strict=True)]
    batch_us = 1e6 * MAX_BATCH / statistics.median(on)
    return [
        "| measure | median | runs |",
        "| --- | ---: | --- |",
        f"| JSON drain, steady, metrics on (rec/s) | {statistics.median(on):,.0f} | {_runs(on)} |",
        f"| JSON drain, steady, metrics off (rec/s) | {statistics.median(off):,.0f} "
        f"| {_runs(off)} |",
        f"| ratio on / off | {statistics.median(ratios):.3f} | {_runs(ratios, '{:.3f}')} |",
        "",
        "| call, timed alone | µs per call | share of one 4096-record batch at the steady rate |",
        "| --- | ---: | ---: |",
        f"| `record_batch` (4096 records: counts, latency histogram, stages, anomalies, DLQ) "
        f"| {cost.record_batch_us:.1f} | {100 * cost.record_batch_us / batch_us:.2f}% "
        f"of {batch_us / 1000:.1f} ms |",
        f"| `set_model` (k = {K}; once per model update, not per batch) "
        f"| {cost.set_model_us:.1f} | |",
        f"| `render` (one scrape of /metrics, on the HTTP thread) | {cost.render_us:.0f} | |",
    ]


# --- report -----------------------------------------------------------------------------------


def versions() -> str:
    import aiokafka
    import numba

    return (
        f"NumPy {np.__version__}, Numba {numba.__version__}, aiokafka {aiokafka.__version__}; "
        "embedded Tansu broker (memory storage)"
    )


def _runs(values: list[float], fmt: str = "{:,.0f}") -> str:
    return ", ".join(fmt.format(v) for v in values)


def drain_table(drains: list[Drain]) -> list[str]:
    rows = [
        "| input | measure | median | runs |",
        "| --- | --- | ---: | --- |",
    ]
    for fmt in ("json", "f32"):
        ds = [d for d in drains if d.fmt == fmt and d.metrics]
        if not ds:
            continue
        ratios = [d.steady_rate / d.ceiling_rate for d in ds]
        for label, values, f in (
            ("service, steady (rec/s)", [d.steady_rate for d in ds], "{:,.0f}"),
            ("service, incl. start-up (rec/s)", [d.total_rate for d in ds], "{:,.0f}"),
            ("start-up to first label (s)", [d.startup_s for d in ds], "{:.2f}"),
            ("consume-only ceiling (rec/s)", [d.ceiling_rate for d in ds], "{:,.0f}"),
            ("ratio steady / ceiling", ratios, "{:.2f}"),
        ):
            rows.append(
                f"| {fmt} | {label} | {f.format(statistics.median(values))} | {_runs(values, f)} |"
            )
    return rows


def stage_table(drains: list[Drain], lat: Latency | None) -> list[str]:
    """Per-stage seconds as % of wall: steady JSON drains, and the paced latency run if any."""
    ds = [d for d in drains if d.fmt == "json" and d.metrics]
    columns = [
        ("drain, steady (JSON)", sum(d.steady_s for d in ds), _sum_stages(d.stages for d in ds))
    ]
    if lat is not None:
        columns.append((f"paced {lat.rate:,.0f} rec/s", lat.window_s, lat.stages))
    rows = [
        "| stage | " + " | ".join(f"{name}: s | %" for name, _, _ in columns) + " |",
        "| --- |" + " ---: | ---: |" * len(columns),
    ]
    for stage in (*STAGES, "not in a stage"):
        cells = []
        for _, wall, stages in columns:
            secs = stages[stage] if stage in stages else wall - sum(stages.values())
            cells.append(f"{secs:.2f} | {100 * secs / wall:.1f}")
        rows.append(f"| {stage} | " + " | ".join(cells) + " |")
    rows.append("| wall | " + " | ".join(f"{w:.2f} | 100.0" for _, w, _ in columns) + " |")
    return rows


def _sum_stages(many) -> dict[str, float]:
    many = list(many)
    return {stage: sum(m[stage] for m in many) for stage in STAGES}


def _percentiles(values: np.ndarray, qs: list[float]) -> list[float]:
    return list(np.percentile(values, qs)) if len(values) else [float("nan")] * len(qs)


def latency_table(lat: Latency) -> list[str]:
    p = _percentiles(lat.reader_ms, [50, 99, 99.9])
    b = _percentiles(lat.input_ms, [50, 99])
    a = _percentiles(lat.ack_ms, [50, 99])
    split = ", ".join(f"{k} {v:.1f} ms" for k, v in lat.split_ms.items())
    return [
        "| measure | p50 (ms) | p99 (ms) | records |",
        "| --- | ---: | ---: | ---: |",
        f"| output reader: arrival - input timestamp (headline) | {p[0]:.1f} | {p[1]:.1f} "
        f"| {len(lat.reader_ms):,} of {lat.count:,} |",
        f"| service: acknowledged - input timestamp, per record | {a[0]:.1f} | {a[1]:.1f} "
        f"| {len(lat.ack_ms):,} |",
        f"| service histogram, bucket-interpolated | {lat.hist_p50_ms:.1f} | {lat.hist_p99_ms:.1f} "
        f"| {lat.hist_count:,} |",
        f"| floor: consume-only reader of the input, 5 ms fetch wait | {b[0]:.1f} "
        f"| {b[1]:.1f} | {len(lat.input_ms):,} |",
        "",
        f"Input rate asked {lat.rate:,.0f} rec/s, achieved {lat.achieved_rate:,.0f} rec/s; "
        f"reader p99.9 {p[2]:.1f} ms; mean batch {lat.mean_batch:,.0f} records.",
        "",
        f"Median per batch, from the input timestamp to the acknowledgement: {split}.",
    ]


def report(
    args: argparse.Namespace, drains: list[Drain], lat: Latency | None, cost: CallCost | None
) -> str:
    command = " ".join(["bench/bench_service.py", *map(shlex.quote, sys.argv[1:])])
    lines = [
        "## Service (`bench/bench_service.py`)",
        "",
        f"`{command}`. {machine_facts(versions())}. A shared, noisy machine:"
        " read medians and ratios, not single runs.",
        "",
        f"### Drain rate: {args.count:,} preloaded records, d = {DIM}, k = {K}, "
        f"{PARTITIONS} partitions, {args.runs} runs",
        "",
        "The service runs in-process (`Service(settings).run()`, max_batch 4096, session timeout"
        " 3 s); *steady* counts from its first labeled batch, *incl. start-up* from its creation"
        " (topic setup, group join, model init). The ceiling is a group-less consumer reading the"
        " same topic in the same run without processing (`getmany(max_records=10000)`).",
        "",
        *drain_table(drains),
        "",
        "### Where the time goes",
        "",
        "Sums of `streamkm_stage_seconds` (per batch; `poll` is the wait in `getmany`, `produce`"
        " the output sends until acknowledged, `commit` the offset commit) as a share of wall"
        " time: for the drains, the steady window of every JSON run (first label to last);"
        " for the paced run, its whole length. `produce` (send until acknowledged) and"
        " `commit` (in the background) overlap the labeling of the next batches, so the"
        " shares can add up to more than 100%; *not in a stage* is then negative.",
        "",
        *stage_table(drains, lat),
    ]
    if cost is not None:
        lines += [
            "",
            "### Cost of the metrics",
            "",
            "The same steady JSON drain with the metrics on (`ServiceMetrics`) and off"
            " (`NullMetrics`: `record_batch`, `set_model`, `set_lag`, `set_updates_lag` and"
            " `inc_reseeds` do nothing), both in every run on the same fresh broker, in"
            " alternating order. Drain rates on a shared machine are noisy (see the runs column);"
            " `record_batch` timed alone, against the time one batch takes at the steady rate,"
            " bounds the per-batch cost more tightly. The budget is 5% of the hot path.",
            "",
            *metrics_cost_table(drains, cost),
        ]
    if lat is not None:
        lines += [
            "",
            f"### End-to-end latency at {lat.rate:,.0f} records/s for {lat.count / lat.rate:.0f} s",
            "",
            "Latency = time the output is seen - input record timestamp (outputs keep it). The"
            " load comes from `bench/loadgen.py` in a separate process: record batches built"
            " before the clock starts, 20 slices a second, each record stamped with the time"
            " its slice was due, so a late generator counts against the latency. The headline"
            " comes from another process reading the output topic without a group"
            " (`fetch_max_wait_ms=5`), so it includes that reader's fetch delay and the ms"
            " truncation of timestamps. *service* is DESIGN §6's definition, timestamp to"
            " acknowledgement, per record and exact; the service's own histogram of the same is"
            " interpolated within its buckets (5, 10, 25, 50, 100 ms ...), so it is coarse. The"
            " floor, in the same run, is a plain consumer of the *input* topic with the same"
            " 5 ms fetch wait: how late records become readable at all with this broker and"
            " this load generator, before any processing. The embedded broker does not answer a"
            " held fetch as soon as data arrives (docs/embedded-broker.md, probe h), so every"
            " reader's fetch wait shows up in its figure.",
            "",
            *latency_table(lat),
        ]
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> str:
    quiet_worker_threads()  # as `streamkm serve` starts: idle OpenMP workers sleep
    warmup()  # Numba kernels compiled or loaded before anything is timed
    drains: list[Drain] = []
    lat = None
    broker = EmbeddedBroker()
    try:
        for run in range(args.runs):
            broker.restart()
            plan = [("json", True), ("f32", True)]
            if not args.skip_metrics_off:
                # Alternate which goes first, so neither always meets the emptier broker.
                pair = [("json", True), ("json", False)][:: 1 if run % 2 == 0 else -1]
                plan = [*pair, ("f32", True)]
            for fmt, with_metrics in plan:
                d = await drain(broker.bootstrap, args.count, fmt, with_metrics)
                drains.append(d)
                label = fmt if with_metrics else f"{fmt} metrics off"
                print(
                    f"run {run + 1} {label}: steady {d.steady_rate:,.0f} rec/s, incl. start-up "
                    f"{d.total_rate:,.0f} rec/s, ceiling {d.ceiling_rate:,.0f} rec/s",
                    file=sys.stderr,
                    flush=True,
                )
        if not args.skip_latency:
            broker.restart()
            lat = await latency(broker.bootstrap, args.latency_seconds, args.rate)
    finally:
        broker.stop()
    cost = None if args.skip_metrics_off else call_cost()
    return report(args, drains, lat, cost)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="drain runs per input format (default 3)")
    p.add_argument("--count", type=int, default=200_000, help="records per drain (default 200000)")
    p.add_argument("--latency-seconds", type=float, default=20.0, help="paced run length (20)")
    p.add_argument("--rate", type=float, default=5000.0, help="paced input rate, rec/s (5000)")
    p.add_argument("--skip-latency", action="store_true", help="measure drain rate only")
    p.add_argument(
        "--skip-metrics-off",
        action="store_true",
        help="leave out the metrics-off drains and the record_batch timing",
    )
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = p.parse_args()
    if args.runs < 1 or args.count < WARMUP_BURST or args.rate <= 0 or args.latency_seconds <= 0:
        p.error(f"need --runs >= 1, --count >= {WARMUP_BURST}, --rate > 0, --latency-seconds > 0")
    return args


if __name__ == "__main__":
    args = parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    text = asyncio.run(main(args))
    print(text)
    if not args.no_write:
        write_section("service", text)
        print(f"\nwritten to {BENCHMARKS}", file=sys.stderr)
