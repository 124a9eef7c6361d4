"""Synthetic load for `streamkm produce`: Gaussian blobs or card transactions, optional bad records.

`--scenario blobs` (the default) writes feature vectors: Gaussian blobs with optional drift.
`--scenario embeddings` writes embedding-like vectors: unit vectors around k topic directions.
`--scenario transactions` writes card payments with named, mixed-scale fields and injected fraud
(`stream.transactions`), for `serve --fields`. Both go out through the same batched writer.

The blob generator is pure and deterministic for a seed: it works in fixed blocks of ``BLOCK``
records, block b drawn from ``numpy.random.default_rng([seed, b])``, so the stream does not depend
on how the producer slices it. Centres are drawn once from U(-10, 10)^dim (kept at least
``MIN_SEPARATION`` apart when possible) and each record is its blob's centre plus N(0, 1) noise.
``drift`` moves every centre by that many feature units per ``DRIFT_SPAN`` (10,000) records, each
along its own fixed random unit direction, so after n records a centre has moved drift·n/10,000.

With ``embeddings`` the centres are k random unit vectors (topic directions, nearly orthogonal at
embedding widths), the noise N(0, EMBEDDING_SPREAD^2 / dim) per feature (a noise vector of norm
about EMBEDDING_SPREAD), and every record is scaled to unit length, as sentence embeddings are
before cosine similarity. Drift moves the directions before that scaling.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import time
from collections import Counter
from collections.abc import Coroutine, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

from model.topics import (
    BrokerUnreachable,
    TopicSpec,
    client_config,
    ensure_topics,
    partition_count,
    wait_for_broker,
)
from stream.codec import encode_f32, encode_json_records
from stream.transactions import (
    FRAUD_SHARE,
    TRANSACTION_FIELDS,
    TransactionStream,
    encode_transactions,
    transaction_id,
)

__all__ = [
    "BLOCK",
    "DRIFT_SPAN",
    "BlobBlock",
    "BlobStream",
    "ProduceReport",
    "encode_block",
    "murmur2_partitions",
    "produce_blobs",
    "produce_records",
    "produce_transactions",
    "run_produce",
]

BLOCK = 4096
MIN_SEPARATION = 6.0  # in noise standard deviations: blobs barely overlap
DRIFT_SPAN = 10_000  # records over which a centre moves `drift` feature units
# Norm of an embedding record's noise against its unit topic direction: at 0.6 two records of one
# topic are ~0.73 apart and records of two topics ~1.41, so clusters are distinct but not trivial.
EMBEDDING_SPREAD = 0.6
WARMUP_VALID = 100  # the first ids are always valid, so a service learning dim from them learns it
BAD_REASONS: dict[str, tuple[str, ...]] = {
    # The DLQ reason each kind of bad record should produce (DESIGN §3).
    "json": ("invalid_json", "wrong_dimension", "non_finite", "missing_features"),
    "f32": ("wrong_size", "non_finite"),
}


@dataclass(frozen=True)
class BlobBlock:
    """One block of generated records; ``bad`` holds "" for a valid record, else its DLQ reason."""

    ids: np.ndarray  # int64, consecutive
    X: np.ndarray  # float32 (n, dim)
    truth: np.ndarray  # int32 generating blob
    bad: list[str]


class BlobStream:
    """Deterministic Gaussian-blob records with drift and a fraction of bad records."""

    def __init__(
        self,
        dim: int,
        k: int,
        seed: int = 0,
        drift: float = 0.0,
        invalid_fraction: float = 0.0,
        fmt: str = "json",
        embeddings: bool = False,
    ) -> None:
        if dim < 1 or k < 1:
            raise ValueError(f"dim and k must be at least 1, got dim={dim}, k={k}")
        if not 0.0 <= invalid_fraction <= 1.0:
            raise ValueError(f"invalid_fraction must be within [0, 1], got {invalid_fraction}")
        if fmt not in BAD_REASONS:
            raise ValueError(f"format must be one of {sorted(BAD_REASONS)}, got {fmt!r}")
        self.dim, self.k, self.seed = dim, k, seed
        self.drift, self.invalid_fraction, self.fmt = drift, invalid_fraction, fmt
        self.embeddings = embeddings
        rng = np.random.default_rng([seed, 2**32 - 1])
        if embeddings:
            topics = rng.normal(size=(k, dim))
            self.centres = topics / np.linalg.norm(topics, axis=1, keepdims=True)
        else:
            self.centres = _separated_centres(rng, k, dim)
        directions = rng.normal(size=(k, dim))
        self.directions = directions / np.linalg.norm(directions, axis=1, keepdims=True)

    def centres_at(self, record: int) -> np.ndarray:
        """The blob centres as they stand when record number ``record`` is drawn."""
        return self.centres + (record * self.drift / DRIFT_SPAN) * self.directions

    def block(self, b: int, count: int) -> BlobBlock:
        """Block ``b`` of a stream of ``count`` records (shorter at the end)."""
        start = b * BLOCK
        n = min(BLOCK, count - start)
        rng = np.random.default_rng([self.seed, b])
        ids = np.arange(start, start + n, dtype=np.int64)
        truth = rng.integers(0, self.k, size=n).astype(np.int32)
        noise = rng.normal(size=(n, self.dim))
        if self.embeddings:
            noise *= EMBEDDING_SPREAD / np.sqrt(self.dim)
        if self.drift:
            step = self.drift / DRIFT_SPAN
            shift = (ids.astype(np.float64) * step)[:, None] * self.directions[truth]
            X = self.centres[truth] + shift + noise
        else:
            X = self.centres[truth] + noise
        if self.embeddings:
            X /= np.linalg.norm(X, axis=1, keepdims=True)
        is_bad = rng.random(n) < self.invalid_fraction
        is_bad &= ids >= WARMUP_VALID
        reasons = BAD_REASONS[self.fmt]
        kinds = rng.integers(0, len(reasons), size=n)
        bad = [reasons[kinds[i]] if is_bad[i] else "" for i in range(n)]
        return BlobBlock(ids, X.astype(np.float32), truth, bad)

    def blocks(self, count: int) -> Iterator[BlobBlock]:
        """All blocks of a ``count``-record stream, in id order."""
        for b in range(-(-count // BLOCK)):
            yield self.block(b, count)


def _separated_centres(rng: np.random.Generator, k: int, dim: int) -> np.ndarray:
    """Draw k centres in U(-10, 10)^dim, rejecting ones too close to earlier centres."""
    centres: list[np.ndarray] = []
    for _ in range(k):
        for _attempt in range(200):
            c = rng.uniform(-10.0, 10.0, size=dim)
            if all(np.linalg.norm(c - o) >= MIN_SEPARATION for o in centres):
                break
        # When k blobs cannot all fit that far apart (small dim, large k) keep the last draw.
        centres.append(c)
    return np.array(centres)


def encode_block(block: BlobBlock, fmt: str) -> list[bytes]:
    """Values for a block: valid records per DESIGN §3 (with "truth"), bad ones spoiled by kind."""
    if fmt == "json":
        values = encode_json_records(block.X, ids=block.ids.tolist(), truth=block.truth)
    else:
        values = encode_f32(block.X)
    for i, reason in enumerate(block.bad):
        if reason:
            values[i] = _spoil(fmt, reason, int(block.ids[i]), block.X[i], int(block.truth[i]))
    return values


def _spoil(fmt: str, reason: str, rid: int, x: np.ndarray, truth: int) -> bytes:
    """A record that the service must dead-letter with ``reason``."""
    if fmt == "f32":
        raw = x.astype("<f4")
        if reason == "non_finite":
            raw[0] = np.nan
            return raw.tobytes()
        return raw.tobytes()[:-2]  # wrong_size: not a whole number of float32s
    feats = x.tolist()
    if reason == "invalid_json":
        return orjson.dumps({"id": rid, "features": feats})[:-7]  # cut mid-array
    if reason == "wrong_dimension":
        return orjson.dumps({"id": rid, "features": [*feats, 0.0], "truth": truth})
    if reason == "missing_features":
        return orjson.dumps({"id": rid, "truth": truth})
    if reason == "non_finite":
        # JSON has no NaN; 1e300 parses as a double but overflows float32.
        return orjson.dumps({"id": rid, "features": [1e300, *feats[1:]], "truth": truth})
    raise ValueError(f"unknown bad-record kind {reason!r}")


def murmur2_partitions(keys: list[bytes], partitions: int) -> np.ndarray:
    """Kafka's default partition for each key (murmur2, as the Java client and aiokafka), vectorized."""
    out = np.empty(len(keys), dtype=np.int64)
    by_len: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        by_len.setdefault(len(key), []).append(i)
    for length, rows in by_len.items():
        data = np.frombuffer(b"".join(keys[i] for i in rows), dtype=np.uint8).reshape(
            len(rows), length
        )
        out[rows] = (_murmur2(data).astype(np.int64) & 0x7FFFFFFF) % partitions
    return out


def _murmur2(data: np.ndarray) -> np.ndarray:
    """Murmur2 (Kafka's seed) of each row of an (n, length) uint8 array; uint32 arithmetic wraps."""
    n, length = data.shape
    m, r = np.uint32(0x5BD1E995), np.uint32(24)
    h: np.ndarray = np.full(n, 0x9747B28C ^ length, dtype=np.uint32)
    d = data.astype(np.uint32)
    with np.errstate(over="ignore"):
        for i in range(0, length - length % 4, 4):
            k = d[:, i] | (d[:, i + 1] << 8) | (d[:, i + 2] << 16) | (d[:, i + 3] << 24)
            k = k * m
            k ^= k >> r
            k = k * m
            h = (h * m) ^ k
        tail = length % 4
        base = length - tail
        if tail == 3:
            h ^= d[:, base + 2] << 16
        if tail >= 2:
            h ^= d[:, base + 1] << 8
        if tail >= 1:
            h ^= d[:, base]
            h = h * m
        h ^= h >> np.uint32(13)
        h = h * m
        h ^= h >> np.uint32(15)
    return h


@dataclass(frozen=True)
class ProduceReport:
    """What a produce run wrote."""

    topic: str
    count: int
    invalid: int
    seconds: float
    partitions: int
    invalid_by_reason: dict[str, int] = field(default_factory=dict)
    fraud: int = 0  # injected fraud (transactions), including any among the invalid records

    @property
    def rate(self) -> float:
        """Records per second over the whole run."""
        return self.count / self.seconds if self.seconds > 0 else float("inf")


# One encoded block: Kafka keys, values, and "" or the DLQ reason of each record.
EncodedBlock = tuple[list[bytes], list[bytes], list[str]]


async def produce_blobs(
    bootstrap: str,
    topic: str,
    count: int,
    *,
    dim: int = 2,
    k: int = 3,
    seed: int = 0,
    drift: float = 0.0,
    invalid_fraction: float = 0.0,
    fmt: str = "json",
    rate: float = 0.0,
    partitions: int = 1,
    client_kwargs: dict[str, Any] | None = None,
    connect_timeout: float = 30.0,
    embeddings: bool = False,
) -> ProduceReport:
    """Write ``count`` blob (or embedding) records to ``topic``, keyed by ``str(id)`` (see
    `produce_records`)."""
    stream = BlobStream(dim, k, seed, drift, invalid_fraction, fmt, embeddings)
    encoded = (
        ([str(i).encode() for i in b.ids.tolist()], encode_block(b, fmt), b.bad)
        for b in stream.blocks(count)
    )
    return await produce_records(
        bootstrap, topic, encoded, rate, partitions, client_kwargs, connect_timeout
    )


async def produce_transactions(
    bootstrap: str,
    topic: str,
    count: int,
    *,
    seed: int = 0,
    invalid_fraction: float = 0.0,
    fraud_share: float = FRAUD_SHARE,
    rate: float = 0.0,
    partitions: int = 1,
    client_kwargs: dict[str, Any] | None = None,
    connect_timeout: float = 30.0,
) -> ProduceReport:
    """Write ``count`` card transactions (`stream.transactions`) to ``topic``, keyed by their id.

    Written as `produce_blobs` writes; the report counts the injected fraud too.
    """
    stream = TransactionStream(seed, invalid_fraction, fraud_share)
    fraud = 0

    def encoded() -> Iterator[EncodedBlock]:
        nonlocal fraud
        for b in stream.blocks(count):
            fraud += int(b.is_fraud.sum())
            yield (
                [transaction_id(i).encode() for i in b.ids.tolist()],
                encode_transactions(b),
                b.bad,
            )

    report = await produce_records(
        bootstrap, topic, encoded(), rate, partitions, client_kwargs, connect_timeout
    )
    return dataclasses.replace(report, fraud=fraud)


async def produce_records(
    bootstrap: str,
    topic: str,
    blocks: Iterable[EncodedBlock],
    rate: float = 0.0,
    partitions: int = 1,
    client_kwargs: dict[str, Any] | None = None,
    connect_timeout: float = 30.0,
) -> ProduceReport:
    """Write encoded blocks to ``topic`` (created with ``partitions`` if missing), in order.

    Keys are partitioned as Kafka's default partitioner would; records go out as one
    ``send_batch`` per partition and slice, which is several times faster than ``send`` per record
    (docs/embedded-broker.md). ``rate`` > 0 paces the slices to that many records per second.
    """
    kwargs = client_kwargs or {}
    await wait_for_broker(bootstrap, connect_timeout, kwargs)
    await ensure_topics(bootstrap, [TopicSpec(topic, partitions)], kwargs)
    n_parts = await partition_count(bootstrap, topic, kwargs)
    producer = AIOKafkaProducer(**client_config(bootstrap, kwargs), acks="all")
    await producer.start()
    # About 20 paced slices per second when rate-limited; whole blocks otherwise.
    slice_size = BLOCK if rate <= 0 else max(1, min(BLOCK, int(rate / 20)))
    reasons: Counter[str] = Counter()
    pending: list[asyncio.Future[Any]] = []
    start = time.monotonic()
    sent = 0
    try:
        for keys, values, bad in blocks:
            parts = murmur2_partitions(keys, n_parts)
            reasons.update(r for r in bad if r)
            for lo in range(0, len(keys), slice_size):
                hi = min(lo + slice_size, len(keys))
                pending += await _send_slice(producer, topic, keys, values, parts, lo, hi)
                sent += hi - lo
                if len(pending) > 256:  # bound memory held by unacknowledged batches
                    await asyncio.gather(*pending)
                    pending.clear()
                if rate > 0:
                    await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return ProduceReport(
        topic=topic,
        count=sent,
        invalid=sum(reasons.values()),
        seconds=time.monotonic() - start,
        partitions=n_parts,
        invalid_by_reason=dict(reasons),
    )


async def _send_slice(
    producer: AIOKafkaProducer,
    topic: str,
    keys: list[bytes],
    values: list[bytes],
    parts: np.ndarray,
    lo: int,
    hi: int,
) -> list[asyncio.Future[Any]]:
    """Send records lo..hi as one batch per partition; return the delivery futures."""
    futures = []
    now_ms = int(
        time.time() * 1000
    )  # BatchBuilder.append takes milliseconds, whatever its doc says
    for p in np.unique(parts[lo:hi]).tolist():
        batch = producer.create_batch()
        for i in (np.flatnonzero(parts[lo:hi] == p) + lo).tolist():
            if batch.append(key=keys[i], value=values[i], timestamp=now_ms) is None:
                batch.close()
                futures.append(await producer.send_batch(batch, topic, partition=p))
                batch = producer.create_batch()
                batch.append(key=keys[i], value=values[i], timestamp=now_ms)
        batch.close()
        futures.append(await producer.send_batch(batch, topic, partition=p))
    return futures


class ProduceSettings(Protocol):
    """The fields of stream.config.ProduceOptions that run_produce reads."""

    bootstrap: str
    topic: str
    scenario: str
    count: int
    rate: float
    dim: int
    k: int
    seed: int
    drift: float
    invalid_fraction: float
    format: str
    partitions: int


def run_produce(opts: ProduceSettings, client_kwargs: dict[str, Any] | None = None) -> int:
    """Run `streamkm produce`: write the records, print a closing line, return the exit code."""
    if opts.scenario == "transactions" and opts.format != "json":
        print(
            "streamkm produce: --scenario transactions writes JSON events; "
            f"--format {opts.format} is for --scenario blobs",
            file=sys.stderr,
        )
        return 2
    try:
        report = asyncio.run(_produce_scenario(opts, client_kwargs))
    except BrokerUnreachable as exc:
        print(f"streamkm produce: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    fraud = f", {report.fraud} fraud" if opts.scenario == "transactions" else ""
    print(
        f"produced {report.count} records ({report.invalid} invalid{fraud}) to {report.topic!r} "
        f"[{report.partitions} partitions] in {report.seconds:.2f}s: {report.rate:,.0f} records/s",
        flush=True,
    )
    if opts.scenario == "transactions":
        print(f"serve them with: --fields {TRANSACTION_FIELDS} --scale standard", flush=True)
    return 0


def _produce_scenario(
    opts: ProduceSettings, client_kwargs: dict[str, Any] | None
) -> Coroutine[Any, Any, ProduceReport]:
    if opts.scenario == "transactions":
        return produce_transactions(
            opts.bootstrap,
            opts.topic,
            opts.count,
            seed=opts.seed,
            invalid_fraction=opts.invalid_fraction,
            rate=opts.rate,
            partitions=opts.partitions,
            client_kwargs=client_kwargs,
        )
    return produce_blobs(
        opts.bootstrap,
        opts.topic,
        opts.count,
        dim=opts.dim,
        k=opts.k,
        seed=opts.seed,
        drift=opts.drift,
        invalid_fraction=opts.invalid_fraction,
        fmt=opts.format,
        rate=opts.rate,
        partitions=opts.partitions,
        embeddings=opts.scenario == "embeddings",
        client_kwargs=client_kwargs,
    )
