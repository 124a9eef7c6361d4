"""Soak: resident memory of `streamkm serve` over millions of records while a producer keeps up.

Run: .venv/bin/python bench/soak_memory.py [--records 2000000] [--chunk 100000] [--format f32]

An embedded broker, `streamkm serve` as a subprocess (k = 8, d = 4, 4 partitions, default
--max-batch) and, in this process, a producer that writes ``--records`` blob records in chunks
while the service drains them. VmRSS and VmHWM of the service come from /proc/PID/status every
0.5 s. Printed: RSS once 100,000 records were handled (warm: kernels compiled, buffers sized),
RSS at the end, the peak (VmHWM), and the records/s over the run. The figures go into
docs/reliability.md by hand; this script does not rewrite it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stream.broker import EmbeddedBroker  # noqa: E402
from stream.produce import produce_blobs  # noqa: E402

WARM = 100_000


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = int(value.split()[0]) / 1024
    return out


def handled(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            body = resp.read().decode()
    except OSError:
        return 0
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in body.splitlines()
            if line.startswith("streamkm_records_total{")
        )
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def soak(records: int, chunk: int, fmt: str) -> dict[str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKM_")}
        # fmt: off
        args = [
            sys.executable, "-m", "stream.cli", "serve", "--bootstrap", broker.bootstrap,
            "--input-topic", "soak", "--output-topic", "soak.labels", "--k", "8", "--dim", "4",
            "--input-format", fmt, "--metrics-port", str(port), "--session-timeout", "3",
        ]
        # fmt: on
        await produce_blobs(broker.bootstrap, "soak", chunk, dim=4, k=8, fmt=fmt, partitions=4)
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            samples: list[tuple[int, dict[str, float]]] = []

            async def sample() -> None:
                while proc.poll() is None:
                    samples.append((handled(url), memory_mib(proc.pid)))
                    await asyncio.sleep(0.5)

            sampler = asyncio.create_task(sample())
            t0 = time.monotonic()
            for seed in range(1, records // chunk):
                await produce_blobs(
                    broker.bootstrap, "soak", chunk, dim=4, k=8, seed=seed, fmt=fmt, partitions=4
                )
            while handled(url) < records:
                if proc.poll() is not None:
                    raise SystemExit(f"serve exited with {proc.returncode}; see {log}")
                await asyncio.sleep(0.2)
            seconds = time.monotonic() - t0
            end = memory_mib(proc.pid)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
            sampler.cancel()
        finally:
            if proc.poll() is None:
                proc.kill()
    warm = next(m for n, m in samples if n >= WARM)
    return {
        "records": records,
        "rss_warm": warm["VmRSS"],
        "rss_end": end["VmRSS"],
        "rss_peak": end["VmHWM"],
        "rss_max_sampled": max(m["VmRSS"] for _, m in samples),
        "seconds": seconds,
        "exit": code,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--chunk", type=int, default=100_000)
    parser.add_argument("--format", choices=("f32", "json"), default="f32")
    a = parser.parse_args()
    r = asyncio.run(soak(a.records, a.chunk, a.format))
    print(
        "| records | format | RSS warm (MiB) | RSS end (MiB) | peak VmHWM (MiB) | records/s | exit |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {r['records']:,} | {a.format} | {r['rss_warm']:.0f} | {r['rss_end']:.0f} | "
        f"{r['rss_peak']:.0f} | {r['records'] / r['seconds']:,.0f} | {r['exit']} |"
    )


if __name__ == "__main__":
    main()
