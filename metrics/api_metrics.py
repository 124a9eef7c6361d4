"""Metrics of `streamkm api` (DESIGN.md §8): requests, latency, rows per kernel call, model version.

The request path observes one request at a time, tens of thousands a second: observations go to
a buffer under one uncontended lock and reach the Prometheus metrics a few hundred at a time
(and at every scrape), so a request costs well under a microsecond here.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from metrics.histogram import BATCH_SIZE_BUCKETS, BatchHistogram

PROTOCOLS: tuple[str, ...] = ("http", "grpc")
"""Values of the ``protocol`` label."""

API_LATENCY_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
"""Upper bounds in seconds for request latency: 50 µs to 2.5 s (the target p99 is 2 ms)."""

_FLUSH_EVERY = 512  # buffered requests before they are moved into the metrics


class ApiMetrics:
    """The metrics of one api instance, on their own registry (a new one unless given).

    ``observe_request`` may be called from any thread (the HTTP loop, gRPC handlers);
    ``render`` runs on the metrics server's thread.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests_total = Counter(
            "streamkm_api_requests_total",
            "Scoring API requests answered, by protocol and status code.",
            ["protocol", "code"],
            registry=r,
        )
        self.latency_seconds = BatchHistogram(
            "streamkm_api_latency_seconds",
            "Request received to response written, in seconds.",
            API_LATENCY_BUCKETS,
            labelname="protocol",
            labelvalues=PROTOCOLS,
        )
        self.batch_rows = BatchHistogram(
            "streamkm_api_batch_rows", "Rows scored per kernel call.", BATCH_SIZE_BUCKETS
        )
        self.model_version = Gauge(
            "streamkm_model_version", "Model messages applied by this api's replica.", registry=r
        )
        self.updates_lag_records = Gauge(
            "streamkm_updates_lag_records",
            "Records between the applied model version and the model updates log end.",
            registry=r,
        )
        r.register(self.latency_seconds)
        r.register(self.batch_rows)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self._lock = threading.Lock()
        self._codes: Tally[tuple[str, str]] = Tally()
        self._seconds: dict[str, list[float]] = {p: [] for p in PROTOCOLS}
        self._rows: list[int] = []
        self._pending = 0

    def observe_request(self, protocol: str, code: str, seconds: float) -> None:
        """Count one answered request (``code``: the HTTP status or gRPC code name)."""
        if protocol not in self._seconds:
            raise ValueError(f"protocol {protocol!r} is not one of {PROTOCOLS}")
        with self._lock:
            self._codes[protocol, code] += 1
            self._seconds[protocol].append(seconds)
            self._pending += 1
            if self._pending >= _FLUSH_EVERY:
                self._flush()

    def observe_batch(self, rows: int) -> None:
        """Count one kernel call of ``rows`` rows."""
        with self._lock:
            self._rows.append(rows)
            self._pending += 1
            if self._pending >= _FLUSH_EVERY:
                self._flush()

    def set_model(self, version: int, updates_lag: int = 0) -> None:
        """Publish the version the replica holds and how far behind the log end it is."""
        self.model_version.set(version)
        self.updates_lag_records.set(updates_lag)

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format, buffered observations included."""
        with self._lock:
            self._flush()
        return generate_latest(self.registry)

    def _flush(self) -> None:
        """Move buffered observations into the metrics; the caller holds the lock."""
        for (protocol, code), n in self._codes.items():
            self.requests_total.labels(protocol=protocol, code=code).inc(n)
        self._codes.clear()
        for protocol, seconds in self._seconds.items():
            if seconds:
                self.latency_seconds.observe_many(np.asarray(seconds), protocol)
                seconds.clear()
        if self._rows:
            self.batch_rows.observe_many(np.asarray(self._rows, dtype=np.float64))
            self._rows.clear()
        self._pending = 0
