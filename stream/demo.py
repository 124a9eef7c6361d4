"""`streamkm demo`: embedded broker, producer and service in one event loop, then a summary.

The demo is the whole data path on one machine: the producer writes synthetic records to the input
topic while a service labels them; a progress line follows along on stderr. Once every record is
labeled or dead-lettered the service stops, the output and dead-letter topics are read back, and a
summary on stdout says how fast, how late and how well the records were labeled.

`--scenario blobs` (the default) clusters Gaussian blobs and scores the clusters against the
generating blobs (adjusted Rand index); `--scenario embeddings` does the same with unit vectors
around topic directions (`--dim 384` for sentence-embedding width). `--scenario transactions` labels card transactions by
their named fields (`TRANSACTION_FIELDS`, standardized inside the model) and scores how well the
anomaly score ranks the injected fraud (ROC AUC, precision in the top 1%), beside a second model
that reads the same records without scaling: its own model, group and output topic, served
concurrently in the same event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from engine import warmup
from metrics import MetricsPortInUseError, MetricsServer, ServiceMetrics, histogram_quantile
from model.topics import BrokerUnreachable, TopicError, TopicSpec, ensure_topics, partition_count

from .broker import BrokerError, EmbeddedBroker
from .config import DemoOptions, Settings
from .produce import BlobStream, ProduceReport, produce_blobs, produce_transactions
from .quality import adjusted_rand_index, precision_at_top, roc_auc
from .service import Service, tune_gc
from .transactions import TRANSACTION_FIELDS, TransactionStream, transaction_numbers

__all__ = ["DemoResult", "FraudRanking", "run_demo"]

log = logging.getLogger("streamkm.demo")

INPUT_TOPIC = "demo.features"
OUTPUT_TOPIC = "demo.labels"
MODEL = "demo"
GROUP = "demo"
# The transactions scenario's second model: the same records and fields, without scaling.
UNSCALED = "demo.unscaled"  # its model and group
UNSCALED_OUTPUT = "demo.labels.unscaled"
UNSCALED_DLQ = "demo.unscaled.dlq"  # its own, so the input's bad records are counted once
TOP_FRACTION = 0.01  # precision is measured among this share of the highest scores
# Against the embedded broker a group join takes about half the session timeout
# (docs/embedded-broker.md), so a short one gets the demo going in a couple of seconds.
SESSION_TIMEOUT_S = 3.0
_TTY_REFRESH_S = 0.25
_PLAIN_REFRESH_S = 2.0
_RATE_WINDOW_S = 1.0
_STOP_TIMEOUT_S = 30.0
_READ_BACK_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class FraudRanking:
    """How well one model's anomaly scores rank the injected fraud among the records it labeled."""

    scale: str  # the model's --scale
    topic: str  # its output topic
    ranked: int  # records ranked: those every model labeled
    fraud: int  # of which injected fraud
    auc: float  # ROC AUC of score against is_fraud
    precision_top: float  # share of fraud among the TOP_FRACTION highest scores


@dataclass
class DemoResult:
    """What a demo run produced, labeled and measured; `summary()` renders it."""

    broker: str
    metrics_url: str
    count: int
    scenario: str = "blobs"
    produced: ProduceReport | None = None
    labeled_ids: int = 0
    duplicates: int = 0
    dlq_by_reason: dict[str, int] = field(default_factory=dict)
    labeling_s: float = 0.0
    handled: int = 0
    p50_s: float = math.nan
    p99_s: float = math.nan
    ari: float = math.nan
    rankings: list[FraudRanking] = field(default_factory=list)
    unscaled_missing: int = 0  # records the unscaled model neither labeled nor dead-lettered
    k: int = 0
    model_version: int = 0
    elapsed_s: float = 0.0
    timed_out: bool = False

    @property
    def invalid(self) -> int:
        """Records dead-lettered, read back from the dead-letter topic."""
        return sum(self.dlq_by_reason.values())

    @property
    def missing(self) -> int:
        """Produced records that reached neither the output nor the dead-letter topic."""
        return max(0, self.count - self.labeled_ids - self.invalid)

    @property
    def complete(self) -> bool:
        """True when every produced record was labeled or dead-lettered (by every model)."""
        return (
            self.produced is not None
            and not self.timed_out
            and self.missing == 0
            and self.unscaled_missing == 0
        )

    def summary(self) -> str:
        """The closing summary, one fact per line."""
        p = self.produced
        reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(self.dlq_by_reason.items()))
        rate = self.handled / self.labeling_s if self.labeling_s > 0 else math.nan
        lines = [
            f"streamkm demo: {'done' if self.complete else 'INCOMPLETE'} in {self.elapsed_s:.1f} s",
            f"  broker      {self.broker} (embedded Tansu, in memory)",
        ]
        if p is not None:
            lines.append(
                f"  produced    {p.count:,} records to {p.topic!r} ({p.partitions} partitions) "
                f"in {p.seconds:.1f} s"
            )
        lines += [
            f"  labeled     {self.labeled_ids:,} to {OUTPUT_TOPIC!r} (duplicates: {self.duplicates:,})",
            f"  invalid     {self.invalid:,} dead-lettered to {INPUT_TOPIC + '.dlq'!r}"
            + (f": {reasons}" if reasons else ""),
        ]
        if self.missing:
            lines.append(
                f"  MISSING     {self.missing:,} records neither labeled nor dead-lettered"
            )
        if self.unscaled_missing:
            lines.append(
                f"  MISSING     {self.unscaled_missing:,} records neither labeled nor "
                f"dead-lettered by the unscaled model"
            )
        lines += [
            f"  throughput  {rate:,.0f} records/s (first label to last, {self.labeling_s:.1f} s)",
            f"  latency     p50 {self.p50_s * 1000:.1f} ms, p99 {self.p99_s * 1000:.1f} ms "
            "(end to end, interpolated from the histogram buckets)",
            *self._quality_lines(),
            f"  model       version {self.model_version}",
            f"  metrics     {self.metrics_url} (served while the demo ran)",
        ]
        return "\n".join(lines)

    def _quality_lines(self) -> list[str]:
        if self.scenario != "transactions":
            return [
                f"  quality     adjusted Rand index {self.ari:.4f} against the generating {self.scenario} "
                f"(k={self.k})"
            ]
        lines = [f"  fields      {TRANSACTION_FIELDS} (k={self.k})"]
        if not self.rankings:
            return [*lines, "  fraud       nothing labeled to rank"]
        first = self.rankings[0]
        share = first.fraud / first.ranked if first.ranked else math.nan
        lines.append(
            f"  fraud       {first.fraud:,} injected among {first.ranked:,} records ({share:.2%}) "
            "that both models scored"
        )
        label = "ranking"
        for r in self.rankings:
            scale = f"--scale {r.scale}:"
            lines.append(
                f"  {label:<10}  {scale:<17} ROC AUC {r.auc:.3f}, precision in top "
                f"{TOP_FRACTION:.0%} {r.precision_top:.3f} (score in {r.topic!r})"
            )
            label = ""
        return lines


def _ms(seconds: float) -> str:
    return "      - ms" if math.isnan(seconds) else f"{seconds * 1000:7.1f} ms"


class _Progress:
    """The live progress line on stderr: rewritten in place on a terminal, a line per tick else."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.every = _TTY_REFRESH_S if self.tty else _PLAIN_REFRESH_S
        self.start = time.monotonic()
        self._last_at = self.start
        # (time, records handled) over about the last second: the rate shown is over that window.
        self._recent: deque[tuple[float, int]] = deque([(self.start, 0)])
        self._width = 0

    def due(self) -> bool:
        return time.monotonic() - self._last_at >= self.every

    def show(self, service: Service, produced: int, also: Service | None = None) -> None:
        now = time.monotonic()
        handled = service.labeled + service.invalid
        while len(self._recent) > 1 and now - self._recent[1][0] >= _RATE_WINDOW_S:
            self._recent.popleft()
        then, handled_then = self._recent[0]
        rate = (handled - handled_then) / max(now - then, 1e-9)
        self._recent.append((now, handled))
        self._last_at = now
        counts, _ = service.metrics.e2e_latency_seconds.snapshot()
        p99 = histogram_quantile(0.99, service.metrics.e2e_latency_seconds.upper_bounds, counts)
        line = (
            f"{now - self.start:6.1f}s  produced {produced:>9,}  labeled {service.labeled:>9,}  "
            f"{rate:>8,.0f} rec/s  p99 {_ms(p99)}  DLQ {service.invalid:,}  "
            f"model v{service.replica.version}"
        )
        if also is not None:
            line += f"  unscaled labeled {also.labeled:,}"
        if self.tty:
            self.out.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def end(self) -> None:
        if self.tty and self._width:
            self.out.write("\n")
            self.out.flush()


def _start_metrics_server(
    metrics: ServiceMetrics, opts: DemoOptions, service: Service
) -> MetricsServer:
    """Serve /metrics on the asked port, or on a free one if that is taken: a demo should not fail
    because something already listens on 9100."""
    server = MetricsServer(metrics, opts.metrics_host, opts.metrics_port, ready=service.readiness)
    try:
        server.start()
    except MetricsPortInUseError:
        if opts.metrics_port == 0:
            raise
        server = MetricsServer(metrics, opts.metrics_host, 0, ready=service.readiness)
        server.start()
        print(
            f"streamkm demo: metrics port {opts.metrics_port} is in use; "
            f"serving metrics on port {server.port} instead",
            file=sys.stderr,
            flush=True,
        )
    return server


def _produced_so_far(service: Service) -> int:
    """Records in the input topic as the service's consumer last saw them (exact highwaters)."""
    consumer = service.consumer
    if consumer is None:
        return 0
    return sum(consumer.highwater(tp) or 0 for tp in consumer.assignment())


def _deadline_s(opts: DemoOptions) -> float:
    """A generous bound on the whole run: only a stuck demo gets near it."""
    production = opts.count / opts.rate if opts.rate > 0 else opts.count / 20_000
    return 60.0 + 3.0 * production


def _service_settings(opts: DemoOptions, bootstrap: str) -> list[Settings]:
    """The settings of the demo's services: one for blobs; scaled and unscaled for transactions."""
    base = Settings(
        bootstrap=bootstrap,
        input_topic=INPUT_TOPIC,
        output_topic=OUTPUT_TOPIC,
        group=GROUP,
        model=MODEL,
        k=opts.k,
        dim=None if opts.scenario == "transactions" else opts.dim,
        half_life=opts.half_life,
        input_format=opts.input_format,
        metrics_host=opts.metrics_host,
        metrics_port=opts.metrics_port,
        session_timeout=SESSION_TIMEOUT_S,
    )
    if opts.scenario != "transactions":
        return [base]
    scaled = dataclasses.replace(base, fields=TRANSACTION_FIELDS, scale="standard")
    unscaled = dataclasses.replace(
        scaled,
        scale="none",
        model=UNSCALED,
        group=UNSCALED,
        output_topic=UNSCALED_OUTPUT,
        dlq_topic=UNSCALED_DLQ,
    )
    return [scaled, unscaled]


async def _demo(
    opts: DemoOptions, broker: EmbeddedBroker, interrupted: asyncio.Event
) -> DemoResult:
    started = time.monotonic()
    await ensure_topics(broker.bootstrap, [TopicSpec(INPUT_TOPIC, opts.partitions)])
    services = [Service(s, ServiceMetrics()) for s in _service_settings(opts, broker.bootstrap)]
    service = services[0]  # the one measured, served on /metrics and shown in the progress line
    server = _start_metrics_server(service.metrics, opts, service)
    result = DemoResult(broker.bootstrap, server.url, opts.count, opts.scenario, k=opts.k)
    tasks = [asyncio.create_task(s.run(), name=s.settings.model) for s in services]
    progress = _Progress(sys.stderr)
    deadline = started + _deadline_s(opts)
    producer_task: asyncio.Task[ProduceReport] | None = None
    try:
        # Produce once the consumers have joined their groups, so the latencies measure the data
        # path rather than the couple of seconds a group join takes on the embedded broker.
        await _wait_for_join(services, tasks, interrupted, deadline)
        if all(s.started.is_set() for s in services) and not interrupted.is_set():
            producer_task = asyncio.create_task(_produce(broker, opts), name="producer")
            await _watch(
                services, tasks, producer_task, opts, interrupted, deadline, result, progress
            )
            progress.show(service, _produced_so_far(service), *services[1:])
        else:
            result.timed_out = not interrupted.is_set() and not any(t.done() for t in tasks)
    finally:
        progress.end()
        if producer_task is not None and not producer_task.done():
            producer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer_task
        for s in services:
            s.stopping.set()
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), _STOP_TIMEOUT_S)
        finally:
            server.stop()
    if producer_task is not None and not producer_task.cancelled():
        result.produced = producer_task.result()
    counts, _ = service.metrics.e2e_latency_seconds.snapshot()
    bounds = service.metrics.e2e_latency_seconds.upper_bounds
    result.p50_s = histogram_quantile(0.5, bounds, counts)
    result.p99_s = histogram_quantile(0.99, bounds, counts)
    result.model_version = service.replica.version
    if not interrupted.is_set():
        await _read_back(broker.bootstrap, [s.settings for s in services], opts, result)
    result.elapsed_s = time.monotonic() - started
    return result


async def _wait_for_join(
    services: list[Service],
    tasks: list[asyncio.Task[None]],
    interrupted: asyncio.Event,
    deadline: float,
) -> None:
    """Wait until every service's consumer has joined its group (or one failed, or time ran out)."""
    while not (
        all(s.started.is_set() for s in services)
        or any(t.done() for t in tasks)
        or interrupted.is_set()
    ):
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


def _produce(broker: EmbeddedBroker, opts: DemoOptions) -> Coroutine[Any, Any, ProduceReport]:
    if opts.scenario == "transactions":
        return produce_transactions(
            broker.bootstrap,
            INPUT_TOPIC,
            opts.count,
            seed=opts.seed,
            invalid_fraction=opts.invalid_fraction,
            rate=opts.rate,
            partitions=opts.partitions,
        )
    return produce_blobs(
        broker.bootstrap,
        INPUT_TOPIC,
        opts.count,
        dim=opts.dim,
        k=opts.k,
        seed=opts.seed,
        drift=opts.drift,
        invalid_fraction=opts.invalid_fraction,
        fmt=opts.input_format,
        rate=opts.rate,
        partitions=opts.partitions,
        embeddings=opts.scenario == "embeddings",
    )


async def _watch(
    services: list[Service],
    tasks: list[asyncio.Task[None]],
    producer_task: asyncio.Task[ProduceReport],
    opts: DemoOptions,
    interrupted: asyncio.Event,
    deadline: float,
    result: DemoResult,
    progress: _Progress,
) -> None:
    """Show progress until every service has handled every record, one fails, or time runs out.

    Notes in ``result`` when the first service's labeling began and ended: the first label falls
    between the last tick that saw none and the tick that saw it, so the earlier tick is taken
    (a period never 0).
    """
    service = services[0]
    tick = 0.05
    before_first = time.monotonic()
    first_label = last_label = None
    last_handled = 0
    while not interrupted.is_set():
        handled = service.labeled + service.invalid
        now = time.monotonic()
        if handled != last_handled:
            first_label = first_label or before_first
            last_label, last_handled = now, handled
        elif first_label is None:
            before_first = now
        if progress.due():
            progress.show(service, _produced_so_far(service), *services[1:])
        all_handled = all(s.labeled + s.invalid >= opts.count for s in services)
        if producer_task.done() and (all_handled or producer_task.exception()):
            break
        if any(t.done() for t in tasks):
            break  # it failed: its exception is raised when it is awaited
        if now > deadline:
            result.timed_out = True
            break
        await asyncio.sleep(tick)
    if first_label is not None and last_label is not None:
        result.labeling_s = last_label - first_label
    result.handled = last_handled


async def _read_back(
    bootstrap: str, settings: list[Settings], opts: DemoOptions, result: DemoResult
) -> None:
    """Read the output and dead-letter topics from the start; score the labels against truth."""
    outputs = await _read_topic(bootstrap, settings[0].output_topic)
    dead = await _read_topic(bootstrap, settings[0].dlq)
    result.dlq_by_reason = _reasons(dead)
    if opts.scenario != "transactions":
        _score_blobs(outputs, opts, result)
        return
    is_fraud = TransactionStream(opts.seed, opts.invalid_fraction).is_fraud(opts.count)
    labels = [_Labels.of(outputs)]
    for other in settings[1:]:
        labels.append(_Labels.of(await _read_topic(bootstrap, other.output_topic)))
        invalid = sum(_reasons(await _read_topic(bootstrap, other.dlq)).values())
        result.unscaled_missing += max(0, opts.count - labels[-1].numbers.size - invalid)
    result.labeled_ids = labels[0].numbers.size
    result.duplicates = labels[0].records - labels[0].numbers.size
    common = _scored_by_all(labels, is_fraud.size)
    result.rankings = [
        _fraud_ranking(lab, s, common, is_fraud) for lab, s in zip(labels, settings, strict=True)
    ]


@dataclass(frozen=True)
class _Labels:
    """One model's output records, one per transaction: the first label of each (at-least-once
    delivery may label a record twice)."""

    records: int  # output records read, duplicates included
    numbers: np.ndarray  # int64 transaction numbers, sorted, distinct
    scores: np.ndarray  # float64 anomaly score of each
    versions: np.ndarray  # int64 model version that labeled each

    @classmethod
    def of(cls, outputs: list[ConsumerRecord]) -> _Labels:
        values = [orjson.loads(r.value) for r in outputs]
        numbers = transaction_numbers([v["id"] for v in values])
        scores = np.fromiter((v["score"] for v in values), np.float64, len(values))
        versions = np.fromiter((v["model_version"] for v in values), np.int64, len(values))
        known = np.flatnonzero(numbers >= 0)
        unique, first = np.unique(numbers[known], return_index=True)
        rows = known[first]
        return cls(len(values), unique, scores[rows], versions[rows])


def _scored_by_all(labels: list[_Labels], count: int) -> np.ndarray:
    """Transactions every model labeled: the records ranked (all of them once every record is
    labeled; the init carries the warm-up sample's spread, so even its scores are measured)."""
    common = np.arange(count, dtype=np.int64)
    for lab in labels:
        common = np.intersect1d(common, lab.numbers, assume_unique=True)
    return common


def _fraud_ranking(
    labels: _Labels, settings: Settings, common: np.ndarray, is_fraud: np.ndarray
) -> FraudRanking:
    """How one model's scores of the ``common`` transactions rank their `is_fraud` truth.

    The truth is regenerated from the deterministic generator rather than read back from the
    input topic; the join is by the record id each output record echoes.
    """
    y = is_fraud[common]
    s = labels.scores[np.searchsorted(labels.numbers, common)]
    return FraudRanking(
        scale=settings.scale,
        topic=settings.output_topic,
        ranked=int(common.size),
        fraud=int(y.sum()),
        auc=roc_auc(y, s) if 0 < y.sum() < y.size else math.nan,
        precision_top=precision_at_top(y, s, TOP_FRACTION) if y.size else math.nan,
    )


def _reasons(dead: list[ConsumerRecord]) -> dict[str, int]:
    """Dead-lettered records by their `streamkm.error.reason` header."""
    return dict(Counter(dict(r.headers).get("streamkm.error.reason", b"?").decode() for r in dead))


def _score_blobs(outputs: list[ConsumerRecord], opts: DemoOptions, result: DemoResult) -> None:
    """Count the distinct ids labeled and their adjusted Rand index against the generating blobs."""
    # Keys are str(id) in both formats (f32 values carry no id), so the key joins output to input.
    ids = np.fromiter((int(r.key) for r in outputs), np.int64, len(outputs))
    clusters = np.fromiter(
        (orjson.loads(r.value)["cluster"] for r in outputs), np.int64, len(outputs)
    )
    unique_ids, first = np.unique(ids, return_index=True)
    result.labeled_ids = len(unique_ids)
    result.duplicates = len(ids) - len(unique_ids)
    # The generator is deterministic for its parameters, so the truth of every id is regenerated
    # rather than read back from the input topic.
    blobs = BlobStream(
        opts.dim,
        opts.k,
        opts.seed,
        opts.drift,
        opts.invalid_fraction,
        opts.input_format,
        embeddings=opts.scenario == "embeddings",
    )
    truth = (
        np.concatenate([b.truth for b in blobs.blocks(opts.count)])
        if opts.count
        else np.zeros(0, np.int32)
    )
    if len(unique_ids):
        result.ari = adjusted_rand_index(truth[unique_ids], clusters[first])


async def _read_topic(bootstrap: str, topic: str) -> list[ConsumerRecord]:
    """Every record of a topic from the beginning, without a group, up to each partition's end."""
    try:
        n = await partition_count(bootstrap, topic)
    except TopicError:
        return []  # never created: the service stopped before it got that far
    tps = [TopicPartition(topic, p) for p in range(n)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    out: list[ConsumerRecord] = []
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + _READ_BACK_TIMEOUT_S
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=20_000)
            for records in batch.values():
                out.extend(records)
            # highwater comes exact with every fetch response (end_offsets is not, on Tansu).
            ends = [consumer.highwater(tp) for tp in tps]
            if all(end is not None for end in ends):
                positions = [await consumer.position(tp) for tp in tps]
                if all(pos >= end for pos, end in zip(positions, ends, strict=True)):
                    break
    finally:
        await consumer.stop()
    return out


def run_demo(opts: DemoOptions) -> int:
    """Entry point of `streamkm demo`: 0 when every record came through, 1 if not, 2 on setup errors,
    130 when interrupted."""
    if opts.scenario == "transactions" and opts.input_format != "json":
        print(
            "streamkm demo: --scenario transactions writes JSON events; "
            f"--input-format {opts.input_format} is for --scenario blobs",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Rebalance and heartbeat chatter during the group join would break the progress line.
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    broker = EmbeddedBroker(port=opts.broker_port)
    try:
        broker.start()
    except BrokerError as exc:
        print(f"streamkm demo: cannot start the embedded broker: {exc}", file=sys.stderr)
        return 2
    try:
        print(
            f"streamkm demo: broker on {broker.bootstrap}; compiling kernels...",
            file=sys.stderr,
            flush=True,
        )
        warmup()
        tune_gc()  # as `streamkm serve` does
        return _run_loop(opts, broker)
    finally:
        broker.stop()


def _run_loop(opts: DemoOptions, broker: EmbeddedBroker) -> int:
    async def main() -> tuple[DemoResult, bool]:
        interrupted = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, interrupted.set)
        try:
            return await _demo(opts, broker, interrupted), interrupted.is_set()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    try:
        result, was_interrupted = asyncio.run(main())
    except (BrokerUnreachable, TopicError, MetricsPortInUseError, OSError) as exc:
        print(f"streamkm demo: {exc}", file=sys.stderr)
        return 2
    if was_interrupted:
        print("streamkm demo: interrupted; stopped cleanly", file=sys.stderr)
        return 130
    print(result.summary(), flush=True)
    if not result.complete:
        print(
            f"streamkm demo: run did not complete: {result.missing:,} records missing"
            + (" (timed out)" if result.timed_out else ""),
            file=sys.stderr,
        )
        return 1
    return 0
