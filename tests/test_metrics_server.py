"""The HTTP endpoint: /metrics, /healthz, /readyz, errors, and where it binds."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from metrics import MetricsPortInUseError, MetricsServer, ServiceMetrics


def get(url: str) -> tuple[int, str, str]:
    """Status, content type and body of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read().decode()


@pytest.fixture
def metrics() -> ServiceMetrics:
    return ServiceMetrics()


@pytest.fixture
def readiness() -> dict[str, object]:
    return {"ready": False, "reason": "waiting for partition assignment"}


@pytest.fixture
def server(metrics: ServiceMetrics, readiness: dict[str, object]) -> Iterator[MetricsServer]:
    def ready() -> tuple[bool, str]:
        return bool(readiness["ready"]), str(readiness["reason"])

    with MetricsServer(metrics, "127.0.0.1", 0, ready) as started:
        yield started


def base(server: MetricsServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def test_port_zero_binds_a_free_port_shown_in_the_url(server):
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}/metrics"


def test_metrics_are_served_in_the_prometheus_text_format(server, metrics):
    metrics.record_batch(n_labeled=42)
    status, content_type, body = get(server.url)
    assert status == 200
    assert content_type == CONTENT_TYPE_LATEST
    families = {f.name: f for f in text_string_to_metric_families(body)}
    labeled = [s for s in families["streamkm_records"].samples if s.name.endswith("_total")]
    assert {s.labels["outcome"]: s.value for s in labeled}["labeled"] == 42


def test_metrics_path_ignores_a_query_string(server):
    status, _, body = get(server.url + "?name[]=streamkm_model_version")
    assert status == 200
    assert "streamkm_model_version" in body


def test_healthz_answers_ok_while_the_process_lives(server):
    assert get(base(server) + "/healthz")[::2] == (200, "ok\n")


def test_readyz_is_503_with_the_reason_until_the_callback_says_ready(server, readiness):
    assert get(base(server) + "/readyz")[::2] == (503, "waiting for partition assignment\n")
    readiness.update(ready=True, reason="serving model version 3")
    assert get(base(server) + "/readyz")[::2] == (200, "serving model version 3\n")


def test_readyz_is_503_when_the_readiness_callback_raises(metrics):
    def broken() -> tuple[bool, str]:
        raise RuntimeError("consumer gone")

    with MetricsServer(metrics, "127.0.0.1", 0, broken) as server:
        status, _, body = get(base(server) + "/readyz")
    assert status == 503
    assert "consumer gone" in body


def test_readyz_without_a_callback_is_ready(metrics):
    with MetricsServer(metrics, "127.0.0.1", 0) as server:
        assert get(base(server) + "/readyz")[0] == 200


@pytest.mark.parametrize("path", ["/", "/metric", "/metrics/extra", "/healthz/x"])
def test_other_paths_are_404(server, path):
    assert get(base(server) + path)[0] == 404


def test_a_port_in_use_is_a_clear_error_naming_host_and_port(metrics):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = MetricsServer(metrics, "127.0.0.1", port)
        with pytest.raises(MetricsPortInUseError, match=f"127.0.0.1:{port}") as caught:
            server.start()
    assert isinstance(caught.value, OSError)
    assert "--metrics-port" in str(caught.value)


def test_binds_only_the_host_it_is_given(metrics):
    # 127.0.0.2 is loopback too on Linux: the same port on 127.0.0.1 must stay closed.
    with MetricsServer(metrics, "127.0.0.2", 0) as server:
        assert get(f"http://127.0.0.2:{server.port}/healthz")[0] == 200
        with pytest.raises(ConnectionRefusedError), socket.socket() as other:
            other.connect(("127.0.0.1", server.port))


def test_stop_releases_the_port_for_a_new_server(metrics):
    first = MetricsServer(metrics, "127.0.0.1", 0)
    first.start()
    port = first.port
    assert get(first.url)[0] == 200
    first.stop()
    with pytest.raises(urllib.error.URLError):
        get(f"http://127.0.0.1:{port}/healthz")
    with MetricsServer(metrics, "127.0.0.1", port) as second:
        assert get(second.url)[0] == 200


def test_starting_twice_is_an_error_and_stopping_twice_is_harmless(metrics):
    server = MetricsServer(metrics, "127.0.0.1", 0)
    server.start()
    with pytest.raises(RuntimeError, match="already started"):
        server.start()
    server.stop()
    server.stop()


def test_documents_are_served_as_json_and_a_failing_one_is_a_500():
    def broken() -> bytes:
        raise RuntimeError("boom")

    server = MetricsServer(
        ServiceMetrics(), "127.0.0.1", 0, documents={"/model": lambda: b'{"v": 1}', "/bad": broken}
    )
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{base}/model") as resp:
            assert resp.headers["Content-Type"] == "application/json"
            assert resp.read() == b'{"v": 1}'
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/bad")
        assert err.value.code == 500
    finally:
        server.stop()
