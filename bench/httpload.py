"""HTTP load generators for the benchmarks: `wrk` (HTTP/1.1, optionally Poisson-paced) and
`h2load` (HTTP/1.1 or h2c for gRPC), pinned to the load generator's core, and what a run saw."""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LOAD_CPU = "1"  # the servers measured run on core 0


def pinned(argv: list[str]) -> list[str]:
    return ["taskset", "-c", LOAD_CPU, *argv]


@dataclass
class Load:
    """What one load-generator run saw."""

    rps: float  # answered per second
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    codes: Counter[str] = field(default_factory=Counter)  # HTTP status -> answers
    failed: int = 0  # sent but never answered (h2load: errored or timed out)


def wrk(
    url: str,
    seconds: float,
    body: Path | None,
    threads: int,
    connections: int,
    pace_rps: float | None = None,
) -> Load:
    """`wrk` against url, POSTing body when given; raises on any non-2xx answer.

    With pace_rps each connection waits an exponential delay (mean connections / pace_rps)
    before each request: open-loop-like Poisson arrivals, latency timed from the write.
    """
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", url]
    lua = []
    if body is not None:
        lua += [
            'wrk.method = "POST"',
            'wrk.headers["Content-Type"] = "application/json"',
            f'local f = io.open("{body}", "rb")',
            "wrk.body = f:read('*a')",
            "f:close()",
        ]
    if pace_rps is not None:
        mean_ms = 1000.0 * connections / pace_rps  # wrk takes whole milliseconds
        lua += [
            f"function delay() return math.floor(-math.log(1 - math.random()) * {mean_ms} + 0.5) end"
        ]
    if lua:
        script = Path(tempfile.mkstemp(suffix=".lua")[1])
        script.write_text("\n".join(lua) + "\n")
        argv[1:1] = ["-s", str(script)]
    try:
        out = subprocess.run(pinned(argv), capture_output=True, text=True, check=True).stdout
    finally:
        if lua:
            script.unlink()
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        raise RuntimeError(f"wrk got {m.group(1)} non-2xx answers from {url}:\n{out}")
    if m := re.search(r"Socket errors: (.*)", out):
        raise RuntimeError(f"wrk saw socket errors against {url}: {m.group(1)}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return Load(rps, _wrk_ms(out, "50%"), _wrk_ms(out, "99%"))


def _wrk_ms(out: str, pct: str) -> float:
    m = re.search(rf"^\s+{pct}\s+([\d.]+)(us|ms|s)$", out, re.M)
    if m is None:
        return float("nan")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def h2load(
    url: str,
    seconds: float,
    body: Path,
    clients: int,
    streams: int,
    *,
    grpc: bool,
    rps_per_client: float | None = None,
    log: Path | None = None,
) -> Load:
    """One `h2load` run: HTTP/1.1 (REST, one request in flight per connection) or h2c (gRPC).

    With log, latencies and HTTP statuses come from its per-request log, less the first 0.5 s.
    """
    argv = ["h2load", "-c", str(clients), "-m", str(streams), "-D", f"{seconds:g}", "-d", str(body)]
    if grpc:
        argv += ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    else:
        argv += ["--h1", "-H", "content-type: application/json"]
    if rps_per_client is not None:
        argv += ["--rps", f"{rps_per_client:.3f}"]
    if log is not None:
        argv += ["--log-file", str(log)]
    out = subprocess.run(pinned([*argv, url]), capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    req = re.search(r"requests: .* (\d+) errored, (\d+) timeout", out)
    run = Load(rps, failed=int(req.group(1)) + int(req.group(2)) if req else 0)
    if log is not None:
        rows = np.loadtxt(log, dtype=np.int64, ndmin=2, usecols=(0, 1, 2))
        if rows.size:
            keep = rows[rows[:, 0] >= rows[:, 0].min() + 500_000]  # connections opening
            run.codes = Counter(str(c) for c in keep[:, 1])
            run.p50_ms, run.p99_ms = np.percentile(keep[:, 2], [50, 99]) / 1000.0
    return run
