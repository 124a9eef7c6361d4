"""Benchmark JSON decoding alone: streamkm's scanners against the general parser and pysimdjson.

Run: .venv/bin/python bench/bench_decode.py [--runs 5] [--count 4096] [--no-write]

Three batches of ``--count`` record values, decoded to the float32 matrix the service labels:
- *embeddings*: ``{"id", "features": [384 numbers], "truth"}`` from ``streamkm produce
  --scenario embeddings`` (float32 values printed as the shortest double, about 8 kB a record);
- *vectors*: the same at d = 8 (blobs);
- *transactions*: card transactions with ``--fields TRANSACTION_FIELDS`` (8 named fields, three
  of them ``log1p``).
Contenders, each timed over the whole batch and reported per record (median of ``--runs``):
- streamkm: ``decode_batch`` / ``decode_events`` as the service calls them (the Numba scanners,
  with the general parser for what they do not vouch for);
- general: the same functions' orjson path (one ``orjson.loads`` per record, then NumPy), what
  every record went through before the scanners;
- pysimdjson 7 (the bench extra): one ``Parser.parse`` per record, then ``as_buffer(of_type="d")``
  for a features array or one lookup per field, into the same matrix. It validates and converts
  nothing more than a hand-written loop would (no dead-letter reasons); it is the library the
  issue suggests.
Decoding uses both cores (the scanners split a batch across Numba's threads); the others run on one.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from report import machine_facts, run_and_report  # bench/report.py

from model.fields import parse_fields
from stream.codec import MAX_VALUE_BYTES, _decode_json_general, decode_batch
from stream.eventscan import warm_event_scanner
from stream.fields import _decode_events_general, decode_events
from stream.jsonscan import warm_scanner
from stream.produce import BlobStream, encode_block
from stream.transactions import TRANSACTION_FIELDS, TransactionStream, encode_transactions

try:
    import simdjson
except ImportError:  # pragma: no cover - the bench extra is not installed
    simdjson = None


def _simd_features(values: list[bytes], dim: int) -> np.ndarray:
    parser = simdjson.Parser()
    X = np.empty((len(values), dim), np.float32)
    for i, v in enumerate(values):
        X[i] = np.frombuffer(parser.parse(v)["features"].as_buffer(of_type="d"), np.float64)
    return X


def _simd_fields(values: list[bytes]) -> np.ndarray:
    fields = parse_fields(TRANSACTION_FIELDS)
    parser = simdjson.Parser()
    A = np.empty((len(values), len(fields)), np.float64)
    for i, v in enumerate(values):
        doc = parser.parse(v)
        for t, f in enumerate(fields):
            x = doc
            for key in f.path:
                x = x[key]
            A[i, t] = x
        del doc, x  # the parser is reused only once no proxy of its document is left
    for t, f in enumerate(fields):
        if f.transform == "log1p":
            A[:, t] = np.log1p(A[:, t])
    return A.astype(np.float32)


def _batches(count: int) -> dict[str, list[bytes]]:
    emb = next(BlobStream(384, 64, seed=0, fmt="json", embeddings=True).blocks(count))
    vec = next(BlobStream(8, 8, seed=0, fmt="json").blocks(count))
    return {
        "embeddings, d = 384": encode_block(emb, "json"),
        "vectors, d = 8": encode_block(vec, "json"),
        "transactions, 8 fields": encode_transactions(TransactionStream(0).block(0, count)),
    }


def _contenders(name: str) -> dict[str, Callable[[list[bytes]], object]]:
    fields = parse_fields(TRANSACTION_FIELDS)
    if name.startswith("transactions"):
        out: dict[str, Callable[[list[bytes]], object]] = {
            "streamkm": lambda v: decode_events(v, fields),
            "general (orjson)": lambda v: _decode_events_general(
                v, fields, ("id",), MAX_VALUE_BYTES
            ),
        }
        if simdjson is not None:
            out["pysimdjson"] = _simd_fields
        return out
    dim = 384 if "384" in name else 8
    out = {
        "streamkm": lambda v: decode_batch(v, "json", dim),
        "general (orjson)": lambda v: _decode_json_general(v, dim, MAX_VALUE_BYTES, ("id",)),
    }
    if simdjson is not None:
        out["pysimdjson"] = lambda v: _simd_features(v, dim)
    return out


def _per_record_us(fn: Callable[[list[bytes]], object], values: list[bytes], runs: int) -> float:
    fn(values)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(values)
        times.append(time.perf_counter() - t)
    return statistics.median(times) / len(values) * 1e6


async def main(args: argparse.Namespace) -> str:
    warm_scanner()
    warm_event_scanner()
    rows = []
    for name, values in _batches(args.count).items():
        # Each contender's runs back to back (blocked): threads of one do not slow the next.
        timed = {c: _per_record_us(fn, values, args.runs) for c, fn in _contenders(name).items()}
        size = statistics.fmean(map(len, values))
        rows.append((name, size, timed))
    lines = [
        "## JSON decoding alone: the scanners against orjson and pysimdjson (issue 15)",
        "",
        machine_facts(f"{args.count:,} records per batch, median of {args.runs} runs"),
        "",
        f"Command: `.venv/bin/python bench/bench_decode.py --runs {args.runs} --count {args.count}`",
        "",
        "| batch | bytes a record | streamkm (us a record) | general, orjson (us) "
        "| pysimdjson (us) | streamkm vs orjson | streamkm vs pysimdjson |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, size, t in rows:
        simd = t.get("pysimdjson")
        ours = t["streamkm"]
        lines.append(
            f"| {name} | {size:,.0f} | {t['streamkm']:.2f} | {t['general (orjson)']:.2f} "
            f"| {'not installed' if simd is None else f'{simd:.2f}'} "
            f"| {t['general (orjson)'] / t['streamkm']:.1f}x "
            f"| {'-' if simd is None else f'{simd / ours:.1f}x'} |"
        )
    lines += [
        "",
        "streamkm and the general path give the same bits and dead-letter reasons "
        "(tests/test_jsonscan.py, tests/test_eventscan.py); pysimdjson is timed without "
        "either (no validation beyond its own parse, no reasons).",
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="timed runs per contender (default 5)")
    p.add_argument("--count", type=int, default=4096, help="records per batch (4096)")
    return p


if __name__ == "__main__":
    run_and_report("decode", main, _parser())
