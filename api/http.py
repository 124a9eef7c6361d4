"""REST scoring: the Open Inference Protocol v2 (KServe / Triton "v2") and named events (v1).

A small HTTP/1.1 server on asyncio and `httptools` (the parser uvicorn uses) with keep-alive and
pipelining, rather than a framework: a request here is a few microseconds of parsing and routing
around a kernel call of a few more, and a framework's per-request machinery would cost many
times that. Routes run synchronously; an infer request hands the dynamic batcher a callback
that frames and writes its answer from the batch's flush (no futures: each would cost event-loop
turns), and pipelined answers go out in request order, those ready together in one write.

Routes (DESIGN.md §8):
- ``GET /v2/health/live``, ``GET /v2/health/ready`` (200 once the model is loaded, else 503);
  both stay open without the token so load balancers can probe them.
- ``GET /v2`` server metadata; ``GET /v2/models/{model}`` model metadata;
  ``GET /v2/models/{model}/ready``; ``POST /v2/models/{model}/infer``: one FP32 or FP64 input
  ``[n, d]``, JSON ``data`` (flat or nested) or the binary tensor data extension
  (``Inference-Header-Content-Length``); outputs ``cluster``, ``distance``, ``score``, each JSON or
  binary as the request asks (``binary_data`` per output, ``binary_data_output`` per request).
  ``/v2/models/{model}/versions/{v}/...`` is accepted when v is the version served now.
- ``POST /v1/models/{model}:predict`` with ``{"instances": [{event}, ...]}``.

Errors are JSON ``{"error": message}``: 400 bad input (shape, datatype, non-finite values,
malformed JSON, a body over --max-body-bytes), 401 without the bearer token when --api-token is
set, 404 another model or path, 405 wrong method, 503 not ready or shed (queue full).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

import httptools
import numpy as np
import orjson

from api.config import ApiOptions
from api.scoring import Answer, InvalidInput, NotReady, Overloaded, Scorer, Scores
from metrics.api_metrics import ApiMetrics

__all__ = ["HttpServer", "RestApi"]

log = logging.getLogger("streamkm.api.http")

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    405: b"Method Not Allowed",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}
_CODES = {status: str(status) for status in _REASONS}  # metric labels
_JSON = b"application/json"
_BINARY = b"application/octet-stream"
_DTYPES: dict[str, np.dtype[Any]] = {"FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
_NATIVE = {dtype: dtype.newbyteorder("=") for dtype in _DTYPES.values()}
_OUTPUTS = {"cluster": "INT32", "distance": "FP32", "score": "FP32"}
_ALL_OUTPUTS = {
    binary: tuple((name, binary) for name in _OUTPUTS) for binary in (False, True)
}  # what a request that names no outputs gets
_OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
# Pipelined requests one connection may have in flight before we stop reading from it.
_MAX_IN_FLIGHT = 128

Reply = tuple[int, bytes, list[tuple[bytes, bytes]]]  # status, body, extra headers
Respond = Callable[[Reply], None]  # takes a reply that was not ready when the route returned


class HttpError(Exception):
    """A request answered with an error status and a JSON message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json(status: int, obj: Any) -> Reply:
    return status, orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY), []


def _error(status: int, message: str) -> Reply:
    return status, orjson.dumps({"error": message}), []


class RestApi:
    """The routes: a request in, a reply (or a future of one) out. No I/O of its own."""

    def __init__(self, scorer: Scorer, options: ApiOptions) -> None:
        self.scorer = scorer
        self.options = options
        token = options.api_token
        self._auth = None if token is None else f"Bearer {token}".encode()
        self._infer_url = f"/v2/models/{scorer.model}/infer".encode()

    def handle(
        self,
        method: bytes,
        url: bytes,
        headers: dict[bytes, bytes],
        body: bytes,
        respond: Respond,
    ) -> Reply | None:
        """The reply now, or None when `respond` will get it (scoring requests)."""
        try:
            if url == self._infer_url:  # the hot path, routed as `_route` would route it
                self._authorize(headers)
                self._method(method, b"POST")
                self._infer(headers, body, respond)
                return None
            return self._route(method, url, headers, body, respond)
        except HttpError as e:
            return _error(e.status, str(e))
        except InvalidInput as e:
            return _error(400, str(e))
        except (NotReady, Overloaded) as e:
            return _error(503, str(e))

    def _authorize(self, headers: dict[bytes, bytes]) -> None:
        if self._auth is not None:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self._auth):
                raise HttpError(401, "missing or wrong bearer token (Authorization: Bearer ...)")

    def _route(
        self,
        method: bytes,
        url: bytes,
        headers: dict[bytes, bytes],
        body: bytes,
        respond: Respond,
    ) -> Reply | None:
        path = url.split(b"?", 1)[0].decode("utf-8", "replace")
        if path not in _OPEN_PATHS:
            self._authorize(headers)
        if path == "/v2/health/live":
            self._method(method, b"GET")
            return _json(200, {"live": True})
        if path == "/v2/health/ready":
            self._method(method, b"GET")
            ready = self.scorer.ready()
            return _json(200 if ready else 503, {"ready": ready})
        if path == "/v2":
            self._method(method, b"GET")
            return _json(200, {"name": "streamkm", "extensions": ["binary_tensor_data"]})
        if path.startswith("/v1/models/") and path.endswith(":predict"):
            self._method(method, b"POST")
            self._model(path[len("/v1/models/") : -len(":predict")])
            self._predict(body, respond)
            return None
        if path.startswith("/v2/models/"):
            return self._v2_model(method, path[len("/v2/models/") :], headers, body, respond)
        raise HttpError(404, f"no route {path}; see /v2/models/{self.scorer.model}")

    def _v2_model(
        self,
        method: bytes,
        rest: str,
        headers: dict[bytes, bytes],
        body: bytes,
        respond: Respond,
    ) -> Reply | None:
        parts = rest.split("/")
        self._model(parts[0])
        if len(parts) >= 3 and parts[1] == "versions":
            if parts[2] != str(self.scorer.version()):
                raise HttpError(
                    404,
                    f"model {self.scorer.model!r} version {parts[2]} is not served; "
                    f"the current version is {self.scorer.version()}",
                )
            parts = [parts[0], *parts[3:]]
        action = "/".join(parts[1:])
        if action == "":
            self._method(method, b"GET")
            return self._metadata()
        if action == "ready":
            self._method(method, b"GET")
            ready = self.scorer.ready()
            return _json(200 if ready else 503, {"name": self.scorer.model, "ready": ready})
        if action == "infer":
            self._method(method, b"POST")
            self._infer(headers, body, respond)
            return None
        raise HttpError(404, f"no route /v2/models/{rest}")

    @staticmethod
    def _method(method: bytes, allowed: bytes) -> None:
        if method != allowed and not (allowed == b"GET" and method == b"HEAD"):
            raise HttpError(405, f"use {allowed.decode()}, not {method.decode()}")

    def _model(self, name: str) -> None:
        if name != self.scorer.model:
            raise HttpError(
                404, f"model {name!r} is not served here; this api serves {self.scorer.model!r}"
            )

    def _metadata(self) -> Reply:
        d = self.scorer.dim()
        if d is None:
            raise NotReady(f"model {self.scorer.model!r} is not loaded yet")
        meta: dict[str, Any] = {
            "name": self.scorer.model,
            "versions": [str(self.scorer.version())],
            "platform": "streamkm",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, d]}],
            "outputs": [{"name": n, "datatype": t, "shape": [-1]} for n, t in _OUTPUTS.items()],
            "parameters": {"accepted_datatypes": list(_DTYPES)},
        }
        fields = self.scorer.fields()
        if fields is not None:
            meta["parameters"]["fields"] = list(fields)
        return _json(200, meta)

    # --- infer ------------------------------------------------------------------------------

    def _infer(self, headers: dict[bytes, bytes], body: bytes, respond: Respond) -> None:
        if headers.get(b"content-encoding", b"identity") not in (b"identity", b""):
            raise HttpError(400, "compressed request bodies are not supported; send identity")
        header_length = headers.get(b"inference-header-content-length")
        if header_length is None:
            header, raw = body, b""
        else:
            try:
                size = int(header_length)
            except ValueError:
                raise HttpError(400, "Inference-Header-Content-Length is not a number") from None
            if not 0 <= size <= len(body):
                raise HttpError(400, f"Inference-Header-Content-Length {size} exceeds the body")
            header, raw = body[:size], body[size:]
        request = _parse_json(header)
        if type(request) is not dict:
            raise HttpError(400, 'the request must be a JSON object with "inputs"')
        X = _input_matrix(request, raw)
        outputs = _requested_outputs(request)
        request_id = request.get("id")
        reply = partial(self._infer_reply, outputs=outputs, request_id=request_id)
        self.scorer.submit_then(X, _answer(respond, reply))

    def _infer_reply(
        self, scores: Scores, outputs: tuple[tuple[str, bool], ...], request_id: Any
    ) -> Reply:
        n = int(scores.cluster.shape[0])
        described: list[dict[str, Any]] = []
        blobs: list[bytes] = []
        for name, binary in outputs:
            array = getattr(scores, name)
            out: dict[str, Any] = {"name": name, "datatype": _OUTPUTS[name], "shape": [n]}
            if binary:
                blob = array.astype(array.dtype.newbyteorder("<")).tobytes()
                out["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                out["data"] = array
            described.append(out)
        response: dict[str, Any] = {
            "model_name": self.scorer.model,
            "model_version": str(scores.version),
        }
        if request_id is not None:
            response["id"] = request_id
        response["outputs"] = described
        head = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
        if not blobs:
            return 200, head, []
        extra = [
            (b"Content-Type", _BINARY),
            (b"Inference-Header-Content-Length", str(len(head)).encode()),
        ]
        return 200, b"".join([head, *blobs]), extra

    # --- named events -----------------------------------------------------------------------

    def _predict(self, body: bytes, respond: Respond) -> None:
        request = _parse_json(body)
        if type(request) is not dict or "instances" not in request:
            raise HttpError(400, 'the request must be a JSON object {"instances": [{...}, ...]}')
        X = self.scorer.event_rows(request["instances"])
        self.scorer.submit_then(X, _answer(respond, _predict_reply))


def _predict_reply(scores: Scores) -> Reply:
    predictions = [
        {"cluster": c, "distance": d, "score": s}
        for c, d, s in zip(
            scores.cluster.tolist(), scores.distance.tolist(), scores.score.tolist(), strict=True
        )
    ]
    return _json(200, {"predictions": predictions, "model_version": scores.version})


def _parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise HttpError(400, f"malformed JSON: {e}") from None


def _input_matrix(request: dict[str, Any], raw: bytes) -> np.ndarray:
    """The one input tensor [n, d] of an infer request, from JSON data or binary data."""
    inputs = request.get("inputs")
    if type(inputs) is not list or len(inputs) != 1 or type(inputs[0]) is not dict:
        raise HttpError(400, '"inputs" must hold exactly one tensor {"name", "shape", ...}')
    tensor = inputs[0]
    datatype = tensor.get("datatype")
    dtype = _DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise HttpError(400, f"datatype {datatype!r} is not supported; send FP32 or FP64")
    shape = tensor.get("shape")
    if type(shape) is not list or len(shape) != 2:
        raise HttpError(400, f"shape must be [n, d] (two whole numbers), got {shape!r}")
    n, d = shape
    if type(n) is not int or type(d) is not int or n < 0 or d < 0:
        raise HttpError(400, f"shape must be [n, d] (two whole numbers), got {shape!r}")
    params = tensor.get("parameters") or {}
    size = params.get("binary_data_size") if type(params) is dict else None
    if size is not None:
        expected = n * d * dtype.itemsize
        if type(size) is not int or size != expected or len(raw) != size:
            raise HttpError(
                400,
                f"binary data of {len(raw)} bytes (binary_data_size {size!r}) does not hold "
                f"shape {shape} of {datatype} ({expected} bytes)",
            )
        return np.frombuffer(raw, dtype).reshape(n, d)
    if "data" not in tensor:
        raise HttpError(400, 'the input has neither "data" nor binary_data_size')
    try:
        flat = np.asarray(tensor["data"], dtype=_NATIVE[dtype])
    except (ValueError, TypeError):
        raise HttpError(400, '"data" must be numbers, flat or nested [n][d]') from None
    if flat.size != n * d:
        raise HttpError(400, f'"data" holds {flat.size} numbers; shape {shape} needs {n * d}')
    return flat.reshape(n, d)


def _requested_outputs(request: dict[str, Any]) -> tuple[tuple[str, bool], ...]:
    """(name, binary) per output to return, in order: those asked for, else all three."""
    params = request.get("parameters") or {}
    default_binary = bool(type(params) is dict and params.get("binary_data_output", False))
    asked = request.get("outputs")
    if asked is None:
        return _ALL_OUTPUTS[default_binary]
    if type(asked) is not list:
        raise HttpError(400, '"outputs" must be a list of {"name": ...}')
    chosen = []
    for out in asked:
        name = out.get("name") if type(out) is dict else None
        if name not in _OUTPUTS:
            raise HttpError(400, f"unknown output {name!r}; outputs are {', '.join(_OUTPUTS)}")
        p = out.get("parameters") or {}
        chosen.append((name, bool(p.get("binary_data", default_binary))))
    return tuple(chosen)


def _head(status: int, extra: list[tuple[bytes, bytes]]) -> bytes:
    """A reply's status line and headers up to the value of Content-Length."""
    head = [b"HTTP/1.1 ", str(status).encode(), b" ", _REASONS.get(status, b"")]
    if not any(k == b"Content-Type" for k, _ in extra):
        head.append(b"\r\nContent-Type: application/json")
    for k, v in extra:
        head += [b"\r\n", k, b": ", v]
    if status == 401:
        head.append(b'\r\nWWW-Authenticate: Bearer realm="streamkm"')
    head.append(b"\r\nContent-Length: ")
    return b"".join(head)


_HEADS = {status: _head(status, []) for status in _REASONS}  # JSON replies, no extra headers


def _answer(respond: Respond, reply: Callable[[Scores], Reply]) -> Answer:
    """The scorer's callback for one request: the reply built from the scores, or the error's."""

    def answer(result: Scores | Exception) -> None:
        if isinstance(result, Scores):
            try:
                answered = reply(result)
            except Exception:  # a bug, not the request's fault: said in the log, not hung
                log.exception("building the answer of a scored request failed")
                answered = _error(500, "scoring failed; see the api log")
        elif isinstance(result, InvalidInput):
            answered = _error(400, str(result))
        elif isinstance(result, NotReady | Overloaded):
            answered = _error(503, str(result))
        else:
            log.error("scoring failed", exc_info=result)
            answered = _error(500, "scoring failed; see the api log")
        respond(answered)

    return answer


# --- the server -------------------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One client connection: httptools parses, RestApi answers, replies go out in order."""

    def __init__(self, api: RestApi, metrics: ApiMetrics | None, max_body: int) -> None:
        self._api = api
        self._metrics = metrics
        self._max_body = max_body
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._slots: deque[list[Any]] = deque()  # [reply or None, keep_alive, started]
        self._paused = False
        self._write_paused = False
        self._broken = False
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._started = 0.0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._slots.clear()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._maybe_resume()

    def data_received(self, data: bytes) -> None:
        if self._broken:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as e:
            self._fail(400, f"malformed HTTP request: {e}")

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._reset()
        self._started = time.perf_counter()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size <= self._max_body:
            self._body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self._parser.should_keep_alive()
        slot: list[Any] = [None, keep_alive, self._started]
        self._slots.append(slot)
        if self._body_size > self._max_body:
            reply: Reply | None = _error(
                400,
                f"request body of {self._body_size} bytes is larger than --max-body-bytes "
                f"{self._max_body}",
            )
        else:
            method = self._parser.get_method()
            body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
            reply = self._api.handle(
                method, self._url, self._headers, body, partial(self._complete, slot)
            )
            if reply is not None and method == b"HEAD":
                reply = (reply[0], b"", reply[2])  # Content-Length still that of the GET
        if reply is not None:
            slot[0] = reply
            self._drain()
        elif len(self._slots) >= _MAX_IN_FLIGHT:
            self._pause_reading()

    def _complete(self, slot: list[Any], reply: Reply) -> None:
        slot[0] = reply
        self._drain()

    def _drain(self) -> None:
        """Write every finished reply at the head of the line, in request order, in one write."""
        transport = self._transport
        slots = self._slots
        out: list[bytes] = []
        while slots and slots[0][0] is not None:
            (status, body, extra), keep_alive, started = slots.popleft()
            if transport is None:
                continue
            head = None if extra else _HEADS.get(status)
            if head is None:
                head = _head(status, extra)
            end = b"\r\n\r\n" if keep_alive else b"\r\nConnection: close\r\n\r\n"
            out.append(b"%s%d%s%s" % (head, len(body), end, body))
            if self._metrics is not None:
                code = _CODES.get(status) or str(status)
                self._metrics.observe_request("http", code, time.perf_counter() - started)
            if not keep_alive:
                transport.write(b"".join(out))
                out.clear()
                transport.close()
                self._transport = transport = None
        if out and transport is not None:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        self._maybe_resume()

    def _fail(self, status: int, message: str) -> None:
        """Answer a request that cannot be parsed, then close (the stream is out of step)."""
        self._broken = True
        self._slots.append([_error(status, message), False, time.perf_counter()])
        self._drain()

    def _pause_reading(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def _maybe_resume(self) -> None:
        if (
            self._paused
            and not self._write_paused
            and len(self._slots) < _MAX_IN_FLIGHT // 2
            and self._transport is not None
        ):
            self._paused = False
            self._transport.resume_reading()


class HttpServer:
    """The REST endpoint on an asyncio server; `start` binds, `close` stops."""

    def __init__(self, scorer: Scorer, options: ApiOptions, metrics: ApiMetrics | None) -> None:
        self._api = RestApi(scorer, options)
        self._options = options
        self._metrics = metrics
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind --http-host:--http-port; OSError naming the address when that fails."""
        o = self._options
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Connection(self._api, self._metrics, o.max_body_bytes),
                o.http_host,
                o.http_port,
                reuse_address=True,
                backlog=1024,
            )
        except OSError as e:
            raise OSError(
                e.errno,
                f"cannot serve REST on {o.http_host}:{o.http_port}: {e.strerror}; "
                "choose another with --http-port",
            ) from e

    @property
    def port(self) -> int:
        """The bound port (the one the OS picked when 0 was asked for)."""
        if self._server is None:
            raise RuntimeError("HttpServer is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop accepting and close the listening socket; open connections are closed too."""
        if self._server is not None:
            self._server.close()
            if hasattr(self._server, "close_clients"):
                self._server.close_clients()
            await self._server.wait_closed()
            self._server = None
