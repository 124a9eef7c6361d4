"""Benchmark cold start: seconds from `streamkm serve` starting to its first labeled record
(issue 15).

Run: .venv/bin/python bench/bench_coldstart.py [--runs 3] [--no-write]

Each measurement gives the service a Numba cache directory (`NUMBA_CACHE_DIR`) in one of three
states, and a preloaded topic (2,000 embedding records, JSON, d = 384; k = 64) on the embedded
broker; a clock starts when the `serve` process is spawned and stops when a reader of the output
topic sees the first label:
- *install*: the cache `streamkm warmup` fills (what `make demo`'s install runs), for this CPU;
- *image*: the same for the Dockerfile's baseline (`NUMBA_CPU_NAME=x86-64-v3`), as in the image;
- *empty*: no cache at all: `serve` compiles what its model needs at start.
The two caches are filled once, before the runs (`streamkm warmup`, timed); every run spawns a
fresh process (nothing of an earlier run is in memory) and gets a fresh topic, group and model.
The target: install and image within 15 s.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from report import listed, machine_facts, run_and_report, runs_parser  # bench/report.py

from stream.broker import EmbeddedBroker
from stream.produce import produce_blobs

DIM, K, COUNT = 384, 64, 2000
STREAMKM = [sys.executable, "-m", "stream.cli"]
STATES = ("install", "image", "empty")
_READY = re.compile(rb"kernels ready in ([0-9.]+) s")
_JOINING = re.compile(rb"^(\S+ \S+) INFO aiokafka\S*: \(Re-\)joining group", re.M)
_JOINED = re.compile(rb"^(\S+ \S+) INFO aiokafka\S*: Joined group", re.M)


def _log_time(match: re.Match[bytes] | None) -> float:
    if match is None:
        return float("nan")
    return datetime.strptime(match.group(1).decode(), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _env(cache: Path, state: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMKM_", "NUMBA_CPU"))}
    env["NUMBA_CACHE_DIR"] = str(cache)
    if state == "image":
        env["NUMBA_CPU_NAME"] = "x86-64-v3"
    return env


def warm(cache: Path, state: str) -> float:
    """`streamkm warmup` into `cache`; seconds it took."""
    t0 = time.perf_counter()
    subprocess.run([*STREAMKM, "warmup"], env=_env(cache, state), check=True, capture_output=True)
    return time.perf_counter() - t0


async def first_label(
    bootstrap: str, topic: str, cache: Path, state: str
) -> tuple[float, float, float]:
    """Seconds from spawning `serve` to the first record on its output topic, and the seconds
    its log gives for the kernels and for joining the consumer group."""
    out = f"{topic}.labels-{uuid.uuid4().hex[:6]}"
    reader = AIOKafkaConsumer(out, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await reader.start()
    args = ["--bootstrap", bootstrap, "--input-topic", topic, "--output-topic", out]
    args += ["--group", f"g-{uuid.uuid4().hex[:8]}", "--model", f"m-{uuid.uuid4().hex[:8]}"]
    args += ["--k", str(K), "--dim", str(DIM), "--metrics-port", "0"]
    with tempfile.TemporaryFile() as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [*STREAMKM, "serve", *args], env=_env(cache, state), stdout=log, stderr=log
        )
        try:
            while True:
                batch = await reader.getmany(timeout_ms=100)
                if any(batch.values()):
                    seconds = time.perf_counter() - t0
                    break
                if proc.poll() is not None or time.perf_counter() - t0 > 600:
                    raise RuntimeError(f"serve ({state}) gave no label; exit {proc.poll()}")
        finally:
            proc.terminate()
            proc.wait(60)
            await reader.stop()
        log.seek(0)
        text = log.read()
    found = _READY.search(text)
    join = _log_time(_JOINED.search(text)) - _log_time(_JOINING.search(text))
    return seconds, float(found.group(1)) if found else float("nan"), join


async def main(args: argparse.Namespace) -> str:
    results: dict[str, list[tuple[float, float, float]]] = {s: [] for s in STATES}
    warmups: dict[str, float] = {}
    broker = EmbeddedBroker()
    with tempfile.TemporaryDirectory() as root:
        caches = {state: Path(root, state) for state in ("install", "image")}
        for state, cache in caches.items():
            warmups[state] = warm(cache, state)  # once: serve only reads a filled cache
            print(f"streamkm warmup ({state}): {warmups[state]:.0f} s", file=sys.stderr)
        try:
            for run in range(args.runs):
                broker.restart()
                topic = f"emb-{uuid.uuid4().hex[:8]}"
                await produce_blobs(
                    broker.bootstrap, topic, COUNT, dim=DIM, k=K, seed=run, embeddings=True
                )
                for state in STATES:
                    cache = caches.get(state) or Path(root, f"empty-{run}")
                    results[state].append(await first_label(broker.bootstrap, topic, cache, state))
                    print(f"run {run + 1} {state}: {results[state][-1][0]:.1f} s", file=sys.stderr)
        finally:
            broker.stop()
    return report(args, results, warmups)


def report(
    args: argparse.Namespace,
    results: dict[str, list[tuple[float, float, float]]],
    warmups: dict[str, float],
) -> str:
    names = {
        "install": "after `streamkm warmup` (make's install), this CPU",
        "image": "after `streamkm warmup` with NUMBA_CPU_NAME=x86-64-v3 (the image)",
        "empty": "empty cache: serve compiles what its model needs",
    }
    rows = []
    for state in STATES:
        first = [r[0] for r in results[state]]
        kernels = [r[1] for r in results[state]]
        joins = [r[2] for r in results[state]]
        rows.append(
            f"| {names[state]} | {statistics.median(first):.1f} | {listed(first, '{:.1f}')} "
            f"| {listed(kernels, '{:.1f}')} | {listed(joins, '{:.1f}')} |"
        )
    return "\n".join(
        [
            "## Cold start: serve to first label (issue 15)",
            "",
            machine_facts(
                f"{args.runs} runs; {COUNT:,} JSON embedding records preloaded, d = {DIM}, "
                f"k = {K}; a fresh Numba cache directory per measurement."
            ),
            "",
            f"Command: `.venv/bin/python bench/bench_coldstart.py --runs {args.runs}`",
            "",
            "| cache at start | first label, median s (target <= 15 for the first two) "
            "| runs, s | of which kernels (serve's log), s | of which joining the group, s |",
            "| --- | --- | --- | --- | --- |",
            *rows,
            "",
            "`streamkm warmup` itself (once per cache, before the runs): "
            + "; ".join(f"{state} {v:.0f} s" for state, v in warmups.items())
            + ". Joining the consumer group is the broker's time (Apache Kafka delays a new "
            "group's first rebalance by `group.initial.rebalance.delay.ms`, 3 s by default).",
        ]
    )


if __name__ == "__main__":
    run_and_report("coldstart", main, runs_parser(__doc__, runs=3, count=COUNT))
