"""Specification of the settings: defaults, validation, environment, Kafka security, secrecy."""

from __future__ import annotations

import dataclasses
import logging
import ssl

import pytest

from stream.config import (
    BrokerOptions,
    ConfigError,
    DemoOptions,
    ProduceOptions,
    Settings,
    options_from_sources,
)

SASL = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "svc",
    "sasl_password": "hunter2-secret",
}


def test_defaults_follow_the_design():
    s = Settings()
    assert (s.bootstrap, s.input_topic, s.output_topic, s.group, s.model) == (
        "localhost:9092",
        "features",
        "labels",
        "streamkm",
        "streamkm",
    )
    assert (s.k, s.dim, s.input_format, s.half_life) == (8, None, "json", None)
    assert (s.metrics_host, s.metrics_port) == ("127.0.0.1", 9100)
    assert s.security_protocol == "PLAINTEXT"


def test_topics_derive_from_input_topic_and_model_name():
    s = Settings(input_topic="clicks", model="m1")
    assert (s.dlq, s.updates_topic, s.snapshots_topic) == (
        "clicks.dlq",
        "m1.updates",
        "m1.snapshots",
    )
    assert Settings(dlq_topic="dead").dlq == "dead"


def test_settings_are_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().k = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"k": 0}, "--k: must be > 0"),
        ({"dim": 0}, "--dim: must be > 0"),
        ({"dim": -3}, "--dim: must be > 0"),
        ({"refit_every": 0}, "--refit-every"),
        ({"refit_interval": 0.0}, "--refit-interval"),
        ({"half_life": 0.0}, "--half-life: must be > 0"),
        ({"half_life": -5.0}, "--half-life"),
        ({"half_life": float("nan")}, "--half-life"),
        ({"max_batch": 0}, "--max-batch"),
        ({"connect_timeout": 0.0}, "--connect-timeout"),
        ({"shutdown_timeout": 0.0}, "--shutdown-timeout: must be > 0"),
        ({"anomaly_threshold": -1.0}, "--anomaly-threshold"),
        ({"input_format": "csv"}, "--input-format: 'csv' is not one of json, f32"),
        ({"metrics_port": 70000}, "--metrics-port: must be a TCP port"),
        ({"metrics_port": -1}, "--metrics-port"),
        ({"warmup": 4}, "--warmup: must be at least k=8"),
        ({"max_pending": 10}, "--max-pending: must be at least warmup"),
        ({"bootstrap": "localhost"}, "--bootstrap: 'localhost' is not host:port"),
        ({"bootstrap": "a:9092,b"}, "--bootstrap: 'b' is not host:port"),
        ({"bootstrap": "a:99999"}, "--bootstrap"),
        ({"bootstrap": ""}, "--bootstrap"),
        ({"input_topic": "bad topic"}, "--input-topic"),
        ({"output_topic": "features"}, "--output-topic: output and dead-letter topics"),
        ({"log_level": "LOUD"}, "--log-level"),
        ({"fields": "amount,merchant.risk", "dim": 3}, "--dim: is 3, but --fields names 2"),
        ({"fields": "amount:exp"}, "--fields: 'amount:exp': unknown transform 'exp'"),
        ({"fields": "amount,,hour"}, "--fields: '' is not a dotted field path"),
        ({"fields": "amount,amount:log1p"}, "--fields: field 'amount' is named more than once"),
        ({"fields": "a", "input_format": "f32"}, "--fields: named fields need --input-format json"),
        ({"id_field": "a..b"}, "--id-field"),
        ({"scale": "minmax"}, "--scale: 'minmax' is not one of none, standard"),
        ({"compression_type": "brotli"}, "--compression-type: 'brotli' is not one of"),
        ({"security_protocol": "TLS"}, "--security-protocol: 'TLS' is not one of"),
        ({"security_protocol": "SASL_SSL"}, "--sasl-mechanism: required with SASL_SSL"),
        ({**SASL, "sasl_mechanism": "GSSAPI"}, "--sasl-mechanism: 'GSSAPI' is not one of"),
        ({**SASL, "sasl_username": None}, "--sasl-username: required"),
        ({**SASL, "sasl_password": ""}, "--sasl-password: required"),
        ({"sasl_username": "svc"}, "--sasl-username: set, but --security-protocol is not SASL_*"),
        ({"ssl_cafile": "/ca.pem"}, "--ssl-cafile: set, but --security-protocol is not SSL"),
        (
            {"security_protocol": "SSL", "ssl_keyfile": "/k.pem"},
            "--ssl-certfile: required when --ssl-keyfile",
        ),
    ],
)
def test_invalid_settings_raise_config_error_naming_the_option(changes, words):
    with pytest.raises(ConfigError) as info:
        Settings(**changes)
    assert words in str(info.value)
    assert "hunter2-secret" not in str(info.value)


@pytest.mark.parametrize(
    "bootstrap",
    ["localhost:9092", "a:1,b.example.com:65535", "10.0.0.1:9092, 10.0.0.2:9092", "[::1]:9092"],
)
def test_bootstrap_accepts_host_port_lists(bootstrap):
    assert Settings(bootstrap=bootstrap).bootstrap == bootstrap


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(
    "cls, changes, words",
    [
        (ProduceOptions, {"count": -1}, "--count: must be >= 0"),
        (ProduceOptions, {"invalid_fraction": 1.5}, "--invalid-fraction: must be between 0 and 1"),
        (ProduceOptions, {"format": "xml"}, "--format"),
        (ProduceOptions, {"partitions": 0}, "--partitions"),
        (ProduceOptions, {"bootstrap": "nohost"}, "--bootstrap"),
        (DemoOptions, {"rate": -1.0}, "--rate: must be >= 0"),
        (DemoOptions, {"broker_port": 65536}, "--broker-port"),
        (DemoOptions, {"k": 0}, "--k"),
        (BrokerOptions, {"port": 100000}, "--port"),
    ],
)
def test_other_commands_validate_their_options(cls, changes, words):
    with pytest.raises(ConfigError, match=words):
        cls(**changes)


# --- environment ----------------------------------------------------------------------------


def test_environment_variables_are_the_defaults():
    env = {
        "STREAMKM_K": "12",
        "STREAMKM_DIM": "3",
        "STREAMKM_INPUT_TOPIC": "clicks",
        "STREAMKM_HALF_LIFE": "1e5",
        "STREAMKM_FROZEN": "yes",
        "STREAMKM_UNRELATED": "ignored",
    }
    s = options_from_sources(Settings, {}, env)
    assert (s.k, s.dim, s.input_topic, s.half_life, s.frozen) == (12, 3, "clicks", 1e5, True)
    assert s.dlq == "clicks.dlq"


def test_given_values_override_the_environment():
    s = options_from_sources(Settings, {"k": 5, "dim": None}, {"STREAMKM_K": "12"})
    assert s.k == 5


@pytest.mark.parametrize("text", ["", "none", "None"])
def test_empty_or_none_environment_value_unsets_an_optional_option(text):
    assert options_from_sources(Settings, {}, {"STREAMKM_DIM": text}).dim is None


@pytest.mark.parametrize(
    "env, words",
    [
        ({"STREAMKM_K": "many"}, "STREAMKM_K: 'many' is not a whole number"),
        ({"STREAMKM_HALF_LIFE": "inf"}, "STREAMKM_HALF_LIFE: 'inf' is not a finite number"),
        ({"STREAMKM_FROZEN": "maybe"}, "STREAMKM_FROZEN: 'maybe' is not a boolean"),
        ({"STREAMKM_K": "0"}, "--k: must be > 0, got 0 (from STREAMKM_K)"),
    ],
)
def test_bad_environment_values_name_the_variable(env, words):
    with pytest.raises(ConfigError) as info:
        options_from_sources(Settings, {}, env)
    assert words in str(info.value)


@pytest.mark.parametrize(
    "cls, variable, text, attr, value",
    [
        (Settings, "STREAMKM_METRICS_PORT", "0", "metrics_port", 0),
        (Settings, "STREAMKM_REFIT_INTERVAL", "0.25", "refit_interval", 0.25),
        (ProduceOptions, "STREAMKM_COUNT", "10", "count", 10),
        (ProduceOptions, "STREAMKM_FORMAT", "f32", "format", "f32"),
        (ProduceOptions, "STREAMKM_BOOTSTRAP", "kafka:9093", "bootstrap", "kafka:9093"),
        (DemoOptions, "STREAMKM_BROKER_PORT", "19092", "broker_port", 19092),
        (DemoOptions, "STREAMKM_INVALID_FRACTION", "0.5", "invalid_fraction", 0.5),
        (BrokerOptions, "STREAMKM_PORT", "1234", "port", 1234),
        (BrokerOptions, "STREAMKM_HOST", "0.0.0.0", "host", "0.0.0.0"),
    ],
)
def test_every_command_reads_its_options_from_the_environment(cls, variable, text, attr, value):
    assert getattr(options_from_sources(cls, {}, {variable: text}), attr) == value


# --- Kafka client arguments and secrecy -----------------------------------------------------


def test_plaintext_client_kwargs_carry_only_servers_and_protocol():
    assert Settings(bootstrap="a:1,b:2").kafka_client_kwargs() == {
        "bootstrap_servers": "a:1,b:2",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_client_kwargs_map_onto_aiokafka_names():
    kwargs = Settings(**SASL).kafka_client_kwargs()
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "svc"
    assert kwargs["sasl_plain_password"] == "hunter2-secret"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)


def test_sasl_plaintext_has_no_ssl_context():
    kwargs = Settings(**{**SASL, "security_protocol": "SASL_PLAINTEXT"}).kafka_client_kwargs()
    assert "ssl_context" not in kwargs


def test_missing_certificate_file_is_a_config_error(tmp_path):
    s = Settings(security_protocol="SSL", ssl_cafile=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="--ssl-cafile"):
        s.kafka_client_kwargs()


def test_repr_and_log_lines_never_show_secrets(caplog):
    s = Settings(**SASL, ssl_certfile="/c.pem", ssl_password="keypass-secret")
    assert "hunter2-secret" not in repr(s)
    assert "keypass-secret" not in str(s)
    with caplog.at_level(logging.INFO):
        logging.getLogger("streamkm.test").info("starting with %s", s)
        logging.getLogger("streamkm.test").info(f"starting with {s!r}")
    assert "starting with Settings(" in caplog.text
    assert "secret" not in caplog.text


def test_fields_fix_the_dimension_and_parse_paths_and_transforms():
    s = Settings(fields="amount:log1p, merchant.risk ,card_present", scale="standard")
    assert s.feature_dim == 3
    assert [(f.path, f.transform) for f in s.field_specs] == [
        (("amount",), "log1p"),
        (("merchant", "risk"), None),
        (("card_present",), None),
    ]
    assert Settings(fields="a,b", dim=2).feature_dim == 2
