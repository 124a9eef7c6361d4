"""Options every command that reaches Kafka shares: the connection and security settings,
declared once (KafkaOptions), and the small helpers that declare and check any option.

Options are frozen dataclasses whose fields carry their help text; `stream.config` turns them
into flags and `STREAMKM_*` variables.
"""

from __future__ import annotations

import dataclasses
import re
import ssl
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ENV_PREFIX",
    "MAX_DIM",
    "MAX_K",
    "ConfigError",
    "KafkaOptions",
    "env_name",
    "flag_name",
]

ENV_PREFIX = "STREAMKM_"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# The largest model streamkm serves. Every model message then fits in 19 records of the updates
# log (docs/architecture.md, "Large models"); larger ones are refused rather than half served.
MAX_K = 1024
MAX_DIM = 2048
_BOOTSTRAP_ENTRY = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


class ConfigError(ValueError):
    """An option has a value the program cannot use; the message names the option."""


def opt(
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


def fail(f: str, message: str) -> ConfigError:
    return ConfigError(f"--{f.replace('_', '-')}: {message}")


def check_bootstrap(value: str) -> None:
    entries = [e.strip() for e in value.split(",")]
    for entry in entries:
        m = _BOOTSTRAP_ENTRY.match(entry)
        if m is None or not 1 <= int(m.group(2)) <= 65535:
            raise fail(
                "bootstrap",
                f"{entry!r} is not host:port; expected host:port[,host:port...] "
                "with a port in 1..65535, e.g. localhost:9092",
            )


def check_positive(obj: Any, *names: str, allow_zero: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is None:
            continue
        if value < 0 or (value == 0 and not allow_zero) or value != value:
            bound = ">= 0" if allow_zero else "> 0"
            raise fail(name, f"must be {bound}, got {value}")


def check_port(name: str, value: int, *, allow_zero: bool) -> None:
    low = 0 if allow_zero else 1
    if not low <= value <= 65535:
        hint = " (0 picks a free port)" if allow_zero else ""
        raise fail(name, f"must be a TCP port in {low}..65535{hint}, got {value}")


def check_model_size(k: int, dim: int | None) -> None:
    for name, value, most in (("k", k, MAX_K), ("dim", dim, MAX_DIM)):
        if value is not None and value > most:
            raise fail(
                name,
                f"must be at most {most}, got {value} (streamkm serves models of up to "
                f"k={MAX_K} clusters of d={MAX_DIM} features)",
            )


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise fail(name, f"{value!r} is not one of {', '.join(choices)}")


@dataclass(frozen=True)
class KafkaOptions:
    """Where the Kafka cluster is and how to reach it: declared once, shared by `serve`,
    `model` and `api`."""

    bootstrap: str = opt("localhost:9092", "Kafka bootstrap servers, host:port[,host:port]")
    connect_timeout: float = opt(15.0, "seconds to wait for the Kafka cluster")
    security_protocol: str = opt("PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    sasl_mechanism: str | None = opt(None, "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
    sasl_username: str | None = opt(None, "SASL user name")
    sasl_password: str | None = opt(
        None, "SASL password (prefer STREAMKM_SASL_PASSWORD: flags show in ps)", secret=True
    )
    ssl_cafile: str | None = opt(None, "CA bundle to verify the brokers (PEM)")
    ssl_certfile: str | None = opt(None, "client certificate (PEM)")
    ssl_keyfile: str | None = opt(None, "client private key (PEM)")
    ssl_password: str | None = opt(None, "password of the client private key", secret=True)

    def __post_init__(self) -> None:
        check_bootstrap(self.bootstrap)
        check_positive(self, "connect_timeout")
        self._check_security()

    def _check_security(self) -> None:
        check_choice("security_protocol", self.security_protocol, SECURITY_PROTOCOLS)
        uses_sasl = self.security_protocol.startswith("SASL_")
        uses_ssl = self.security_protocol.endswith("SSL")
        if uses_sasl:
            if self.sasl_mechanism is None:
                raise fail("sasl_mechanism", f"required with {self.security_protocol}")
            check_choice("sasl_mechanism", self.sasl_mechanism, SASL_MECHANISMS)
            for name in ("sasl_username", "sasl_password"):
                if not getattr(self, name):
                    raise fail(name, f"required with {self.security_protocol}")
        else:
            for name in ("sasl_mechanism", "sasl_username", "sasl_password"):
                if getattr(self, name) is not None:
                    raise fail(name, "set, but --security-protocol is not SASL_*")
        if not uses_ssl:
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"):
                if getattr(self, name) is not None:
                    raise fail(name, "set, but --security-protocol is not SSL or SASL_SSL")
        if (self.ssl_keyfile or self.ssl_password) and not self.ssl_certfile:
            raise fail("ssl_certfile", "required when --ssl-keyfile or --ssl-password is set")

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


def is_topic_name(name: str) -> bool:
    return (
        0 < len(name) <= 200
        and name not in (".", "..")
        and bool(re.fullmatch(r"[\w.-]+", name, re.A))
    )
