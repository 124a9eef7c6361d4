"""Security basics: loopback metrics, no code execution from data, TLS/SASL reach aiokafka, no leaks."""

from __future__ import annotations

import ast
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fault_helpers import http_get
from serve_process import free_port, streamkm_env

from stream.config import Settings

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cr3t-Pa55w0rd-never-logged"


def test_metrics_bind_loopback_by_default():
    assert Settings().metrics_host == "127.0.0.1"


def _other_local_address() -> str:
    """A non-loopback address of this machine if it has one, else another loopback address."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # no packet is sent; this only picks a route
            address = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    return address if address != "127.0.0.1" else "127.0.0.2"


def test_a_running_service_answers_metrics_on_loopback_only(tmp_path):
    port, other = free_port(), _other_local_address()
    log = tmp_path / "serve.log"
    # The metrics endpoint is up while the service waits for a broker that is not there.
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "serve", "--bootstrap",
             f"127.0.0.1:{free_port()}", "--connect-timeout", "60", "--metrics-port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=streamkm_env(),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while http_get(f"http://127.0.0.1:{port}/healthz")[0] != 200:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        with pytest.raises(ConnectionRefusedError), socket.create_connection((other, port), 2):
            pass
    finally:
        proc.kill()
        proc.wait()


UNSAFE_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "marshal",
    "shelve",
    "dill",
    "cloudpickle",
    "jsonpickle",
}


def _unsafe_uses(tree: ast.AST) -> list[str]:
    """Imports of unpickling modules, eval/exec calls, yaml.load without SafeLoader, pickled .npy."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif (
            isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES
        ):
            found.append(f"from {node.module}")
        elif isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if name in ("eval", "exec", "builtins.eval", "builtins.exec", "__import__"):
                found.append(f"{name}(...)")
            elif name.endswith("yaml.load") and "SafeLoader" not in ast.unparse(node):
                found.append(f"{name}(...) without SafeLoader")
            elif name.endswith("yaml.unsafe_load") or keywords.get("allow_pickle") == "True":
                found.append(ast.unparse(node))
    return found


@pytest.mark.parametrize("package", ["engine", "stream", "metrics"])
def test_nothing_read_from_kafka_or_disk_is_unpickled_or_evaluated(package):
    sources = sorted((ROOT / package).rglob("*.py"))
    assert sources
    found = {
        str(path.relative_to(ROOT)): uses
        for path in sources
        if (uses := _unsafe_uses(ast.parse(path.read_text(), str(path))))
    }
    assert found == {}


def test_the_unsafe_use_check_finds_what_it_looks_for():
    code = "import pickle\nfrom marshal import loads\neval(x)\nyaml.load(f)\nnp.load(f, allow_pickle=True)\n"
    assert len(_unsafe_uses(ast.parse(code))) == 5
    assert _unsafe_uses(ast.parse("yaml.load(f, Loader=yaml.SafeLoader)\nnp.load(f)\n")) == []


SASL = dict(sasl_mechanism="PLAIN", sasl_username="svc", sasl_password=PASSWORD)


@pytest.mark.parametrize(
    ("protocol", "extra", "sasl", "tls"),
    [
        ("PLAINTEXT", {}, False, False),
        ("SSL", {}, False, True),
        ("SASL_PLAINTEXT", SASL, True, False),
        ("SASL_SSL", SASL, True, True),
    ],
)
def test_security_settings_reach_every_aiokafka_client(protocol, extra, sasl, tls):
    kwargs = Settings(security_protocol=protocol, **extra).kafka_client_kwargs()
    assert kwargs["security_protocol"] == protocol
    sasl_keys = {"sasl_mechanism", "sasl_plain_username", "sasl_plain_password"}
    assert sasl_keys <= kwargs.keys() if sasl else not sasl_keys & kwargs.keys()
    if sasl:
        assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("svc", PASSWORD)
    assert (
        isinstance(kwargs.get("ssl_context"), ssl.SSLContext)
        if tls
        else "ssl_context" not in kwargs
    )


def test_the_sasl_password_never_appears_in_output_even_at_debug_level():
    address = f"127.0.0.1:{free_port()}"
    env = {
        "STREAMKM_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "STREAMKM_SASL_MECHANISM": "PLAIN",
        "STREAMKM_SASL_USERNAME": "svc",
        "STREAMKM_SASL_PASSWORD": PASSWORD,
    }
    result = subprocess.run(
        [sys.executable, "-m", "stream.cli", "serve", "--bootstrap", address,
         "--connect-timeout", "2", "--metrics-port", "0", "--log-level", "DEBUG"],
        capture_output=True, text=True, timeout=120, env=streamkm_env(env),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "DEBUG" in result.stderr  # the run did log at debug level
    assert PASSWORD not in result.stdout + result.stderr
