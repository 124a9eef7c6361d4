"""Bytes <-> arrays for whole batches: input decoding, output and DLQ encoding (DESIGN.md §3).

Everything here is pure and works a batch at a time. Decoding never raises on any input bytes: each
record ends up either as a row of the float32 matrix or as exactly one `Reject` naming why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import orjson

from model.fields import json_type, path_value

from .jsonscan import SCAN_MIN_VALUES, scan_batch

__all__ = [
    "INPUT_FORMATS",
    "MAX_VALUE_BYTES",
    "DecodedBatch",
    "Reject",
    "decode_batch",
    "dlq_headers",
    "encode_f32",
    "encode_json_records",
    "encode_labels",
    "merge_batches",
]

INPUT_FORMATS = ("json", "f32")
MAX_VALUE_BYTES = 1_048_576


class Reject(NamedTuple):
    """Why one record of a batch could not be used."""

    # Shadows tuple.index on purpose: the position reads better than any other name here.
    index: int  # type: ignore[assignment]  # position in the input batch
    reason: str  # machine-readable code, the DLQ `streamkm.error.reason` header
    message: str  # human text, the DLQ `streamkm.error.message` header


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """The valid records of a batch as one matrix, plus one `Reject` per invalid record."""

    X: np.ndarray  # float32 (m, d), C-contiguous
    index: np.ndarray  # int64 (m,): position in the input batch of each row of X
    ids: list[Any]  # JSON id (or None) of each row of X
    rejects: list[Reject]  # sorted by index
    dim: int | None  # the enforced dimension (learned from this batch when none was given)


def decode_batch(
    values: Sequence[bytes | None],
    fmt: str,
    dim: int | None,
    *,
    max_value_bytes: int = MAX_VALUE_BYTES,
    id_path: tuple[str, ...] = ("id",),
) -> DecodedBatch:
    """Decode a batch of record values in input format `fmt` ("json" or "f32").

    When `dim` is None it is learned from the first valid record and enforced on the rest;
    `id_path` is the dotted path of the id echoed in the output.
    """
    if fmt == "json":
        return _decode_json(values, dim, max_value_bytes, id_path)
    if fmt == "f32":
        return _decode_f32(values, dim, max_value_bytes)
    raise ValueError(f"unknown input format {fmt!r}; expected one of {', '.join(INPUT_FORMATS)}")


# --- json -----------------------------------------------------------------------------------


def _decode_json(
    values: Sequence[bytes | None], dim: int | None, max_bytes: int, id_path: tuple[str, ...]
) -> DecodedBatch:
    """The scanner's rows where it vouches for them (stream/jsonscan.py), the general parser
    for the rest and for batches it does not take (no dimension yet, an id other than "id")."""
    if dim is None or id_path != ("id",) or len(values) < SCAN_MIN_VALUES:
        return _decode_json_general(values, dim, max_bytes, id_path)
    scanned = scan_batch(values, dim, max_bytes)
    if scanned.fast.all():
        return DecodedBatch(scanned.X, np.arange(len(values)), scanned.ids, [], dim)
    fast = np.flatnonzero(scanned.fast)
    slow = np.flatnonzero(~scanned.fast)
    rest = _decode_json_general([values[i] for i in slow.tolist()], dim, max_bytes, id_path)
    return merge_batches(DecodedBatch(scanned.X[fast], fast, scanned.ids, [], dim), slow, rest)


def merge_batches(first: DecodedBatch, slow: np.ndarray, rest: DecodedBatch) -> DecodedBatch:
    """One batch from a scanner's part (`first`, positions already in the whole batch) and the
    general parser's decoding `rest` of the records at positions `slow`, in input order."""
    index = np.concatenate([first.index, slow[rest.index]])
    order = np.argsort(index, kind="stable")
    X = np.concatenate([first.X, rest.X.reshape(-1, first.X.shape[1])])
    ids = first.ids + rest.ids
    rejects = first.rejects + [
        Reject(int(slow[r.index]), r.reason, r.message) for r in rest.rejects
    ]
    rejects.sort()
    return DecodedBatch(
        np.ascontiguousarray(X[order]),
        index[order],
        [ids[j] for j in order.tolist()],
        rejects,
        first.dim,
    )


def _decode_json_general(
    values: Sequence[bytes | None], dim: int | None, max_bytes: int, id_path: tuple[str, ...]
) -> DecodedBatch:
    parsed, rejects = parse_all(values, max_bytes)
    if rejects:
        good = [i for i, o in enumerate(parsed) if o is not UNPARSED]
        objs = [parsed[i] for i in good]
    else:
        good, objs = list(range(len(values))), parsed
    rows = [o.get("features", _MISSING) if type(o) is dict else o for o in objs]
    ids = (
        [o.get("id") if type(o) is dict else None for o in objs]
        if id_path == ("id",)
        else [path_value(o, id_path) for o in objs]
    )

    fast = _fast_matrix(rows, dim)
    if fast is None:
        return _slow_rows(objs, rows, ids, good, rejects, dim)
    X, finite = fast
    index = np.asarray(good, dtype=np.int64)
    if finite.all():
        return DecodedBatch(X, index, ids, rejects, X.shape[1])
    rejects.extend(
        Reject(good[j], "non_finite", _non_finite_message(X[j]))
        for j in np.flatnonzero(~finite).tolist()
    )
    rejects.sort()
    keep = np.flatnonzero(finite)
    return DecodedBatch(
        np.ascontiguousarray(X[keep]),
        index[keep],
        [ids[j] for j in keep],
        rejects,
        X.shape[1] if keep.size else dim,
    )


class _Unparsed:
    """Marks a value that did not parse (None is a valid JSON value, so it cannot)."""


UNPARSED: Any = _Unparsed()
_MISSING: Any = object()


def parse_all(values: Sequence[bytes | None], max_bytes: int) -> tuple[list[Any], list[Reject]]:
    """Parse every value; the common all-valid batch costs one comprehension."""
    try:
        if max(map(len, values), default=0) <= max_bytes:  # type: ignore[arg-type]  # None: TypeError
            return [orjson.loads(v) for v in values], []  # type: ignore[arg-type]
    except (TypeError, orjson.JSONDecodeError):
        pass
    parsed: list[Any] = []
    rejects: list[Reject] = []
    for i, v in enumerate(values):
        reject = _check_raw(i, v, max_bytes)
        if reject is None:
            try:
                parsed.append(orjson.loads(v))  # type: ignore[arg-type]
                continue
            except orjson.JSONDecodeError as e:
                reject = _json_error(i, e)
        rejects.append(reject)
        parsed.append(UNPARSED)
    return parsed, rejects


def _check_raw(i: int, v: bytes | None, max_bytes: int) -> Reject | None:
    """Reject tombstones, empty and oversized values before any parsing."""
    if v is None:
        return Reject(i, "empty_value", "value is null (a tombstone); expected a record")
    if len(v) == 0:
        return Reject(i, "empty_value", "value is empty; expected a record")
    if len(v) > max_bytes:
        return Reject(i, "too_large", f"value is {len(v)} bytes; the limit is {max_bytes} bytes")
    return None


def _json_error(i: int, e: orjson.JSONDecodeError) -> Reject:
    # orjson refuses numbers like 1e400; they are valid JSON grammar, so say what is really wrong.
    if "infinity" in str(e):
        return Reject(i, "non_finite", f"a number overflows to infinity ({e})")
    return Reject(i, "invalid_json", f"value is not valid JSON: {e}")


def _fast_matrix(rows: list[Any], dim: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Build the matrix with one NumPy call when every row is a numeric list of the same width.

    Returns (X float32, per-row finite mask), or None when any row needs a closer look.
    """
    if not rows:
        return None
    try:
        # Let NumPy infer the dtype: a string, null or object feature then shows up as a
        # non-numeric dtype instead of being silently converted.
        A = np.array(rows)
    except (ValueError, TypeError, OverflowError, RecursionError):
        return None
    if A.ndim != 2 or A.shape[1] == 0 or A.dtype.kind not in "iuf":
        return None
    if dim is not None and A.shape[1] != dim:
        return None
    # Python bools are ints, so NumPy turns a bool feature into 0 or 1 without complaint. Only
    # rows holding an exact 0 or 1 can hide one, so only those are looked at element by element.
    maybe = np.flatnonzero(((A == 0) | (A == 1)).any(axis=1)).tolist()
    if any(type(x) is bool for j in maybe for x in rows[j]):
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        X = A.astype(np.float32)
    return X, np.asarray(np.isfinite(X).all(axis=1))


def _slow_rows(
    objs: list[Any],
    rows: list[Any],
    ids: list[Any],
    good: list[int],
    rejects: list[Reject],
    dim: int | None,
) -> DecodedBatch:
    """Check every row's shape and types on its own, then convert the survivors in one call."""
    keep: list[int] = []  # positions in rows
    for j, row in enumerate(rows):
        problem = _row_problem(row, type(objs[j]) is dict)
        if problem is not None:
            rejects.append(Reject(good[j], *problem))
        elif dim is not None and len(row) != dim:
            rejects.append(
                Reject(good[j], "wrong_dimension", f"expected {dim} features, got {len(row)}")
            )
        elif dim is None and not _is_finite_row(row):
            # Before the dimension is known, a non-finite record cannot teach it.
            rejects.append(Reject(good[j], "non_finite", _non_finite_message(_to_f32(row))))
        else:
            dim = len(row)
            keep.append(j)
    X = _rows_to_f32([rows[j] for j in keep], dim or 0)
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():
        rejects.extend(
            Reject(good[keep[j]], "non_finite", _non_finite_message(X[j]))
            for j in np.flatnonzero(~finite).tolist()
        )
        X = np.ascontiguousarray(X[finite])
        keep = [j for j, ok in zip(keep, finite.tolist(), strict=True) if ok]
    rejects.sort()
    index = np.asarray([good[j] for j in keep], dtype=np.int64)
    return DecodedBatch(X, index, [ids[j] for j in keep], rejects, dim)


def _rows_to_f32(rows: list[list[float | int]], dim: int) -> np.ndarray:
    """Rows of numbers, all `dim` long, as float32; an integer beyond float64 becomes NaN."""
    try:
        A = np.array(rows, dtype=np.float64).reshape(len(rows), dim)
    except OverflowError:
        A = np.array([_float_or_nan(x) for r in rows for x in r]).reshape(len(rows), dim)
    with np.errstate(over="ignore"):
        return A.astype(np.float32)


def _float_or_nan(x: float | int) -> float:
    try:
        return float(x)
    except OverflowError:
        return float("nan")


def _is_finite_row(row: list[float | int]) -> bool:
    x = _to_f32(row)
    return x is not None and bool(np.isfinite(x).all())


def _row_problem(row: Any, in_object: bool) -> tuple[str, str] | None:
    """Reason and message when `row` is not a non-empty list of JSON numbers."""
    if row is _MISSING:
        return "missing_features", 'object has no "features" field; expected "features": [...]'
    if type(row) is not list:
        if in_object:
            return "missing_features", f'"features" is {json_type(row)}; expected an array'
        return (
            "missing_features",
            f'value is {json_type(row)}; expected an object with "features" or an array',
        )
    if not row:
        return "missing_features", "features array is empty; expected at least one number"
    for pos, x in enumerate(row):
        t = type(x)
        if t is not float and t is not int:
            return "not_numeric", f"feature {pos} is {json_type(x)}; expected a number"
    return None


def _to_f32(row: list[float | int]) -> np.ndarray | None:
    """The row as float32, or None when an integer is too large even for float64."""
    try:
        a = np.array(row, dtype=np.float64)
    except OverflowError:
        return None
    with np.errstate(over="ignore"):
        return a.astype(np.float32)


def _non_finite_message(x: np.ndarray | None) -> str:
    if x is None:
        return "a feature is too large to be a float32 number"
    bad = int(np.flatnonzero(~np.isfinite(x))[0])
    return f"feature {bad} is not finite (NaN, infinity, or beyond the float32 range)"


# --- f32 ------------------------------------------------------------------------------------


def _decode_f32(values: Sequence[bytes | None], dim: int | None, max_bytes: int) -> DecodedBatch:
    n = len(values)
    rejects: list[Reject] = []
    try:
        lengths = set(map(len, values))  # type: ignore[arg-type]  # None: TypeError
    except TypeError:
        lengths = set()
    if len(lengths) == 1:
        (size,) = lengths
        if 0 < size <= max_bytes and size % 4 == 0 and (dim is None or size == 4 * dim):
            good = list(range(n))
            buf = bytearray().join(values)  # type: ignore[arg-type]
            return _finish_f32(buf, good, size // 4, rejects, dim)

    good = []
    chunks: list[bytes] = []
    for i, v in enumerate(values):
        reject = _check_raw(i, v, max_bytes)
        if reject is None:
            size = len(v)  # type: ignore[arg-type]
            if size % 4:
                reject = Reject(
                    i, "wrong_size", f"value is {size} bytes, not a multiple of 4 (float32)"
                )
            elif dim is None:
                if np.isfinite(np.frombuffer(v, dtype="<f4")).all():  # type: ignore[arg-type]
                    dim = size // 4
            elif size != 4 * dim:
                reject = Reject(
                    i, "wrong_size", f"value is {size} bytes; expected {4 * dim} ({dim} float32)"
                )
        if reject is None and dim is not None:
            good.append(i)
            chunks.append(v)  # type: ignore[arg-type]
        elif reject is None:
            # Before the dimension is known, a non-finite record cannot teach it.
            rejects.append(Reject(i, "non_finite", _non_finite_message(_f32_row(v))))
        else:
            rejects.append(reject)
    if dim is None:
        return DecodedBatch(np.empty((0, 0), np.float32), np.empty(0, np.int64), [], rejects, None)
    return _finish_f32(bytearray().join(chunks), good, dim, rejects, dim)


def _f32_row(v: Any) -> np.ndarray:
    return np.frombuffer(v, dtype="<f4")


def _finish_f32(
    buf: bytearray, good: list[int], d: int, rejects: list[Reject], dim: int | None
) -> DecodedBatch:
    X = np.frombuffer(buf, dtype="<f4").reshape(len(good), d).astype(np.float32, copy=False)
    index = np.asarray(good, dtype=np.int64)
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():
        rejects.extend(
            Reject(int(index[j]), "non_finite", _non_finite_message(X[j]))
            for j in np.flatnonzero(~finite)
        )
        rejects.sort()
        X, index = np.ascontiguousarray(X[finite]), index[finite]
    new_dim = d if len(index) else dim
    return DecodedBatch(X, index, [None] * len(index), rejects, new_dim)


# --- encoding -------------------------------------------------------------------------------


_LABEL_SEPARATOR = b'},{"id":'


def encode_labels(
    ids: list[Any],
    labels: np.ndarray,
    distances: np.ndarray,
    scores: np.ndarray,
    version: int,
) -> list[bytes]:
    """One output JSON value per record (DESIGN.md §3).

    A non-finite distance or score (a score against a cluster with no spread yet) is written as
    null, so every output value stays valid JSON.
    """
    version = int(version)
    records = [
        {"id": i, "cluster": c, "distance": dist, "score": s, "model_version": version}
        for i, c, dist, s in zip(
            ids, labels.tolist(), distances.tolist(), scores.tolist(), strict=True
        )
    ]
    # One orjson call for the whole batch is several times faster than one per record. The
    # separator between records can also occur inside an id that is an object, but then the
    # split yields more than one piece per record, which the length check catches.
    parts = orjson.dumps(records)[1:-1].split(_LABEL_SEPARATOR)
    if len(parts) != len(records):
        return [orjson.dumps(r) for r in records]
    if len(parts) == 1:
        return parts if records else []
    return [
        parts[0] + b"}",
        *[b'{"id":' + p + b"}" for p in parts[1:-1]],
        b'{"id":' + parts[-1],
    ]


def dlq_headers(
    reason: str, message: str, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    """The headers of a dead-letter record (DESIGN.md §3)."""
    return [
        ("streamkm.error.reason", reason.encode()),
        ("streamkm.error.message", message.encode("utf-8", "replace")),
        ("streamkm.source.topic", topic.encode("utf-8", "replace")),
        ("streamkm.source.partition", str(int(partition)).encode()),
        ("streamkm.source.offset", str(int(offset)).encode()),
    ]


def encode_f32(X: np.ndarray) -> list[bytes]:
    """Each row of X as a raw little-endian float32 value (the `f32` input format)."""
    A = np.ascontiguousarray(X, dtype="<f4")
    if A.ndim != 2:
        raise ValueError(f"expected a 2-D array of shape (n, d), got shape {A.shape}")
    step = 4 * A.shape[1]
    if step == 0:
        return [b""] * A.shape[0]
    buf = A.tobytes()
    return [buf[s : s + step] for s in range(0, len(buf), step)]


def encode_json_records(
    X: np.ndarray, ids: Sequence[Any] | None = None, truth: Sequence[int] | np.ndarray | None = None
) -> list[bytes]:
    """Each row of X as a `json` input value `{"id", "features", "truth"}`.

    `ids` defaults to 0..n-1; `truth` (the generating blob) is written only when given.
    """
    A = np.asarray(X)
    if A.ndim != 2:
        raise ValueError(f"expected a 2-D array of shape (n, d), got shape {A.shape}")
    rows = A.tolist()
    id_list = list(range(len(rows))) if ids is None else list(ids)
    dumps = orjson.dumps
    if truth is None:
        return [dumps({"id": i, "features": r}) for i, r in zip(id_list, rows, strict=True)]
    t_list = np.asarray(truth).tolist()
    return [
        dumps({"id": i, "features": r, "truth": t})
        for i, r, t in zip(id_list, rows, t_list, strict=True)
    ]
