"""What the fault tests share: `streamkm serve` as a real process, and what /proc says about it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

# Bounds on how long things may take on a shared 2-core machine; they fail a hung test, they
# do not measure speed.
STOP_TIMEOUT_S = 30
LABELS_TIMEOUT_S = 120
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def wait_for_log(log: Path, text: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Block until ``text`` shows up in ``log``; fail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"serve exited with {proc.returncode}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"{text!r} not logged in {timeout}s:\n{log.read_text()}"
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (resident peak) of a process, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0])
    return out


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """(status, body) of a GET; HTTP errors are answers too, and no answer is status 0."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, OSError) as e:
        return 0, str(e)


async def read_all(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[ConsumerRecord]], bool] = lambda records: True,
    timeout: float = LABELS_TIMEOUT_S,
) -> list[ConsumerRecord]:
    """Every record of ``topic``, read without a group, once ``until(records)`` holds.

    Keeps reading until a fetch brings nothing new, so records that arrive late (duplicates)
    are counted too.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + timeout
        partitions: set[int] = set()
        while not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
            assert partitions or time.monotonic() < deadline, f"no topic {topic!r}"
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        while True:
            batch = await consumer.getmany(timeout_ms=1000, max_records=50_000)
            got = sum(len(v) for v in batch.values())
            for records in batch.values():
                out.extend(records)
            if not got and until(out):
                return out
            assert time.monotonic() < deadline, (
                f"{topic!r} still incomplete after {timeout}s: {len(out)} records"
            )
    finally:
        await consumer.stop()


def label_ids(records: list[ConsumerRecord]) -> list:
    """The ``id`` of each output record, in the order given."""
    return [orjson.loads(r.value)["id"] for r in records]


def covers(ids: set) -> Callable[[list[ConsumerRecord]], bool]:
    """``until`` for read_all: every id in ``ids`` has a label among the records."""
    return lambda records: ids <= set(label_ids(records))


async def produce_large(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]]
) -> None:
    """Send (key, value) records in order, allowing values of several MiB."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_request_size=16 * 1024 * 1024
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def records_handled(metrics_url: str) -> int:
    """streamkm_records_total summed over outcomes, as /metrics reports it (0 if unreachable)."""
    status, body = http_get(metrics_url)
    if status != 200:
        return 0
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith("streamkm_records_total{")
        )
    )
