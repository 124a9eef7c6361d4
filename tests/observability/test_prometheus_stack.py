"""A real Prometheus scrapes a real `streamkm serve` under load and evaluates every query of the
dashboard and of the alert rules: each must find data, or the panel or alert is dead.

How alerts are judged: an alert's full expression is rightly empty while nothing is wrong, so
the full expression is only checked to evaluate without error, and the series it compares with
its thresholds (``compared_operands``: ``A > 0 and B > 1000`` gives A and B) must each return at
least one series.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import orjson
import pytest
import yaml
from kafka_helpers import unique_name
from promql_text import (
    ALERTS,
    alert_rules,
    compared_operands,
    dashboard_queries,
    load_dashboard,
    substitute_grafana_variables,
)
from serve_process import free_port, streamkm_env

pytestmark = pytest.mark.integration

# Bounds on waiting, generous for a shared 2-core machine; not timings under test.
START_TIMEOUT_S = 60
DATA_TIMEOUT_S = 90
SCRAPES_BEFORE_QUERYING = 5


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_for(what: str, check, timeout: float, log: Path | None = None):
    """Poll ``check`` until it returns something truthy; fail naming ``what`` (and the log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if result := check():
                return result
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


@contextlib.contextmanager
def background(args: list[str], log: Path, env: Mapping[str, str]) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=dict(env))
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def requests_to(url: str, every_s: float = 0.05) -> Iterator[None]:
    """A thread posting one v2 infer request every `every_s` until the block ends (answers,
    503 before the model exists included, are not checked here)."""
    body = orjson.dumps(
        {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8], "data": [0.5] * 8}]}
    )
    stop = threading.Event()

    def post() -> None:
        while not stop.wait(every_s):
            request = urllib.request.Request(url, data=body, method="POST")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(request, timeout=2).read()

    thread = threading.Thread(target=post, name="api-load", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


class Prometheus:
    """The HTTP API of a Prometheus server."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: str) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = http_get(f"{self.base}{path}{query}")
        data = orjson.loads(body)
        assert status == 200 and data["status"] == "success", (path, params, data)
        return data["data"]

    def query(self, expr: str) -> list[dict]:
        data = self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return data["result"]

    def has_data(self, expr: str) -> bool:
        return bool(self.query(expr))


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail(
            "prometheus is not on PATH; run deploy/install-test-deps.sh (Debian package) first"
        )
    return path


@pytest.fixture(scope="module")
def running_stack(broker, prometheus_binary, tmp_path_factory):
    """`streamkm produce` load into `streamkm serve`, scraped each second by Prometheus."""
    tmp = tmp_path_factory.mktemp("stack")
    topic, metrics_port, prometheus_port = unique_name("obs"), free_port(), free_port()
    model, api_port, api_metrics_port = unique_name("m"), free_port(), free_port()
    env = streamkm_env()
    producer = [
        sys.executable, "-m", "stream.cli", "produce", "--bootstrap", broker.bootstrap,
        "--topic", topic, "--count", "1000000", "--rate", "2000", "--dim", "8", "--k", "4",
        "--partitions", "2", "--invalid-fraction", "0.02",
    ]  # fmt: skip
    service = [
        sys.executable, "-m", "stream.cli", "serve", "--bootstrap", broker.bootstrap,
        "--input-topic", topic, "--output-topic", f"{topic}.labels",
        "--group", unique_name("g"), "--model", model, "--k", "4", "--dim", "8",
        "--refit-interval", "0.5", "--anomaly-threshold", "1.5", "--session-timeout", "3",
        "--metrics-port", str(metrics_port),
    ]  # fmt: skip
    # The scoring API on the same model, with a trickle of requests for its panels and alerts.
    scoring = [
        sys.executable, "-m", "stream.cli", "api", "--bootstrap", broker.bootstrap,
        "--model", model, "--http-port", str(api_port), "--grpc-port", "0",
        "--metrics-port", str(api_metrics_port),
    ]  # fmt: skip
    config = tmp / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {
                        "job_name": "streamkm",
                        "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                    },
                    {
                        "job_name": "streamkm-api",
                        "static_configs": [{"targets": [f"127.0.0.1:{api_metrics_port}"]}],
                    },
                ],
            }
        )
    )
    prometheus = [
        prometheus_binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{prometheus_port}", "--log.level=warn",
    ]  # fmt: skip
    serve_log = tmp / "serve.log"
    with (
        background(producer, tmp / "produce.log", env),
        background(service, serve_log, env),
        background(prometheus, tmp / "prometheus.log", env),
        background(scoring, tmp / "api.log", env),
        requests_to(f"http://127.0.0.1:{api_port}/v2/models/{model}/infer"),
    ):
        api = Prometheus(prometheus_port)
        wait_for(
            "Prometheus to be ready",
            lambda: http_get(f"{api.base}/-/ready")[0] == 200,
            START_TIMEOUT_S,
            tmp / "prometheus.log",
        )
        # Data for every panel: labeled records, dead letters and anomalies counted, and
        # enough scrapes that rates over a few seconds have two points.
        for expr in (
            'rate(streamkm_records_total{outcome="labeled"}[5s]) > 0',
            "sum(streamkm_dlq_records_total) > 0",
            "streamkm_anomalies_total > 0",
            "streamkm_cluster_weight",
            "streamkm_consumer_lag_records",
            "deriv(streamkm_consumer_lag_records[1m])",  # two samples of the lag, for deriv()
            'sum(rate(streamkm_api_requests_total{code="200"}[5s])) > 0',
        ):
            log = tmp / "api.log" if "streamkm_api_" in expr else serve_log
            wait_for(expr, lambda e=expr: api.has_data(e), DATA_TIMEOUT_S, log)
        wait_for(
            f"{SCRAPES_BEFORE_QUERYING} scrapes",
            lambda: api.has_data(
                f'count_over_time(up{{job="streamkm"}}[1m]) >= {SCRAPES_BEFORE_QUERYING}'
            ),
            DATA_TIMEOUT_S,
        )
        yield api, f"http://127.0.0.1:{metrics_port}", serve_log


@pytest.mark.parametrize(
    "query", dashboard_queries(load_dashboard()), ids=lambda q: f"{q.panel}/{q.ref_id}"
)
def test_dashboard_query_returns_series_while_the_service_runs(running_stack, query):
    api, _, _ = running_stack
    expr = substitute_grafana_variables(query.expr)
    assert api.query(expr), f"{query.panel!r} shows nothing: {expr}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r.name)
def test_alert_expression_evaluates_and_its_compared_series_exist(running_stack, rule):
    api, _, _ = running_stack
    api.query(rule.expr)  # evaluates without error; empty while nothing is wrong
    for operand in compared_operands(rule.expr):
        assert api.query(operand), f"{rule.name}: {operand} returns no series"


def test_prometheus_loads_and_evaluates_every_alert_rule(running_stack):
    api, _, _ = running_stack

    def rules_evaluated() -> list[dict] | None:
        groups = api.get("/api/v1/rules", type="alert")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r["health"] != "unknown" for r in rules) else None

    rules = wait_for("every rule to be evaluated", rules_evaluated, DATA_TIMEOUT_S)
    assert sorted(r["name"] for r in rules) == sorted(r.name for r in alert_rules())
    assert [(r["name"], r.get("lastError", "")) for r in rules if r["health"] != "ok"] == []


def test_healthz_answers_ok_and_readyz_turns_200_once_the_model_exists(running_stack):
    _, service_url, serve_log = running_stack
    assert http_get(f"{service_url}/healthz") == (200, b"ok\n")
    _, body = wait_for(
        "/readyz to answer 200",
        lambda: (r := http_get(f"{service_url}/readyz"))[0] == 200 and r,
        START_TIMEOUT_S,
        serve_log,
    )
    assert body.startswith(b"ready: model version ")


def test_scrape_target_is_up(running_stack):
    api, _, _ = running_stack
    (series,) = api.query('up{job="streamkm"}')
    assert series["value"][1] == "1"
