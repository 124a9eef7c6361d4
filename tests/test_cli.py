"""Specification of the command line: flags, environment, errors and exit codes."""

from __future__ import annotations

import os

import pytest

from stream.cli import build_parser, main, parse_command, parse_settings
from stream.config import BrokerOptions, DemoOptions, ProduceOptions, Settings

SECRET = "hunter2-secret"


def test_no_arguments_gives_serve_defaults():
    assert parse_settings([], {}) == Settings()


def test_flags_set_every_kind_of_option():
    s = parse_settings(
        [
            "--bootstrap=a:1,b:2",
            "--input-topic",
            "clicks",
            "--k",
            "3",
            "--dim",
            "16",
            "--half-life",
            "5000",
            "--input-format",
            "f32",
            "--frozen",
            "--metrics-port",
            "0",
        ],
        {},
    )
    assert (s.bootstrap, s.input_topic, s.dlq, s.k, s.dim) == (
        "a:1,b:2",
        "clicks",
        "clicks.dlq",
        3,
        16,
    )
    assert (s.half_life, s.input_format, s.frozen, s.metrics_port) == (5000.0, "f32", True, 0)


def test_environment_gives_defaults_and_flags_override_them():
    env = {"STREAMKM_K": "12", "STREAMKM_GROUP": "g1", "STREAMKM_FROZEN": "true"}
    assert parse_settings([], env).k == 12
    overridden = parse_settings(["--k", "4", "--no-frozen"], env)
    assert (overridden.k, overridden.group, overridden.frozen) == (4, "g1", False)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["broker"], ("broker", BrokerOptions(host="127.0.0.1", port=9092))),
        (["broker", "--port", "0", "--host", "0.0.0.0"], ("broker", BrokerOptions("0.0.0.0", 0))),
        (
            ["produce", "--count", "10", "--rate", "0", "--format", "f32", "--drift", "0.5"],
            ("produce", ProduceOptions(count=10, rate=0.0, format="f32", drift=0.5)),
        ),
        (
            ["produce", "--invalid-fraction", "0.1", "--partitions", "2", "--seed", "7"],
            ("produce", ProduceOptions(invalid_fraction=0.1, partitions=2, seed=7)),
        ),
        (["demo"], ("demo", DemoOptions())),
        (
            ["demo", "--count", "1000", "--rate", "500", "--metrics-port", "0"],
            ("demo", DemoOptions(count=1000, rate=500.0, metrics_port=0)),
        ),
    ],
)
def test_each_subcommand_parses_into_its_options(argv, expected):
    assert parse_command(argv, {}) == expected


def test_shared_variables_reach_every_subcommand():
    env = {"STREAMKM_BOOTSTRAP": "kafka:9093", "STREAMKM_K": "5"}
    assert parse_command(["produce"], env)[1].bootstrap == "kafka:9093"
    assert parse_command(["demo"], env)[1].k == 5


@pytest.mark.parametrize("command", ["serve", "broker", "produce", "demo"])
def test_help_works_for_each_subcommand(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: streamkm {command}")
    assert "STREAMKM_" in out


def test_top_level_help_lists_the_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("serve", "broker", "produce", "demo"):
        assert command in out


@pytest.mark.parametrize(
    "argv, words",
    [
        ([], "required: COMMAND"),
        (["launch"], "invalid choice: 'launch'"),
        (["serve", "--k", "x"], "argument --k: 'x' is not a whole number"),
        (["serve", "--half-life", "nan"], "argument --half-life: 'nan' is not a finite number"),
        (["serve", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["serve", "--k", "0"], "--k: must be > 0"),
        (["serve", "--input-format", "csv"], "--input-format: 'csv' is not one of json, f32"),
        (["serve", "--bootstrap", "nohost"], "--bootstrap: 'nohost' is not host:port"),
        (["serve", "--metrics-port", "70000"], "--metrics-port: must be a TCP port"),
        (["serve", "--security-protocol", "SASL_SSL"], "--sasl-mechanism: required with SASL_SSL"),
        (["produce", "--invalid-fraction", "2"], "--invalid-fraction: must be between 0 and 1"),
        (["broker", "--port", "-1"], "--port: must be a TCP port"),
        (["demo", "--count", "-5"], "--count: must be >= 0"),
    ],
)
def test_bad_arguments_exit_2_with_a_message_naming_the_option(argv, words, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert words in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_bad_environment_value_exits_2_naming_the_variable(monkeypatch, capsys):
    # main() reads the real environment; this is the one test that needs to set it.
    monkeypatch.setenv("STREAMKM_MAX_BATCH", "lots")
    assert main(["serve"]) == 2
    assert "STREAMKM_MAX_BATCH: 'lots' is not a whole number" in capsys.readouterr().err


def test_secrets_never_appear_in_help_or_error_output(monkeypatch, capsys):
    monkeypatch.setenv("STREAMKM_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("STREAMKM_SSL_PASSWORD", SECRET)
    assert main(["serve", "--help"]) == 0
    # PLAINTEXT with a password set is an error; the message names the option, not the value.
    assert main(["serve"]) == 2
    assert main(["serve", "--sasl-password", SECRET, "--k", "0"]) == 2
    captured = capsys.readouterr()
    assert "--sasl-password" in captured.err
    assert SECRET not in captured.out + captured.err


def test_secrets_are_kept_but_not_shown():
    env = {"STREAMKM_SASL_PASSWORD": SECRET}
    s = parse_settings(
        [
            "--security-protocol",
            "SASL_PLAINTEXT",
            "--sasl-mechanism",
            "PLAIN",
            "--sasl-username",
            "u",
        ],
        env,
    )
    assert s.sasl_password == SECRET
    assert SECRET not in repr(s)


def test_parser_flags_match_the_settings_fields():
    serve = build_parser().parse_args(["serve"])
    assert set(vars(serve)) - {"command"} == {f for f in Settings.__dataclass_fields__}


@pytest.mark.parametrize("chosen", [None, "ACTIVE"])
def test_every_command_starts_with_idle_openmp_workers_asleep_unless_the_user_chose(
    chosen, monkeypatch
):
    import stream.cli

    if chosen is None:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    else:
        monkeypatch.setenv("OMP_WAIT_POLICY", chosen)
    seen = []
    monkeypatch.setattr(
        stream.cli, "_run", lambda command, options: seen.append(os.environ["OMP_WAIT_POLICY"]) or 0
    )
    assert main(["serve", "--k", "3"]) == 0
    assert seen == [chosen or "PASSIVE"]
