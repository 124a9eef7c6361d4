"""The `streamkm` command as users run it: real processes over real TCP to the session broker."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Mapping

import orjson
import pytest
from kafka_helpers import consume_records, unique_name
from serve_process import free_port, serving, streamkm_env

pytestmark = pytest.mark.integration

# Bounds on how long a process may take, generous for a shared 2-core machine; not timings.
PRODUCE_TIMEOUT_S = 120
LABELS_TIMEOUT_S = 90
STOP_TIMEOUT_S = 30


def streamkm(*args: str, env: Mapping[str, str] | None = None, timeout: float = PRODUCE_TIMEOUT_S):
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=streamkm_env(env),
    )


def ids_of(records) -> list[int]:
    return sorted(orjson.loads(r.value)["id"] for r in records)


async def test_serve_labels_what_produce_wrote_and_exits_0_on_sigterm(broker, tmp_path):
    topic, output = unique_name("in"), unique_name("out")
    made = streamkm(
        "produce", "--bootstrap", broker.bootstrap, "--topic", topic, "--count", "2000",
        "--partitions", "2",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "produced 2000 records" in made.stdout
    log = tmp_path / "serve.log"
    with serving(
        "--bootstrap", broker.bootstrap, "--input-topic", topic, "--output-topic", output,
        "--group", unique_name("g"), "--model", unique_name("m"), "--k", "3", "--dim", "8",
        "--metrics-port", "0", "--session-timeout", "3",
        log=log,
    ) as proc:  # fmt: skip
        labels = await consume_records(broker.bootstrap, output, 2000, timeout=LABELS_TIMEOUT_S)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=STOP_TIMEOUT_S)
    assert code == 0, log.read_text()
    assert ids_of(labels) == list(range(2000))
    # Before connecting, serve said which kernels it was compiling (or loading) and when done.
    text = log.read_text()
    assert "kernels 1/3: warm-up fit (d=8, k=3)" in text
    assert "kernels: JSON scanner" in text
    assert re.search(r"kernels ready in [0-9.]+ s", text)
    assert text.index("kernels ready") < text.index("published init")


def test_serve_exits_2_naming_an_unreachable_bootstrap():
    address = f"127.0.0.1:{free_port()}"
    result = streamkm(
        "serve", "--bootstrap", address, "--connect-timeout", "2", "--metrics-port", "0",
        timeout=STOP_TIMEOUT_S + 60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert address in result.stderr


async def test_serve_takes_its_settings_from_streamkm_environment_variables(broker, tmp_path):
    topic, output = unique_name("in"), unique_name("out")
    env = {
        "STREAMKM_BOOTSTRAP": broker.bootstrap,
        # produce
        "STREAMKM_TOPIC": topic,
        "STREAMKM_COUNT": "1000",
        "STREAMKM_PARTITIONS": "2",
        "STREAMKM_DIM": "4",
        # serve
        "STREAMKM_INPUT_TOPIC": topic,
        "STREAMKM_OUTPUT_TOPIC": output,
        "STREAMKM_GROUP": unique_name("g"),
        "STREAMKM_MODEL": unique_name("m"),
        "STREAMKM_K": "3",
        "STREAMKM_METRICS_PORT": "0",
        "STREAMKM_SESSION_TIMEOUT": "3",
    }
    made = streamkm("produce", env=env)
    assert made.returncode == 0, made.stderr
    log = tmp_path / "serve.log"
    with serving(log=log, env=env) as proc:
        labels = await consume_records(broker.bootstrap, output, 1000, timeout=LABELS_TIMEOUT_S)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=STOP_TIMEOUT_S)
    assert code == 0, log.read_text()
    assert ids_of(labels) == list(range(1000))
    assert {orjson.loads(r.value)["cluster"] for r in labels} <= {0, 1, 2}
