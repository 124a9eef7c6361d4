"""Every metric streamkm publishes (DESIGN.md §6), and the calls that update them."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Mapping, Sequence

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

from metrics.gauge_set import GaugeSet
from metrics.histogram import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS, BatchHistogram

OUTCOMES: tuple[str, ...] = ("labeled", "invalid")
"""Values of the ``outcome`` label of ``streamkm_records_total``."""

STAGES: tuple[str, ...] = ("poll", "decode", "assign", "produce", "commit", "update")
"""Values of the ``stage`` label of ``streamkm_stage_seconds``, in data-path order."""

DLQ_REASONS: tuple[str, ...] = (
    "invalid_json",
    "missing_features",
    "wrong_dimension",
    "non_finite",
    "wrong_size",
)
"""DLQ reasons named in DESIGN.md §3, whose series exist from the start; others appear on use."""


class ServiceMetrics:
    """The metrics of one service instance, registered on their own registry.

    Each instance owns a ``CollectorRegistry`` (a new one unless given), so tests and several
    services in one process never share series. The hot path calls ``record_batch`` once per
    batch; the model and lag setters run when those change. Updates may come from the event
    loop thread while a scrape runs on the HTTP server thread: every metric here is safe for that.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        dlq_reasons: Iterable[str] = DLQ_REASONS,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry

        # DESIGN.md §6, row by row.
        self.records_total = Counter(
            "streamkm_records_total", "Records handled.", ["outcome"], registry=r
        )
        self.e2e_latency_seconds = BatchHistogram(
            "streamkm_e2e_latency_seconds",
            "Input record timestamp to output acknowledged, in seconds.",
            LATENCY_BUCKETS,
        )
        self.stage_seconds = BatchHistogram(
            "streamkm_stage_seconds",
            "Time per batch in each stage, in seconds.",
            LATENCY_BUCKETS,
            labelname="stage",
            labelvalues=STAGES,
        )
        self.batch_records = BatchHistogram(
            "streamkm_batch_records", "Records per batch.", BATCH_SIZE_BUCKETS
        )
        self.consumer_lag_records = GaugeSet(
            "streamkm_consumer_lag_records",
            "High watermark minus position, per assigned input partition.",
            "partition",
        )
        self.model_version = Gauge("streamkm_model_version", "Model messages applied.", registry=r)
        self.cluster_weight = GaugeSet(
            "streamkm_cluster_weight", "Decayed weight of each centroid.", "cluster"
        )
        self.centroid_shift = Gauge(
            "streamkm_centroid_shift", "Total centroid movement at the last update.", registry=r
        )
        self.mean_sq_distance = Gauge(
            "streamkm_mean_sq_distance",
            "Mean squared distance of recent records (inertia per record).",
            registry=r,
        )
        self.anomalies_total = Counter(
            "streamkm_anomalies_total",
            "Records whose score passed the anomaly threshold.",
            registry=r,
        )
        self.dlq_records_total = Counter(
            "streamkm_dlq_records_total", "Dead-lettered records.", ["reason"], registry=r
        )

        # Beyond the §6 table: the model-update log.
        self.updates_lag_records = Gauge(
            "streamkm_updates_lag_records",
            "Records between the applied model version and the model updates log end.",
            registry=r,
        )
        self.model_staleness_records = Gauge(
            "streamkm_model_staleness_records",
            "Records this instance labeled that the labeling model had not yet learnt from, "
            "at the last record labeled.",
            registry=r,
        )
        self.model_staleness_limit_records = Gauge(
            "streamkm_model_staleness_limit_records",
            "The bound on streamkm_model_staleness_records (--max-staleness).",
            registry=r,
        )
        self.model_reseeds_total = Counter(
            "streamkm_model_reseeds_total",
            "Dead clusters re-seeded or models replaced.",
            registry=r,
        )

        for collector in (
            self.e2e_latency_seconds,
            self.stage_seconds,
            self.batch_records,
            self.consumer_lag_records,
            self.cluster_weight,
        ):
            r.register(collector)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

        # Children created up front, so their series read 0 from the first scrape and the hot
        # path skips the labels() lookup.
        self._labeled = self.records_total.labels(outcome="labeled")
        self._invalid = self.records_total.labels(outcome="invalid")
        self._dlq_by_reason = {
            reason: self.dlq_records_total.labels(reason=reason) for reason in dlq_reasons
        }

    def record_batch(
        self,
        *,
        n_labeled: int,
        n_invalid: int = 0,
        latencies_s: np.ndarray | None = None,
        n_anomalies: int = 0,
        stage_seconds: Mapping[str, float] | None = None,
        dlq_reasons: Mapping[str, int] | Sequence[str] = (),
    ) -> None:
        """Count one batch: records by outcome, latencies, anomalies, stage times, DLQ reasons.

        ``stage_seconds`` may name any subset of ``STAGES``; ``dlq_reasons`` is either a count
        per reason or one reason per dead-lettered record. A batch of zero records (an empty
        poll) still records its stage times but is not counted in ``streamkm_batch_records``.
        """
        if n_labeled:
            self._labeled.inc(n_labeled)
        if n_invalid:
            self._invalid.inc(n_invalid)
        if n_labeled or n_invalid:
            self.batch_records.observe(n_labeled + n_invalid)
        if latencies_s is not None:
            self.e2e_latency_seconds.observe_many(latencies_s)
        if n_anomalies:
            self.anomalies_total.inc(n_anomalies)
        if stage_seconds:
            self.stage_seconds.observe_each(stage_seconds)
        if dlq_reasons:
            self._count_dlq(dlq_reasons)

    def _count_dlq(self, reasons: Mapping[str, int] | Sequence[str]) -> None:
        if isinstance(reasons, str):
            raise TypeError("dlq_reasons takes a mapping or a sequence of reasons, not one string")
        counts = reasons if isinstance(reasons, Mapping) else Tally(reasons)
        for reason, n in counts.items():
            child = self._dlq_by_reason.get(reason)
            if child is None:
                child = self._dlq_by_reason[reason] = self.dlq_records_total.labels(reason=reason)
            if n:
                child.inc(n)

    def set_model(
        self, version: int, weights: np.ndarray, centroid_shift: float, mean_sq_distance: float
    ) -> None:
        """Publish the model state after an update: one weight series per cluster 0..k-1."""
        self.model_version.set(version)
        self.cluster_weight.replace_indexed(np.asarray(weights, dtype=np.float64).ravel().tolist())
        self.centroid_shift.set(centroid_shift)
        self.mean_sq_distance.set(mean_sq_distance)

    def set_lag(self, lag_by_partition: Mapping[int, int]) -> None:
        """Publish the lag of exactly these (the assigned) input partitions."""
        self.consumer_lag_records.replace(lag_by_partition)

    def set_updates_lag(self, n: int) -> None:
        """Publish how many model update records are not applied yet."""
        self.updates_lag_records.set(n)

    def set_staleness(self, n: int, limit: int | None = None) -> None:
        """Publish how many of this instance's labeled records the labeling model lacks."""
        self.model_staleness_records.set(n)
        if limit is not None:
            self.model_staleness_limit_records.set(limit)

    def inc_reseeds(self, n: int = 1) -> None:
        """Count dead clusters re-seeded or models replaced."""
        self.model_reseeds_total.inc(n)

    def render(self) -> bytes:
        """The registry in the Prometheus text exposition format."""
        return generate_latest(self.registry)
