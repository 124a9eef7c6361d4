"""Settings of every command, built once from the environment and the command line (DESIGN.md §4).

Each option `--some-option` also reads `STREAMKM_SOME_OPTION`; a command-line flag wins over the
environment, which wins over the default. This is the only module that reads `os.environ`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import ssl
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .fields import FieldSpec, parse_fields, parse_path

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
    "env_name",
    "options_from_sources",
    "parse_value",
]

ENV_PREFIX = "STREAMKM_"
INPUT_FORMATS = ("json", "f32")
SCALINGS = ("none", "standard")
SCENARIOS = ("blobs", "transactions")
COMPRESSION_TYPES = ("none", "gzip", "snappy", "lz4", "zstd")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# The largest model streamkm serves. Every model message then fits in 19 records of the updates
# log (docs/architecture.md, "Large models"); larger ones are refused rather than half served.
MAX_K = 1024
MAX_DIM = 2048

_BOOTSTRAP_ENTRY = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


class ConfigError(ValueError):
    """An option has a value the program cannot use; the message names the option."""


def _opt(
    default: Any,
    help: str,
    *,
    secret: bool = False,
    flag: str | None = None,
    positional: bool = False,
) -> Any:
    """A settings field whose help text and secrecy travel with it to the command line."""
    meta = {"help": help, "secret": secret, "flag": flag, "positional": positional}
    return field(default=default, repr=not secret, metadata=meta)


def flag_name(f: dataclasses.Field[Any]) -> str:
    """The command-line flag of a settings field: `input_topic` -> `--input-topic`."""
    return "--" + (f.metadata.get("flag") or f.name.replace("_", "-"))


def env_name(f: dataclasses.Field[Any]) -> str:
    """The environment variable of a settings field: `--input-topic` -> `STREAMKM_INPUT_TOPIC`."""
    return ENV_PREFIX + flag_name(f)[2:].upper().replace("-", "_")


def _fail(f: str, message: str) -> ConfigError:
    return ConfigError(f"--{f.replace('_', '-')}: {message}")


def _check_bootstrap(value: str) -> None:
    entries = [e.strip() for e in value.split(",")]
    for entry in entries:
        m = _BOOTSTRAP_ENTRY.match(entry)
        if m is None or not 1 <= int(m.group(2)) <= 65535:
            raise _fail(
                "bootstrap",
                f"{entry!r} is not host:port; expected host:port[,host:port...] "
                "with a port in 1..65535, e.g. localhost:9092",
            )


def _check_positive(obj: Any, *names: str, allow_zero: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is None:
            continue
        if value < 0 or (value == 0 and not allow_zero) or value != value:
            bound = ">= 0" if allow_zero else "> 0"
            raise _fail(name, f"must be {bound}, got {value}")


def _check_port(name: str, value: int, *, allow_zero: bool) -> None:
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        hint = " (0 picks a free port)" if allow_zero else ""
        raise _fail(name, f"must be a TCP port in {low}..65535{hint}, got {value}")


def _check_model_size(k: int, dim: int | None) -> None:
    for name, value, most in (("k", k, MAX_K), ("dim", dim, MAX_DIM)):
        if value is not None and value > most:
            raise _fail(
                name,
                f"must be at most {most}, got {value} (streamkm serves models of up to "
                f"k={MAX_K} clusters of d={MAX_DIM} features)",
            )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _fail(name, f"{value!r} is not one of {', '.join(choices)}")


@dataclass(frozen=True)
class KafkaOptions:
    """Where the Kafka cluster is and how to reach it: declared once, shared by `serve`,
    `model` and `api`."""

    bootstrap: str = _opt("localhost:9092", "Kafka bootstrap servers, host:port[,host:port]")
    connect_timeout: float = _opt(15.0, "seconds to wait for the Kafka cluster")
    security_protocol: str = _opt("PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    sasl_mechanism: str | None = _opt(None, "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
    sasl_username: str | None = _opt(None, "SASL user name")
    sasl_password: str | None = _opt(
        None, "SASL password (prefer STREAMKM_SASL_PASSWORD: flags show in ps)", secret=True
    )
    ssl_cafile: str | None = _opt(None, "CA bundle to verify the brokers (PEM)")
    ssl_certfile: str | None = _opt(None, "client certificate (PEM)")
    ssl_keyfile: str | None = _opt(None, "client private key (PEM)")
    ssl_password: str | None = _opt(None, "password of the client private key", secret=True)

    def __post_init__(self) -> None:
        _check_bootstrap(self.bootstrap)
        _check_positive(self, "connect_timeout")
        self._check_security()

    def _check_security(self) -> None:
        _check_choice("security_protocol", self.security_protocol, SECURITY_PROTOCOLS)
        uses_sasl = self.security_protocol.startswith("SASL_")
        uses_ssl = self.security_protocol.endswith("SSL")
        if uses_sasl:
            if self.sasl_mechanism is None:
                raise _fail("sasl_mechanism", f"required with {self.security_protocol}")
            _check_choice("sasl_mechanism", self.sasl_mechanism, SASL_MECHANISMS)
            for name in ("sasl_username", "sasl_password"):
                if not getattr(self, name):
                    raise _fail(name, f"required with {self.security_protocol}")
        else:
            for name in ("sasl_mechanism", "sasl_username", "sasl_password"):
                if getattr(self, name) is not None:
                    raise _fail(name, "set, but --security-protocol is not SASL_*")
        if not uses_ssl:
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"):
                if getattr(self, name) is not None:
                    raise _fail(name, "set, but --security-protocol is not SSL or SASL_SSL")
        if (self.ssl_keyfile or self.ssl_password) and not self.ssl_certfile:
            raise _fail("ssl_certfile", "required when --ssl-keyfile or --ssl-password is set")

    def kafka_client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client: bootstrap servers and security."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL_"):
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        if self.security_protocol.endswith("SSL"):
            kwargs["ssl_context"] = self._ssl_context()
        return kwargs

    def _ssl_context(self) -> ssl.SSLContext:
        from aiokafka.helpers import create_ssl_context

        try:
            return create_ssl_context(
                cafile=self.ssl_cafile,
                certfile=self.ssl_certfile,
                keyfile=self.ssl_keyfile,
                password=self.ssl_password,
            )
        except (OSError, ssl.SSLError) as e:
            # The message names the file, never the key password.
            raise ConfigError(
                f"--ssl-cafile/--ssl-certfile/--ssl-keyfile: cannot load: {e.strerror or e}"
            ) from None


@dataclass(frozen=True)
class Settings(KafkaOptions):
    """Everything `streamkm serve` needs, validated on construction."""

    input_topic: str = _opt("features", "topic of feature records")
    output_topic: str = _opt("labels", "topic the cluster labels go to")
    dlq_topic: str | None = _opt(None, "dead-letter topic (default: <input-topic>.dlq)")
    group: str = _opt("streamkm", "Kafka consumer group")
    model: str = _opt("streamkm", "model name; its log is <model>.updates and <model>.snapshots")
    k: int = _opt(8, "number of clusters")
    dim: int | None = _opt(None, "feature dimension (default: learned from the first record)")
    input_format: str = _opt("json", "input value format: json or f32")
    fields: str | None = _opt(
        None,
        "build features from named JSON fields: PATH[:TRANSFORM],... "
        "(dotted paths; booleans are 1/0; transforms log1p, log, sqrt)",
    )
    id_field: str = _opt("id", "dotted path of the id echoed in each output record")
    scale: str = _opt("none", "feature scaling inside the model: none or standard")
    compression_type: str = _opt(
        "none", "codec of the records streamkm writes: none, gzip, snappy, lz4 or zstd"
    )
    half_life: float | None = _opt(
        None, "records after which old data weighs half (default: never)"
    )
    refit_every: int = _opt(2048, "publish model statistics every this many records")
    refit_interval: float = _opt(1.0, "... or at least every this many seconds")
    max_batch: int = _opt(4096, "most records fetched and labeled at once")
    warmup: int = _opt(1024, "records sampled for the k-means++ initialisation")
    max_pending: int = _opt(100_000, "most records held while waiting for the first model")
    max_staleness: int = _opt(
        2048,
        "label a record only with a model that includes this instance's statistics up to "
        "this many records before it (paces backlog drains)",
    )
    snapshot_every: int = _opt(500, "write a model snapshot every this many model versions")
    anomaly_threshold: float = _opt(3.0, "score above which a record counts as an anomaly")
    frozen: bool = _opt(False, "label with the current model without updating it")
    metrics_host: str = _opt("127.0.0.1", "address of the /metrics endpoint")
    metrics_port: int = _opt(9100, "port of the /metrics endpoint (0 picks a free port)")
    session_timeout: float = _opt(
        10.0, "consumer-group session timeout in seconds (failure detection, rebalance speed)"
    )
    log_level: str = _opt("INFO", "DEBUG, INFO, WARNING, ERROR or CRITICAL")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("input_topic", "output_topic", "dlq_topic", "group", "model"):
            value = getattr(self, name)
            if value is not None and not _is_topic_name(value):
                raise _fail(name, f"{value!r} is not a valid name; use 1-200 of [A-Za-z0-9._-]")
        if self.dlq == self.input_topic or self.output_topic == self.input_topic:
            raise _fail("output_topic", "output and dead-letter topics must differ from input")
        _check_choice("input_format", self.input_format, INPUT_FORMATS)
        _check_choice("scale", self.scale, SCALINGS)
        _check_choice("compression_type", self.compression_type, COMPRESSION_TYPES)
        self._check_fields()
        _check_positive(self, "k", "dim", "half_life", "refit_every", "refit_interval")
        _check_model_size(self.k, self.feature_dim)
        _check_positive(self, "max_batch", "warmup", "max_pending")
        _check_positive(self, "max_staleness")
        _check_positive(self, "session_timeout", "snapshot_every")
        _check_positive(self, "anomaly_threshold")
        if self.warmup < self.k:
            raise _fail("warmup", f"must be at least k={self.k} records, got {self.warmup}")
        if self.max_pending < self.warmup:
            raise _fail(
                "max_pending", f"must be at least warmup={self.warmup}, got {self.max_pending}"
            )
        _check_port("metrics_port", self.metrics_port, allow_zero=True)
        _check_choice("log_level", self.log_level, LOG_LEVELS)

    def _check_fields(self) -> None:
        try:
            parse_path(self.id_field)
        except ValueError as e:
            raise _fail("id_field", str(e)) from None
        if self.fields is None:
            return
        if self.input_format != "json":
            raise _fail("fields", f"named fields need --input-format json, not {self.input_format}")
        try:
            specs = parse_fields(self.fields)
        except ValueError as e:
            raise _fail("fields", str(e)) from None
        if self.dim is not None and self.dim != len(specs):
            raise _fail(
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
        return f"{self.model}.updates"

    @property
    def snapshots_topic(self) -> str:
        """The compacted topic of model snapshots."""
        return f"{self.model}.snapshots"


def _is_topic_name(name: str) -> bool:
    return (
        0 < len(name) <= 200
        and name not in (".", "..")
        and bool(re.fullmatch(r"[\w.-]+", name, re.A))
    )


@dataclass(frozen=True)
class ProduceOptions:
    """Settings of `streamkm produce`: synthetic Gaussian blobs with optional drift."""

    bootstrap: str = _opt("localhost:9092", "Kafka bootstrap servers, host:port[,host:port]")
    topic: str = _opt("features", "topic to write to")
    scenario: str = _opt(
        "blobs", "blobs (feature vectors) or transactions (card payments with named fields)"
    )
    count: int = _opt(100_000, "records to produce")
    rate: float = _opt(0.0, "records per second (0: as fast as possible)")
    dim: int = _opt(8, "feature dimension")
    k: int = _opt(8, "number of blobs")
    seed: int = _opt(0, "random seed")
    drift: float = _opt(0.0, "how far the blob centres wander per 10,000 records")
    invalid_fraction: float = _opt(0.0, "fraction of deliberately malformed records")
    format: str = _opt("json", "value format: json or f32")
    partitions: int = _opt(4, "partitions of the topic when it is created")

    def __post_init__(self) -> None:
        _check_bootstrap(self.bootstrap)
        if not _is_topic_name(self.topic):
            raise _fail("topic", f"{self.topic!r} is not a valid name; use [A-Za-z0-9._-]")
        _check_positive(self, "dim", "k", "partitions")
        _check_positive(self, "count", "rate", "drift", allow_zero=True)
        _check_fraction("invalid_fraction", self.invalid_fraction)
        _check_choice("format", self.format, INPUT_FORMATS)
        _check_choice("scenario", self.scenario, SCENARIOS)


@dataclass(frozen=True)
class DemoOptions:
    """Settings of `streamkm demo`: embedded broker, producer and service in one process."""

    scenario: str = _opt(
        "blobs", "blobs (feature vectors) or transactions (card payments with named fields)"
    )
    count: int = _opt(200_000, "records to produce")
    rate: float = _opt(20_000.0, "records per second (0: as fast as possible)")
    k: int = _opt(8, "number of clusters (and of generated blobs)")
    dim: int = _opt(8, "feature dimension")
    partitions: int = _opt(4, "partitions of the input topic")
    seed: int = _opt(0, "random seed")
    drift: float = _opt(0.0, "how far the blob centres wander per 10,000 records")
    invalid_fraction: float = _opt(0.001, "fraction of deliberately malformed records")
    half_life: float | None = _opt(
        None, "records after which old data weighs half (default: never)"
    )
    input_format: str = _opt("json", "value format: json or f32")
    broker_port: int = _opt(0, "port of the embedded broker (0 picks a free port)")
    metrics_host: str = _opt("127.0.0.1", "address of the /metrics endpoint")
    metrics_port: int = _opt(9100, "port of the /metrics endpoint (0 picks a free port)")

    def __post_init__(self) -> None:
        _check_positive(self, "k", "dim", "partitions", "half_life")
        _check_model_size(self.k, self.dim)
        _check_positive(self, "count", "rate", "drift", allow_zero=True)
        _check_fraction("invalid_fraction", self.invalid_fraction)
        _check_choice("input_format", self.input_format, INPUT_FORMATS)
        _check_choice("scenario", self.scenario, SCENARIOS)
        _check_port("broker_port", self.broker_port, allow_zero=True)
        _check_port("metrics_port", self.metrics_port, allow_zero=True)


@dataclass(frozen=True)
class BrokerOptions:
    """Settings of `streamkm broker`: the embedded broker in the foreground."""

    host: str = _opt("127.0.0.1", "address to listen on")
    port: int = _opt(9092, "port to listen on (0 picks a free port)")

    def __post_init__(self) -> None:
        _check_port("port", self.port, allow_zero=True)


@dataclass(frozen=True)
class ModelOptions(KafkaOptions):
    """Settings shared by the `streamkm model` commands: where the model's topics live."""

    model: str = _opt("streamkm", "model name; its log is <model>.updates and <model>.snapshots")

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

    file: str = _opt("", "centres to import: .npy, .json or .csv", positional=True)
    replace: bool = _opt(False, "swap the centres of a model that exists (a `replace` record)")
    half_life: float | None = _opt(
        None,
        "records after which old data weighs half (default: never; a replace keeps the model's)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive(self, "half_life")


@dataclass(frozen=True)
class ShowOptions(ModelOptions):
    """Settings of `streamkm model show`: print the current model."""

    json: bool = _opt(False, "print JSON with exact floats instead of a table")


@dataclass(frozen=True)
class ExportOptions(ModelOptions):
    """Settings of `streamkm model export`: write the current centres to a file."""

    file: str = _opt("", "where to write the centres: .npy or .json", positional=True)


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise _fail(name, f"must be between 0 and 1, got {value}")


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
