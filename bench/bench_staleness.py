"""Benchmark the staleness bound (issue 13): what pacing a backlog costs and what it buys.

Run: .venv/bin/python bench/bench_staleness.py [--runs 3] [--count 200000] [--no-write]

1. Cost: the standard service drain (``--count`` JSON records, d = 8, k = 8, 4 partitions,
   stationary, preloaded) with the default ``--max-staleness`` against
   - the service the issue was filed against ("today's": commit ``--before``, 410cec1, run
     from its own sources in its own process by bench/drain_at.py), the issue's target;
   - the same code without a bound (``--max-staleness`` 10^9: labeling up to four batches ahead
     of its own statistics), the bound's own cost.
   Each run restarts the broker, preloads one topic and drains it six times (bounded, unbounded,
   before, before, unbounded, bounded); a run's figure per contender is the mean of its two.
2. Benefit: a drifting stream (four blobs in 2-D, two of them travelling toward the other two;
   60,000 records, ``--half-life 5000``) fed live at 8,000 records/s, and the same records
   waiting as a backlog when the service starts, with and without the bound. The figure is the
   adjusted Rand index of the last 10,000 labels against the generating blobs.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import uuid
from pathlib import Path

from bench_fields import drain  # bench/bench_fields.py
from drain_at import drain_at, tree_at  # bench/drain_at.py
from report import listed, machine_facts, run_and_report, runs_parser  # bench/report.py

from engine import warmup
from stream.broker import EmbeddedBroker
from stream.compiled import quiet_worker_threads
from stream.config import Settings
from stream.produce import produce_blobs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import test_model_freshness as freshness  # the drifting stream of the test

UNBOUNDED = 10**9
K, DIM = 8, 8


def _settings(bootstrap: str, topic: str, **kw: object) -> Settings:
    return Settings(
        bootstrap=bootstrap,
        input_topic=topic,
        output_topic=f"{topic}.labels",
        group=f"g-{uuid.uuid4().hex[:8]}",
        model=f"m-{uuid.uuid4().hex[:8]}",
        k=K,
        dim=DIM,
        metrics_port=0,
        session_timeout=3.0,
        **kw,  # type: ignore[arg-type]
    )


async def cost(args: argparse.Namespace, broker: EmbeddedBroker) -> dict[str, list[float]]:
    """Per run: one preloaded topic drained by fresh groups, bounded, unbounded, before,
    before, unbounded, bounded, so that all see the same records and, on a shared and noisy
    machine, the same conditions on average; a run's figure is the mean of its two drains."""
    before = tree_at(args.before)
    rates: dict[str, list[float]] = {"bounded": [], "unbounded": [], "before": []}
    for run in range(args.runs):
        broker.restart()
        topic = f"s-{uuid.uuid4().hex[:8]}"
        await produce_blobs(broker.bootstrap, topic, args.count, dim=DIM, k=K, partitions=4)
        got: dict[str, list[float]] = {name: [] for name in rates}
        for name in ("bounded", "unbounded", "before", "before", "unbounded", "bounded"):
            if name == "before":
                rate = await drain_at(before, broker.bootstrap, topic, args.count, K, DIM)
            else:
                extra = {} if name == "bounded" else {"max_staleness": UNBOUNDED}
                rate = await drain(_settings(broker.bootstrap, topic, **extra), args.count)
            got[name].append(rate)
            print(f"run {run + 1} {name}: {rate:,.0f} rec/s", file=sys.stderr)
        for name, pair in got.items():
            rates[name].append(statistics.mean(pair))
    return rates


class _Topics:
    """The `new_topic` fixture of the tests, for a benchmark."""

    def __init__(self, broker: EmbeddedBroker) -> None:
        self.broker = broker

    async def __call__(self, partitions: int = 1) -> str:
        from model.topics import TopicSpec, ensure_topics

        name = f"d-{uuid.uuid4().hex[:8]}"
        kwargs = {"bootstrap_servers": self.broker.bootstrap}
        await ensure_topics(self.broker.bootstrap, [TopicSpec(name, partitions)], kwargs)
        return name


async def benefit(broker: EmbeddedBroker) -> dict[str, float]:
    broker.restart()
    out = {}
    default = freshness.settings_for
    topics = _Topics(broker)
    for name, live, bound in (
        ("live", True, None),
        ("backlog, bounded", False, None),
        ("backlog, unbounded", False, UNBOUNDED),
    ):

        def settings_for(b, topic, _bound=bound, **kw):  # type: ignore[no-untyped-def]
            s = default(b, topic, **kw)
            return s if _bound is None else dataclasses.replace(s, max_staleness=_bound)

        freshness.settings_for = settings_for
        try:
            out[name] = await freshness._labels_of_last(broker, topics, live=live)
        finally:
            freshness.settings_for = default
        print(f"{name}: ARI {out[name]:.3f}", file=sys.stderr)
    return out


async def main(args: argparse.Namespace) -> str:
    quiet_worker_threads()  # as `streamkm serve` starts: idle OpenMP workers sleep
    warmup()
    broker = EmbeddedBroker().start()
    try:
        rates = await cost(args, broker)
        quality = await benefit(broker)
    finally:
        broker.stop()
    ratios = [b / u for b, u in zip(rates["bounded"], rates["before"], strict=True)]
    own = [b / u for b, u in zip(rates["bounded"], rates["unbounded"], strict=True)]
    bound = Settings().max_staleness

    return "\n".join(
        [
            "## The staleness bound: cost and benefit (issue 13)",
            "",
            machine_facts(f"{args.count:,} records per drain, {args.runs} runs of six drains."),
            "",
            f"Command: `.venv/bin/python bench/bench_staleness.py --runs {args.runs} "
            f"--count {args.count}`",
            "",
            f"Today's service: commit `{args.before}`, the code issue 13 was filed against, from "
            "its own sources in its own process (bench/drain_at.py), with the settings it had "
            "then (no `OMP_WAIT_POLICY`). streamkm now runs with idle OpenMP workers asleep, "
            "as `streamkm` sets for itself (stream/compiled.py).",
            "",
            "| standard drain (JSON, d = 8, k = 8, stationary) | steady rec/s, median | runs (mean of two drains each) |",
            "| --- | ---: | --- |",
            f"| default `--max-staleness {bound}` | {statistics.median(rates['bounded']):,.0f} | "
            f"{listed(rates['bounded'], '{:,.0f}')} |",
            f"| today's service (`{args.before}`, before issue 13) | "
            f"{statistics.median(rates['before']):,.0f} | {listed(rates['before'], '{:,.0f}')} |",
            f"| **bounded / today's** (target ≥ 0.85) | **{statistics.median(ratios):.2f}** | "
            f"{listed(ratios, '{:.2f}')} |",
            f"| the same code without a bound (`--max-staleness {UNBOUNDED:.0e}`) | "
            f"{statistics.median(rates['unbounded']):,.0f} | "
            f"{listed(rates['unbounded'], '{:,.0f}')} |",
            f"| bounded / unbounded (the bound's own cost) | {statistics.median(own):.2f} | "
            f"{listed(own, '{:.2f}')} |",
            "",
            "| drifting stream, last 10,000 labels | adjusted Rand index |",
            "| --- | ---: |",
            *[f"| {name} | {ari:.3f} |" for name, ari in quality.items()],
        ]
    )


if __name__ == "__main__":
    parser = runs_parser(__doc__, runs=5, count=200_000, runs_help="runs of six drains")
    parser.add_argument(
        "--before", default="410cec1", help="the commit issue 13 was filed against (410cec1)"
    )
    run_and_report("staleness", main, parser)
