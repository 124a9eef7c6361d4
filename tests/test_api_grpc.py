"""`streamkm api` over gRPC: the Open Inference Protocol's GRPCInferenceService, called by
tritonclient (a client nobody here wrote) and by the stub generated from the protocol's .proto,
against a real model replicated through the embedded broker."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from kafka_helpers import unique_name
from tritonclient.utils import InferenceServerException

from api.config import ApiOptions
from api.grpc import OUTPUTS, GrpcPortInUseError, encode_outputs, serve_grpc
from api.proto import generate
from api.proto import grpc_predict_v2_pb2 as pb
from api.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from api.scoring import Scorer, Scores
from engine import assign
from metrics.api_metrics import ApiMetrics
from stream.config import ImportOptions
from stream.modelcli import import_model

pytestmark = pytest.mark.integration

K, D = 4, 3
TOKEN = "s3cret-token"
Code = grpc.StatusCode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def centres(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=10.0, size=(K, D))


async def publish(broker, model: str, C: np.ndarray, tmp_path: Path, replace: bool = False):
    path = tmp_path / f"{unique_name('c')}.npy"
    np.save(path, C)
    options = ImportOptions(
        bootstrap=broker.bootstrap, model=model, connect_timeout=10.0, file=str(path)
    )
    if replace:
        options = ImportOptions(**{**options.__dict__, "replace": True})
    await import_model(options)


async def wait_for(condition, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


class Api:
    """A Scorer following `model`, behind serve_grpc on a port of its own, and a stub to it."""

    def __init__(self, scorer: Scorer, port: int, metrics: ApiMetrics, channel: grpc.aio.Channel):
        self.scorer, self.metrics = scorer, metrics
        self.url = f"127.0.0.1:{port}"
        self.stub = pb_grpc.GRPCInferenceServiceStub(channel)


@asynccontextmanager
async def running_api(broker, model: str, **options) -> AsyncIterator[Api]:
    o = ApiOptions(
        bootstrap=broker.bootstrap, model=model, grpc_port=free_port(), connect_timeout=10.0,
        **options,
    )  # fmt: skip
    metrics = ApiMetrics()
    scorer = Scorer(o, metrics)
    await scorer.start()
    server = await serve_grpc(scorer, o, metrics)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{o.grpc_port}") as channel:
            yield Api(scorer, o.grpc_port, metrics, channel)
    finally:
        await server.stop(None)
        await scorer.stop()


@pytest.fixture(scope="module")
async def model(broker, tmp_path_factory) -> tuple[str, np.ndarray]:
    name = unique_name("grpc")
    C = centres(0)
    await publish(broker, name, C, tmp_path_factory.mktemp("grpc"))
    return name, C


@pytest.fixture(scope="module")
async def api(broker, model) -> AsyncIterator[Api]:
    async with running_api(broker, model[0]) as a:
        yield a


@pytest.fixture
def stub(api) -> pb_grpc.GRPCInferenceServiceStub:
    return api.stub


def points(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=12.0, size=(n, D))


def raw_request(model: str, X: np.ndarray, datatype: str = "FP32", **kw) -> pb.ModelInferRequest:
    dtype = {"FP32": "<f4", "FP64": "<f8"}.get(datatype, "<f4")
    request = pb.ModelInferRequest(model_name=model, **kw)
    request.inputs.add(name="input", datatype=datatype, shape=list(X.shape))
    request.raw_input_contents.append(np.ascontiguousarray(X, dtype).tobytes())
    return request


def expected_clusters(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    """What engine gives for the rows as the api scores them (float32)."""
    return assign(X.astype(np.float32), C)[0]


def triton_infer(url: str, model: str, X: np.ndarray, datatype: str, outputs=None, token=None):
    """One blocking tritonclient call, as a user's program makes it."""
    client = triton.InferenceServerClient(url)
    try:
        tensor = triton.InferInput("input", list(X.shape), datatype)
        tensor.set_data_from_numpy(X.astype({"FP32": np.float32, "FP64": np.float64}[datatype]))
        headers = None if token is None else {"authorization": f"Bearer {token}"}
        requested = None if outputs is None else [triton.InferRequestedOutput(o) for o in outputs]
        return client.infer(model, [tensor], outputs=requested, headers=headers)
    finally:
        client.close()


@pytest.mark.parametrize(
    "names", [("cluster", "distance", "score"), ("score",), ("distance", "cluster")]
)
@pytest.mark.parametrize("n", [1, 3, 300])
@pytest.mark.parametrize("request_id", ["", "req-7"])
def test_the_hand_written_response_is_the_message_protobuf_builds(names, n, request_id):
    rng = np.random.default_rng(n)
    scores = Scores(
        cluster=rng.integers(0, 5, n).astype(np.int32),
        distance=rng.random(n).astype(np.float32),
        score=rng.random(n).astype(np.float32) * 4,
        version=2**40 + n,
    )
    expected = pb.ModelInferResponse(
        model_name="fraud-model", model_version=str(scores.version), id=request_id
    )
    for name in names:
        datatype = OUTPUTS[name]
        expected.outputs.add(name=name, datatype=datatype, shape=[n])
        dtype = {"INT32": "<i4", "FP32": "<f4"}[datatype]
        expected.raw_output_contents.append(getattr(scores, name).astype(dtype).tobytes())
    got = pb.ModelInferResponse.FromString(encode_outputs(names, scores, "fraud-model", request_id))
    assert got == expected


def test_generated_modules_are_what_the_proto_gives():
    here = Path(generate.__file__).parent
    for name, text in generate.generate().items():
        assert (here / name).read_text() == text, (
            f"api/proto/{name} is stale: run python -m api.proto.generate"
        )


async def test_health_and_metadata_answer_tritonclient(api, model):
    name, _ = model

    def calls():
        client = triton.InferenceServerClient(api.url)
        try:
            meta = client.get_model_metadata(name, as_json=True)
            return (
                client.is_server_live(),
                client.is_server_ready(),
                client.is_model_ready(name),
                meta,
            )
        finally:
            client.close()

    live, ready, model_ready, meta = await asyncio.to_thread(calls)
    assert live and ready and model_ready
    assert meta["name"] == name
    assert meta["versions"] == [str(api.scorer.version())]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", str(D)]}]
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [
        ("cluster", "INT32"),
        ("distance", "FP32"),
        ("score", "FP32"),
    ]


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
async def test_tritonclient_infer_gives_the_engine_clusters_of_the_version_named(
    api, model, datatype
):
    name, C = model
    X = points(50)
    result = await asyncio.to_thread(triton_infer, api.url, name, X, datatype)
    answer = result.get_response()
    assert answer.model_version == str(api.scorer.version())
    cluster = result.as_numpy("cluster")
    assert cluster.dtype == np.int32 and cluster.shape == (50,)
    np.testing.assert_array_equal(cluster, expected_clusters(X, C))
    distance, score = result.as_numpy("distance"), result.as_numpy("score")
    assert distance.dtype == np.float32 and score.dtype == np.float32
    assert np.all(np.isfinite(distance)) and np.all(distance >= 0)


async def test_only_the_requested_outputs_are_answered(api, model):
    result = await asyncio.to_thread(
        triton_infer, api.url, model[0], points(5), "FP32", outputs=["score", "cluster"]
    )
    assert [o.name for o in result.get_response().outputs] == ["score", "cluster"]
    assert result.as_numpy("distance") is None
    assert result.as_numpy("score").shape == (5,)


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
async def test_typed_contents_are_accepted_like_raw_bytes(api, model, stub, datatype):
    name, C = model
    X = points(20, seed=2)
    request = pb.ModelInferRequest(model_name=name, id="req-7")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=[20, D])
    field = "fp32_contents" if datatype == "FP32" else "fp64_contents"
    getattr(tensor.contents, field).extend(X.ravel().tolist())
    answer = await stub.ModelInfer(request)
    assert answer.id == "req-7" and answer.model_name == name
    assert [o.name for o in answer.outputs] == ["cluster", "distance", "score"]
    assert all(list(o.shape) == [20] for o in answer.outputs)
    cluster = np.frombuffer(answer.raw_output_contents[0], "<i4")
    np.testing.assert_array_equal(cluster, expected_clusters(X, C))


def _bad(model: str, case: str) -> pb.ModelInferRequest:
    X = points(2)
    if case == "datatype":
        return raw_request(model, X, "INT64")
    if case == "rank":
        r = raw_request(model, X)
        r.inputs[0].ClearField("shape")
        r.inputs[0].shape.extend([2 * D])
        return r
    if case == "width":
        return raw_request(model, points(4)[:, :2])
    if case == "non-finite":
        X[1, 2] = np.nan
        return raw_request(model, X)
    if case == "raw size":
        r = raw_request(model, X)
        r.raw_input_contents[0] = r.raw_input_contents[0][:-4]
        return r
    if case == "two inputs":
        r = raw_request(model, X)
        r.inputs.add(name="other", datatype="FP32", shape=[2, D])
        r.raw_input_contents.append(r.raw_input_contents[0])
        return r
    if case == "contents size":
        r = pb.ModelInferRequest(model_name=model)
        r.inputs.add(name="x", datatype="FP32", shape=[2, D]).contents.fp32_contents.extend([1.0])
        return r
    if case == "no rows":
        return raw_request(model, np.empty((0, D)))
    if case == "unknown output":
        r = raw_request(model, X)
        r.outputs.add(name="label")
        return r
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("datatype", "send FP32 or FP64"),
        ("rank", "expected [n, d]"),
        ("width", "d=3"),
        ("non-finite", "not finite"),
        ("raw size", "needs 24"),
        ("two inputs", "one input tensor"),
        ("contents size", "needs 6"),
        ("no rows", "no rows"),
        ("unknown output", "unknown output 'label'"),
    ],
)
async def test_bad_input_is_invalid_argument_with_a_message(api, model, stub, case, says):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ModelInfer(_bad(model[0], case))
    assert caught.value.code() == Code.INVALID_ARGUMENT
    assert says in caught.value.details()


async def test_another_model_is_not_found(api, model, stub):
    calls = [
        stub.ModelInfer(raw_request("other", points(1))),
        stub.ModelReady(pb.ModelReadyRequest(name="other")),
        stub.ModelMetadata(pb.ModelMetadataRequest(name="other")),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        assert caught.value.code() == Code.NOT_FOUND
        assert repr(model[0]) in caught.value.details()
    with pytest.raises(InferenceServerException) as caught_by_triton:
        await asyncio.to_thread(triton_infer, api.url, "other", points(1), "FP32")
    assert caught_by_triton.value.status() == "StatusCode.NOT_FOUND"


async def test_the_token_is_required_except_for_health_checks(broker, model):
    name, C = model
    async with running_api(broker, name, api_token=TOKEN) as a:
        stub = a.stub
        assert (await stub.ServerLive(pb.ServerLiveRequest())).live
        assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
        for metadata in [(), (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)]:
            for call in (
                stub.ModelInfer(raw_request(name, points(1)), metadata=metadata),
                stub.ModelReady(pb.ModelReadyRequest(name=name), metadata=metadata),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call
                assert caught.value.code() == Code.UNAUTHENTICATED
                assert "Bearer" in caught.value.details()
        X = points(3)
        result = await asyncio.to_thread(triton_infer, a.url, name, X, "FP32", token=TOKEN)
        np.testing.assert_array_equal(result.as_numpy("cluster"), expected_clusters(X, C))
        with pytest.raises(InferenceServerException) as refused:
            await asyncio.to_thread(triton_infer, a.url, name, X, "FP32")
        assert refused.value.status() == "StatusCode.UNAUTHENTICATED"


async def test_before_the_model_exists_the_api_is_live_but_unavailable(broker):
    name = unique_name("grpc-empty")
    async with running_api(broker, name) as a:
        stub = a.stub
        assert (await stub.ServerLive(pb.ServerLiveRequest())).live
        assert not (await stub.ServerReady(pb.ServerReadyRequest())).ready
        assert not (await stub.ModelReady(pb.ModelReadyRequest(name=name))).ready
        for call in (
            stub.ModelInfer(raw_request(name, points(1))),
            stub.ModelMetadata(pb.ModelMetadataRequest(name=name)),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == Code.UNAVAILABLE


async def test_a_full_queue_sheds_requests_at_once_with_resource_exhausted(broker, model):
    name, C = model
    # Rows wait 300 ms for company, and at most 8 may wait: of 6 requests of 4 rows, 2 fit.
    async with running_api(broker, name, max_queue_rows=8, max_wait_ms=300.0) as a:
        stub = a.stub
        await stub.ServerLive(pb.ServerLiveRequest())  # connected before the burst
        X = points(4)
        answers = await asyncio.gather(
            *(stub.ModelInfer(raw_request(name, X)) for _ in range(6)),
            return_exceptions=True,
        )
    shed = [r for r in answers if isinstance(r, grpc.aio.AioRpcError)]
    served = [r for r in answers if not isinstance(r, BaseException)]
    assert len(served) == 2 and len(shed) == 4
    assert {e.code() for e in shed} == {Code.RESOURCE_EXHAUSTED}
    assert "--max-queue-rows" in shed[0].details()
    for answer in served:
        cluster = np.frombuffer(answer.raw_output_contents[0], "<i4")
        np.testing.assert_array_equal(cluster, expected_clusters(X, C))


async def test_a_message_over_max_body_bytes_is_refused_by_grpc(broker, model):
    name = model[0]
    async with running_api(broker, name, max_body_bytes=4096) as a:
        stub = a.stub
        await stub.ModelInfer(raw_request(name, points(100)))  # 1.2 kB
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ModelInfer(raw_request(name, points(1000)))  # 12 kB
    assert caught.value.code() == Code.RESOURCE_EXHAUSTED


async def test_a_second_server_on_the_same_port_fails_loudly(api, model):
    port = int(api.url.rsplit(":", 1)[1])
    options = ApiOptions(model=model[0], grpc_port=port)
    with pytest.raises(GrpcPortInUseError, match="--grpc-port"):
        await serve_grpc(api.scorer, options, ApiMetrics())


async def test_requests_are_counted_by_protocol_and_code(api, model, stub):
    before = api.metrics.render().decode()
    await stub.ServerLive(pb.ServerLiveRequest())
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.ModelInfer(raw_request("other", points(1)))
    text = api.metrics.render().decode()

    def count(code: str, text: str) -> float:
        line = f'streamkm_api_requests_total{{code="{code}",protocol="grpc"}} '
        found = [float(s.split()[-1]) for s in text.splitlines() if s.startswith(line)]
        return found[0] if found else 0.0

    assert count("OK", text) >= count("OK", before) + 1
    assert count("NOT_FOUND", text) == count("NOT_FOUND", before) + 1
    assert 'streamkm_api_latency_seconds_count{protocol="grpc"}' in text


def grpc_count(metrics: ApiMetrics, code: str) -> float:
    line = f'streamkm_api_requests_total{{code="{code}",protocol="grpc"}} '
    found = [
        float(s.split()[-1]) for s in metrics.render().decode().splitlines() if s.startswith(line)
    ]
    return found[0] if found else 0.0


async def test_a_call_larger_than_the_flow_control_windows_is_answered_right(api, model, stub):
    name, C = model
    X = points(60_000, seed=5)  # 720 kB each way: far beyond HTTP/2's initial 64 kB windows
    answer = await stub.ModelInfer(raw_request(name, X))
    cluster = np.frombuffer(answer.raw_output_contents[0], "<i4")
    np.testing.assert_array_equal(cluster, expected_clusters(X, C))


async def test_hundreds_of_concurrent_calls_on_one_channel_each_get_their_own_answer(
    api, model, stub
):
    name, C = model
    Xs = [points(1 + i % 5, seed=100 + i) for i in range(600)]
    answers = await asyncio.gather(
        *(stub.ModelInfer(raw_request(name, X, id=f"r{i}")) for i, X in enumerate(Xs))
    )
    for i, (X, answer) in enumerate(zip(Xs, answers, strict=True)):
        assert answer.id == f"r{i}"
        cluster = np.frombuffer(answer.raw_output_contents[0], "<i4")
        np.testing.assert_array_equal(cluster, expected_clusters(X, C))


async def test_an_unknown_method_is_unimplemented(api):
    async with grpc.aio.insecure_channel(api.url) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/RepositoryIndex",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(b"")
    assert caught.value.code() == Code.UNIMPLEMENTED
    assert "RepositoryIndex" in caught.value.details()


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
async def test_compressed_calls_are_answered(api, model, compression):
    name, C = model
    X = points(300, seed=9)
    async with grpc.aio.insecure_channel(api.url, compression=compression) as channel:
        answer = await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(raw_request(name, X))
    cluster = np.frombuffer(answer.raw_output_contents[0], "<i4")
    np.testing.assert_array_equal(cluster, expected_clusters(X, C))


async def test_a_message_over_max_body_bytes_once_decompressed_is_refused(broker, model):
    name = model[0]
    async with running_api(broker, name, max_body_bytes=4096) as a:
        X = np.zeros((1000, D))  # 12 kB that gzip makes a few dozen bytes
        async with grpc.aio.insecure_channel(a.url, compression=grpc.Compression.Gzip) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pb_grpc.GRPCInferenceServiceStub(ch).ModelInfer(raw_request(name, X))
    assert caught.value.code() == Code.RESOURCE_EXHAUSTED
    assert "--max-body-bytes" in caught.value.details()


async def test_a_call_the_client_gave_up_on_is_counted_cancelled_and_the_channel_serves_on(
    broker, model
):
    name, C = model
    X = points(2)
    # Rows wait 300 ms for company: a client allowing 50 ms gives up first.
    async with running_api(broker, name, max_wait_ms=300.0) as a:
        before = grpc_count(a.metrics, "CANCELLED")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await a.stub.ModelInfer(raw_request(name, X), timeout=0.05)
        assert caught.value.code() == Code.DEADLINE_EXCEEDED
        answer = await a.stub.ModelInfer(raw_request(name, X))
        cluster = np.frombuffer(answer.raw_output_contents[0], "<i4")
        np.testing.assert_array_equal(cluster, expected_clusters(X, C))
        await wait_for(lambda: grpc_count(a.metrics, "CANCELLED") == before + 1)


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n",  # HTTP/1.1 on the gRPC port
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + b"\x00\x00\x04\x01\x05\x00\x00\x00\x01\xff\xff\xff\xff",
    ],
    ids=["http1", "bad-header-block"],
)
async def test_a_connection_speaking_nonsense_is_closed_and_the_server_serves_on(
    api, model, stub, garbage
):
    host, port = api.url.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(garbage)
    await writer.drain()
    rest = await asyncio.wait_for(reader.read(), timeout=5)  # until the server closes
    writer.close()
    if garbage.startswith(b"PRI"):
        assert b"bad header block" in rest  # GOAWAY's debug data says why
    answer = await stub.ModelInfer(raw_request(model[0], points(3)))
    assert len(np.frombuffer(answer.raw_output_contents[0], "<i4")) == 3


async def test_every_answer_matches_the_centres_of_the_version_it_names(broker, tmp_path):
    name = unique_name("grpc-moving")
    centres_of: dict[int, np.ndarray] = {}
    await publish(broker, name, centres(10), tmp_path)
    async with running_api(broker, name) as a:
        centres_of[a.scorer.version()] = centres(10)
        X = points(64, seed=3)
        answers: list[pb.ModelInferResponse] = []
        stop = asyncio.Event()

        async def ask() -> None:
            stub = a.stub
            while not stop.is_set():
                answers.append(await stub.ModelInfer(raw_request(name, X)))

        clients = [asyncio.create_task(ask()) for _ in range(4)]
        for seed in (11, 12):
            await asyncio.sleep(0.2)
            old = a.scorer.version()
            await publish(broker, name, centres(seed), tmp_path, replace=True)
            await wait_for(lambda old=old: a.scorer.version() != old)
            centres_of[a.scorer.version()] = centres(seed)
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*clients)
    versions = {int(r.model_version) for r in answers}
    assert versions <= set(centres_of) and len(versions) == 3
    for answer in answers:
        cluster = np.frombuffer(answer.raw_output_contents[0], "<i4")
        C = centres_of[int(answer.model_version)]
        np.testing.assert_array_equal(cluster, expected_clusters(X, C))
