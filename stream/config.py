"""Settings of every command, built once from the environment and the command line (DESIGN.md §4).

Each option `--some-option` also reads `STREAMKM_SOME_OPTION`; a command-line flag wins over the
environment, which wins over the default. This is the only module that reads `os.environ`.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from model.fields import FieldSpec, parse_fields, parse_path
from model.options import (
    ENV_PREFIX,
    ConfigError,
    KafkaOptions,
    check_bootstrap,
    check_choice,
    check_model_size,
    check_port,
    check_positive,
    env_name,
    fail,
    flag_name,
    is_topic_name,
    opt,
)
from model.topics import snapshots_topic, updates_topic

__all__ = [
    "ENV_PREFIX",
    "BrokerOptions",
    "ConfigError",
    "DemoOptions",
    "ExportOptions",
    "ImportOptions",
    "KafkaOptions",
    "ModelOptions",
    "ProduceOptions",
    "Settings",
    "ShowOptions",
    "WarmupOptions",
    "env_name",
    "options_from_sources",
    "parse_value",
]

INPUT_FORMATS = ("json", "f32")
SCALINGS = ("none", "standard")
SCENARIOS = ("blobs", "embeddings", "transactions")
SCENARIO_HELP = (
    "blobs (feature vectors), embeddings (unit vectors clustered around topic directions, as\n"
    "sentence embeddings are; use with --dim 384 or 768) or transactions (card payments with\n"
    "named fields)"
)
COMPRESSION_TYPES = ("none", "gzip", "snappy", "lz4", "zstd")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings(KafkaOptions):
    """Everything `streamkm serve` needs, validated on construction."""

    input_topic: str = opt("features", "topic of feature records")
    output_topic: str = opt("labels", "topic the cluster labels go to")
    dlq_topic: str | None = opt(None, "dead-letter topic (default: <input-topic>.dlq)")
    group: str = opt("streamkm", "Kafka consumer group")
    model: str = opt("streamkm", "model name; its log is <model>.updates and <model>.snapshots")
    k: int = opt(8, "number of clusters")
    dim: int | None = opt(None, "feature dimension (default: learned from the first record)")
    input_format: str = opt("json", "input value format: json or f32")
    fields: str | None = opt(
        None,
        "build features from named JSON fields: PATH[:TRANSFORM],... "
        "(dotted paths; booleans are 1/0; transforms log1p, log, sqrt)",
    )
    id_field: str = opt("id", "dotted path of the id echoed in each output record")
    scale: str = opt("none", "feature scaling inside the model: none or standard")
    compression_type: str = opt(
        "none", "codec of the records streamkm writes: none, gzip, snappy, lz4 or zstd"
    )
    half_life: float | None = opt(None, "records after which old data weighs half (default: never)")
    refit_every: int = opt(2048, "publish model statistics every this many records")
    refit_interval: float = opt(1.0, "... or at least every this many seconds")
    max_batch: int = opt(4096, "most records fetched and labeled at once")
    warmup: int = opt(1024, "records sampled for the k-means++ initialisation")
    max_pending: int = opt(100_000, "most records held while waiting for the first model")
    max_staleness: int = opt(
        2048,
        "label a record only with a model that includes this instance's statistics up to "
        "this many records before it (paces backlog drains)",
    )
    snapshot_every: int = opt(500, "write a model snapshot every this many model versions")
    anomaly_threshold: float = opt(3.0, "score above which a record counts as an anomaly")
    frozen: bool = opt(False, "label with the current model without updating it")
    metrics_host: str = opt("127.0.0.1", "address of the /metrics endpoint")
    metrics_port: int = opt(9100, "port of the /metrics endpoint (0 picks a free port)")
    session_timeout: float = opt(
        10.0, "consumer-group session timeout in seconds (failure detection, rebalance speed)"
    )
    shutdown_timeout: float = opt(
        20.0,
        "seconds after SIGTERM to drain, commit and snapshot before exiting anyway (exit 1; "
        "records not yet committed are labeled again by the partitions' next owner)",
    )
    log_level: str = opt("INFO", "DEBUG, INFO, WARNING, ERROR or CRITICAL")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("input_topic", "output_topic", "dlq_topic", "group", "model"):
            value = getattr(self, name)
            if value is not None and not is_topic_name(value):
                raise fail(name, f"{value!r} is not a valid name; use 1-200 of [A-Za-z0-9._-]")
        if self.dlq == self.input_topic or self.output_topic == self.input_topic:
            raise fail("output_topic", "output and dead-letter topics must differ from input")
        check_choice("input_format", self.input_format, INPUT_FORMATS)
        check_choice("scale", self.scale, SCALINGS)
        check_choice("compression_type", self.compression_type, COMPRESSION_TYPES)
        self._check_fields()
        check_positive(self, "k", "dim", "half_life", "refit_every", "refit_interval")
        check_model_size(self.k, self.feature_dim)
        check_positive(self, "max_batch", "warmup", "max_pending")
        check_positive(self, "max_staleness")
        check_positive(self, "session_timeout", "snapshot_every", "shutdown_timeout")
        check_positive(self, "anomaly_threshold")
        if self.warmup < self.k:
            raise fail("warmup", f"must be at least k={self.k} records, got {self.warmup}")
        if self.max_pending < self.warmup:
            raise fail(
                "max_pending", f"must be at least warmup={self.warmup}, got {self.max_pending}"
            )
        check_port("metrics_port", self.metrics_port, allow_zero=True)
        check_choice("log_level", self.log_level, LOG_LEVELS)

    def _check_fields(self) -> None:
        try:
            parse_path(self.id_field)
        except ValueError as e:
            raise fail("id_field", str(e)) from None
        if self.fields is None:
            return
        if self.input_format != "json":
            raise fail("fields", f"named fields need --input-format json, not {self.input_format}")
        try:
            specs = parse_fields(self.fields)
        except ValueError as e:
            raise fail("fields", str(e)) from None
        if self.dim is not None and self.dim != len(specs):
            raise fail(
                "dim",
                f"is {self.dim}, but --fields names {len(specs)} fields; drop --dim or fix it",
            )

    @property
    def field_specs(self) -> tuple[FieldSpec, ...] | None:
        """The parsed `--fields` (None: events carry a `features` array or raw f32)."""
        return None if self.fields is None else parse_fields(self.fields)

    @property
    def feature_dim(self) -> int | None:
        """The dimension fixed by the settings: `--dim`, or the number of `--fields`."""
        specs = self.field_specs
        return self.dim if specs is None else len(specs)

    @property
    def dlq(self) -> str:
        """The dead-letter topic: `--dlq-topic`, or `<input-topic>.dlq`."""
        return self.dlq_topic or f"{self.input_topic}.dlq"

    @property
    def updates_topic(self) -> str:
        """The one-partition log of model updates shared by all instances of the model."""
        return updates_topic(self.model)

    @property
    def snapshots_topic(self) -> str:
        """The compacted topic of model snapshots."""
        return snapshots_topic(self.model)


@dataclass(frozen=True)
class ProduceOptions:
    """Settings of `streamkm produce`: synthetic Gaussian blobs with optional drift."""

    bootstrap: str = opt("localhost:9092", "Kafka bootstrap servers, host:port[,host:port]")
    topic: str = opt("features", "topic to write to")
    scenario: str = opt("blobs", SCENARIO_HELP)
    count: int = opt(100_000, "records to produce")
    rate: float = opt(0.0, "records per second (0: as fast as possible)")
    dim: int = opt(8, "feature dimension")
    k: int = opt(8, "number of blobs")
    seed: int = opt(0, "random seed")
    drift: float = opt(0.0, "how far the blob centres wander per 10,000 records")
    invalid_fraction: float = opt(0.0, "fraction of deliberately malformed records")
    format: str = opt("json", "value format: json or f32")
    partitions: int = opt(4, "partitions of the topic when it is created")

    def __post_init__(self) -> None:
        check_bootstrap(self.bootstrap)
        if not is_topic_name(self.topic):
            raise fail("topic", f"{self.topic!r} is not a valid name; use [A-Za-z0-9._-]")
        check_positive(self, "dim", "k", "partitions")
        check_positive(self, "count", "rate", "drift", allow_zero=True)
        _check_fraction("invalid_fraction", self.invalid_fraction)
        check_choice("format", self.format, INPUT_FORMATS)
        check_choice("scenario", self.scenario, SCENARIOS)


@dataclass(frozen=True)
class DemoOptions:
    """Settings of `streamkm demo`: embedded broker, producer and service in one process."""

    scenario: str = opt("blobs", SCENARIO_HELP)
    count: int = opt(200_000, "records to produce")
    rate: float = opt(20_000.0, "records per second (0: as fast as possible)")
    k: int = opt(8, "number of clusters (and of generated blobs)")
    dim: int = opt(8, "feature dimension")
    partitions: int = opt(4, "partitions of the input topic")
    seed: int = opt(0, "random seed")
    drift: float = opt(0.0, "how far the blob centres wander per 10,000 records")
    invalid_fraction: float = opt(0.001, "fraction of deliberately malformed records")
    half_life: float | None = opt(None, "records after which old data weighs half (default: never)")
    input_format: str = opt("json", "value format: json or f32")
    broker_port: int = opt(0, "port of the embedded broker (0 picks a free port)")
    metrics_host: str = opt("127.0.0.1", "address of the /metrics endpoint")
    metrics_port: int = opt(9100, "port of the /metrics endpoint (0 picks a free port)")

    def __post_init__(self) -> None:
        check_positive(self, "k", "dim", "partitions", "half_life")
        check_model_size(self.k, self.dim)
        check_positive(self, "count", "rate", "drift", allow_zero=True)
        _check_fraction("invalid_fraction", self.invalid_fraction)
        check_choice("input_format", self.input_format, INPUT_FORMATS)
        check_choice("scenario", self.scenario, SCENARIOS)
        check_port("broker_port", self.broker_port, allow_zero=True)
        check_port("metrics_port", self.metrics_port, allow_zero=True)


@dataclass(frozen=True)
class WarmupOptions:
    """Settings of `streamkm warmup`: none; it compiles every kernel into Numba's cache."""


@dataclass(frozen=True)
class BrokerOptions:
    """Settings of `streamkm broker`: the embedded broker in the foreground."""

    host: str = opt("127.0.0.1", "address to listen on")
    port: int = opt(9092, "port to listen on (0 picks a free port)")

    def __post_init__(self) -> None:
        check_port("port", self.port, allow_zero=True)


@dataclass(frozen=True)
class ModelOptions(KafkaOptions):
    """Settings shared by the `streamkm model` commands: where the model's topics live."""

    model: str = opt("streamkm", "model name; its log is <model>.updates and <model>.snapshots")

    def kafka_settings(self) -> Settings:
        """The `serve` settings for the same cluster and model (topic names, client arguments)."""
        shared = {f.name for f in dataclasses.fields(KafkaOptions)} | {"model"}
        return Settings(**{name: getattr(self, name) for name in shared})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.kafka_settings()  # validates the model name exactly as `serve` does


@dataclass(frozen=True)
class ImportOptions(ModelOptions):
    """Settings of `streamkm model import`: publish centres from a file as the model."""

    file: str = opt("", "centres to import: .npy, .json or .csv", positional=True)
    replace: bool = opt(False, "swap the centres of a model that exists (a `replace` record)")
    half_life: float | None = opt(
        None,
        "records after which old data weighs half (default: never; a replace keeps the model's)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "half_life")


@dataclass(frozen=True)
class ShowOptions(ModelOptions):
    """Settings of `streamkm model show`: print the current model."""

    json: bool = opt(False, "print JSON with exact floats instead of a table")


@dataclass(frozen=True)
class ExportOptions(ModelOptions):
    """Settings of `streamkm model export`: write the current centres to a file."""

    file: str = opt("", "where to write the centres: .npy or .json", positional=True)


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise fail(name, f"must be between 0 and 1, got {value}")


# --- building options from the environment and the command line ----------------------------

T = TypeVar("T")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def field_type(cls: type, name: str) -> tuple[type, bool]:
    """The scalar type of a settings field and whether it may be None."""
    hint = typing.get_type_hints(cls)[name]
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        (base,) = [a for a in args if a is not type(None)]
        return base, True
    return hint, False


def parse_value(text: str, kind: type, optional: bool) -> Any:
    """Turn the text of a flag or environment variable into a field value; ValueError if it can't."""
    stripped = text.strip()
    if optional and stripped.lower() in ("", "none"):
        return None
    if kind is bool:
        if stripped.lower() in _TRUE:
            return True
        if stripped.lower() in _FALSE:
            return False
        raise ValueError(f"{text!r} is not a boolean; use true or false")
    if kind is int:
        try:
            return int(stripped)
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
    if kind is float:
        try:
            value = float(stripped)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{text!r} is not a finite number")
        return value
    return text


def options_from_sources(
    cls: type[T], given: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> T:
    """Build `cls` from flags actually given (None: not given), then STREAMKM_* variables, then defaults.

    Raises ConfigError naming the flag or the environment variable at fault.
    """
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if given.get(f.name) is not None:
            values[f.name] = given[f.name]
            continue
        name = env_name(f)
        if name in env:
            kind, optional = field_type(cls, f.name)
            try:
                values[f.name] = parse_value(env[name], kind, optional)
            except ValueError as e:
                shown = "(hidden)" if f.metadata.get("secret") else str(e)
                raise ConfigError(f"{name}: {shown}") from None
    try:
        return cls(**values)
    except ConfigError as e:
        raise ConfigError(_name_env_source(str(e), cls, given, env)) from None


def _name_env_source(
    message: str, cls: type, given: Mapping[str, Any], env: Mapping[str, str]
) -> str:
    """Point at the environment variable when the bad value came from there, not from a flag."""
    for f in dataclasses.fields(cls):
        flag = flag_name(f)
        if message.startswith(flag + ":") and given.get(f.name) is None and env_name(f) in env:
            return f"{message} (from {env_name(f)})"
    return message
