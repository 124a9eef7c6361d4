"""A labelled gauge whose whole set of series is replaced at once."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class GaugeSet(Collector):
    """A gauge with one label, published as a snapshot that each update replaces whole.

    Per-partition lag and per-cluster weight are always known as a complete set, so replacing
    the snapshot drops series for partitions no longer assigned or clusters no longer present
    without any remove bookkeeping. The swap is one reference assignment, so a scrape from
    another thread sees either the old set or the new one, never a mix.
    """

    def __init__(self, name: str, documentation: str, labelname: str) -> None:
        self._name = name
        self._documentation = documentation
        self._labelname = labelname
        self._values: tuple[tuple[str, float], ...] = ()

    def replace(self, values: Mapping[int, float] | Mapping[str, float]) -> None:
        """Publish exactly these label values (converted with ``str``), dropping all others."""
        self._values = tuple((str(label), float(value)) for label, value in values.items())

    def replace_indexed(self, values: Iterable[float]) -> None:
        """Publish one series per element, labelled by its index 0..n-1."""
        self._values = tuple((str(i), float(value)) for i, value in enumerate(values))

    def snapshot(self) -> dict[str, float]:
        """The values a scrape would publish now, by label value."""
        return dict(self._values)

    def describe(self) -> Iterable[Metric]:
        """The empty family, so the registry can reject a second metric of the same name."""
        return [GaugeMetricFamily(self._name, self._documentation, labels=[self._labelname])]

    def collect(self) -> Iterable[Metric]:
        """Yield the current snapshot."""
        family = GaugeMetricFamily(self._name, self._documentation, labels=[self._labelname])
        for label, value in self._values:
            family.add_metric([label], value)
        yield family
