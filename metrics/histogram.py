"""Histograms bucketed in NumPy, a whole batch per call, published through a custom collector."""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
"""Upper bounds in seconds for latency histograms: 0.5 ms to 10 s."""

BATCH_SIZE_BUCKETS: tuple[float, ...] = tuple(float(2**i) for i in range(17))
"""Upper bounds for records-per-batch histograms: powers of two from 1 to 65536."""


class BatchHistogram(Collector):
    """A Prometheus histogram that buckets whole NumPy arrays at once.

    ``prometheus_client.Histogram`` costs a lock and a Python loop per observed value; one
    batch of a few thousand latencies would cost milliseconds. Here a batch is bucketed with one
    ``np.sort`` + ``np.searchsorted`` (tens of microseconds for 4096 values) and the lock is held
    only to add the resulting counts, so a scrape from the HTTP thread never waits long.

    Bucketing matches ``prometheus_client.Histogram`` exactly: a value lands in the first bucket
    whose upper bound is ``>= value``. NaN is ignored, where ``Histogram`` would add it to the
    sum and leave the sum NaN for the rest of the process.

    An optional single label takes values fixed at construction (e.g. ``stage``), which keeps
    the series bounded and makes every series visible from the first scrape.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float] = LATENCY_BUCKETS,
        *,
        labelname: str | None = None,
        labelvalues: Sequence[str] = (),
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"{name}: buckets must be distinct and non-empty, got {buckets!r}")
        if bounds[-1] != float("inf"):
            bounds.append(float("inf"))
        if (labelname is None) != (len(labelvalues) == 0):
            raise ValueError(f"{name}: give labelvalues exactly when a labelname is given")
        if len(set(labelvalues)) != len(labelvalues):
            raise ValueError(f"{name}: duplicate label values {labelvalues!r}")
        self._name = name
        self._documentation = documentation
        self._bounds = np.asarray(bounds, dtype=np.float64)
        self._bound_list = bounds
        self._bucket_names = [floatToGoString(b) for b in bounds]
        self._labelname = labelname
        self._labelvalues = tuple(labelvalues) if labelname is not None else ("",)
        self._rows = {value: row for row, value in enumerate(self._labelvalues)}
        # Cumulative, as exposed: a batch adds its cumulative counts with no diff/cumsum step.
        self._cumulative = np.zeros((len(self._labelvalues), len(bounds)), dtype=np.int64)
        self._sums = np.zeros(len(self._labelvalues), dtype=np.float64)
        self._lock = threading.Lock()

    @property
    def upper_bounds(self) -> tuple[float, ...]:
        """The bucket upper bounds, ending with +Inf."""
        return tuple(float(b) for b in self._bounds)

    def _row(self, labelvalue: str | None) -> int:
        if self._labelname is None:
            if labelvalue is not None:
                raise ValueError(f"{self._name} has no label; got label value {labelvalue!r}")
            return 0
        try:
            return self._rows[labelvalue]  # type: ignore[index]
        except KeyError:
            raise ValueError(
                f"{self._name}: {self._labelname}={labelvalue!r} is not one of {self._labelvalues}"
            ) from None

    def _cumulative_counts(self, values: np.ndarray) -> np.ndarray:
        # Sorting the batch once and locating the few bounds in it is several times faster than
        # locating every value among the bounds. side="right" counts the values <= each bound,
        # Prometheus' "le" rule; NaN sorts after +Inf, so it is in no bucket.
        return np.searchsorted(np.sort(values), self._bounds, side="right")

    def _bucket_of(self, value: float) -> int:
        # For one value, bisect on a list beats np.searchsorted tenfold. Callers drop NaN first.
        return bisect.bisect_left(self._bound_list, value)

    def observe_many(self, values: np.ndarray, labelvalue: str | None = None) -> None:
        """Observe every value of an array (any shape) in one step."""
        row = self._row(labelvalue)
        flat = np.asarray(values, dtype=np.float64).ravel()
        if flat.size == 0:
            return
        cumulative = self._cumulative_counts(flat)
        total = float(flat.sum())
        if math.isnan(total):
            total = float(np.nansum(flat))  # the rare slow path: only when NaN is present
        with self._lock:
            self._cumulative[row] += cumulative
            self._sums[row] += total

    def observe(self, value: float, labelvalue: str | None = None) -> None:
        """Observe one value."""
        row = self._row(labelvalue)
        value = float(value)
        if math.isnan(value):
            return
        bucket = self._bucket_of(value)
        with self._lock:
            self._cumulative[row, bucket:] += 1
            self._sums[row] += value

    def observe_each(self, values: Mapping[str, float]) -> None:
        """Observe one value under each of several label values, taking the lock once."""
        updates = []
        for label, raw in values.items():
            value = float(raw)
            if not math.isnan(value):
                updates.append((self._row(label), self._bucket_of(value), value))
        with self._lock:
            for row, bucket, value in updates:
                self._cumulative[row, bucket:] += 1
                self._sums[row] += value

    def snapshot(self, labelvalue: str | None = None) -> tuple[np.ndarray, float]:
        """A copy of the per-bucket (not cumulative) counts and the sum, for one label value."""
        row = self._row(labelvalue)
        with self._lock:
            cumulative, total = self._cumulative[row].copy(), float(self._sums[row])
        return np.diff(cumulative, prepend=0), total

    def describe(self) -> Iterable[Metric]:
        """The empty family, so the registry can reject a second metric of the same name."""
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        """Yield the cumulative buckets, sum and count of every label value."""
        with self._lock:
            cumulative = self._cumulative.copy()
            sums = self._sums.copy()
        family = self._family()
        labelled = self._labelname is not None
        for row, labelvalue in enumerate(self._labelvalues):
            buckets = list(zip(self._bucket_names, cumulative[row].tolist(), strict=True))
            family.add_metric([labelvalue] if labelled else [], buckets, float(sums[row]))
        yield family

    def _family(self) -> HistogramMetricFamily:
        labels = [self._labelname] if self._labelname is not None else []
        return HistogramMetricFamily(self._name, self._documentation, labels=labels)


def histogram_quantile(
    q: float, upper_bounds: Sequence[float], counts: Sequence[int] | np.ndarray
) -> float:
    """The q-quantile of bucketed observations, interpolated linearly within its bucket.

    As PromQL's histogram_quantile: the first bucket starts at 0, and a quantile that falls in
    the +Inf bucket is reported as the largest finite bound. NaN when there are no observations.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be within [0, 1], got {q}")
    cumulative = np.cumsum(np.asarray(counts, dtype=np.float64))
    total = float(cumulative[-1]) if len(cumulative) else 0.0
    if total == 0:
        return math.nan
    rank = q * total
    # The first bucket holding the rank-th observation; for q = 0, the first non-empty bucket.
    i = int(np.searchsorted(cumulative, rank, side="left" if rank > 0 else "right"))
    i = min(i, len(cumulative) - 1)
    if math.isinf(upper_bounds[i]):
        return float(upper_bounds[i - 1]) if i > 0 else math.nan
    lower = float(upper_bounds[i - 1]) if i > 0 else 0.0
    below = float(cumulative[i - 1]) if i > 0 else 0.0
    in_bucket = float(cumulative[i]) - below
    if in_bucket == 0:
        return lower
    return lower + (float(upper_bounds[i]) - lower) * (rank - below) / in_bucket
