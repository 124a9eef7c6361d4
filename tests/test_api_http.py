"""`streamkm api` over REST, against a real broker: plain HTTP and tritonclient's HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from kafka_helpers import unique_name
from test_service import running, settings_for, wait_labeled

from api.app import ApiApp
from api.config import ApiOptions
from engine import ModelState, assign, model_assign
from model.log import UpdateLog
from model.messages import ModelReplica
from stream.config import ImportOptions
from stream.modelcli import import_model
from stream.produce import produce_blobs

pytestmark = pytest.mark.integration

CENTERS = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0]])


def api_options(broker, model: str, **kw: Any) -> ApiOptions:
    base: dict[str, Any] = dict(
        bootstrap=broker.bootstrap, model=model, http_port=0, grpc_port=0, metrics_port=0
    )
    base.update(kw)
    return ApiOptions(**base)


@contextlib.asynccontextmanager
async def serving(options: ApiOptions):
    app = ApiApp(options)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def import_json(broker, model: str, doc: dict[str, Any], tmp_path: Path, **kw: Any) -> None:
    path = tmp_path / f"{unique_name('model')}.json"
    path.write_text(json.dumps(doc))
    await import_model(ImportOptions(bootstrap=broker.bootstrap, model=model, file=str(path), **kw))


class Client:
    """A keep-alive HTTP/1.1 connection, used from a worker thread (never the event loop)."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.token = token

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        h = dict(headers or {})
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        self.conn.request(method, path, body=body, headers=h)
        resp = self.conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()

    def json(self, method: str, path: str, obj: Any = None) -> tuple[int, Any]:
        body = None if obj is None else orjson.dumps(obj)
        status, _, data = self.request(method, path, body)
        return status, orjson.loads(data) if data else None


async def call(fn, *args, **kw):
    return await asyncio.to_thread(fn, *args, **kw)


def infer_body(X: np.ndarray, datatype: str = "FP32", **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "input", "shape": list(X.shape), "datatype": datatype, "data": X.tolist()}
        ],
        **extra,
    }


def outputs_of(body: dict[str, Any]) -> dict[str, np.ndarray]:
    return {o["name"]: np.asarray(o["data"]) for o in body["outputs"]}


@pytest.fixture
async def vector_model(broker, tmp_path):
    model = unique_name("m")
    await import_json(broker, model, {"centers": CENTERS.tolist()}, tmp_path)
    return model


async def test_ready_only_once_the_model_exists_then_metadata_names_its_shape(broker, tmp_path):
    model = unique_name("m")
    async with serving(api_options(broker, model)) as app:
        c = Client(app.http.port)
        assert await call(c.json, "GET", "/v2/health/live") == (200, {"live": True})
        assert (await call(c.json, "GET", "/v2/health/ready"))[0] == 503
        assert (await call(c.json, "GET", f"/v2/models/{model}/ready"))[0] == 503
        status, body = await call(c.json, "POST", f"/v2/models/{model}/infer", infer_body(CENTERS))
        assert status == 503 and "not loaded" in body["error"]
        await import_json(broker, model, {"centers": CENTERS.tolist()}, tmp_path)
        deadline = time.monotonic() + 10
        while not app.scorer.ready():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert (await call(c.json, "GET", "/v2/health/ready"))[0] == 200
        status, meta = await call(c.json, "GET", f"/v2/models/{model}")
        assert status == 200
        assert meta["name"] == model and meta["versions"] == ["1"]
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3]}]
        assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [
            ("cluster", "INT32"),
            ("distance", "FP32"),
            ("score", "FP32"),
        ]


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
@pytest.mark.parametrize("nested", [True, False])
async def test_json_infer_answers_engine_assign_of_the_version_it_names(
    broker, vector_model, datatype, nested
):
    rng = np.random.default_rng(1)
    X = rng.normal(scale=6.0, size=(50, 3))
    body = infer_body(X, datatype, id="req-7")
    if not nested:
        body["inputs"][0]["data"] = X.ravel().tolist()
    async with serving(api_options(broker, vector_model)) as app:
        status, out = await call(
            Client(app.http.port).json, "POST", f"/v2/models/{vector_model}/infer", body
        )
    assert status == 200
    assert out["model_name"] == vector_model and out["model_version"] == "1"
    assert out["id"] == "req-7"
    got = outputs_of(out)
    X32 = X.astype(np.float32)  # FP64 is scored in float32, as serve reads every record
    labels, sq = assign(X32, CENTERS)
    assert got["cluster"].tolist() == labels.tolist()
    np.testing.assert_allclose(got["distance"], np.sqrt(sq), rtol=1e-5, atol=1e-5)
    assert [o["shape"] for o in out["outputs"]] == [[50]] * 3


async def test_binary_tensors_in_and_out(broker, vector_model):
    X = np.random.default_rng(2).normal(scale=6.0, size=(20, 3)).astype(np.float32)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [20, 3],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": X.nbytes},
                }
            ],
            "outputs": [
                {"name": "cluster", "parameters": {"binary_data": True}},
                {"name": "score", "parameters": {"binary_data": False}},
            ],
        }
    )
    async with serving(api_options(broker, vector_model)) as app:
        status, headers, data = await call(
            Client(app.http.port).request,
            "POST",
            f"/v2/models/{vector_model}/infer",
            header + X.tobytes(),
            {"Inference-Header-Content-Length": str(len(header))},
        )
    assert status == 200
    size = int(headers["Inference-Header-Content-Length"])
    head = orjson.loads(data[:size])
    assert [o["name"] for o in head["outputs"]] == ["cluster", "score"]
    assert head["outputs"][0]["parameters"]["binary_data_size"] == 80
    clusters = np.frombuffer(data[size:], "<i4")
    assert clusters.tolist() == assign(X, CENTERS)[0].tolist()
    assert len(head["outputs"][1]["data"]) == 20


async def test_tritonclient_http_speaks_to_it(broker, vector_model):
    tritonhttp = pytest.importorskip("tritonclient.http")
    X = np.random.default_rng(3).normal(scale=6.0, size=(64, 3))
    expected = assign(X.astype(np.float32), CENTERS)[0]
    async with serving(api_options(broker, vector_model)) as app:

        def use_triton() -> list[Any]:
            client = tritonhttp.InferenceServerClient(f"127.0.0.1:{app.http.port}")
            assert client.is_server_live() and client.is_server_ready()
            assert client.is_model_ready(vector_model)
            meta = client.get_model_metadata(vector_model)
            answers = []
            for dtype, binary in (("FP32", True), ("FP64", False), ("FP32", False)):
                inp = tritonhttp.InferInput("input", list(X.shape), dtype)
                inp.set_data_from_numpy(
                    X.astype(np.float32 if dtype == "FP32" else np.float64), binary_data=binary
                )
                outputs = [
                    tritonhttp.InferRequestedOutput(n, binary_data=binary)
                    for n in ("cluster", "distance", "score")
                ]
                result = client.infer(vector_model, [inp], outputs=outputs)
                answers.append((result.as_numpy("cluster"), result.get_response()))
            # No outputs named: tritonclient asks for binary outputs of everything.
            inp = tritonhttp.InferInput("input", list(X.shape), "FP32")
            inp.set_data_from_numpy(X.astype(np.float32))
            result = client.infer(vector_model, [inp])
            answers.append((result.as_numpy("cluster"), result.get_response()))
            with pytest.raises(tritonhttp.InferenceServerException, match="d=3"):
                bad = tritonhttp.InferInput("input", [2, 4], "FP32")
                bad.set_data_from_numpy(np.zeros((2, 4), np.float32))
                client.infer(vector_model, [bad])
            client.close()
            return [meta, answers]

        meta, answers = await call(use_triton)
    assert meta["inputs"][0]["shape"] == [-1, 3]
    for clusters, response in answers:
        assert clusters.dtype == np.int32
        assert clusters.tolist() == expected.tolist()
        assert response["model_version"] == "1"


def _raw(port: int, data: bytes) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        chunks = []
        with contextlib.suppress(TimeoutError):
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


async def test_bad_requests_get_400_with_a_message_and_the_connection_goes_on(broker, vector_model):
    path = f"/v2/models/{vector_model}/infer"
    ok = infer_body(np.zeros((1, 3)))
    cases: list[tuple[bytes, str]] = [
        (orjson.dumps(infer_body(np.zeros((2, 4)))), "d=3"),
        (
            orjson.dumps(
                {
                    "inputs": [
                        {"shape": [1, 3], "datatype": "FP32", "data": [1.0, float("nan"), 0.0]}
                    ]
                }
            ).replace(b"null", b"NaN"),
            "malformed JSON",
        ),
        (
            orjson.dumps(
                {"inputs": [{"shape": [1, 3], "datatype": "FP64", "data": [1.0, 1e300, 0.0]}]}
            ),
            "not finite",
        ),
        (
            orjson.dumps({"inputs": [{"shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]}]}),
            "FP32 or FP64",
        ),
        (
            orjson.dumps({"inputs": [{"shape": [1, 3], "datatype": "FP32", "data": ["a", 2, 3]}]}),
            "numbers",
        ),
        (
            orjson.dumps({"inputs": [{"shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3]}]}),
            "needs 6",
        ),
        (
            orjson.dumps({"inputs": [{"shape": [3], "datatype": "FP32", "data": [1, 2, 3]}]}),
            "[n, d]",
        ),
        (b'{"inputs": [', "malformed JSON"),
        (orjson.dumps({**ok, "outputs": [{"name": "label"}]}), "unknown output"),
        (b"x" * 5000, "larger than --max-body-bytes"),
    ]
    async with serving(api_options(broker, vector_model, max_body_bytes=4096)) as app:
        c = Client(app.http.port)
        for body, message in cases:
            status, _, data = await call(c.request, "POST", path, body)
            assert status == 400, (body[:80], data)
            assert message in orjson.loads(data)["error"], (body[:80], data)
        # The same keep-alive connection still answers.
        status, out = await call(c.json, "POST", path, ok)
        assert status == 200 and out["outputs"][0]["data"] == [0]
        status, body = await call(c.json, "POST", "/v2/models/other/infer", ok)
        assert status == 404 and "other" in body["error"]
        assert (await call(c.json, "GET", "/v2/models/other"))[0] == 404
        assert (await call(c.json, "GET", "/nowhere"))[0] == 404
        assert (await call(c.json, "GET", path))[0] == 405
        reply = await call(_raw, app.http.port, b"NOT HTTP AT ALL\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400")


async def test_pipelined_requests_are_answered_in_order(broker, vector_model):
    X = np.random.default_rng(4).normal(scale=6.0, size=(30, 3)).astype(np.float32)
    requests = b""
    for i in range(30):
        body = orjson.dumps(infer_body(X[i : i + 1], id=str(i)))
        requests += (
            f"POST /v2/models/{vector_model}/infer HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
    requests += b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    async with serving(api_options(broker, vector_model)) as app:
        reply = await call(_raw, app.http.port, requests)
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in reply.split(b"HTTP/1.1 200 OK\r\n")[1:]]
    assert len(bodies) == 31
    ids = [orjson.loads(b)["id"] for b in bodies[:30]]
    assert ids == [str(i) for i in range(30)]
    clusters = [orjson.loads(b)["outputs"][0]["data"][0] for b in bodies[:30]]
    assert clusters == assign(X, CENTERS)[0].tolist()


async def test_token_is_required_except_for_health(broker, vector_model):
    options = api_options(broker, vector_model, api_token="s3cret")
    path = f"/v2/models/{vector_model}/infer"
    async with serving(options) as app:
        anon, wrong, good = (Client(app.http.port, t) for t in (None, "nope", "s3cret"))
        assert (await call(anon.json, "GET", "/v2/health/ready"))[0] == 200
        assert (await call(anon.json, "GET", "/v2/health/live"))[0] == 200
        for client in (anon, wrong):
            status, headers, _ = await call(
                client.request, "POST", path, orjson.dumps(infer_body(CENTERS))
            )
            assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
            assert (await call(client.json, "GET", f"/v2/models/{vector_model}"))[0] == 401
        assert (await call(good.json, "POST", path, infer_body(CENTERS)))[0] == 200


async def test_named_events_are_scored_with_the_models_fields_and_scaling(broker, tmp_path):
    model = unique_name("m")
    mean, scale = np.array([3.0, 0.5]), np.array([2.0, 0.25])
    centers = np.array([[2.0, 0.2], [5.0, 0.9]])
    doc = {
        "fields": ["amount:log1p", "merchant.risk"],
        "centers": centers.tolist(),
        "scaler": {"mean": mean.tolist(), "scale": scale.tolist()},
    }
    await import_json(broker, model, doc, tmp_path)
    events = [
        {"amount": 10.0, "merchant": {"risk": 0.1}},
        {"amount": 500.0, "merchant": {"risk": 0.95}, "other": "ignored"},
        {"amount": 0, "merchant": {"risk": True}},
    ]
    path = f"/v1/models/{model}:predict"
    async with serving(api_options(broker, model)) as app:
        c = Client(app.http.port)
        status, out = await call(c.json, "POST", path, {"instances": events})
        state = app.scorer.replica.state
        bad = await call(c.json, "POST", path, {"instances": [events[0], {"amount": 3}]})
        neg = await call(
            c.json, "POST", path, {"instances": [{"amount": -5, "merchant": {"risk": 1}}]}
        )
        meta = await call(c.json, "GET", f"/v2/models/{model}")
    assert status == 200 and out["model_version"] == 1
    X = np.array([[np.log1p(10.0), 0.1], [np.log1p(500.0), 0.95], [0.0, 1.0]], np.float32)
    labels, sq = model_assign(X, state)
    assert [p["cluster"] for p in out["predictions"]] == labels.tolist()
    np.testing.assert_allclose([p["distance"] for p in out["predictions"]], np.sqrt(sq), rtol=1e-5)
    assert bad[0] == 400 and "instance 1" in bad[1]["error"] and "merchant.risk" in bad[1]["error"]
    assert neg[0] == 400 and "amount" in neg[1]["error"]
    assert meta[1]["parameters"]["fields"] == ["amount:log1p", "merchant.risk"]


async def test_a_burst_beyond_the_queue_is_shed_with_503_only(broker, vector_model):
    options = api_options(broker, vector_model, max_queue_rows=64, max_wait_ms=20.0)
    body = orjson.dumps(infer_body(np.ones((16, 3))))
    request = (
        f"POST /v2/models/{vector_model}/infer HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    async with serving(options) as app:
        # 20 connections x 10 pipelined requests of 16 rows land together: 200 x 16 rows
        # against a queue of 64 rows flushed every 20 ms.
        last = request.replace(b"Host: x", b"Host: x\r\nConnection: close")
        replies = await asyncio.gather(
            *(call(_raw, app.http.port, request * 9 + last) for _ in range(20))
        )
        metrics = app.metrics.render().decode()
        status, _ = await call(Client(app.http.port).json, "GET", "/v2/health/live")
    codes = [int(code) for r in replies for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", r)]
    assert len(codes) == 200
    assert set(codes) <= {200, 503} and 200 in codes and 503 in codes
    assert status == 200
    assert 'streamkm_api_requests_total{code="503",protocol="http"}' in metrics
    assert "streamkm_api_batch_rows_bucket" in metrics


async def test_every_answer_matches_the_version_it_names_while_the_model_moves(broker, new_topic):
    topic = await new_topic(partitions=1)
    await produce_blobs(broker.bootstrap, topic, 40_000, dim=3, k=3, seed=5, drift=0.5)
    settings = settings_for(
        broker, topic, refit_every=256, refit_interval=0.02, max_batch=256, snapshot_every=10**6
    )
    rng = np.random.default_rng(6)
    answers: list[tuple[np.ndarray, list[int], int]] = []
    stop = threading.Event()

    def client_loop(port: int) -> None:
        c = Client(port)
        while not stop.is_set():
            X = rng.normal(scale=8.0, size=(4, 3)).astype(np.float32)
            status, out = c.json("POST", f"/v2/models/{settings.model}/infer", infer_body(X))
            if status == 503:  # not ready yet
                continue
            assert status == 200, out
            answers.append((X, out["outputs"][0]["data"], int(out["model_version"])))

    async with serving(api_options(broker, settings.model)) as app:
        worker = asyncio.create_task(asyncio.to_thread(client_loop, app.http.port))
        async with running(settings) as service:
            await wait_labeled(service, 40_000)
        stop.set()
        await worker
        last = app.scorer.version()
    # Every version the log defines, from a replica of our own.
    states: dict[int, ModelState] = {}

    def keep(replica: ModelReplica, _: Any) -> None:
        states[replica.version] = replica.state

    replica = ModelReplica()
    log = UpdateLog(settings.updates_topic, {"bootstrap_servers": broker.bootstrap}, replica, keep)
    await log.start()
    await log.catch_up()
    await log.stop()
    versions = {v for _, _, v in answers}
    assert len(answers) > 100 and len(versions) > 5 and last >= max(versions)
    for X, clusters, version in answers:
        assert clusters == assign(X, states[version].centers)[0].tolist(), version
