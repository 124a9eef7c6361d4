"""A backlog much larger than memory should need: the service fetches only what it can handle.

Resident memory is read from /proc/PID/status (VmRSS now, VmHWM peak). bench/soak_memory.py runs
the same measurement over 2 million records; docs/reliability.md has its figures.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from fault_helpers import STOP_TIMEOUT_S, memory_kib, records_handled
from kafka_helpers import unique_name
from serve_process import free_port, serving

from stream.produce import produce_blobs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RECORDS = 300_000
WARM = 50_000
MAX_GROWTH_MIB = 64  # from WARM records handled to the end; the backlog is ~10 MiB of f32 values
MAX_PEAK_MIB = 512


async def test_resident_memory_stays_bounded_while_draining_a_large_backlog(broker, tmp_path):
    topic, port = unique_name("in"), free_port()
    metrics = f"http://127.0.0.1:{port}/metrics"
    await produce_blobs(
        broker.bootstrap, topic, RECORDS, dim=4, k=4, seed=9, fmt="f32", partitions=4
    )
    log = tmp_path / "serve.log"
    with serving(
        "--bootstrap", broker.bootstrap, "--input-topic", topic, "--output-topic", unique_name("out"),
        "--group", unique_name("g"), "--model", unique_name("m"), "--k", "4", "--dim", "4",
        "--input-format", "f32", "--metrics-port", str(port), "--session-timeout", "3",
        log=log,
    ) as proc:  # fmt: skip
        deadline = time.monotonic() + 120
        warm = None
        while (handled := records_handled(metrics)) < RECORDS:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            if warm is None and handled >= WARM:
                warm = memory_kib(proc.pid)
            await asyncio.sleep(0.05)
        end = memory_kib(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_TIMEOUT_S) == 0, log.read_text()[-3000:]
    assert warm is not None
    growth = (end["VmRSS"] - warm["VmRSS"]) / 1024
    print(
        f"\nRSS {warm['VmRSS'] / 1024:.0f} MiB at {WARM} records, {end['VmRSS'] / 1024:.0f} MiB "
        f"at {RECORDS}; peak {end['VmHWM'] / 1024:.0f} MiB"
    )
    assert growth < MAX_GROWTH_MIB
    assert end["VmHWM"] / 1024 < MAX_PEAK_MIB
