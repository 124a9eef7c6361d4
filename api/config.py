"""Options of `streamkm api` (DESIGN.md §8), built once from flags and `STREAMKM_*`."""

from __future__ import annotations

from dataclasses import dataclass

from model.options import (
    KafkaOptions,
    check_choice,
    check_port,
    check_positive,
    fail,
    is_topic_name,
    opt,
)
from model.topics import snapshots_topic, updates_topic

__all__ = ["ApiOptions"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class ApiOptions(KafkaOptions):
    """Everything `streamkm api` needs, validated on construction."""

    model: str = opt("streamkm", "model to serve; read from <model>.snapshots and <model>.updates")
    http_host: str = opt("127.0.0.1", "address of the REST endpoint (Open Inference Protocol v2)")
    http_port: int = opt(8080, "port of the REST endpoint (0 picks a free port)")
    grpc_port: int = opt(8081, "port of the gRPC endpoint on --http-host (0 turns gRPC off)")
    metrics_host: str = opt("127.0.0.1", "address of the /metrics endpoint")
    metrics_port: int = opt(9101, "port of the /metrics endpoint (0 picks a free port)")
    api_token: str | None = opt(
        None,
        "bearer token every request but the health checks must carry "
        "(prefer STREAMKM_API_TOKEN: flags show in ps)",
        secret=True,
    )
    max_batch_rows: int = opt(4096, "most rows scored by one kernel call (dynamic batching)")
    max_wait_ms: float = opt(
        0.0, "extra wait in ms for more rows before a kernel call (0: score what has arrived)"
    )
    max_queue_rows: int = opt(
        65536, "most rows waiting to be scored; beyond, requests are shed at once with 503"
    )
    max_body_bytes: int = opt(16 * 1024 * 1024, "largest request body accepted, in bytes")
    log_level: str = opt("INFO", "DEBUG, INFO, WARNING, ERROR or CRITICAL")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not is_topic_name(self.model):
            raise fail("model", f"{self.model!r} is not a valid name; use 1-200 of [A-Za-z0-9._-]")
        check_port("http_port", self.http_port, allow_zero=True)
        check_port("grpc_port", self.grpc_port, allow_zero=True)
        check_port("metrics_port", self.metrics_port, allow_zero=True)
        check_positive(self, "max_batch_rows", "max_queue_rows", "max_body_bytes")
        check_positive(self, "max_wait_ms", allow_zero=True)
        if self.api_token is not None and not self.api_token.strip():
            raise fail("api_token", "is empty; unset it to serve without a token")
        check_choice("log_level", self.log_level, LOG_LEVELS)

    @property
    def updates_topic(self) -> str:
        """The model's updates log."""
        return updates_topic(self.model)

    @property
    def snapshots_topic(self) -> str:
        """The model's compacted snapshots topic."""
        return snapshots_topic(self.model)
