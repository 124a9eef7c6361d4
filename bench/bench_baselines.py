"""Benchmark streamkm against hand-written consumers on the embedded broker, in the same run.

Run: .venv/bin/python bench/bench_baselines.py [--runs 3] [--count 200000]
     [--per-record-count 20000] [--latency-seconds 8] [--rates 2000,5000,10000,20000,40000]
     [--skip-latency] [--no-write]

1. Throughput: each run restarts the broker (nothing left from earlier runs), preloads fresh
   topics of JSON records (d = 8, k = 8, 4 partitions) and drains them with, in rotating order:
   the streamkm service (``bench_service.drain``, in-process), the batched and per-record
   contenders of ``baselines.py`` and the two ceilings (consume-only, produce-only). The
   per-record contender drains ``--per-record-count`` records only: it is two to three orders of
   magnitude slower, and records/s is what is compared.
2. Latency sweep: streamkm end-to-end latency (``bench_service.latency``: a paced producer and an
   output reader in child processes) at each of ``--rates`` for ``--latency-seconds`` each.

The table goes between the ``baselines`` markers in docs/benchmarks.md; the numbers go to
docs/bench-results.json under "throughput" and "latency", which bench/plot.py draws.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shlex
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np
from baselines import (  # bench/baselines.py
    Contender,
    batched,
    blob_values,
    consume_ceiling,
    fit_sample,
    per_record,
    produce_ceiling,
)
from bench_service import DIM, PARTITIONS, K, drain, latency, versions  # bench/bench_service.py
from report import BENCHMARKS, machine_facts, write_section  # bench/report.py

from engine import warmup
from model.topics import TopicSpec, ensure_topics
from stream.broker import EmbeddedBroker
from stream.compiled import quiet_worker_threads
from stream.produce import produce_blobs

RESULTS = BENCHMARKS.parent / "bench-results.json"
CONTENDERS = ("streamkm", "batched", "per-record", "consume ceiling", "produce ceiling")
TARGETS = {"batched": 3.0, "per-record": 100.0, "consume ceiling": 0.4}


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _preload(bootstrap: str, count: int) -> str:
    topic = _name("base")
    await produce_blobs(bootstrap, topic, count, dim=DIM, k=K, partitions=PARTITIONS)
    await ensure_topics(bootstrap, [TopicSpec(f"{topic}.labels", PARTITIONS)])
    return topic


async def one_run(
    bootstrap: str, args: argparse.Namespace, run: int, model, values: list[bytes]
) -> dict[str, Contender]:
    """Every contender once on fresh topics; the order rotates with ``run``."""
    topic = await _preload(bootstrap, args.count)  # batched and consume ceiling share it
    small = await _preload(bootstrap, args.per_record_count)
    sink = _name("sink")
    await ensure_topics(bootstrap, [TopicSpec(sink, PARTITIONS)])

    async def streamkm() -> Contender:
        d = await drain(bootstrap, args.count, "json")
        return Contender("streamkm", d.count, d.startup_s, d.total_s)

    jobs = {
        "streamkm": streamkm,
        "batched": lambda: batched(bootstrap, topic, f"{topic}.labels", args.count, K),
        "per-record": lambda: per_record(
            bootstrap, small, f"{small}.labels", args.per_record_count, model
        ),
        "consume ceiling": lambda: consume_ceiling(bootstrap, topic, args.count),
        "produce ceiling": lambda: produce_ceiling(bootstrap, sink, values),
    }
    shift = run % len(CONTENDERS)
    results = {}
    for name in CONTENDERS[shift:] + CONTENDERS[:shift]:
        c = await jobs[name]()
        results[name] = c
        print(
            f"run {run + 1} {name}: {c.count:,} records, steady {c.steady_rate:,.0f} rec/s, "
            f"incl. start-up {c.total_rate:,.0f} rec/s",
            file=sys.stderr,
            flush=True,
        )
    return results


def _runs(values: list[float], fmt: str = "{:,.0f}") -> str:
    return ", ".join(fmt.format(v) for v in values)


def throughput_table(runs: list[dict[str, Contender]]) -> list[str]:
    rows = [
        "| contender | records | steady rec/s, median | runs | incl. start-up rec/s, median "
        "| runs |",
        "| --- | ---: | ---: | --- | ---: | --- |",
    ]
    for name in CONTENDERS:
        cs = [r[name] for r in runs]
        steady, total = [c.steady_rate for c in cs], [c.total_rate for c in cs]
        rows.append(
            f"| {name} | {cs[0].count:,} | {statistics.median(steady):,.0f} | {_runs(steady)} "
            f"| {statistics.median(total):,.0f} | {_runs(total)} |"
        )
    rows += [
        "",
        "| ratio (per run, then median) | target | steady | runs | incl. start-up | runs |",
        "| --- | ---: | ---: | --- | ---: | --- |",
    ]
    for name, target in TARGETS.items():
        steady = [r["streamkm"].steady_rate / r[name].steady_rate for r in runs]
        total = [r["streamkm"].total_rate / r[name].total_rate for r in runs]
        fmt = "{:.2f}" if target < 10 else "{:.0f}"
        rows.append(
            f"| streamkm / {name} | ≥ {target:g} | {fmt.format(statistics.median(steady))} "
            f"| {_runs(steady, fmt)} | {fmt.format(statistics.median(total))} "
            f"| {_runs(total, fmt)} |"
        )
    return rows


def latency_table(sweep: list[dict[str, float]]) -> list[str]:
    rows = [
        "| offered rec/s | achieved rec/s | p50 (ms) | p99 (ms) | p99.9 (ms) | outputs seen "
        "| mean batch |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in sweep:
        offered = f"{s['rate']:,.0f}" + (" (50% of max)" if s.get("half_of_max") else "")
        rows.append(
            f"| {offered} | {s['achieved_rate']:,.0f} | {s['p50_ms']:.1f} "
            f"| {s['p99_ms']:.1f} | {s['p999_ms']:.1f} | {s['seen']:,} of {s['count']:,} "
            f"| {s['mean_batch']:,.0f} |"
        )
    return rows


def report(
    args: argparse.Namespace, runs: list[dict[str, Contender]], sweep: list[dict[str, float]]
) -> str:
    command = " ".join(["bench/bench_baselines.py", *map(shlex.quote, sys.argv[1:])])
    lines = [
        "## streamkm against hand-written consumers (`bench/bench_baselines.py`)",
        "",
        f"`{command}`. {machine_facts(versions() + ', ' + _sklearn())}. A shared, noisy machine:"
        " read medians and ratios, not single runs.",
        "",
        f"### Throughput: {args.count:,} preloaded JSON records, d = {DIM}, k = {K}, "
        f"{PARTITIONS} partitions, {args.runs} runs",
        "",
        "All contenders run in the same process against the same embedded broker, restarted"
        " before each run, on fresh topics, in an order that rotates from run to run"
        " (`bench/baselines.py` has the code):",
        "",
        "- **streamkm**: the service in-process (`bench_service.drain`: max_batch 4096, session"
        " timeout 3 s); *steady* from its first labeled batch to the last record labeled.",
        "- **batched**: a group consumer, `getmany(max_records=4096)`, `orjson.loads` per record,"
        " NumPy stacking, scikit-learn `MiniBatchKMeans.partial_fit` then `predict` per batch,"
        " one `producer.send()` per record with all futures awaited at the end of the batch,"
        " one commit per batch.",
        "- **per-record**: a group consumer with auto-commit; per record `json.loads`, a fitted"
        " scikit-learn `KMeans.predict` on a 1-row array, `json.dumps`, `send_and_wait`."
        f" Drains only {args.per_record_count:,} records (it is slow), so its"
        " *incl. start-up* rate carries more start-up per record than the others'.",
        "- **consume ceiling**: a group-less consumer assigned all partitions,"
        " `getmany(max_records=10000)`, no processing.",
        "- **produce ceiling**: the same number of prepared JSON values sent as one `send_batch`"
        " per partition and 4096-record slice (as `produce_blobs`), nothing consumed.",
        "",
        "*Steady* runs from the first record fetched to the last output acknowledged; *incl."
        " start-up* from the contender's start (clients created, group joined). Consumers use"
        ' session timeout 3 s, heartbeat 1 s; producers `acks="all"`, as the service.',
        "",
        *throughput_table(runs),
    ]
    if sweep:
        lines += [
            "",
            f"### streamkm end-to-end latency by offered rate, {args.latency_seconds:g} s each",
            "",
            "`bench_service.latency(floor=False)` at each rate, on a restarted broker: the"
            " service runs in-process and is warmed up; a child process offers the rate"
            " (`bench/loadgen.py`: JSON record batches built before the clock starts, 20 slices"
            " a second, each record stamped with the time its slice was due, so a late"
            " generator counts against the latency); another reads the output topic without a"
            " group (`fetch_max_wait_ms=5`) and records arrival - input timestamp. The three"
            " processes and the broker share the machine's two cores. *50% of max* is half the"
            " median steady drain rate of streamkm measured above, in this run.",
            "",
            *latency_table(sweep),
        ]
    return "\n".join(lines)


def _sklearn() -> str:
    import sklearn

    return f"scikit-learn {sklearn.__version__}"


def save_results(runs: list[dict[str, Contender]], sweep: list[dict[str, float]]) -> None:
    """Merge this run's numbers into docs/bench-results.json, keeping other keys."""
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data["throughput"] = {
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "contenders": {
            name: {
                "records": runs[0][name].count,
                "steady_rate": [r[name].steady_rate for r in runs],
                "total_rate": [r[name].total_rate for r in runs],
            }
            for name in CONTENDERS
        },
    }
    if sweep:
        data["latency"] = {
            "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "sweep": sweep,
        }
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")


async def sweep_latency(
    broker: EmbeddedBroker, args: argparse.Namespace, max_rate: float
) -> list[dict]:
    sweep = []
    half = round(max_rate / 2, -2)
    for rate in sorted({*args.rates, half}):
        broker.restart()
        lat = await latency(broker.bootstrap, args.latency_seconds, rate, floor=False)
        ms = lat.reader_ms
        p50, p99, p999 = np.percentile(ms, [50, 99, 99.9]) if len(ms) else [float("nan")] * 3
        sweep.append(
            {
                "rate": rate,
                "half_of_max": rate == half,
                "achieved_rate": lat.achieved_rate,
                "count": lat.count,
                "seen": len(ms),
                "p50_ms": float(p50),
                "p99_ms": float(p99),
                "p999_ms": float(p999),
                "mean_batch": lat.mean_batch,
            }
        )
        print(
            f"latency at {rate:,.0f} rec/s (achieved {lat.achieved_rate:,.0f}): "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms",
            file=sys.stderr,
            flush=True,
        )
    return sweep


async def main(args: argparse.Namespace) -> tuple[list[dict[str, Contender]], list[dict]]:
    quiet_worker_threads()  # as `streamkm serve` starts: idle OpenMP workers sleep
    warmup()  # Numba kernels compiled or loaded before anything is timed
    model = fit_sample(DIM, K)
    values = blob_values(args.count, DIM, K)
    runs, sweep = [], []
    broker = EmbeddedBroker()
    try:
        for run in range(args.runs):
            broker.restart()
            runs.append(await one_run(broker.bootstrap, args, run, model, values))
        if not args.skip_latency:
            max_rate = statistics.median(r["streamkm"].steady_rate for r in runs)
            sweep = await sweep_latency(broker, args, max_rate)
    finally:
        broker.stop()
    return runs, sweep


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="runs of every contender (default 3)")
    p.add_argument("--count", type=int, default=200_000, help="records per drain (200000)")
    p.add_argument(
        "--per-record-count", type=int, default=20_000, help="records for per-record (20000)"
    )
    p.add_argument("--latency-seconds", type=float, default=8.0, help="per offered rate (8)")
    p.add_argument(
        "--rates",
        type=lambda s: [float(x) for x in s.split(",")],
        default=[2000.0, 5000.0, 10000.0, 20000.0, 40000.0],
        help="offered rates for the latency sweep, rec/s, comma-separated",
    )
    p.add_argument("--skip-latency", action="store_true", help="throughput only")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    args = p.parse_args()
    if args.runs < 1 or args.count < 4096 or args.per_record_count < 1:
        p.error("need --runs >= 1, --count >= 4096, --per-record-count >= 1")
    if args.latency_seconds <= 0 or any(r <= 0 for r in args.rates):
        p.error("need --latency-seconds > 0 and every rate > 0")
    return args


if __name__ == "__main__":
    args = parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    runs, sweep = asyncio.run(main(args))
    text = report(args, runs, sweep)
    print(text)
    if not args.no_write:
        write_section("baselines", text)
        save_results(runs, sweep)
        print(f"\nwritten to {BENCHMARKS} and {Path(RESULTS).name}", file=sys.stderr)
