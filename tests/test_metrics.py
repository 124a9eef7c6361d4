"""The metrics contract of DESIGN.md §6 and the NumPy-bucketed histograms behind it."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from metrics import (
    BATCH_SIZE_BUCKETS,
    DLQ_REASONS,
    LATENCY_BUCKETS,
    STAGES,
    BatchHistogram,
    ServiceMetrics,
)

# DESIGN.md §6, plus the model-update log metrics; counter names as the text parser reports
# them (without the _total suffix).
CONTRACT = [
    ("streamkm_records", "counter", {"outcome"}),
    ("streamkm_e2e_latency_seconds", "histogram", set()),
    ("streamkm_stage_seconds", "histogram", {"stage"}),
    ("streamkm_batch_records", "histogram", set()),
    ("streamkm_consumer_lag_records", "gauge", {"partition"}),
    ("streamkm_model_version", "gauge", set()),
    ("streamkm_cluster_weight", "gauge", {"cluster"}),
    ("streamkm_centroid_shift", "gauge", set()),
    ("streamkm_mean_sq_distance", "gauge", set()),
    ("streamkm_anomalies", "counter", set()),
    ("streamkm_dlq_records", "counter", {"reason"}),
    ("streamkm_updates_lag_records", "gauge", set()),
    ("streamkm_model_reseeds", "counter", set()),
]


def families(text: bytes) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text.decode())}


def series(metrics: ServiceMetrics, name: str, label: str) -> dict[str, float]:
    family = families(metrics.render())[name]
    return {s.labels[label]: s.value for s in family.samples}


def value(metrics: ServiceMetrics, sample: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(sample, labels)


def histogram_samples(text: bytes, name: str) -> tuple[dict[str, float], float, float]:
    family = families(text)[name]
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name == f"{name}_bucket"}
    (count,) = [s.value for s in family.samples if s.name == f"{name}_count"]
    (total,) = [s.value for s in family.samples if s.name == f"{name}_sum"]
    return buckets, count, total


bounded_values = st.lists(
    st.one_of(
        st.floats(min_value=-1.0, max_value=1e6, allow_nan=False),
        st.sampled_from(LATENCY_BUCKETS + BATCH_SIZE_BUCKETS),  # exactly on a bound: "le"
        st.just(math.inf),
    ),
    max_size=200,
)


@pytest.mark.parametrize("bounds", [LATENCY_BUCKETS, BATCH_SIZE_BUCKETS], ids=["latency", "size"])
@settings(deadline=None, max_examples=60)
@given(values=bounded_values, split=st.integers(min_value=0, max_value=200))
def test_histogram_buckets_like_prometheus_client(bounds, values, split):
    reference_registry, registry = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("h", "reference", buckets=bounds, registry=reference_registry)
    ours = BatchHistogram("h", "batched", bounds)
    registry.register(ours)
    for v in values:
        reference.observe(v)
    # Both entry points: a batch, then single values.
    ours.observe_many(np.asarray(values[:split], dtype=np.float64))
    for v in values[split:]:
        ours.observe(v)

    expected_buckets, expected_count, expected_sum = histogram_samples(
        generate_latest(reference_registry), "h"
    )
    buckets, count, total = histogram_samples(generate_latest(registry), "h")
    assert buckets == expected_buckets
    assert count == expected_count == len(values)
    assert total == pytest.approx(expected_sum, rel=1e-9, abs=1e-9, nan_ok=True)


def test_histogram_accepts_arrays_of_any_shape_and_dtype():
    hist = BatchHistogram("h", "doc", LATENCY_BUCKETS)
    hist.observe_many(np.full((4, 8), 0.003, dtype=np.float32))
    counts, total = hist.snapshot()
    assert counts[LATENCY_BUCKETS.index(0.005)] == 32
    assert counts.sum() == 32
    assert total == pytest.approx(32 * 0.003, rel=1e-6)


def test_histogram_ignores_nan_instead_of_poisoning_the_sum():
    hist = BatchHistogram("h", "doc", LATENCY_BUCKETS)
    hist.observe_many(np.array([0.001, np.nan, 0.002]))
    hist.observe(float("nan"))
    counts, total = hist.snapshot()
    assert counts.sum() == 2
    assert total == pytest.approx(0.003)


def test_histogram_rejects_label_values_not_declared_up_front():
    hist = BatchHistogram("h", "doc", LATENCY_BUCKETS, labelname="stage", labelvalues=STAGES)
    with pytest.raises(ValueError, match="stage='sleep'"):
        hist.observe(0.1, "sleep")
    with pytest.raises(ValueError, match="stage='sleep'"):
        hist.observe_each({"poll": 0.1, "sleep": 0.2})
    assert hist.snapshot("poll")[0].sum() == 0  # a rejected call changes nothing


def test_histogram_counts_every_observation_while_scraped_from_another_thread():
    registry = CollectorRegistry()
    hist = BatchHistogram("h", "doc", LATENCY_BUCKETS)
    registry.register(hist)
    batch = np.linspace(0.0, 2.0, 64)
    done = threading.Event()

    def scrape() -> None:
        while not done.is_set():
            generate_latest(registry)

    def observe() -> None:
        for _ in range(500):
            hist.observe_many(batch)

    scraper = threading.Thread(target=scrape)
    writers = [threading.Thread(target=observe) for _ in range(4)]
    scraper.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    done.set()
    scraper.join()
    _, count, total = histogram_samples(generate_latest(registry), "h")
    assert count == 4 * 500 * 64
    assert total == pytest.approx(4 * 500 * batch.sum())


def test_every_design_metric_is_exposed_with_its_type_and_labels():
    metrics = ServiceMetrics()
    # Labelled gauges publish only what was set; give them one series each.
    metrics.set_lag({0: 3})
    metrics.set_model(1, np.array([2.0]), 0.5, 1.5)
    exposed = families(metrics.render())
    for name, kind, labels in CONTRACT:
        assert name in exposed, name
        assert exposed[name].type == kind, name
        seen = {key for s in exposed[name].samples for key in s.labels} - {"le"}
        assert seen == labels, name


def test_process_and_runtime_metrics_are_exposed_too():
    exposed = families(ServiceMetrics().render())
    assert {"process_cpu_seconds", "python_info", "python_gc_objects_collected"} <= set(exposed)


def test_known_label_values_have_series_from_the_first_scrape():
    metrics = ServiceMetrics()
    assert series(metrics, "streamkm_records", "outcome") == {"labeled": 0.0, "invalid": 0.0}
    assert series(metrics, "streamkm_dlq_records", "reason") == dict.fromkeys(DLQ_REASONS, 0.0)
    for stage in STAGES:
        assert value(metrics, "streamkm_stage_seconds_count", stage=stage) == 0.0


def test_record_batch_counts_records_latencies_anomalies_stages_and_dlq_reasons():
    metrics = ServiceMetrics()
    for _ in range(2):
        metrics.record_batch(
            n_labeled=100,
            n_invalid=3,
            latencies_s=np.full(100, 0.02),
            n_anomalies=4,
            stage_seconds={"poll": 0.001, "assign": 0.0002, "commit": 0.003},
            dlq_reasons=["invalid_json", "non_finite", "invalid_json"],
        )
    assert value(metrics, "streamkm_records_total", outcome="labeled") == 200
    assert value(metrics, "streamkm_records_total", outcome="invalid") == 6
    assert value(metrics, "streamkm_anomalies_total") == 8
    assert value(metrics, "streamkm_dlq_records_total", reason="invalid_json") == 4
    assert value(metrics, "streamkm_dlq_records_total", reason="non_finite") == 2
    assert value(metrics, "streamkm_e2e_latency_seconds_count") == 200
    assert value(metrics, "streamkm_e2e_latency_seconds_bucket", le="0.01") == 0
    assert value(metrics, "streamkm_e2e_latency_seconds_bucket", le="0.025") == 200
    assert value(metrics, "streamkm_e2e_latency_seconds_sum") == pytest.approx(4.0)
    assert value(metrics, "streamkm_batch_records_count") == 2
    assert value(metrics, "streamkm_batch_records_bucket", le="64.0") == 0
    assert value(metrics, "streamkm_batch_records_bucket", le="128.0") == 2
    assert value(metrics, "streamkm_stage_seconds_count", stage="poll") == 2
    assert value(metrics, "streamkm_stage_seconds_sum", stage="commit") == pytest.approx(0.006)
    assert value(metrics, "streamkm_stage_seconds_count", stage="decode") == 0


@pytest.mark.parametrize(
    "reasons",
    [["wrong_size", "odd_reason", "wrong_size"], {"wrong_size": 2, "odd_reason": 1}],
    ids=["one-per-record", "count-per-reason"],
)
def test_dlq_reasons_count_the_same_given_per_record_or_per_reason(reasons):
    metrics = ServiceMetrics()
    metrics.record_batch(n_labeled=0, n_invalid=3, dlq_reasons=reasons)
    assert value(metrics, "streamkm_dlq_records_total", reason="wrong_size") == 2
    assert value(metrics, "streamkm_dlq_records_total", reason="odd_reason") == 1


def test_dlq_reasons_refuse_a_bare_string():
    with pytest.raises(TypeError, match="not one string"):
        ServiceMetrics().record_batch(n_labeled=0, n_invalid=1, dlq_reasons="invalid_json")


def test_an_empty_poll_records_its_stage_time_but_is_not_a_batch():
    metrics = ServiceMetrics()
    metrics.record_batch(n_labeled=0, latencies_s=np.empty(0), stage_seconds={"poll": 0.5})
    assert value(metrics, "streamkm_batch_records_count") == 0
    assert value(metrics, "streamkm_e2e_latency_seconds_count") == 0
    assert value(metrics, "streamkm_stage_seconds_count", stage="poll") == 1


def test_set_model_publishes_version_weights_shift_and_distance():
    metrics = ServiceMetrics()
    metrics.set_model(7, np.array([10.0, 0.5, 3.0]), centroid_shift=0.25, mean_sq_distance=1.75)
    assert value(metrics, "streamkm_model_version") == 7
    assert series(metrics, "streamkm_cluster_weight", "cluster") == {"0": 10, "1": 0.5, "2": 3}
    assert value(metrics, "streamkm_centroid_shift") == 0.25
    assert value(metrics, "streamkm_mean_sq_distance") == 1.75


def test_cluster_weights_of_clusters_beyond_k_are_removed():
    metrics = ServiceMetrics()
    metrics.set_model(1, np.ones(5), 0.0, 0.0)
    metrics.set_model(2, np.array([4.0, 2.0]), 0.0, 0.0)
    assert series(metrics, "streamkm_cluster_weight", "cluster") == {"0": 4.0, "1": 2.0}


def test_lag_of_partitions_no_longer_assigned_is_removed():
    metrics = ServiceMetrics()
    metrics.set_lag({0: 10, 1: 20, 2: 30})
    metrics.set_lag({2: 5})
    assert series(metrics, "streamkm_consumer_lag_records", "partition") == {"2": 5.0}


def test_label_values_stay_bounded_over_many_updates():
    metrics = ServiceMetrics()
    rng = np.random.default_rng(0)
    for version in range(200):
        k = int(rng.integers(1, 9))
        metrics.set_model(version, rng.random(k), 0.0, 0.0)
        metrics.set_lag({int(p): 1 for p in rng.choice(4, size=2, replace=False)})
        metrics.record_batch(n_labeled=1, n_invalid=1, dlq_reasons=[str(rng.choice(DLQ_REASONS))])
    assert len(series(metrics, "streamkm_cluster_weight", "cluster")) == k
    assert len(series(metrics, "streamkm_consumer_lag_records", "partition")) == 2
    assert set(series(metrics, "streamkm_dlq_records", "reason")) == set(DLQ_REASONS)
    assert set(series(metrics, "streamkm_records", "outcome")) == {"labeled", "invalid"}


def test_updates_lag_and_reseeds_are_published():
    metrics = ServiceMetrics()
    metrics.set_updates_lag(12)
    metrics.inc_reseeds()
    metrics.inc_reseeds(2)
    assert value(metrics, "streamkm_updates_lag_records") == 12
    assert value(metrics, "streamkm_model_reseeds_total") == 3


def test_each_service_instance_has_its_own_registry():
    first, second = ServiceMetrics(), ServiceMetrics()
    first.record_batch(n_labeled=5)
    assert value(first, "streamkm_records_total", outcome="labeled") == 5
    assert value(second, "streamkm_records_total", outcome="labeled") == 0


def test_a_registry_holds_the_service_metrics_only_once():
    registry = CollectorRegistry()
    ServiceMetrics(registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        ServiceMetrics(registry)
