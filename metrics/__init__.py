"""Prometheus metrics of streamkm (DESIGN.md §6) and the HTTP endpoint that serves them."""

from metrics.api_metrics import ApiMetrics
from metrics.gauge_set import GaugeSet
from metrics.histogram import (
    BATCH_SIZE_BUCKETS,
    LATENCY_BUCKETS,
    BatchHistogram,
    histogram_quantile,
)
from metrics.server import MetricsPortInUseError, MetricsServer, Readiness
from metrics.service_metrics import DLQ_REASONS, OUTCOMES, STAGES, ServiceMetrics

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "DLQ_REASONS",
    "LATENCY_BUCKETS",
    "OUTCOMES",
    "STAGES",
    "ApiMetrics",
    "BatchHistogram",
    "GaugeSet",
    "MetricsPortInUseError",
    "MetricsServer",
    "Readiness",
    "ServiceMetrics",
    "histogram_quantile",
]
