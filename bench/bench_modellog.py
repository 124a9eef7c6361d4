"""Sizes of updates-log messages and the speed of replaying them (issue 5's scaling estimates).

    .venv/bin/python bench/bench_modellog.py [--no-write]

No broker: it measures what a replica does per record of `<model>.updates` (decode the stats,
apply the update rule), which bounds the replay time of a starting instance.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine_facts, write_section

from engine import ModelState, batch_stats
from model.messages import INIT, STATS, ModelParams, ModelReplica, encode_init

SHAPES = [(8, 8), (32, 16), (128, 64), (1024, 128)]


def measure(k: int, d: int, n_messages: int = 2000) -> tuple[int, int, float]:
    """(stats bytes, snapshot bytes, replay µs per stats message) for one shape."""
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(k, d)) * 10
    batch = (centers[rng.integers(0, k, 2048)] + rng.normal(size=(2048, d))).astype(np.float32)
    stats = batch_stats(batch, centers)[2].to_bytes()
    init = encode_init(ModelState.initial(centers), ModelParams(k, d, 50_000.0), "bench")
    times = []
    for _ in range(3):
        replica = ModelReplica()
        replica.apply(0, INIT, init)
        t0 = time.perf_counter()
        for offset in range(1, n_messages + 1):
            replica.apply(offset, STATS, stats)
        times.append((time.perf_counter() - t0) / n_messages * 1e6)
    return len(stats), len(init) + 16, statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rows = ["| k | d | stats message (bytes) | snapshot (bytes) | replay per message (µs) | replay rate (msg/s) |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for k, d in SHAPES:
        size, snap, us = measure(k, d, 2000 if k * d < 10_000 else 300)
        rows.append(f"| {k} | {d} | {size:,} | {snap:,} | {us:.1f} | {1e6 / us:,.0f} |")
    print("\n".join(rows))
    if not args.no_write:
        body = "\n".join(
            [
                "## Updates log: message sizes and replay speed (issue 5)",
                "",
                "Command: `.venv/bin/python bench/bench_modellog.py`",
                "",
                machine_facts(),
                "",
                "Stats messages summarise a batch of 2,048 records (only clusters that received "
                "rows are sent; up to 16 farthest rows ride along for re-seeding). Replay = decode "
                "+ apply the update rule, per message, median of 3 runs.",
                "",
                *rows,
            ]
        )
        write_section("modellog", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
