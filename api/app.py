"""`streamkm api`: the scorer, the REST endpoint, gRPC when asked, and the metrics endpoint."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

from api.config import ApiOptions
from api.grpc import GrpcServer, serve_grpc
from api.http import HttpServer
from api.scoring import Scorer
from metrics.api_metrics import ApiMetrics
from metrics.server import MetricsPortInUseError, MetricsServer
from model.topics import BrokerUnreachable, TopicError

__all__ = ["ApiApp", "run_api"]

log = logging.getLogger("streamkm.api")


class ApiApp:
    """Everything `streamkm api` runs, started and stopped together."""

    def __init__(self, options: ApiOptions) -> None:
        self.options = options
        self.metrics = ApiMetrics()
        self.scorer = Scorer(options, self.metrics)
        self.http = HttpServer(self.scorer, options, self.metrics)
        self.metrics_server = MetricsServer(
            self.metrics, options.metrics_host, options.metrics_port, ready=self._readiness
        )
        self._grpc: GrpcServer | None = None

    def _readiness(self) -> tuple[bool, str]:
        if self.scorer.ready():
            return True, f"serving model {self.scorer.model!r} version {self.scorer.version()}"
        return False, f"model {self.scorer.model!r} not loaded yet"

    async def start(self) -> None:
        """Bind the ports first (a port in use fails at once), then reach the model."""
        try:
            self.metrics_server.start()
            await self.http.start()
            if self.options.grpc_port:
                self._grpc = await serve_grpc(self.scorer, self.options, self.metrics)
            await self.scorer.start()
        except BaseException:
            await self.stop()
            raise
        log.info(
            "REST on http://%s:%d, metrics at %s",
            self.options.http_host,
            self.http.port,
            self.metrics_server.url,
        )

    async def stop(self) -> None:
        """Stop serving: REST and gRPC first, then the model follower and the metrics."""
        await self.http.close()
        if self._grpc is not None:
            await self._grpc.stop(1.0)
            self._grpc = None
        await self.scorer.stop()
        self.metrics_server.stop()


async def serve_api(options: ApiOptions) -> None:
    """Run until SIGTERM or SIGINT."""
    app = ApiApp(options)
    await app.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
        log.info("stopping")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await app.stop()


def run_api(options: ApiOptions) -> int:
    """Entry point of `streamkm api`: 0 after SIGTERM/SIGINT, 2 on a setup error."""
    logging.basicConfig(
        level=options.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    log.info("starting with %r", options)
    from engine import warmup

    warmup()  # compile (or load) the kernels before the first request
    try:
        _run(serve_api(options))
    except (BrokerUnreachable, MetricsPortInUseError, TopicError, OSError, RuntimeError) as e:
        print(f"streamkm api: error: {e}", file=sys.stderr)
        return 2
    return 0


def _run(main: Any) -> None:
    """asyncio.run, on uvloop when it is installed (a faster loop for many small requests)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
