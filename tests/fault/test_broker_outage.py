"""The broker goes away under a running service, or is not there at all at start."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from datetime import datetime

import pytest
from fault_helpers import STOP_TIMEOUT_S, covers, cpu_seconds, http_get, read_all
from kafka_helpers import unique_name
from serve_process import free_port, serving, streamkm_env

from stream.produce import produce_blobs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = 6.0
# The loop may back off, poll and log while the broker is down; it must not spin.
MAX_CPU_SHARE_DURING_OUTAGE = 0.5
UNAVAILABLE = "kafka unavailable"


async def wait_ready(url: str, proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while http_get(url)[0] != 200:
        assert proc.poll() is None, "serve exited"
        assert time.monotonic() < deadline, f"/readyz not ready in {timeout}s: {http_get(url)}"
        await asyncio.sleep(0.1)


async def test_broker_outage_is_reported_once_costs_little_cpu_and_the_service_resumes(
    private_broker, tmp_path
):
    bootstrap = private_broker.bootstrap
    topic, output, port = unique_name("in"), unique_name("out"), free_port()
    readyz = f"http://127.0.0.1:{port}/readyz"
    log = tmp_path / "serve.log"
    await produce_blobs(bootstrap, topic, 2000, dim=4, k=3, seed=1, partitions=2)
    with serving(
        "--bootstrap", bootstrap, "--input-topic", topic, "--output-topic", output,
        "--group", unique_name("g"), "--model", unique_name("m"), "--k", "3", "--dim", "4",
        "--max-batch", "100", "--metrics-port", str(port), "--session-timeout", "3",
        "--warmup", "256",
        log=log,
    ) as proc:  # fmt: skip
        await wait_ready(readyz, proc)
        await read_all(bootstrap, output, until=covers(set(range(2000))))
        # A backlog, so that the broker dies under a busy service with batches in flight.
        await produce_blobs(bootstrap, topic, 50_000, dim=4, k=3, seed=2, partitions=2)

        private_broker.kill()
        cpu_before, t_before = cpu_seconds(proc.pid), time.monotonic()
        answers = set()
        while time.monotonic() - t_before < OUTAGE_S:
            answers.add(http_get(readyz))
            await asyncio.sleep(0.25)
        cpu_share = (cpu_seconds(proc.pid) - cpu_before) / (time.monotonic() - t_before)
        assert proc.poll() is None, log.read_text()

        private_broker.restart()
        restarted = time.monotonic()
        # The restarted broker is empty (memory storage): every topic, record, group and
        # offset is gone, and a consumer that lived through it keeps its old positions
        # (docs/embedded-broker.md). What can be checked is that the service reconnects, finishes
        # its batch and says it is ready again; docs/reliability.md says what is not checked.
        await wait_ready(readyz, proc)
        recovery_s = time.monotonic() - restarted
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=STOP_TIMEOUT_S)

    text = log.read_text()
    print(
        f"\noutage {OUTAGE_S}s: cpu share {cpu_share:.2f}, readyz answers {sorted(answers)}, "
        f"ready {recovery_s:.1f}s after the restart, {text.count(UNAVAILABLE)} outage log lines"
    )
    assert cpu_share < MAX_CPU_SHARE_DURING_OUTAGE
    assert len(re.findall(UNAVAILABLE, text)) == 1, text
    assert code == 0, text
    assert any(status == 503 and "kafka" in body for status, body in answers), answers


def _log_time(line: str) -> float:
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_unreachable_broker_at_start_exits_2_within_the_connect_timeout_naming_it():
    import subprocess
    import sys

    address = f"127.0.0.1:{free_port()}"
    connect_timeout = 3.0
    result = subprocess.run(
        [sys.executable, "-m", "stream.cli", "serve", "--bootstrap", address,
         "--connect-timeout", str(connect_timeout), "--metrics-port", "0"],
        capture_output=True, text=True, timeout=STOP_TIMEOUT_S + 60, env=streamkm_env(),
    )  # fmt: skip
    ended = time.time()
    assert result.returncode == 2, result.stderr
    assert address in result.stderr.splitlines()[-1]
    # From the first log line (after imports and kernel warm-up) to the exit.
    started = _log_time(result.stderr.splitlines()[0])
    assert ended - started < connect_timeout + 5.0, result.stderr


async def test_sigterm_while_the_broker_does_not_answer_exits_1_within_the_shutdown_timeout(
    private_broker, tmp_path
):
    bootstrap = private_broker.bootstrap
    topic, output, port = unique_name("in"), unique_name("out"), free_port()
    log = tmp_path / "serve.log"
    shutdown_timeout = 3.0
    await produce_blobs(bootstrap, topic, 2000, dim=4, k=3, seed=1, partitions=2)
    with serving(
        "--bootstrap", bootstrap, "--input-topic", topic, "--output-topic", output,
        "--group", unique_name("g"), "--model", unique_name("m"), "--k", "3", "--dim", "4",
        "--max-batch", "100", "--metrics-port", str(port), "--session-timeout", "3",
        "--warmup", "256", "--shutdown-timeout", str(shutdown_timeout),
        log=log,
    ) as proc:  # fmt: skip
        await wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
        await read_all(bootstrap, output, until=covers(set(range(2000))))
        await produce_blobs(bootstrap, topic, 20_000, dim=4, k=3, seed=2, partitions=2)
        # Frozen, the broker keeps every connection open and answers nothing: the drain, the
        # commit and the group leave all wait on requests that time out only after 10-40 s.
        private_broker.freeze()
        try:
            asked = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=STOP_TIMEOUT_S)
            took = time.monotonic() - asked
        finally:
            private_broker.thaw()

    text = log.read_text()
    assert code == 1, text
    # The timeout, then at most the cancellation's grace and the process's own exit.
    assert shutdown_timeout <= took < shutdown_timeout + 8.0, text
    assert "did not finish stopping within --shutdown-timeout 3s" in text
    # The log says where the stop was stuck: the service's await chain down to aiokafka.
    waiting = text.split("it was waiting in:", 1)[1]
    assert "in Service.run" in waiting, waiting
    assert "aiokafka" in waiting, waiting
    assert "ignored its cancellation" not in text, text
