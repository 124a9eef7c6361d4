"""The HTTP endpoint beside the service: /metrics, /healthz and /readyz."""

from __future__ import annotations

import errno
import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from metrics.api_metrics import ApiMetrics
from metrics.service_metrics import ServiceMetrics

logger = logging.getLogger(__name__)

Readiness = Callable[[], tuple[bool, str]]
"""Returns (ready, reason); the reason is the /readyz body. Called on the server thread."""

_TEXT = "text/plain; charset=utf-8"
_POLL_INTERVAL_S = 0.05


class MetricsPortInUseError(OSError):
    """The metrics port is taken by another process."""


class MetricsServer:
    """Serves /metrics, /healthz and /readyz from a daemon thread.

    A thread rather than the service's event loop, so a slow scrape never stalls the data path
    and a busy loop never fails a health check; scrapes read the histograms under their locks.

    - ``GET /metrics``: the Prometheus text format of ``metrics``.
    - ``GET /healthz``: 200 ``ok`` while the process serves at all.
    - ``GET /readyz``: 200 with the reason while ``ready()`` returns ``(True, reason)``, else 503
      with the reason (or the error the callback raised). ``ready`` must be cheap and safe to
      call from another thread, e.g. reading a few attributes the service sets.
    - ``GET <path>`` for each entry of ``documents``: 200 with the JSON bytes its callable
      returns (debug views such as ``/model``), 500 if it raises.
    - anything else: 404.
    """

    def __init__(
        self,
        metrics: ServiceMetrics | ApiMetrics,
        host: str,
        port: int,
        ready: Readiness | None = None,
        documents: Mapping[str, Callable[[], bytes]] | None = None,
    ) -> None:
        self._metrics = metrics
        self._documents = dict(documents or {})
        self._host = host
        self._requested_port = port
        self._ready: Readiness = ready if ready is not None else _always_ready
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind the port and serve in a daemon thread; raise OSError naming host:port on failure."""
        if self._server is not None:
            raise RuntimeError("MetricsServer is already started")
        server_class = _HTTPServer6 if ":" in self._host else _HTTPServer
        where = f"{self._host}:{self._requested_port}"
        try:
            server = server_class((self._host, self._requested_port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise MetricsPortInUseError(
                    exc.errno,
                    f"metrics port {where} is already in use; choose another with --metrics-port",
                ) from exc
            raise OSError(exc.errno, f"cannot serve metrics on {where}: {exc.strerror}") from exc
        server.metrics = self._metrics
        server.ready = self._ready
        server.documents = self._documents
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            # stop() waits up to one poll interval; the default 0.5 s slows every shutdown.
            kwargs={"poll_interval": _POLL_INTERVAL_S},
            name=f"metrics-http-{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("serving metrics at %s", self.url)

    def stop(self) -> None:
        """Stop serving and release the port; does nothing when not started."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()
        self._server = self._thread = None

    @property
    def port(self) -> int:
        """The bound port (the one the OS picked when 0 was asked for)."""
        if self._server is None:
            raise RuntimeError("MetricsServer is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The URL of the /metrics endpoint."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/metrics"

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _always_ready() -> tuple[bool, str]:
    return True, "ready"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    metrics: ServiceMetrics | ApiMetrics
    ready: Readiness
    documents: dict[str, Callable[[], bytes]]

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, a DNS round trip we never use.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "streamkm"
    # A client that opens a connection and sends nothing must not hold a thread forever.
    timeout = 10

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, *, send_body: bool) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            try:
                status, content_type, body = (
                    HTTPStatus.OK,
                    CONTENT_TYPE_LATEST,
                    self.server.metrics.render(),
                )
            except Exception:
                logger.exception("rendering metrics failed")
                status, content_type, body = (
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    _TEXT,
                    b"rendering metrics failed; see the service log\n",
                )
        elif path == "/healthz":
            status, content_type, body = HTTPStatus.OK, _TEXT, b"ok\n"
        elif path == "/readyz":
            ok, reason = self._readiness()
            status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
            content_type, body = _TEXT, f"{reason}\n".encode()
        elif path in self.server.documents:
            try:
                status, content_type, body = (
                    HTTPStatus.OK,
                    "application/json",
                    self.server.documents[path](),
                )
            except Exception:
                logger.exception("rendering %s failed", path)
                status, content_type, body = (
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    _TEXT,
                    f"rendering {path} failed; see the service log\n".encode(),
                )
        else:
            status, content_type, body = HTTPStatus.NOT_FOUND, _TEXT, b"not found\n"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _readiness(self) -> tuple[bool, str]:
        try:
            ok, reason = self.server.ready()
        except Exception as exc:
            # A broken check means not ready, said plainly, rather than a dropped connection.
            logger.exception("readiness check failed")
            return False, f"readiness check failed: {exc!r}"
        return bool(ok), reason

    def log_message(self, format: str, *args: object) -> None:
        # The default writes every scrape to stderr.
        logger.debug("%s - %s", self.address_string(), format % args)
