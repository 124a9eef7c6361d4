"""The Grafana dashboard and the alert rules speak only of metrics the service publishes."""

from __future__ import annotations

import pytest
import yaml
from promql_text import (
    DATASOURCES,
    alert_rules,
    dashboard_queries,
    load_dashboard,
    metric_names,
    panels,
    substitute_grafana_variables,
)

from metrics import ApiMetrics, ServiceMetrics

# DESIGN.md §6, the metrics contract: every one of them is on the dashboard.
DESIGN_METRICS = (
    "streamkm_records_total",
    "streamkm_e2e_latency_seconds",
    "streamkm_stage_seconds",
    "streamkm_batch_records",
    "streamkm_consumer_lag_records",
    "streamkm_model_version",
    "streamkm_cluster_weight",
    "streamkm_centroid_shift",
    "streamkm_mean_sq_distance",
    "streamkm_anomalies_total",
    "streamkm_dlq_records_total",
)
# The series names a family of each type exposes (prometheus_client strips _total from counters).
_SAMPLE_SUFFIXES = ("", "_total", "_created", "_bucket", "_sum", "_count")


def published_series_names() -> set[str]:
    """Every series name a streamkm /metrics page can hold, plus Prometheus' own ``up``."""
    families = [*ServiceMetrics().registry.collect(), *ApiMetrics().registry.collect()]
    return {f.name + suffix for f in families for suffix in _SAMPLE_SUFFIXES} | {"up"}


def provisioned_datasource_uid() -> str:
    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    return datasource["uid"]


DASHBOARD = load_dashboard()
QUERIES = dashboard_queries(DASHBOARD)


def test_dashboard_has_a_fixed_uid_and_a_current_schema():
    assert DASHBOARD["uid"] == "streamkm-overview"
    assert DASHBOARD["schemaVersion"] >= 36


def test_every_panel_and_target_uses_the_provisioned_datasource():
    uid = provisioned_datasource_uid()
    data_panels = [p for p in panels(DASHBOARD) if p["type"] != "row"]
    assert data_panels
    for panel in data_panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]


def test_panel_ids_and_target_ref_ids_are_unique():
    ids = [p["id"] for p in panels(DASHBOARD)]
    assert len(ids) == len(set(ids))
    for panel in panels(DASHBOARD):
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: f"{q.panel}/{q.ref_id}")
def test_dashboard_query_uses_only_published_metrics_and_known_variables(query):
    expr = substitute_grafana_variables(query.expr)  # KeyError names an unknown variable
    names = metric_names(expr)
    assert names, f"no metric found in {query.expr!r}"
    assert names <= published_series_names(), names - published_series_names()


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r.name)
def test_alert_uses_only_published_metrics(rule):
    names = metric_names(rule.expr)
    assert names, f"no metric found in {rule.expr!r}"
    assert names <= published_series_names(), names - published_series_names()


def test_every_design_metric_is_on_the_dashboard():
    shown = set().union(*(metric_names(substitute_grafana_variables(q.expr)) for q in QUERIES))
    missing = [m for m in DESIGN_METRICS if not any(s == m or s.startswith(m + "_") for s in shown)]
    assert missing == []


def test_design_metrics_are_the_ones_service_metrics_defines():
    # Guards the list above: a renamed metric must be renamed here and on the dashboard.
    assert set(DESIGN_METRICS) <= published_series_names()
