"""Benchmark `streamkm api` (REST and gRPC) against scikit-learn model servers, same run.

Run: .venv/bin/python bench/bench_api.py [--duration 5] [--no-write] [--only rest]

`--only rest` measures streamkm's REST endpoint alone (no gRPC, no baselines), adds the latency
of one sequential connection, prints, and leaves docs/ alone: the loop for tuning the REST path.

One model (k = 8, d = 8 centres) is imported into streamkm with `streamkm model import` on the
embedded broker and given to scikit-learn's `KMeans` (fit on the centres, ``init=centres``,
``n_init=1``, ``max_iter=1``). Four servers answer the Open Inference Protocol v2 infer call:
`streamkm api` over REST and over gRPC (one process), (a) scikit-learn behind FastAPI + uvicorn
and (b) scikit-learn behind a plain grpcio server (bench/api_baselines/). Each server runs alone,
as its own process pinned to core 0 (`taskset`, NUMBA_NUM_THREADS = OMP_NUM_THREADS = 1: one
core each, and no OpenMP or Numba pool measured beside another); the load generator is pinned to
core 1. Per server:

- maximum req/s, one vector per request: `wrk -t1 -c32` (REST), `h2load -c8 -m16` (gRPC),
  after a warm-up, the best of three runs;
- the same server's empty handler (GET /v2/health/live, ServerLive): the ceiling of its HTTP
  or gRPC handling;
- p50 / p99 latency at 50% of the maximum: `h2load --rps`, which paces each connection
  (16 connections, one request in flight each), latencies from its per-request log;
- twice the maximum offered the same way (128 connections): answers counted by status code
  (HTTP from h2load's log; gRPC codes from streamkm's /metrics and the baseline's own tally);
- rows/s with 256 vectors per request.

Then a py-spy profile of the api under the REST maximum load says where its time goes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from httpload import LOAD_CPU, Load, h2load, pinned, wrk  # bench/httpload.py
from report import BENCHMARKS, machine_facts, write_section  # bench/report.py

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from api.proto import grpc_predict_v2_pb2 as pb  # noqa: E402
from engine import assign  # noqa: E402
from stream.broker import EmbeddedBroker  # noqa: E402

K, DIM, ROWS = 8, 8, 256
SERVER_CPU = "0"
MODEL = "bench-api"
BASELINES = ROOT / "bench" / "api_baselines"
PY = sys.executable
# One core per server: Numba's and OpenMP's pools would otherwise start a thread per core.
SERVER_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
REST_MAX = dict(threads=1, connections=32)
GRPC_MAX = dict(clients=8, streams=16)
# The maximum req/s is the best of this many runs: on a shared machine one run of a server
# ranged from 21,000 to 40,000 req/s, and a neighbour's burst only ever lowers a figure.
MAX_RUNS = 3
PACED_CONNECTIONS, PACED_STREAMS, OVERLOAD_CLIENTS = 64, 64, 128


# --- the model and the requests ---------------------------------------------------------------


def model_centers() -> np.ndarray:
    return np.random.default_rng(0).normal(scale=5.0, size=(K, DIM)).astype(np.float32)


def request_rows(centers: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    near = centers[rng.integers(0, K, n)]
    return (near + rng.normal(scale=1.0, size=near.shape)).astype(np.float32)


def rest_body(X: np.ndarray) -> bytes:
    tensor = {
        "name": "input",
        "shape": list(X.shape),
        "datatype": "FP32",
        "data": X.ravel().tolist(),
    }
    return json.dumps({"inputs": [tensor]}).encode()


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: not compressed, 4-byte big-endian length."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def grpc_infer(X: np.ndarray) -> bytes:
    request = pb.ModelInferRequest(model_name=MODEL, raw_input_contents=[X.tobytes()])
    request.inputs.add(name="input", datatype="FP32", shape=list(X.shape))
    return request.SerializeToString()


# --- servers ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A server process pinned to SERVER_CPU."""

    name: str
    proc: subprocess.Popen[bytes]
    out: str = ""

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                stdout, _ = self.proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                stdout, _ = self.proc.communicate()
            self.out = stdout.decode(errors="replace")
        return self.out


@contextlib.contextmanager
def server(name: str, argv: list[str], ready: str, log: Path) -> Iterator[Server]:
    env = {**os.environ, **SERVER_ENV}
    with log.open("wb") as err:
        proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *argv], env=env, stdout=subprocess.PIPE, stderr=err
        )
    s = Server(name, proc)
    try:
        deadline = time.monotonic() + 60
        while not answers(ready):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {log}:\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield s
    finally:
        s.stop()


def answers(url: str) -> bool:
    if url.startswith("tcp://"):
        host, port = url[6:].rsplit(":", 1)
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 0.5):
            return True
        return False
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def check_rest(url: str, X: np.ndarray, expected: np.ndarray) -> None:
    req = urllib.request.Request(url, rest_body(X), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        outputs = {o["name"]: o["data"] for o in json.loads(r.read())["outputs"]}
    if not np.array_equal(np.asarray(outputs["cluster"]), expected):
        raise RuntimeError(f"{url} answers other clusters than engine.assign")


def check_grpc(port: int, X: np.ndarray, expected: np.ndarray) -> None:
    import grpc

    from api.proto import grpc_predict_v2_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest.FromString(grpc_infer(X))
        response = stub.ModelInfer(request, timeout=10)
    names = [o.name for o in response.outputs]
    cluster = np.frombuffer(response.raw_output_contents[names.index("cluster")], "<i4")
    if not np.array_equal(cluster, expected):
        raise RuntimeError(f"gRPC on port {port} answers other clusters than engine.assign")


# --- one server's figures ---------------------------------------------------------------------


@dataclass
class Figures:
    name: str
    max_rps: float
    ceiling_rps: float
    half: Load
    floor: Load  # the empty handler paced at the same rate: the latency floor here
    double: Load
    double_codes: Counter[str]  # answers at twice the maximum by status (HTTP or gRPC)
    rows_per_s: float


def measure_rest(name: str, base: str, tmp: Path, seconds: float, centers: np.ndarray) -> Figures:
    one, many = tmp / "rest-1.json", tmp / "rest-256.json"
    one.write_bytes(rest_body(request_rows(centers, 1, 1)))
    many.write_bytes(rest_body(request_rows(centers, ROWS, 2)))
    infer = f"{base}/v2/models/{MODEL}/infer"
    wrk(infer, 1, one, **REST_MAX)  # warm-up
    top = max(wrk(infer, seconds, one, **REST_MAX).rps for _ in range(MAX_RUNS))
    ceiling = wrk(f"{base}/v2/health/live", seconds, None, **REST_MAX).rps
    half = wrk(infer, seconds, one, 1, PACED_CONNECTIONS, pace_rps=top / 2)
    floor = wrk(f"{base}/v2/health/live", seconds, None, 1, PACED_CONNECTIONS, pace_rps=top / 2)
    rows = wrk(infer, seconds, many, threads=1, connections=8).rps * ROWS
    double = h2load(
        infer, seconds, one, OVERLOAD_CLIENTS, 1, grpc=False,
        rps_per_client=2 * top / OVERLOAD_CLIENTS, log=tmp / "double.log",
    )  # fmt: skip
    return Figures(name, top, ceiling, half, floor, double, double.codes, rows)


def measure_grpc(
    name: str,
    port: int,
    tmp: Path,
    seconds: float,
    centers: np.ndarray,
    codes: Callable[[], Counter[str]],
) -> Figures:
    one, many, live = tmp / "grpc-1.bin", tmp / "grpc-256.bin", tmp / "grpc-live.bin"
    one.write_bytes(grpc_frame(grpc_infer(request_rows(centers, 1, 1))))
    many.write_bytes(grpc_frame(grpc_infer(request_rows(centers, ROWS, 2))))
    live.write_bytes(grpc_frame(pb.ServerLiveRequest().SerializeToString()))
    base = f"http://127.0.0.1:{port}/inference.GRPCInferenceService"
    infer = f"{base}/ModelInfer"
    h2load(infer, 1, one, grpc=True, **GRPC_MAX)  # warm-up
    top = max(h2load(infer, seconds, one, grpc=True, **GRPC_MAX).rps for _ in range(MAX_RUNS))
    ceiling = h2load(f"{base}/ServerLive", seconds, live, grpc=True, **GRPC_MAX).rps
    # One connection paced at the whole rate: h2load's per-client timers would send in bursts.
    half = h2load(
        infer, seconds, one, 1, PACED_STREAMS, grpc=True, rps_per_client=top / 2,
        log=tmp / "ghalf.log",
    )  # fmt: skip
    floor = h2load(
        f"{base}/ServerLive", seconds, live, 1, PACED_STREAMS, grpc=True, rps_per_client=top / 2,
        log=tmp / "gfloor.log",
    )  # fmt: skip
    rows = h2load(infer, seconds, many, 4, 4, grpc=True).rps * ROWS
    before = codes()
    double = h2load(
        infer, seconds, one, OVERLOAD_CLIENTS, 1, grpc=True,
        rps_per_client=2 * top / OVERLOAD_CLIENTS, log=tmp / "gdouble.log",
    )  # fmt: skip
    return Figures(name, top, ceiling, half, floor, double, codes() - before, rows)


def api_grpc_codes(metrics_port: int) -> Counter[str]:
    """streamkm's answered gRPC requests by code, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    pattern = r'streamkm_api_requests_total\{code="(\w+)",protocol="grpc"\} ([\d.e+]+)'
    return Counter({c: int(float(v)) for c, v in re.findall(pattern, text)})


# --- the profile ------------------------------------------------------------------------------

# Where a sample's time goes: the first frame from the leaf up that names one of these.
_BUCKETS = [
    ("observe_request", "metrics (observe_request, observe_batch)"),
    ("observe_batch", "metrics (observe_request, observe_batch)"),
    ("_parse_json", "JSON decode of the request (orjson)"),
    ("_input_matrix", "request tensor to NumPy (_input_matrix)"),
    ("_requested_outputs", "routing and request checks"),
    ("_checked", "validation, queueing (Scorer.submit)"),
    ("submit", "validation, queueing (Scorer.submit)"),
    ("submit_then", "validation, queueing (Scorer.submit)"),
    ("model_assign", "kernel (model_assign, anomaly_scores)"),
    ("anomaly_scores", "kernel (model_assign, anomaly_scores)"),
    ("_flush", "batching (Scorer._flush around the kernel)"),
    ("_infer_reply", "JSON encode of the answer (_infer_reply)"),
    ("_drain", "response framing, socket write (_drain)"),
    ("_head", "response framing, socket write (_drain)"),
    ("_complete", "futures and callbacks"),
    ("answer", "futures and callbacks"),
    ("_settle", "futures and callbacks"),
    ("done", "futures and callbacks"),
    ("_then", "futures and callbacks"),
    ("_infer", "routing and request checks"),
    ("_route", "routing and request checks"),
    ("handle", "routing and request checks"),
    ("on_message_complete", "HTTP parsing (httptools and its callbacks)"),
    ("data_received", "HTTP parsing (httptools and its callbacks)"),
    ("on_url", "HTTP parsing (httptools and its callbacks)"),
    ("on_header", "HTTP parsing (httptools and its callbacks)"),
    ("on_body", "HTTP parsing (httptools and its callbacks)"),
    ("on_message_begin", "HTTP parsing (httptools and its callbacks)"),
]
_BUCKET_OF = dict(_BUCKETS)


def profile_api(
    pid: int, url: str, body: Path, seconds: float, out: Path
) -> list[tuple[str, float]]:
    """Shares of the api's busy samples (py-spy, 200 Hz) under the REST maximum load."""
    spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    argv = [spy, "record", "-p", str(pid), "-d", f"{seconds:g}", "-r", "200", "--format", "raw",
            "-o", str(out), "--nonblocking"]  # fmt: skip
    with subprocess.Popen(pinned(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as spy_p:
        time.sleep(0.5)
        wrk(url, seconds, body, **REST_MAX)
        _, err = spy_p.communicate(timeout=60)
    if spy_p.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
    tally: Counter[str] = Counter()
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        # py-spy names frames "Class.method (file:line)"; the buckets name methods.
        frames = [f.split(" (", 1)[0].rsplit(".", 1)[-1] for f in stack.split(";")]
        bucket = "event loop, socket reads (uvloop, outside the handlers)"
        for frame in reversed(frames):
            if frame in _BUCKET_OF:
                bucket = _BUCKET_OF[frame]
                break
        if bucket.startswith("event loop") and "aiokafka" in stack:
            bucket = "model follower (aiokafka)"
        tally[bucket] += int(n)
    total = sum(tally.values()) or 1
    return [(b, n / total) for b, n in tally.most_common()]


# --- the run ----------------------------------------------------------------------------------


def import_model(bootstrap: str, centers: np.ndarray, tmp: Path) -> None:
    path = tmp / "centers.npy"
    np.save(path, centers)
    cli = str(Path(PY).parent / "streamkm")
    subprocess.run(
        [cli, "model", "import", "--bootstrap", bootstrap, "--model", MODEL, str(path)],
        check=True, capture_output=True,
    )  # fmt: skip


def main(args: argparse.Namespace) -> str:
    for tool in ("wrk", "h2load", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench_api: {tool} is missing; run sh deploy/install-bench-deps.sh")
    seconds = args.duration
    centers = model_centers()
    check_X = request_rows(centers, 64, 3)
    expected = assign(check_X, centers)[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-api-"))
    figures: dict[str, Figures] = {}
    profile: list[tuple[str, float]] = []
    broker = EmbeddedBroker()
    broker.start()
    try:
        import_model(broker.bootstrap, centers, tmp)
        np.save(tmp / "centers.npy", centers)
        http, grpc_port, metrics = free_port(), free_port(), free_port()
        api_argv = [
            str(Path(PY).parent / "streamkm"), "api", "--bootstrap", broker.bootstrap,
            "--model", MODEL, "--http-port", str(http), "--grpc-port", str(grpc_port),
            "--metrics-port", str(metrics), "--log-level", "WARNING",
        ]  # fmt: skip
        base = f"http://127.0.0.1:{http}"
        with server("streamkm api", api_argv, f"{base}/v2/health/ready", tmp / "api.log") as api:
            check_rest(f"{base}/v2/models/{MODEL}/infer", check_X, expected)
            check_grpc(grpc_port, check_X, expected)
            log_phase("streamkm REST")
            figures["api_rest"] = measure_rest("streamkm api, REST", base, tmp, seconds, centers)
            if args.only == "rest":
                sequential = {
                    "infer": wrk(f"{base}/v2/models/{MODEL}/infer", seconds, tmp / "rest-1.json",
                                 threads=1, connections=1),
                    "empty handler": wrk(f"{base}/v2/health/live", seconds, None, threads=1,
                                         connections=1),
                }  # fmt: skip
            else:
                log_phase("streamkm gRPC")
                figures["api_grpc"] = measure_grpc(
                    "streamkm api, gRPC", grpc_port, tmp, seconds, centers,
                    lambda: api_grpc_codes(metrics),
                )  # fmt: skip
            if not args.no_profile:
                log_phase("profile")
                profile = profile_api(
                    api.proc.pid, f"{base}/v2/models/{MODEL}/infer", tmp / "rest-1.json",
                    seconds, tmp / "profile.txt",
                )  # fmt: skip
        if args.only == "rest":
            return report_rest(args, figures["api_rest"], sequential, profile)
        port = free_port()
        fastapi_argv = [PY, str(BASELINES / "fastapi_server.py"), str(tmp / "centers.npy"),
                        "--port", str(port), "--model", MODEL]  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        with server("FastAPI", fastapi_argv, f"{base}/v2/health/live", tmp / "fastapi.log"):
            check_rest(f"{base}/v2/models/{MODEL}/infer", check_X, expected)
            log_phase("FastAPI + uvicorn")
            figures["fastapi"] = measure_rest(
                "(a) scikit-learn, FastAPI + uvicorn", base, tmp, seconds, centers
            )
        port = free_port()
        grpc_argv = [PY, str(BASELINES / "grpc_server.py"), str(tmp / "centers.npy"),
                     "--port", str(port), "--model", MODEL]  # fmt: skip
        with server("grpcio", grpc_argv, f"tcp://127.0.0.1:{port}", tmp / "grpc.log") as g:
            check_grpc(port, check_X, expected)
            log_phase("grpcio")
            lifetime: Counter[str] = Counter()
            figures["grpcio"] = measure_grpc(
                "(b) scikit-learn, grpcio", port, tmp, seconds, centers, lambda: lifetime
            )
            tally = Counter(json.loads(g.stop().strip().splitlines()[-1]))
            # The baseline tallies its answers at exit: every non-OK one is counted at 2x.
            figures["grpcio"].double_codes = Counter({"OK": figures["grpcio"].double.codes["200"]})
            figures["grpcio"].double_codes.update({c: n for c, n in tally.items() if c != "OK"})
    finally:
        broker.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    return report(args, figures, profile)


def log_phase(name: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} measuring {name}", file=sys.stderr, flush=True)


def report(
    args: argparse.Namespace, f: dict[str, Figures], profile: list[tuple[str, float]]
) -> str:
    rest, grpc, a, b = f["api_rest"], f["api_grpc"], f["fastapi"], f["grpcio"]
    codes, row = _codes, _row

    def met(ok: bool) -> str:
        return "yes" if ok else "**no**"

    rest_x, grpc_x = rest.max_rps / a.max_rps, grpc.max_rps / b.max_rps
    p99 = max(rest.half.p99_ms, grpc.half.p99_ms)
    lines = [
        "## Score on request: `streamkm api` against scikit-learn servers (issue 14)",
        "",
        machine_facts(
            f"k={K}, d={DIM}; each server alone on core {SERVER_CPU} (taskset, "
            f"NUMBA_NUM_THREADS=OMP_NUM_THREADS=1), load generator on core {LOAD_CPU}; "
            f"{args.duration:g} s per figure."
        ),
        "",
        f"Command: `.venv/bin/python bench/bench_api.py --duration {args.duration:g}` "
        "(`make bench`; wrk and h2load from `deploy/install-bench-deps.sh`).",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
        f"| REST req/s >= 25x (a) FastAPI + uvicorn | **{rest_x:.1f}x** "
        f"({rest.max_rps:,.0f} / {a.max_rps:,.0f}) | {met(rest_x >= 25)} |",
        f"| gRPC req/s >= 10x (b) grpcio | **{grpc_x:.1f}x** "
        f"({grpc.max_rps:,.0f} / {b.max_rps:,.0f}) | {met(grpc_x >= 10)} |",
        f"| p99 <= 2 ms at 50% of the maximum | REST {rest.half.p99_ms:.2f} ms, "
        f"gRPC {grpc.half.p99_ms:.2f} ms | {met(p99 <= 2.0)} |",
        f"| at 2x the maximum, no error but 503 / RESOURCE_EXHAUSTED | REST "
        f"{codes(rest.double_codes, rest.double.failed)}; gRPC "
        f"{codes(grpc.double_codes, grpc.double.failed)} | "
        f"{met(only_shedding(rest) and only_shedding(grpc))} |",
        f"| rows/s, {ROWS} vectors per request | REST {rest.rows_per_s / a.rows_per_s:.1f}x (a), "
        f"gRPC {grpc.rows_per_s / b.rows_per_s:.1f}x (b) | measured |",
        "",
        *_TABLE_HEAD,
        row(rest),
        row(a),
        row(grpc),
        row(b),
        "",
        f"Load: maximum REST req/s from `wrk -t{REST_MAX['threads']} -c{REST_MAX['connections']}` "
        f"(no pipelining), gRPC from `h2load -c{GRPC_MAX['clients']} "
        f"-m{GRPC_MAX['streams']}`, each the best of {MAX_RUNS} runs after a 1 s warm-up (h2c, one length-prefixed `ModelInferRequest` with the vector "
        "in `raw_input_contents`, `content-type: application/grpc`, `te: trailers`). The empty "
        "handler is `GET /v2/health/live` (REST) or `ServerLive` (gRPC) on the same server and "
        "load. Latency at 50% of the maximum: REST from `wrk --latency` with a Lua `delay()` "
        f"that paces each of {PACED_CONNECTIONS} connections with exponential gaps (Poisson "
        "arrivals at half the rate, timed from each request's write); gRPC from `h2load --rps` "
        f"on one connection with up to {PACED_STREAMS} streams, percentiles from its "
        "per-request log without the first 0.5 s. h2load's `--rps` timer fires at most every "
        "10 ms (h2load.cc: `rps_watcher.repeat = std::max(0.01, 1. / config.rps)`), so at "
        "25,000 req/s each tick has 250 calls due and the connection sends its stream limit at "
        "once, the rest as answers return: a gRPC p99 is the time to answer the last call of "
        "such a burst (see 'gRPC pacing' below). The empty handler paced the same way at the same "
        "rate is the latency floor of this machine and load generator. The 2x overload: "
        "`h2load --rps` on "
        f"{OVERLOAD_CLIENTS} connections (HTTP/1.1 for REST, h2c for gRPC), one request in "
        "flight each, so the offered rate is bounded by those connections and the latency. "
        "REST codes at 2x are HTTP statuses from its log; gRPC codes are streamkm's own "
        "`streamkm_api_requests_total` and the grpcio baseline's tally of its answers "
        f"(h2load sees only HTTP 200). Rows/s: `wrk -c8` (REST) and `h2load -c4 -m4` (gRPC) "
        f"with {ROWS} vectors per request. Same centres everywhere; each server's answers were "
        "checked against `engine.assign` before it was measured.",
    ]
    return "\n".join(lines + _profile_lines(rest, profile))


_TABLE_HEAD = [
    "| server | max req/s, 1 vector | empty handler req/s | of the ceiling | "
    "at 50%: req/s answered: p50 / p99 ms | empty handler at that rate: p50 / p99 ms | "
    "at 2x: req/s answered: p99 ms | "
    "answers at 2x by code | rows/s, 256 per request |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
]


def _codes(c: Counter[str], failed: int) -> str:
    parts = [f"{n:,} x {code}" for code, n in sorted(c.items())]
    if failed:
        parts.append(f"{failed:,} no answer")
    return ", ".join(parts) or "none"


def _row(x: Figures) -> str:
    return (
        f"| {x.name} | {x.max_rps:,.0f} | {x.ceiling_rps:,.0f} | "
        f"{x.max_rps / x.ceiling_rps:.0%} | {x.half.rps:,.0f}: {x.half.p50_ms:.2f} / "
        f"{x.half.p99_ms:.2f} | {x.floor.p50_ms:.2f} / {x.floor.p99_ms:.2f} | "
        f"{x.double.rps:,.0f}: {x.double.p99_ms:.1f} | "
        f"{_codes(x.double_codes, x.double.failed)} | {x.rows_per_s:,.0f} |"
    )


def report_rest(
    args: argparse.Namespace,
    rest: Figures,
    sequential: dict[str, Load],
    profile: list[tuple[str, float]],
) -> str:
    """The `--only rest` report: streamkm's REST row, one sequential connection, the profile."""
    lines = [
        f"streamkm api, REST only ({args.duration:g} s per figure)",
        "",
        *_TABLE_HEAD,
        _row(rest),
        "",
        "| one connection, sequential (`wrk -t1 -c1`) | req/s | p50 / p99 ms |",
        "| --- | ---: | ---: |",
        *(
            f"| {name} | {x.rps:,.0f} | {x.p50_ms:.3f} / {x.p99_ms:.3f} |"
            for name, x in sequential.items()
        ),
    ]
    return "\n".join(lines + _profile_lines(rest, profile))


def _profile_lines(rest: Figures, profile: list[tuple[str, float]]) -> list[str]:
    if not profile:
        return []
    return [
        "",
        f"Where the api's time goes at the REST maximum (py-spy, 200 Hz, busy samples; "
        f"the empty handler answers {rest.ceiling_rps:,.0f} req/s, infer "
        f"{rest.max_rps:,.0f}, so an infer costs {1e6 / rest.max_rps:.0f} µs of which the "
        f"HTTP server's floor is {1e6 / rest.ceiling_rps:.0f} µs):",
        "",
        "| part | share of samples |",
        "| --- | ---: |",
        *(f"| {name} | {share:.0%} |" for name, share in profile),
    ]


def only_shedding(x: Figures) -> bool:
    allowed = {"200", "503", "OK", "RESOURCE_EXHAUSTED"}
    return x.double.failed == 0 and set(x.double_codes) <= allowed


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per figure (5)")
    p.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    p.add_argument(
        "--only",
        choices=["rest"],
        help="measure streamkm's REST endpoint alone and print it (docs/ left alone)",
    )
    return p.parse_args()


if __name__ == "__main__":
    args = parse_args()
    text = main(args)
    print(text)
    if not args.no_write and args.only is None:
        write_section("api", text)
        print(f"\nwritten to {BENCHMARKS}", file=sys.stderr)
