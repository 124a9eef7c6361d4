"""The `streamkm` command line: argument parsing only; each subcommand hands its options on.

Flags are generated from the settings dataclasses in `stream.config`, so a new setting is a new
flag and a new `STREAMKM_*` variable at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from api.config import ApiOptions
from stream.compiled import check_cpu_target, quiet_worker_threads, run_warmup
from stream.config import (
    BrokerOptions,
    ConfigError,
    DemoOptions,
    ExportOptions,
    ImportOptions,
    ProduceOptions,
    Settings,
    ShowOptions,
    WarmupOptions,
    env_name,
    field_type,
    flag_name,
    options_from_sources,
    parse_value,
)

__all__ = ["build_parser", "main", "parse_command", "parse_settings"]

_COMMANDS: dict[str, tuple[type, str]] = {
    "serve": (Settings, "label a Kafka topic with an online k-means model"),
    "broker": (BrokerOptions, "run the embedded Kafka broker in the foreground"),
    "produce": (ProduceOptions, "write synthetic Gaussian-blob records to a topic"),
    "demo": (DemoOptions, "broker, producer and service together, with a closing summary"),
    "api": (ApiOptions, "answer scoring requests with the live model (REST and gRPC)"),
    "warmup": (WarmupOptions, "compile every kernel into Numba's cache (images and installs)"),
}
# `streamkm model <action>`: the model's lifecycle, read from and written to its Kafka topics.
_MODEL_COMMANDS: dict[str, tuple[type, str]] = {
    "import": (ImportOptions, "publish centres from a .npy, .json or .csv file as the model"),
    "show": (ShowOptions, "print the current model: version, centres, weights, re-seeds, replaces"),
    "export": (ExportOptions, "write the current centres to a .npy or .json file"),
}
_MODEL_SUMMARY = "import, show or export the served model (no running service needed)"


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand; flags default to None so unset ones can fall back to env."""
    parser = argparse.ArgumentParser(
        prog="streamkm",
        description="Online k-means clustering of Kafka event streams.",
        epilog="Every option --some-option also reads the environment variable "
        "STREAMKM_SOME_OPTION; a flag wins over the variable.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command, (cls, summary) in _COMMANDS.items():
        p = sub.add_parser(command, help=summary, description=summary)
        for f in dataclasses.fields(cls):
            _add_flag(p, cls, f)
    model = sub.add_parser("model", help=_MODEL_SUMMARY, description=_MODEL_SUMMARY)
    actions = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    for action, (cls, summary) in _MODEL_COMMANDS.items():
        p = actions.add_parser(action, help=summary, description=summary)
        for f in dataclasses.fields(cls):
            _add_flag(p, cls, f)
    return parser


def _add_flag(parser: argparse.ArgumentParser, cls: type, f: dataclasses.Field[Any]) -> None:
    if f.metadata.get("positional"):
        parser.add_argument(f.name, metavar=f.name.upper(), help=f.metadata["help"])
        return
    kind, optional = field_type(cls, f.name)
    # The help shows the built-in default, never the environment's value, which may be a secret.
    shown = "" if f.default is None else f" (default: {f.default}"
    help_text = f"{f.metadata['help']}{shown}{'; ' if shown else ' ('}env {env_name(f)})"
    if kind is bool:
        parser.add_argument(
            flag_name(f),
            dest=f.name,
            action=argparse.BooleanOptionalAction,
            default=None,
            help=help_text,
        )
        return
    parser.add_argument(
        flag_name(f),
        dest=f.name,
        type=_converter(kind, optional),
        default=None,
        metavar=kind.__name__.upper(),
        help=help_text,
    )


def _converter(kind: type, optional: bool) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse_value(text, kind, optional)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = kind.__name__  # argparse names the type in its error messages
    return convert


def parse_command(
    argv: Sequence[str] | None, environ: Mapping[str, str] | None = None
) -> tuple[str, Any]:
    """The subcommand (`model import` etc. for the model group) and its validated options.

    Raises ConfigError or SystemExit(2) on bad input.
    """
    args = build_parser().parse_args(argv)
    command = args.command
    if command == "model":
        command = f"model {args.model_command}"
        cls, _ = _MODEL_COMMANDS[args.model_command]
    else:
        cls, _ = _COMMANDS[command]
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}
    return command, options_from_sources(cls, given, environ)


def parse_settings(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    """The `serve` settings from `serve` arguments (without the subcommand name) and environment."""
    _, settings = parse_command(["serve", *argv], environ)
    return settings


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `streamkm` script; returns the process exit code."""
    try:
        command, options = parse_command(argv)
    except ConfigError as e:
        print(f"streamkm: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # argparse: --help (0) or a usage error (2), already printed
        return e.code if isinstance(e.code, int) else 2
    warning = check_cpu_target()  # before anything imports Numba
    quiet_worker_threads()
    if warning is not None:
        print(f"streamkm: warning: {warning}", file=sys.stderr)
    try:
        return _run(command, options)
    except ConfigError as e:
        print(f"streamkm: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(command: str, options: Any) -> int:
    # Imported here so that parsing (and --help) never pays for Kafka, Numba or the broker.
    if command == "serve":
        from stream.service import run_service

        return run_service(options)
    if command == "broker":
        from stream.broker import run_broker

        return run_broker(options.host, options.port)
    if command == "produce":
        from stream.produce import run_produce

        return run_produce(options)
    if command == "api":
        from api.app import run_api

        return run_api(options)
    if command == "warmup":
        return run_warmup()
    if command.startswith("model "):
        from stream.modelcli import run_model

        return run_model(command.removeprefix("model "), options)
    from stream.demo import run_demo

    return run_demo(options)


if __name__ == "__main__":
    sys.exit(main())
