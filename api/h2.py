"""HTTP/2 for unary gRPC calls: the framing, flow control and header compression of RFC 9113
and 7541 that a gRPC server needs, and nothing more (no server push, no priorities, h2c only).

    bytes --frames--> HEADERS (+CONTINUATION, HPACK-decoded) and DATA per stream
    --END_STREAM--> Call(path, headers, message) --handler--> Call.answer(message) or
    Call.fail(status, text) --> HEADERS + DATA + trailers, written once per turn of the loop

Why not grpcio: its server spends about 200 µs of Python per call, so that grpcio answering an
empty handler is only about 2.3x grpcio answering scikit-learn's `predict`, far from the tenfold
the api is asked to reach (bench/bench_api.py). A call here is parsed and answered in a few
tens of microseconds, and the calls that arrive together reach the Scorer together.

HPACK decoding (static and dynamic tables, Huffman codes) is the `hpack` library's. Answers
never add to the client's dynamic table: every header is sent as a literal without indexing,
precomputed where it never changes.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import zlib
from collections.abc import Callable
from typing import Any

from hpack import Decoder, HPACKError

__all__ = ["Call", "GrpcServer", "Handler", "encode_status_trailers", "leb128"]

log = logging.getLogger("streamkm.api")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Frame types (RFC 9113 §6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
# Flags.
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
# Settings (§6.5.2).
HEADER_TABLE_SIZE, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE = 1, 3, 4, 5
MAX_HEADER_LIST_SIZE = 6
# Error codes (§7).
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED = 0x0, 0x1, 0x3, 0x5
FRAME_SIZE_ERROR, REFUSED_STREAM, COMPRESSION_ERROR = 0x6, 0x7, 0x9
# gRPC status codes this layer answers by itself.
RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL = 8, 12, 13

_FRAME = struct.Struct(">HBBBI")  # length (24 bits as 16 + 8), type, flags, stream id
_MAX_WINDOW = 2**31 - 1
# What we grant: streams carry up to 4 MiB before a WINDOW_UPDATE, the connection 64 MiB; the
# message limit (--max-body-bytes) is enforced per call, not by withholding credit.
_STREAM_WINDOW = 4 * 1024 * 1024
_CONNECTION_WINDOW = 64 * 1024 * 1024
_MAX_STREAMS = 1000  # open calls per connection; load beyond the queue is shed per call
_MAX_HEADER_LIST = 64 * 1024
_HEADER_CACHE = 256  # distinct header blocks remembered per connection
# Calls read before the loop turns: a burst of a thousand requests in one read is answered a
# batch at a time (each batch one kernel call), not all after the last one is parsed.
_CALLS_PER_TURN = 32

Handler = Callable[["Call"], None]
"""Receives each call once its message is complete; must answer it (now or later), not raise."""


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _FRAME.pack(n >> 8, n & 0xFF, kind, flags, stream) + payload


def leb128(value: int) -> bytes:
    """An unsigned integer in 7-bit groups, low group first, high bit set on all but the last:
    HPACK's integer continuation (RFC 7541 §5.1) and protobuf's varint."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 §5.1) with `first` holding the bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    return bytes([first | limit]) + leb128(value - limit)


def _literal(name: bytes, value: bytes) -> bytes:
    """A header as a literal without indexing, new name, no Huffman (RFC 7541 §6.2.2)."""
    return b"\x00" + _hpack_int(len(name), 7) + name + _hpack_int(len(value), 7) + value


_STATUS_200 = b"\x88"  # static table entry 8
_CONTENT_TYPE = b"\x0f\x10" + _hpack_int(16, 7) + b"application/grpc"  # name: static entry 31
# What we read (grpc-accept-encoding); answers are never compressed.
_ACCEPT_ENCODING = _literal(b"grpc-accept-encoding", b"identity,deflate,gzip")
_RESPONSE_HEADERS = _STATUS_200 + _CONTENT_TYPE + _ACCEPT_ENCODING
_ZLIB_WBITS = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}
_OK_TRAILERS = _literal(b"grpc-status", b"0")
_UNRESERVED = frozenset(range(0x20, 0x7F)) - {ord("%")}


def _percent_encode(text: str) -> bytes:
    """grpc-message's encoding: UTF-8, with bytes outside printable ASCII (and %) as %XX."""
    return b"".join(bytes([b]) if b in _UNRESERVED else f"%{b:02X}".encode() for b in text.encode())


def encode_status_trailers(status: int, message: str) -> bytes:
    """The header block of a status other than OK: grpc-status and grpc-message."""
    return _literal(b"grpc-status", str(status).encode()) + _literal(
        b"grpc-message", _percent_encode(message)
    )


def _changes_table(block: bytes) -> bool:
    """Does decoding this (valid) header block add to the dynamic table or resize it?"""
    i, n = 0, len(block)
    while i < n:
        first = block[i]
        if first & 0x80:  # indexed field
            _, i = _read_int(block, i, 7)
        elif first & 0xC0 == 0x40 or first & 0xE0 == 0x20:  # incremental indexing; size update
            return True
        else:  # literal without indexing or never indexed: name index or literal name, value
            index, i = _read_int(block, i, 4)
            for _ in range(1 if index else 2):
                length, i = _read_int(block, i, 7)
                i += length
    return False


def _read_int(block: bytes, i: int, prefix_bits: int) -> tuple[int, int]:
    """An HPACK integer at block[i] (RFC 7541 §5.1): its value and the index after it."""
    limit = (1 << prefix_bits) - 1
    value = block[i] & limit
    i += 1
    if value < limit:
        return value, i
    shift = 0
    while True:
        byte = block[i]
        i += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


class _Stream:
    """One client-initiated stream: its request so far and what is left to send of its answer."""

    __slots__ = (
        "answered",
        "body",
        "closed_remote",
        "headers",
        "id",
        "pending",
        "unacknowledged",
        "window",
    )

    def __init__(self, stream_id: int, window: int) -> None:
        self.id = stream_id
        self.headers: dict[bytes, bytes] = {}
        self.body = bytearray()
        self.window = window
        self.closed_remote = False
        self.answered = False
        self.pending: list[tuple[bytes, bytes]] | None = None  # (data, trailers) awaiting credit
        self.unacknowledged = 0  # DATA bytes received and not yet given back as credit


class Call:
    """One unary call: the request's path, headers and message, and the way to answer it."""

    __slots__ = ("_connection", "_stream", "headers", "message", "path", "refusal")

    def __init__(
        self,
        connection: _Connection,
        stream: _Stream,
        message: bytes | None,
        refusal: tuple[int, str] | None = None,
    ) -> None:
        self._connection = connection
        self._stream = stream
        self.path = stream.headers.get(b":path", b"").decode("latin-1")
        self.headers = stream.headers
        self.message = message
        # Set when the HTTP/2 layer refused the call (status, text); `message` is None then.
        self.refusal = refusal

    def answer(self, message: bytes) -> None:
        """Send the response message and status OK."""
        self._connection.send_answer(self._stream, message)

    def fail(self, status: int, text: str) -> None:
        """Send status `status` (a gRPC code other than OK) with `text` for the client."""
        self._connection.send_failure(self._stream, status, text)

    @property
    def open(self) -> bool:
        """False once the client cancelled the call or the connection went away."""
        return not self._stream.answered and not self._connection.closed


class _Connection(asyncio.Protocol):
    """One client connection: frames in, calls to the handler, answers out."""

    def __init__(self, server: GrpcServer) -> None:
        self._server = server
        self._handler = server.handler
        self._max_message = server.max_message_bytes
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._preface = False
        self._decoder = Decoder()
        self._decoder.max_header_list_size = _MAX_HEADER_LIST
        self._header_cache: dict[bytes, dict[bytes, bytes]] = {}
        self._streams: dict[int, _Stream] = {}
        self._last_stream = 0
        self._headers_open: tuple[int, int, bytearray] | None = None  # (stream, flags, block)
        self._peer_window = 65535  # the peer's initial stream window
        self._peer_frame = 16384
        self._send_window = 65535  # our connection-level credit
        self._unacknowledged = 0  # DATA bytes received and not yet given back as credit
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._in_callback = False
        self._resume_scheduled = False
        self._calls_this_turn = 0
        self.closed = False
        self.going_away = False

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        self._server.connections.add(self)
        settings = struct.pack(
            ">HIHIHIHI",
            MAX_CONCURRENT_STREAMS,
            _MAX_STREAMS,
            INITIAL_WINDOW_SIZE,
            _STREAM_WINDOW,
            MAX_HEADER_LIST_SIZE,
            _MAX_HEADER_LIST,
            HEADER_TABLE_SIZE,
            4096,
        )
        grant = struct.pack(">I", _CONNECTION_WINDOW - 65535)
        transport.write(_frame(SETTINGS, 0, 0, settings) + _frame(WINDOW_UPDATE, 0, 0, grant))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._server.connections.discard(self)
        self._streams.clear()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._resume_scheduled:
            self._process()

    def _process(self) -> None:
        """Read the frames buffered so far, or the first _CALLS_PER_TURN calls of them."""
        self._resume_scheduled = False
        self._calls_this_turn = 0
        self._in_callback = True
        try:
            self._read_frames()
        except _ConnectionError as exc:
            self._go_away(exc.code, str(exc))
        finally:
            self._in_callback = False
        self._flush()
        if self._calls_this_turn >= _CALLS_PER_TURN and len(self._buffer) >= 9 and not self.closed:
            # The Scorer's flush for these calls was scheduled first: they are answered
            # before the rest of a burst is read.
            self._resume_scheduled = True
            asyncio.get_running_loop().call_soon(self._process)

    # --- frames in ---------------------------------------------------------------------------

    def _read_frames(self) -> None:
        buf = self._buffer
        if not self._preface:
            if len(buf) < len(PREFACE):
                if not PREFACE.startswith(bytes(buf)):
                    raise _ConnectionError(PROTOCOL_ERROR, "not an HTTP/2 (h2c) connection")
                return
            if bytes(buf[: len(PREFACE)]) != PREFACE:
                raise _ConnectionError(PROTOCOL_ERROR, "not an HTTP/2 (h2c) connection")
            del buf[: len(PREFACE)]
            self._preface = True
        pos = 0
        try:
            while (
                len(buf) - pos >= 9 and not self.closed and self._calls_this_turn < _CALLS_PER_TURN
            ):
                hi, lo, kind, flags, sid = _FRAME.unpack_from(buf, pos)
                length = hi << 8 | lo
                if length > 16384:  # our SETTINGS_MAX_FRAME_SIZE is the default
                    raise _ConnectionError(FRAME_SIZE_ERROR, f"frame of {length} bytes")
                if len(buf) - pos - 9 < length:
                    break
                payload = bytes(buf[pos + 9 : pos + 9 + length])
                pos += 9 + length
                sid &= 0x7FFFFFFF
                if self._headers_open is not None and kind != CONTINUATION:
                    raise _ConnectionError(PROTOCOL_ERROR, "header block interrupted")
                if kind == DATA:
                    self._on_data(sid, flags, payload, length)
                elif kind == HEADERS:
                    self._on_headers(sid, flags, payload)
                elif kind == CONTINUATION:
                    self._on_continuation(sid, flags, payload)
                elif kind == SETTINGS:
                    self._on_settings(sid, flags, payload)
                elif kind == WINDOW_UPDATE:
                    self._on_window_update(sid, payload)
                elif kind == PING:
                    if not flags & ACK:
                        self._out.append(_frame(PING, ACK, 0, payload))
                elif kind == RST_STREAM:
                    stream = self._streams.pop(sid, None)
                    if stream is not None:
                        stream.answered = True  # the client cancelled: drop the answer
                elif kind == GOAWAY:
                    self.going_away = True
                elif kind == PUSH_PROMISE:
                    raise _ConnectionError(PROTOCOL_ERROR, "a client cannot push")
                # PRIORITY and unknown types are ignored (§5.5).
        finally:
            del buf[:pos]

    def _on_data(self, sid: int, flags: int, payload: bytes, length: int) -> None:
        # Credit goes back once half a window is used, not per frame: an update per call
        # would cost a write of its own.
        self._unacknowledged += length
        if self._unacknowledged >= _CONNECTION_WINDOW // 2:
            grant = struct.pack(">I", self._unacknowledged)
            self._out.append(_frame(WINDOW_UPDATE, 0, 0, grant))
            self._unacknowledged = 0
        stream = self._streams.get(sid)
        if stream is None or stream.closed_remote:
            if sid == 0 or sid > self._last_stream:
                raise _ConnectionError(PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            return  # a stream we answered or reset: its credit is granted on the connection
        if flags & PADDED:
            payload = _unpad(payload)
        stream.body += payload
        if len(stream.body) > self._max_message + 5:
            # Answered at once, and the rest of the message refused (RST_STREAM NO_ERROR).
            self._refuse(
                stream,
                RESOURCE_EXHAUSTED,
                f"received message larger than max ({len(stream.body) - 5} vs. "
                f"{self._max_message}); --max-body-bytes bounds it",
            )
            self._out.append(_frame(RST_STREAM, 0, sid, struct.pack(">I", NO_ERROR)))
            return
        if flags & END_STREAM:
            stream.closed_remote = True
            self._dispatch(stream)
        else:
            stream.unacknowledged += length
            if stream.unacknowledged >= _STREAM_WINDOW // 2:
                grant = struct.pack(">I", stream.unacknowledged)
                self._out.append(_frame(WINDOW_UPDATE, 0, sid, grant))
                stream.unacknowledged = 0

    def _on_headers(self, sid: int, flags: int, payload: bytes) -> None:
        if sid == 0 or sid % 2 == 0:
            raise _ConnectionError(PROTOCOL_ERROR, f"HEADERS on stream {sid}")
        if flags & PADDED:
            payload = _unpad(payload)
        if flags & PRIORITY_FLAG:
            payload = payload[5:]
        if flags & END_HEADERS:
            self._on_header_block(sid, flags, payload)
        else:
            self._headers_open = (sid, flags, bytearray(payload))

    def _on_continuation(self, sid: int, flags: int, payload: bytes) -> None:
        if self._headers_open is None or self._headers_open[0] != sid:
            raise _ConnectionError(PROTOCOL_ERROR, "CONTINUATION without HEADERS")
        self._headers_open[2].extend(payload)
        if len(self._headers_open[2]) > _MAX_HEADER_LIST:
            raise _ConnectionError(PROTOCOL_ERROR, "header block too large")
        if flags & END_HEADERS:
            _, first_flags, block = self._headers_open
            self._headers_open = None
            self._on_header_block(sid, first_flags, bytes(block))

    def _decode(self, block: bytes) -> dict[bytes, bytes]:
        """The headers of a block. Every block is decoded, even one we refuse: the dynamic
        table must stay in step with the client's.

        A client sends the same block for every call once its dynamic table holds what it
        repeats, and a block that leaves the table as it was means the same each time until
        the table changes: those are remembered, and forgotten when a block changes the table.
        """
        headers = self._header_cache.get(block)
        if headers is not None:
            return headers
        try:
            headers = dict(self._decoder.decode(block, raw=True))
        except HPACKError as exc:
            raise _ConnectionError(COMPRESSION_ERROR, f"bad header block: {exc}") from None
        if _changes_table(block):
            self._header_cache.clear()
        elif len(self._header_cache) < _HEADER_CACHE:
            self._header_cache[block] = headers
        return headers

    def _on_header_block(self, sid: int, flags: int, block: bytes) -> None:
        headers = self._decode(block)
        stream = self._streams.get(sid)
        if stream is not None:  # trailers from the client end its half of the stream
            stream.closed_remote = True
            self._dispatch(stream)
            return
        if sid <= self._last_stream:
            self._out.append(_frame(RST_STREAM, 0, sid, struct.pack(">I", STREAM_CLOSED)))
            return
        self._last_stream = sid
        if self.going_away or len(self._streams) >= _MAX_STREAMS:
            self._out.append(_frame(RST_STREAM, 0, sid, struct.pack(">I", REFUSED_STREAM)))
            return
        stream = _Stream(sid, self._peer_window)
        stream.headers = headers
        self._streams[sid] = stream
        if flags & END_STREAM:
            stream.closed_remote = True
            self._dispatch(stream)

    def _on_settings(self, sid: int, flags: int, payload: bytes) -> None:
        if sid != 0 or len(payload) % 6:
            raise _ConnectionError(FRAME_SIZE_ERROR, "malformed SETTINGS")
        if flags & ACK:
            return
        for i in range(0, len(payload), 6):
            key, value = struct.unpack_from(">HI", payload, i)
            if key == INITIAL_WINDOW_SIZE:
                if value > _MAX_WINDOW:
                    raise _ConnectionError(FLOW_CONTROL_ERROR, "window over 2^31-1")
                delta = value - self._peer_window
                self._peer_window = value
                for stream in self._streams.values():
                    stream.window += delta
            elif key == MAX_FRAME_SIZE:
                self._peer_frame = value
            # HEADER_TABLE_SIZE concerns an encoder's dynamic table; ours uses none.
        self._out.append(_frame(SETTINGS, ACK, 0))
        self._send_pending()

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(FRAME_SIZE_ERROR, "malformed WINDOW_UPDATE")
        increment = struct.unpack(">I", payload)[0] & 0x7FFFFFFF
        if sid == 0:
            self._send_window += increment
        elif (stream := self._streams.get(sid)) is not None:
            stream.window += increment
        self._send_pending()

    def _dispatch(self, stream: _Stream) -> None:
        if stream.answered:
            return
        body = stream.body
        length = int.from_bytes(body[1:5], "big") if len(body) >= 5 else -1
        if len(body) != 5 + length:
            self._refuse(stream, INTERNAL, "a unary call carries exactly one request message")
        elif not body[0]:
            self._calls_this_turn += 1
            self._handler(Call(self, stream, bytes(body[5:])))
        else:
            self._decompress(stream, bytes(body[5:]))

    def _decompress(self, stream: _Stream, data: bytes) -> None:
        """A message compressed with the call's grpc-encoding (gzip or deflate)."""
        encoding = stream.headers.get(b"grpc-encoding", b"identity")
        wbits = _ZLIB_WBITS.get(encoding)
        if wbits is None:
            self._refuse(
                stream,
                UNIMPLEMENTED,
                f"message compressed with {encoding.decode(errors='replace')!r}; "
                "this server reads gzip, deflate or uncompressed messages",
            )
            return
        inflate = zlib.decompressobj(wbits)
        try:
            message = inflate.decompress(data, self._max_message + 1)
        except zlib.error as exc:
            self._refuse(stream, INTERNAL, f"cannot decompress the message ({exc})")
            return
        if len(message) > self._max_message or inflate.unconsumed_tail:
            self._refuse(
                stream,
                RESOURCE_EXHAUSTED,
                f"received message larger than max once decompressed (over "
                f"{self._max_message}); --max-body-bytes bounds it",
            )
            return
        self._calls_this_turn += 1
        self._handler(Call(self, stream, message))

    def _refuse(self, stream: _Stream, status: int, text: str) -> None:
        """A call refused before its message is read: the handler answers it (and counts it)."""
        self._handler(Call(self, stream, None, refusal=(status, text)))

    # --- frames out --------------------------------------------------------------------------

    def send_answer(self, stream: _Stream, message: bytes) -> None:
        if stream.answered or self.closed:
            return
        stream.answered = True
        data = len(message).to_bytes(5, "big") + message  # flag 0: not compressed
        out = self._out
        out.append(_frame(HEADERS, END_HEADERS, stream.id, _RESPONSE_HEADERS))
        n = len(data)
        if n <= stream.window and n <= self._send_window and n <= self._peer_frame:
            stream.window -= n
            self._send_window -= n
            out.append(_frame(DATA, 0, stream.id, data))
            out.append(_frame(HEADERS, END_HEADERS | END_STREAM, stream.id, _OK_TRAILERS))
            self._finish(stream)
        else:
            stream.pending = [(data, _OK_TRAILERS)]
            self._send_pending()
        self._schedule_flush()

    def send_failure(self, stream: _Stream, status: int, text: str) -> None:
        if stream.answered or self.closed:
            return
        stream.answered = True
        block = _RESPONSE_HEADERS + encode_status_trailers(status, text)
        self._out.append(_frame(HEADERS, END_HEADERS | END_STREAM, stream.id, block))
        self._finish(stream)
        self._schedule_flush()

    def _finish(self, stream: _Stream) -> None:
        # An over-long message is answered before its END_STREAM: later DATA on the stream is
        # then ignored (its id is below _last_stream).
        self._streams.pop(stream.id, None)

    def _send_pending(self) -> None:
        """Send answers held back for want of credit, as far as the windows allow."""
        for stream in list(self._streams.values()):
            if not stream.pending:
                continue
            data, trailers = stream.pending[0]
            while data:
                n = min(len(data), stream.window, self._send_window, self._peer_frame)
                if n <= 0:
                    break
                self._out.append(_frame(DATA, 0, stream.id, data[:n]))
                stream.window -= n
                self._send_window -= n
                data = data[n:]
            if data:
                stream.pending[0] = (data, trailers)
                continue
            self._out.append(_frame(HEADERS, END_HEADERS | END_STREAM, stream.id, trailers))
            stream.pending = None
            self._finish(stream)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._in_callback or self._flush_scheduled or not self._out:
            return  # data_received flushes when it returns
        self._flush_scheduled = True
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self._transport is not None and not self.closed:
            self._transport.write(b"".join(self._out))
        self._out.clear()
        if self.going_away and not self._streams and self._transport is not None:
            self._transport.close()

    def _go_away(self, code: int, reason: str) -> None:
        log.info("closing an HTTP/2 connection: %s", reason)
        debug = reason.encode()[:256]
        self._out.append(_frame(GOAWAY, 0, 0, struct.pack(">II", self._last_stream, code) + debug))
        self._flush()
        if self._transport is not None:
            self._transport.close()
        self.closed = True

    def shut_down(self) -> None:
        """Refuse new calls; close once the open ones are answered."""
        self.going_away = True
        self._out.append(_frame(GOAWAY, 0, 0, struct.pack(">II", self._last_stream, NO_ERROR)))
        self._flush()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.close()


class _ConnectionError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _unpad(payload: bytes) -> bytes:
    if not payload or payload[0] >= len(payload):
        raise _ConnectionError(PROTOCOL_ERROR, "bad padding")
    return payload[1 : len(payload) - payload[0]]


class GrpcServer:
    """An h2c listener passing each complete unary call to `handler`."""

    def __init__(self, handler: Handler, max_message_bytes: int) -> None:
        self.handler = handler
        self.max_message_bytes = max_message_bytes
        self.connections: set[_Connection] = set()
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (0 picks a free port); returns the port. OSError if taken."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, reuse_address=True
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self, grace: float | None = None) -> None:
        """Stop listening; let open calls finish for up to `grace` seconds, then close."""
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.shut_down()
        if grace:
            deadline = asyncio.get_running_loop().time() + grace
            while self.connections and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
        for connection in list(self.connections):
            connection.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
