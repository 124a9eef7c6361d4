"""Benchmark the service on embeddings: JSON at d = 384 against the hand-written consumer, f32 at
d = 768 (issue 15).

Run: .venv/bin/python bench/bench_embeddings.py [--runs 3] [--count 40000] [--no-write]

Per run (a restarted embedded broker, fresh topics) three topics of ``--count`` records each
(4 partitions) are preloaded from `streamkm produce --scenario embeddings`:
- JSON, d = 384, 64 topics: drained by an in-process ``Service`` (k = 64, max_batch = 4096) and by
  the batched hand-written consumer of bench/baselines.py (aiokafka, orjson, NumPy, scikit-learn's
  MiniBatchKMeans; each its own group), alternating which goes first;
- f32, d = 768, 256 topics: drained by the service (k = 256);
- the JSON topic read by a group-less consumer that does nothing else (the consume-only ceiling).
Rates are steady records/s from the first labeled batch to the last.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from baselines import batched, consume_ceiling  # bench/baselines.py
from bench_fields import _name, drain, drain_settings  # bench/bench_fields.py
from report import listed, machine_facts, run_and_report, runs_parser  # bench/report.py

from engine import warmup
from stream.broker import EmbeddedBroker
from stream.compiled import quiet_worker_threads
from stream.config import Settings
from stream.produce import BlobStream, encode_block, produce_blobs

PARTITIONS, MAX_BATCH = 4, 4096
JSON_DIM, JSON_K = 384, 64
F32_DIM, F32_K = 768, 256


def _settings(bootstrap: str, topic: str, fmt: str, dim: int, k: int) -> Settings:
    return drain_settings(bootstrap, topic, input_format=fmt, dim=dim, k=k, max_batch=MAX_BATCH)


async def one_run(bootstrap: str, count: int, run: int) -> dict[str, float]:
    json_topic, f32_topic = _name("emb-json"), _name("emb-f32")
    for topic, fmt, dim, k in (
        (json_topic, "json", JSON_DIM, JSON_K),
        (f32_topic, "f32", F32_DIM, F32_K),
    ):
        await produce_blobs(
            bootstrap, topic, count, dim=dim, k=k, seed=run, fmt=fmt, partitions=PARTITIONS,
            embeddings=True,
        )  # fmt: skip
    rates: dict[str, float] = {}

    async def service_json() -> None:
        settings = _settings(bootstrap, json_topic, "json", JSON_DIM, JSON_K)
        rates["streamkm json"] = await drain(settings, count)

    async def handwritten() -> None:
        result = await batched(bootstrap, json_topic, f"{json_topic}.hw", count, JSON_K)
        rates["hand-written json"] = result.steady_rate

    order = [service_json, handwritten] if run % 2 == 0 else [handwritten, service_json]
    for step in order:
        await step()
    rates["streamkm f32"] = await drain(
        _settings(bootstrap, f32_topic, "f32", F32_DIM, F32_K), count
    )
    rates["consume-only json"] = (await consume_ceiling(bootstrap, json_topic, count)).steady_rate
    return rates


async def main(args: argparse.Namespace) -> str:
    quiet_worker_threads()  # as `streamkm serve` starts: idle OpenMP workers sleep
    warmup()
    runs: list[dict[str, float]] = []
    broker = EmbeddedBroker()
    try:
        for run in range(args.runs):
            broker.restart()
            runs.append(await one_run(broker.bootstrap, args.count, run))
            print(f"run {run + 1}: " + ", ".join(f"{k} {v:,.0f}" for k, v in runs[-1].items()),
                  file=sys.stderr)  # fmt: skip
    finally:
        broker.stop()
    return report(args, runs)


def value_size(dim: int, k: int, fmt: str) -> float:
    block = next(BlobStream(dim, k, seed=0, fmt=fmt, embeddings=True).blocks(1024))
    return statistics.fmean(map(len, encode_block(block, fmt)))


def report(args: argparse.Namespace, runs: list[dict[str, float]]) -> str:
    def rates(name: str) -> list[float]:
        return [r[name] for r in runs]

    ratios = [
        s / h for s, h in zip(rates("streamkm json"), rates("hand-written json"), strict=True)
    ]
    rows = [
        ("streamkm, JSON d = 384, k = 64", rates("streamkm json"), "{:,.0f}"),
        ("hand-written batched consumer, same topic", rates("hand-written json"), "{:,.0f}"),
        ("streamkm / hand-written (target >= 4x)", ratios, "{:.2f}x"),
        ("consume-only ceiling, same topic", rates("consume-only json"), "{:,.0f}"),
        ("streamkm, f32 d = 768, k = 256", rates("streamkm f32"), "{:,.0f}"),
    ]
    return "\n".join(
        [
            "## Embeddings through the service (issue 15)",
            "",
            machine_facts(
                f"{args.count:,} records per topic, {args.runs} runs, {PARTITIONS} partitions; "
                f"JSON values {value_size(JSON_DIM, JSON_K, 'json'):,.0f} bytes, "
                f"f32 values {value_size(F32_DIM, F32_K, 'f32'):,.0f} bytes."
            ),
            "",
            "Command: `.venv/bin/python bench/bench_embeddings.py "
            f"--runs {args.runs} --count {args.count}`",
            "",
            "| drain, steady records/s | median | runs |",
            "| --- | --- | --- |",
            *[
                f"| {name} | {fmt.format(statistics.median(vals))} | {listed(vals, fmt)} |"
                for name, vals, fmt in rows
            ],
        ]
    )


if __name__ == "__main__":
    run_and_report("embeddings", main, runs_parser(__doc__, runs=3, count=40_000))
