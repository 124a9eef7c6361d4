"""docker-compose.yml, the Dockerfile and the Prometheus/Grafana files agree with each other and
with the streamkm command line. Nothing here runs Docker: the checks are on the files."""

from __future__ import annotations

import dataclasses
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from promql_text import DATASOURCES, DEPLOY, PROMETHEUS_CONFIG, REPO

from api.config import ApiOptions
from stream.cli import build_parser, parse_command
from stream.config import BrokerOptions, DemoOptions, ProduceOptions, Settings, env_name

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
OPTIONS_OF = {
    "serve": Settings,
    "produce": ProduceOptions,
    "demo": DemoOptions,
    "broker": BrokerOptions,
    "api": ApiOptions,
}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def dockerfile(instruction: str) -> list[str]:
    return [args for name, args in dockerfile_instructions() if name == instruction]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in dockerfile("ENV"):
        env.update(pair.split("=", 1) for pair in shlex.split(args))
    return env


def streamkm_services() -> dict[str, dict]:
    """The services that run the streamkm image."""
    return {name: s for name, s in SERVICES.items() if s.get("image", "").startswith("streamkm")}


def serve_services() -> dict[str, dict]:
    return {n: s for n, s in streamkm_services().items() if s["command"][0] == "serve"}


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def test_stack_has_kafka_two_replicas_a_load_generator_prometheus_and_grafana():
    assert {"kafka", "streamkm-1", "streamkm-2", "loadgen", "prometheus", "grafana"} <= set(
        SERVICES
    )
    assert set(serve_services()) == {"streamkm-1", "streamkm-2"}
    assert streamkm_services()["loadgen"]["command"][0] == "produce"


def test_kafka_is_a_single_kraft_node_reachable_as_kafka_9092():
    kafka = SERVICES["kafka"]
    env = environment(kafka)
    assert kafka["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    for service in streamkm_services().values():
        assert environment(service)["STREAMKM_BOOTSTRAP"] == "kafka:9092"


@pytest.mark.parametrize("name", sorted(streamkm_services()))
def test_streamkm_service_command_uses_only_real_options(name):
    command = streamkm_services()[name]["command"]
    args = build_parser().parse_args(command)  # SystemExit(2) on an unknown option
    assert args.command == command[0]


@pytest.mark.parametrize("name", sorted(streamkm_services()))
def test_streamkm_service_environment_names_only_real_options(name):
    service = streamkm_services()[name]
    cls = OPTIONS_OF[service["command"][0]]
    known = {env_name(f) for f in dataclasses.fields(cls)}
    env = {k: v for k, v in environment(service).items() if k.startswith("STREAMKM_")}
    assert set(env) <= known, set(env) - known


@pytest.mark.parametrize("name", sorted(streamkm_services()))
def test_streamkm_service_settings_are_valid(name):
    service = streamkm_services()[name]
    # The image's own environment comes first; compose's overrides it, as in the container.
    env = dockerfile_env() | environment(service)
    command, options = parse_command(service["command"], env)  # ConfigError if invalid
    assert command == service["command"][0]
    if isinstance(options, Settings | ApiOptions):
        assert options.metrics_host == "0.0.0.0"


def test_replicas_share_one_group_and_one_model():
    settings = [
        parse_command(s["command"], dockerfile_env() | environment(s))[1]
        for s in serve_services().values()
    ]
    assert len({(s.group, s.model, s.input_topic) for s in settings}) == 1


def test_each_replica_publishes_its_metrics_port_on_its_own_host_port():
    host_ports = []
    for service in serve_services().values():
        port = parse_command(service["command"], dockerfile_env() | environment(service))[1]
        published = [p.split(":") for p in service["ports"]]
        assert [container for _, container in published] == [str(port.metrics_port)]
        host_ports += [host for host, _ in published]
    assert sorted(host_ports) == ["9100", "9101"]


def test_every_mounted_path_exists_in_the_repository():
    mounts = [
        volume.split(":")[0]
        for service in SERVICES.values()
        for volume in service.get("volumes", [])
    ]
    assert mounts
    for source in mounts:
        assert source.startswith("./"), f"{source}: mount repository files by relative path"
        assert (REPO / source).exists(), source


def test_dockerfile_runs_the_console_script_as_non_root_on_port_9100():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert dockerfile("FROM") == ["python:3.11-slim"]
    assert dockerfile("ENTRYPOINT") == ['["streamkm"]']
    assert "streamkm" in scripts
    assert dockerfile("CMD") == ['["serve"]']
    assert dockerfile("EXPOSE") == ["9100"]
    (user,) = dockerfile("USER")
    assert user not in ("root", "0")
    assert dockerfile_env()["STREAMKM_METRICS_HOST"] == "0.0.0.0"


def test_dockerfile_environment_names_only_real_serve_options():
    known = {env_name(f) for f in dataclasses.fields(Settings)}
    env = {k for k in dockerfile_env() if k.startswith("STREAMKM_")}
    assert env <= known, env - known


def test_dockerignore_keeps_what_the_image_installs():
    lines = (REPO / ".dockerignore").read_text().splitlines()
    ignored = {line.strip() for line in lines if line.strip() and not line.startswith("#")}
    assert ignored
    for needed in ("pyproject.toml", "README.md", "engine", "metrics", "stream"):
        assert needed not in ignored


def test_prometheus_scrapes_every_replica_on_its_metrics_port():
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "streamkm"]
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    expected = set()
    for name, service in serve_services().items():
        settings = parse_command(service["command"], dockerfile_env() | environment(service))[1]
        expected.add(f"{service.get('hostname', name)}:{settings.metrics_port}")
    assert targets == expected


def test_prometheus_container_reads_this_config_and_its_rules():
    prometheus = SERVICES["prometheus"]
    (config_flag,) = [a for a in prometheus["command"] if a.startswith("--config.file=")]
    in_container = Path(config_flag.split("=", 1)[1])
    mounted = {
        Path(volume.split(":")[1]): REPO / volume.split(":")[0] for volume in prometheus["volumes"]
    }
    source_dir = mounted[in_container.parent]
    assert (source_dir / in_container.name).resolve() == PROMETHEUS_CONFIG.resolve()
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    for rule_file in config["rule_files"]:
        assert (PROMETHEUS_CONFIG.parent / rule_file).exists(), rule_file


def test_grafana_loads_the_datasource_and_the_dashboard_files():
    grafana = SERVICES["grafana"]
    mounted = {volume.split(":")[1]: REPO / volume.split(":")[0] for volume in grafana["volumes"]}
    assert (
        mounted["/etc/grafana/provisioning"].resolve()
        == (DEPLOY / "grafana" / "provisioning").resolve()
    )
    provider_file = DEPLOY / "grafana" / "provisioning" / "dashboards" / "streamkm.yml"
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    dashboards_dir = mounted[provider["options"]["path"]]
    assert (dashboards_dir / "streamkm.json").exists()
    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    assert "9090:9090" in SERVICES["prometheus"]["ports"]
    assert "3000:3000" in grafana["ports"]
