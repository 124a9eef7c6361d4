"""SIGKILL `streamkm serve` at random points of one stream: nothing is lost, few labels repeat."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter

import pytest
from fault_helpers import STOP_TIMEOUT_S, covers, label_ids, read_all, wait_for_log
from kafka_helpers import unique_name
from serve_process import serving, start_serve

from stream.produce import produce_blobs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RECORDS = 80_000
RATE = (
    4_000  # records/s: the stream flows through every kill, and backs up while the service is down
)
KILLS = 4
MAX_BATCH = 500


async def test_sigkilled_service_loses_nothing_and_relabels_at_most_the_batches_in_flight(
    broker, tmp_path
):
    topic, output = unique_name("in"), unique_name("out")
    args = (
        "--bootstrap", broker.bootstrap, "--input-topic", topic, "--output-topic", output,
        "--group", unique_name("g"), "--model", unique_name("m"), "--k", "4", "--dim", "4",
        "--max-batch", str(MAX_BATCH), "--metrics-port", "0", "--session-timeout", "3",
        "--warmup", "256",
    )  # fmt: skip
    producing = asyncio.create_task(
        produce_blobs(broker.bootstrap, topic, RECORDS, dim=4, k=4, seed=7, rate=RATE, partitions=4)
    )
    rng = random.Random(20240611)
    log = tmp_path / "serve.log"
    t0 = time.monotonic()
    for _ in range(KILLS):
        proc = start_serve(*args, log=log)
        try:
            await asyncio.to_thread(wait_for_log, log, "consuming", proc)
            await asyncio.sleep(rng.uniform(0.1, 1.0))
            assert proc.poll() is None, log.read_text()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        # Mark where the next life starts: "consuming" must be logged again.
        log.write_text(log.read_text().replace("consuming", "consumed"))
        print(f"killed at {time.monotonic() - t0:.1f}s")
    report = await producing
    assert report.count == RECORDS

    with serving(*args, log=log) as proc:
        await asyncio.to_thread(wait_for_log, log, "consuming", proc)
        labels = await read_all(broker.bootstrap, output, until=covers(set(range(RECORDS))))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_TIMEOUT_S) == 0, log.read_text()

    counts = Counter(label_ids(labels))
    duplicates = len(labels) - len(counts)
    print(f"\n{KILLS} kills, {len(labels)} labels for {RECORDS} records: {duplicates} duplicates")
    assert set(counts) == set(range(RECORDS))
    assert duplicates <= KILLS * MAX_BATCH
