"""The Open Inference Protocol over gRPC (DESIGN.md §8): `inference.GRPCInferenceService`.

    ModelInferRequest --token, model name, requested outputs--> one tensor [n, d], FP32 or FP64,
    from raw_input_contents (little-endian bytes, what tritonclient sends) or from
    contents.fp32_contents / fp64_contents --> Scorer.score (dynamic batching, bounded queue)
    --> cluster INT32, distance FP32, score FP32 as raw_output_contents (what tritonclient
    reads), model_version = the version that answered

The calls arrive through api/h2.py, a small HTTP/2 layer of our own (why not grpcio: there),
and are answered from the Scorer's flush, with no coroutine or future per call.

Each failure is a status code the protocol's clients act on: INVALID_ARGUMENT with a message
that says what to fix, NOT_FOUND for another model, UNAUTHENTICATED without the token,
UNAVAILABLE before the model is loaded, RESOURCE_EXHAUSTED when load is shed or a message is
over --max-body-bytes (refused by the HTTP/2 layer before it is read). The health RPCs
(ServerLive, ServerReady) need no token, like the REST health checks. A request's
`model_version` is not enforced: an api serves only the newest version, and says which in each
answer.
"""

from __future__ import annotations

import functools
import hmac
import logging
import time
from collections.abc import Callable
from enum import IntEnum
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from api.config import ApiOptions
from api.h2 import Call, GrpcServer, leb128
from api.proto import grpc_predict_v2_pb2 as pb
from api.scoring import InvalidInput, NotReady, Overloaded, Scorer, Scores
from metrics.api_metrics import ApiMetrics

__all__ = [
    "INPUT_NAME",
    "OUTPUTS",
    "GrpcPortInUseError",
    "GrpcServer",
    "RpcError",
    "Status",
    "serve_grpc",
]

log = logging.getLogger("streamkm.api")

INPUT_NAME = "input"
"""The input's name in the model's metadata; requests may name their one input anything."""
OUTPUTS = {"cluster": "INT32", "distance": "FP32", "score": "FP32"}
"""The model's outputs and their datatypes, in the order they are answered."""
_INPUT_DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
_OUTPUT_DTYPES: dict[str, np.dtype[Any]] = {"INT32": np.dtype("<i4"), "FP32": np.dtype("<f4")}
_ALL_OUTPUTS = tuple(OUTPUTS)
_PLATFORM = "streamkm"
_SERVICE = "/inference.GRPCInferenceService/"


class Status(IntEnum):
    """The gRPC status codes the api answers (grpc/status.proto)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    NOT_FOUND = 5
    RESOURCE_EXHAUSTED = 8
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


class GrpcPortInUseError(OSError):
    """The gRPC endpoint's address cannot be bound."""


class RpcError(Exception):
    """An answer other than OK: the status code and the message for the client."""

    def __init__(self, code: Status, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def requested_outputs(request: pb.ModelInferRequest) -> tuple[str, ...]:
    """The outputs the request names, in its order; all of them when it names none."""
    if not request.outputs:
        return _ALL_OUTPUTS
    names = tuple(o.name for o in request.outputs)
    for name in names:
        if name not in OUTPUTS:
            raise RpcError(
                Status.INVALID_ARGUMENT,
                f"unknown output {name!r}; this model answers {', '.join(OUTPUTS)}",
            )
    return names


def decode_input(request: pb.ModelInferRequest) -> np.ndarray:
    """The request's one input tensor as an (n, d) array of its datatype."""
    if len(request.inputs) != 1:
        raise _invalid(f"expected one input tensor [n, d], got {len(request.inputs)}")
    tensor = request.inputs[0]
    dtype = _INPUT_DTYPES.get(tensor.datatype)
    if dtype is None:
        raise _invalid(f"input {tensor.name!r} has datatype {tensor.datatype!r}; send FP32 or FP64")
    shape = list(tensor.shape)
    if len(shape) != 2 or min(shape) < 0:
        raise _invalid(f"input {tensor.name!r} has shape {shape}; expected [n, d]")
    count = shape[0] * shape[1]
    raw = request.raw_input_contents
    if raw:
        if len(raw) != 1 or tensor.HasField("contents"):
            raise _invalid(
                "send the input either in raw_input_contents (one entry) or in contents, not both"
            )
        needed = count * dtype.itemsize
        if len(raw[0]) != needed:
            raise _invalid(
                f"raw_input_contents holds {len(raw[0])} bytes; shape {shape} "
                f"{tensor.datatype} needs {needed}"
            )
        values = np.frombuffer(raw[0], dtype)
    else:
        field = "fp32_contents" if tensor.datatype == "FP32" else "fp64_contents"
        data = getattr(tensor.contents, field)
        if len(data) != count:
            raise _invalid(
                f"contents.{field} holds {len(data)} values; shape {shape} needs {count}"
            )
        values = np.array(data, dtype)
    return values.reshape(shape)


def encode_outputs(names: tuple[str, ...], scores: Scores, model: str, request_id: str) -> bytes:
    """The serialized ModelInferResponse holding the named outputs as raw little-endian bytes.

    Written directly in protobuf's wire format (grpc_predict_v2.proto: model_name = 1,
    model_version = 2, id = 3, outputs = 5, raw_output_contents = 6): building the message
    object costs more than the rest of a one-row call. tests/test_api_grpc.py checks it
    against the message protobuf builds.
    """
    n = len(scores.cluster)
    out = [_head(model, scores.version), _field(3, request_id.encode()) if request_id else b""]
    out.append(_output_tensors(names, n))
    for name in names:
        values = getattr(scores, name).astype(_OUTPUT_DTYPES[OUTPUTS[name]], copy=False)
        out.append(_field(6, values.tobytes()))
    return b"".join(out)


_SMALL_VARINTS = [bytes([i]) for i in range(0x80)]


def _varint(value: int) -> bytes:
    return _SMALL_VARINTS[value] if value < 0x80 else leb128(value)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _SMALL_VARINTS[number << 3 | 2] + _varint(len(payload)) + payload


@functools.lru_cache(maxsize=16)
def _head(model: str, version: int) -> bytes:
    """model_name and model_version, the same for every answer of a version."""
    return _field(1, model.encode()) + _field(2, str(version).encode())


@functools.lru_cache(maxsize=256)
def _output_tensors(names: tuple[str, ...], n: int) -> bytes:
    """The `outputs` entries (InferOutputTensor: name = 1, datatype = 2, shape = 3, packed)."""
    return b"".join(
        _field(
            5, _field(1, name.encode()) + _field(2, OUTPUTS[name].encode()) + _field(3, _varint(n))
        )
        for name in names
    )


def _invalid(message: str) -> RpcError:
    return RpcError(Status.INVALID_ARGUMENT, message)


def _status_of(exc: Exception) -> tuple[Status, str]:
    if isinstance(exc, RpcError):
        return exc.code, exc.message
    if isinstance(exc, InvalidInput):
        return Status.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, NotReady):
        return Status.UNAVAILABLE, str(exc)
    if isinstance(exc, Overloaded):
        return Status.RESOURCE_EXHAUSTED, str(exc)
    log.error("answering a gRPC call failed", exc_info=exc)
    return Status.UNKNOWN, f"{type(exc).__name__}: {exc} (see the api's log)"


class InferenceService:
    """The protocol's RPCs over one Scorer; every answer is counted and timed."""

    def __init__(self, scorer: Scorer, metrics: ApiMetrics, token: str | None) -> None:
        self._scorer = scorer
        self._metrics = metrics
        self._authorization = None if token is None else f"Bearer {token}".encode()
        # name -> (request type, needs the token, answer); ModelInfer answers from the flush.
        self._methods: dict[str, tuple[Any, bool, Callable[[Any], Any] | None]] = {
            _SERVICE + "ServerLive": (pb.ServerLiveRequest, False, self._live),
            _SERVICE + "ServerReady": (pb.ServerReadyRequest, False, self._server_ready),
            _SERVICE + "ServerMetadata": (pb.ServerMetadataRequest, True, self._server_metadata),
            _SERVICE + "ModelReady": (pb.ModelReadyRequest, True, self._model_ready),
            _SERVICE + "ModelMetadata": (pb.ModelMetadataRequest, True, self._model_metadata),
            _SERVICE + "ModelInfer": (pb.ModelInferRequest, True, None),
        }

    def __call__(self, call: Call) -> None:
        """Answer one call, now or (ModelInfer) when its rows have been scored."""
        start = time.perf_counter()
        try:
            if call.refusal is not None:
                raise RpcError(Status(call.refusal[0]), call.refusal[1])
            method = self._methods.get(call.path)
            if method is None:
                raise RpcError(Status.UNIMPLEMENTED, f"unknown method {call.path}")
            request_type, authenticate, answer = method
            if authenticate:
                self._authenticate(call.headers)
            assert call.message is not None
            try:
                request = request_type.FromString(call.message)
            except DecodeError:
                raise _invalid(f"the message is not a {request_type.__name__}") from None
            if answer is None:
                self._infer(call, request, start)
                return
            call.answer(answer(request).SerializeToString())
            self._observe(Status.OK, start)
        except Exception as exc:  # every failure is an answer with a status, never a crash
            code, message = _status_of(exc)
            call.fail(code, message)
            self._observe(code, start)

    def _observe(self, code: Status, start: float) -> None:
        self._metrics.observe_request("grpc", code.name, time.perf_counter() - start)

    def _infer(self, call: Call, request: Any, start: float) -> None:
        self._check_model(request.model_name)
        names = requested_outputs(request)  # before scoring: a bad name costs no kernel call
        X = decode_input(request)
        model, request_id = self._scorer.model, request.id

        def answer(result: Scores | Exception) -> None:
            if not call.open:
                self._observe(Status.CANCELLED, start)  # the client went away
            elif isinstance(result, Exception):
                code, message = _status_of(result)
                call.fail(code, message)
                self._observe(code, start)
            else:
                call.answer(encode_outputs(names, result, model, request_id))
                self._observe(Status.OK, start)

        self._scorer.submit_then(X, answer)

    def _authenticate(self, headers: dict[bytes, bytes]) -> None:
        if self._authorization is None:
            return
        sent = headers.get(b"authorization")
        if sent is not None and hmac.compare_digest(sent, self._authorization):
            return
        raise RpcError(
            Status.UNAUTHENTICATED,
            "missing or wrong token: send metadata 'authorization: Bearer <token>' "
            "(the api's --api-token)",
        )

    def _check_model(self, name: str) -> None:
        if name != self._scorer.model:
            raise RpcError(
                Status.NOT_FOUND,
                f"model {name!r} is not served here; this api serves {self._scorer.model!r}",
            )

    def _live(self, request: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    def _server_ready(self, request: Any) -> Any:
        return pb.ServerReadyResponse(ready=self._scorer.ready())

    def _server_metadata(self, request: Any) -> Any:
        return pb.ServerMetadataResponse(name=_PLATFORM, version=_package_version())

    def _model_ready(self, request: Any) -> Any:
        self._check_model(request.name)
        return pb.ModelReadyResponse(ready=self._scorer.ready())

    def _model_metadata(self, request: Any) -> Any:
        self._check_model(request.name)
        d = self._scorer.dim()
        if d is None:
            raise NotReady(f"model {self._scorer.model!r} is not loaded yet")
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=self._scorer.model,
            versions=[str(self._scorer.version())],
            platform=_PLATFORM,
            inputs=[tensor(name=INPUT_NAME, datatype="FP32", shape=[-1, d])],
            outputs=[tensor(name=n, datatype=t, shape=[-1]) for n, t in OUTPUTS.items()],
        )


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("streamkm")
    except PackageNotFoundError:
        return "unknown"


async def serve_grpc(scorer: Scorer, options: ApiOptions, metrics: ApiMetrics) -> GrpcServer:
    """Start the gRPC endpoint on --http-host:--grpc-port; the caller stops it.

    Raises GrpcPortInUseError when the address cannot be bound.
    """
    server = GrpcServer(
        InferenceService(scorer, metrics, options.api_token), options.max_body_bytes
    )
    host = options.http_host
    address = f"[{host}]:{options.grpc_port}" if ":" in host else f"{host}:{options.grpc_port}"
    try:
        port = await server.start(host, options.grpc_port)
    except OSError as exc:
        raise GrpcPortInUseError(
            f"cannot listen for gRPC on {address}: {exc.strerror or exc}; choose another "
            "--grpc-port"
        ) from None
    log.info("gRPC endpoint on %s (port %d)", address, port)
    return server
