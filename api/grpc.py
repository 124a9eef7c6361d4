"""The Open Inference Protocol over gRPC (DESIGN.md §8): `inference.GRPCInferenceService`.

    ModelInferRequest --token, model name, requested outputs--> one tensor [n, d], FP32 or FP64,
    from raw_input_contents (little-endian bytes, what tritonclient sends) or from
    contents.fp32_contents / fp64_contents --> Scorer.score (dynamic batching, bounded queue)
    --> cluster INT32, distance FP32, score FP32 as raw_output_contents (what tritonclient
    reads), model_version = the version that answered

Each failure is a status code the protocol's clients act on: INVALID_ARGUMENT with a message
that says what to fix, NOT_FOUND for another model, UNAUTHENTICATED without the token,
UNAVAILABLE before the model is loaded, RESOURCE_EXHAUSTED when load is shed — and gRPC's own
answer to a message over --max-body-bytes, which never reaches a handler. The health RPCs
(ServerLive, ServerReady) need no token, like the REST health checks. A request's
`model_version` is not enforced: an api serves only the newest version, and says which in each
answer.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np

from api.config import ApiOptions
from api.proto import grpc_predict_v2_pb2 as pb
from api.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from api.scoring import InvalidInput, NotReady, Overloaded, Scorer, Scores
from metrics.api_metrics import ApiMetrics

__all__ = ["INPUT_NAME", "OUTPUTS", "GrpcPortInUseError", "RpcError", "serve_grpc"]

log = logging.getLogger("streamkm.api")

INPUT_NAME = "input"
"""The input's name in the model's metadata; requests may name their one input anything."""
OUTPUTS = {"cluster": "INT32", "distance": "FP32", "score": "FP32"}
"""The model's outputs and their datatypes, in the order they are answered."""
_INPUT_DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
_OUTPUT_DTYPES: dict[str, np.dtype[Any]] = {"INT32": np.dtype("<i4"), "FP32": np.dtype("<f4")}
_PLATFORM = "streamkm"

Response = TypeVar("Response")


class GrpcPortInUseError(OSError):
    """The gRPC endpoint's address cannot be bound."""


class RpcError(Exception):
    """An answer other than OK: the status code and the message for the client."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def requested_outputs(request: pb.ModelInferRequest) -> list[str]:
    """The outputs the request names, in its order; all of them when it names none."""
    names = [o.name for o in request.outputs] or list(OUTPUTS)
    for name in names:
        if name not in OUTPUTS:
            raise RpcError(
                grpc.StatusCode.INVALID_ARGUMENT,
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


def encode_outputs(names: list[str], scores: Scores, model: str, request_id: str) -> Any:
    """The ModelInferResponse holding the named outputs as raw little-endian bytes."""
    response = pb.ModelInferResponse(
        model_name=model, model_version=str(scores.version), id=request_id
    )
    n = len(scores.cluster)
    for name in names:
        datatype = OUTPUTS[name]
        response.outputs.add(name=name, datatype=datatype, shape=[n])
        values = getattr(scores, name).astype(_OUTPUT_DTYPES[datatype], copy=False)
        response.raw_output_contents.append(values.tobytes())
    return response


def _invalid(message: str) -> RpcError:
    return RpcError(grpc.StatusCode.INVALID_ARGUMENT, message)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The protocol's RPCs over one Scorer; every answer is counted and timed."""

    def __init__(self, scorer: Scorer, metrics: ApiMetrics, token: str | None) -> None:
        self._scorer = scorer
        self._metrics = metrics
        self._authorization = None if token is None else f"Bearer {token}".encode()

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._answer(self._live, request, context, authenticate=False)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._answer(self._server_ready, request, context, authenticate=False)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._answer(self._server_metadata, request, context, authenticate=True)

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._answer(self._model_ready, request, context, authenticate=True)

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._answer(self._model_metadata, request, context, authenticate=True)

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._answer(self._infer, request, context, authenticate=True)

    async def _answer(
        self,
        rpc: Callable[[Any], Awaitable[Response]],
        request: Any,
        context: grpc.aio.ServicerContext,
        authenticate: bool,
    ) -> Response:
        """Run one RPC: its status code comes from the exception it raised, if any."""
        start = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            if authenticate:
                self._authenticate(context)
            return await rpc(request)
        except RpcError as exc:
            code, message = exc.code, exc.message
        except InvalidInput as exc:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        except NotReady as exc:
            code, message = grpc.StatusCode.UNAVAILABLE, str(exc)
        except Overloaded as exc:
            code, message = grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED  # the client went away
            raise
        except Exception:
            code = grpc.StatusCode.UNKNOWN  # what gRPC answers for an unhandled exception
            raise
        finally:
            self._metrics.observe_request("grpc", code.name, time.perf_counter() - start)
        await context.abort(code, message)
        raise AssertionError("context.abort returned")  # it always raises

    def _authenticate(self, context: grpc.aio.ServicerContext) -> None:
        if self._authorization is None:
            return
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and hmac.compare_digest(
                value.encode() if isinstance(value, str) else value, self._authorization
            ):
                return
        raise RpcError(
            grpc.StatusCode.UNAUTHENTICATED,
            "missing or wrong token: send metadata 'authorization: Bearer <token>' "
            "(the api's --api-token)",
        )

    def _check_model(self, name: str) -> None:
        if name != self._scorer.model:
            raise RpcError(
                grpc.StatusCode.NOT_FOUND,
                f"model {name!r} is not served here; this api serves {self._scorer.model!r}",
            )

    async def _live(self, request: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def _server_ready(self, request: Any) -> Any:
        return pb.ServerReadyResponse(ready=self._scorer.ready())

    async def _server_metadata(self, request: Any) -> Any:
        return pb.ServerMetadataResponse(name=_PLATFORM, version=_package_version())

    async def _model_ready(self, request: Any) -> Any:
        self._check_model(request.name)
        return pb.ModelReadyResponse(ready=self._scorer.ready())

    async def _model_metadata(self, request: Any) -> Any:
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

    async def _infer(self, request: Any) -> Any:
        self._check_model(request.model_name)
        names = requested_outputs(request)  # before scoring: a bad name costs no kernel call
        scores = await self._scorer.score(decode_input(request))
        return encode_outputs(names, scores, self._scorer.model, request.id)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("streamkm")
    except PackageNotFoundError:
        return "unknown"


async def serve_grpc(scorer: Scorer, options: ApiOptions, metrics: ApiMetrics) -> grpc.aio.Server:
    """Start the gRPC endpoint on --http-host:--grpc-port; the caller stops it.

    Raises GrpcPortInUseError when the address cannot be bound.
    """
    server = grpc.aio.server(
        options=[
            # A message over the limit is refused by gRPC before it is parsed.
            ("grpc.max_receive_message_length", options.max_body_bytes),
            # Without this a second api on the same port would share it silently.
            ("grpc.so_reuseport", 0),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(scorer, metrics, options.api_token), server
    )
    host = options.http_host
    address = f"[{host}]:{options.grpc_port}" if ":" in host else f"{host}:{options.grpc_port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise GrpcPortInUseError(
            f"cannot listen for gRPC on {address}: {exc}; choose another --grpc-port"
        ) from None
    await server.start()
    log.info("gRPC endpoint on %s (port %d)", address, port)
    return server
