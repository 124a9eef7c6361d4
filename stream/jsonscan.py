"""A strict, conservative JSON scanner for the common record: `{"id": ..., "features": [...]}`.

Decoding a `features` array through a general JSON parser builds one Python float per number and
then copies them into NumPy (about 30 us a record at d = 384). This scanner reads a whole batch's
bytes in a Numba kernel and writes the numbers straight into the float32 matrix.

It answers "fast" for a record only when it is sure of two things: the record is valid JSON
(strictly: grammar, literals, numbers, string escapes; a string with any byte outside printable
ASCII, or a \\u escape, is left to the general parser rather than validated here), and every
number of its `features` array converts to exactly the float32 the general path gives (orjson's
correctly rounded double, then float32). Anything else - invalid JSON, a missing or repeated key,
a feature with more than 18 significant digits or a decimal exponent beyond +-22, a float32 that
a one-ulp error could round the other way, nesting deeper than 64 - is "slow": the caller
decodes that record with the general parser, which also names the dead-letter reason. The scanner
therefore never changes a result, only how fast it is reached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import orjson
from numba import njit, prange

from engine.views import NO_REFCOUNTS, borrowed

__all__ = [
    "FAST",
    "SCAN_MIN_VALUES",
    "SLOW",
    "ScannedBatch",
    "ids_of",
    "join_values",
    "scan_batch",
    "warm_scanner",
]

FAST = 0
SLOW = 1
_MAX_DEPTH = 64
_BLOCK = 64  # records per task of the parallel loop
# Batches from this size on go through a scanner first (below it, its set-up costs more).
SCAN_MIN_VALUES = 8
_EXACT_MANTISSA = 1 << 53
_F32_MAX = float(np.finfo(np.float32).max)
_F32_MIN_NORMAL = float(np.finfo(np.float32).tiny)
_POW10 = np.array([10.0**e for e in range(23)])
# An inexact double this close (in units of float32 spacing) to a point halfway between two
# float32 numbers could round the other way: 8 double ulps.
_HALFWAY_MARGIN = 8.0 * 2.0**-28

_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_FEATURES = np.frombuffer(b"features", np.uint8)
_ID = np.frombuffer(b"id", np.uint8)
_TRUE = np.frombuffer(b"true", np.uint8)
_FALSE = np.frombuffer(b"false", np.uint8)
_NULL = np.frombuffer(b"null", np.uint8)


_U = np.uint64


@njit(cache=True, inline="always")
def _eight_digits(buf, p):
    """The eight bytes from p as a number when all are ASCII digits, else -1: one 64-bit word
    checked and converted in a few multiplications (the SWAR method of fast_float and
    simdjson), instead of a chain of eight multiply-adds."""
    v = (
        _U(buf[p])
        | (_U(buf[p + 1]) << _U(8))
        | (_U(buf[p + 2]) << _U(16))
        | (_U(buf[p + 3]) << _U(24))
        | (_U(buf[p + 4]) << _U(32))
        | (_U(buf[p + 5]) << _U(40))
        | (_U(buf[p + 6]) << _U(48))
        | (_U(buf[p + 7]) << _U(56))
    )
    if ((v + _U(0x4646464646464646)) | (v - _U(0x3030303030303030))) & _U(0x8080808080808080):
        return -1
    v -= _U(0x3030303030303030)
    v = v * _U(10) + (v >> _U(8))
    lo = (v & _U(0x000000FF000000FF)) * _U(100 + (1000000 << 32))
    hi = ((v >> _U(16)) & _U(0x000000FF000000FF)) * _U(1 + (10000 << 32))
    return np.int64((lo + hi) >> _U(32))


@njit(cache=True, inline="always")
def _run(buf, p, end, m, many):
    """The run of digits from p appended to m: (position after it, m, many), `many` set once
    m would pass 18 significant digits (m is meaningless then)."""
    # Eight at a time while that cannot take m past 18 digits: below 10^10, m stays under
    # 10^17 before each of the eight, so `many` could not have been set digit by digit.
    while p + 8 <= end and m < 10_000_000_000:
        eight = _eight_digits(buf, p)
        if eight < 0:
            break
        m = m * 100_000_000 + eight
        p += 8
    while p < end and 48 <= buf[p] <= 57:
        many |= m >= 100_000_000_000_000_000  # 18 digits and one more
        m = m * 10 + (buf[p] - 48)
        p += 1
    return p, m, many


@njit(cache=True, inline="always")
def _ws(buf, p, end):
    while p < end:
        c = buf[p]
        if c != 32 and c != 10 and c != 13 and c != 9:
            break
        p += 1
    return p


@njit(cache=True, inline="always")
def _string(buf, p, end):
    """From the opening quote at p: the position after the closing quote, or -1 (invalid, or
    not checked here: bytes outside printable ASCII, \\u escapes)."""
    p += 1
    while p < end:
        c = buf[p]
        if c == _QUOTE:
            return p + 1
        if c == _BACKSLASH:
            p += 1
            if p >= end:
                return -1
            e = buf[p]
            # \" \\ \/ \b \f \n \r \t
            if (
                not (e == 34 or e == 92 or e == 47 or e == 98 or e == 102 or e == 110 or e == 114)
                and e != 116
            ):
                return -1
        elif c < 32 or c > 126:
            return -1
        p += 1
    return -1


@njit(cache=True, inline="always")
def _decimal(buf, p, end):
    """The JSON number at p read as a decimal: (position after it, or -1 when it is no number;
    mantissa m; exponent of ten; negative; written as an integer; more than 18 digits, when m
    is meaningless). Shared by both scanners."""
    neg = p < end and buf[p] == 45  # -
    p += neg
    if p >= end:
        return -1, 0, 0, neg, True, False
    c = buf[p]
    if not 48 <= c <= 57 or (c == 48 and p + 1 < end and 48 <= buf[p + 1] <= 57):
        return -1, 0, 0, neg, True, False  # no digit, or a leading zero
    p, m, many = _run(buf, p, end, 0, False)
    exp10 = 0
    integer = True
    if p < end and buf[p] == 46:  # .
        integer = False
        first = p + 1
        p, m, many = _run(buf, first, end, m, many)
        if p == first:
            return -1, m, exp10, neg, integer, many
        exp10 = first - p
    if p < end and (buf[p] == 101 or buf[p] == 69):  # e E
        integer = False
        p += 1
        sign = 1
        if p < end and (buf[p] == 43 or buf[p] == 45):
            sign = 1 - 2 * (buf[p] == 45)
            p += 1
        first = p
        e = 0
        while p < end and 48 <= buf[p] <= 57:
            if e < 100000:
                e = e * 10 + (buf[p] - 48)
            p += 1
        if p == first:
            return -1, m, exp10, neg, integer, many
        exp10 += sign * e
    return p, m, exp10, neg, integer, many


@njit(cache=True, inline="always")
def _scaled(m, exp10):
    """m * 10**exp10 as a double, for |exp10| <= 22: one correctly rounded operation on the
    double of m and an exact power of ten (Clinger's fast path: the correctly rounded value of
    the decimal when m <= 2**53, at most an ulp off beyond). Shared by both scanners."""
    y = np.float64(m)
    return y * _POW10[exp10] if exp10 >= 0 else y / _POW10[-exp10]


@njit(cache=True, inline="always")
def _number(buf, p, end, out, j):
    """A JSON number from p written into out[j] as float32. Returns the position after it,
    -1 when it is not a number, or -2 when it is one but not converted here (see module)."""
    p, m, exp10, neg, integer, many = _decimal(buf, p, end)
    if p < 0:
        return -1
    if many:
        return -2
    if m == 0:
        # orjson reads -0 as the integer 0 but -0.0 as the float -0.0.
        out[j] = np.float32(-0.0) if neg and not integer else np.float32(0.0)
        return p
    if exp10 < -22 or exp10 > 22:
        return -2
    y = _scaled(m, exp10)
    if not y < _F32_MAX:
        return -2
    if m > _EXACT_MANTISSA:
        # Two roundings (the mantissa, the scaling): the double may be an ulp off the correctly
        # rounded one, which matters only near a float32 halfway point.
        if y < _F32_MIN_NORMAL:
            return -2
        mantissa, _ = math.frexp(y)
        t = mantissa * 16777216.0  # y in units of float32 spacing: 24 bits before the point
        if abs(t - math.floor(t) - 0.5) <= _HALFWAY_MARGIN:
            return -2
    out[j] = np.float32(-y if neg else y)
    return p


@njit(cache=True, inline="always")
def _digits(buf, p, end):
    """Position after the run of digits at p (p itself when there is none)."""
    while p < end and 48 <= buf[p] <= 57:
        p += 1
    return p


@njit(cache=True, inline="always")
def _skip_number(buf, p, end):
    """Position after the JSON number at p, or -1: not a number, or one the general parser
    might refuse (orjson refuses integers beyond 64 bits and floats that overflow), so more
    than 18 digits or an exponent of three digits or more are left to it."""
    if buf[p] == 45:
        p += 1
    if p >= end:
        return -1
    first = p
    if buf[p] == 48:
        p += 1
    elif 49 <= buf[p] <= 57:
        p = _digits(buf, p, end)
    else:
        return -1
    if p < end and buf[p] == 46:
        q = _digits(buf, p + 1, end)
        if q == p + 1:
            return -1
        p = q
    if p - first > 19:
        return -1
    if p < end and (buf[p] == 101 or buf[p] == 69):
        p += 1
        if p < end and (buf[p] == 43 or buf[p] == 45):
            p += 1
        q = _digits(buf, p, end)
        if q == p or q - p > 2:
            return -1
        p = q
    return p


@njit(cache=True, inline="always")
def _features(buf, p, end, row):
    """The array at p into `row`: exactly len(row) numbers. Returns the position after the
    array, or -1 (not an array of that many numbers converted here)."""
    if p >= end or buf[p] != 91:  # [
        return -1
    p = _ws(buf, p + 1, end)
    for j in range(row.shape[0]):
        if j:
            if p >= end or buf[p] != 44:  # ,
                return -1
            p = _ws(buf, p + 1, end)
        p = _number(buf, p, end, row, j)
        if p < 0:
            return -1
        p = _ws(buf, p, end)
    if p >= end or buf[p] != 93:  # ]
        return -1
    return p + 1


@njit(cache=True, inline="always")
def _literal(buf, p, end):
    """Position after the literal true, false or null at p, or -1."""
    c = buf[p]
    word = _TRUE if c == 116 else _FALSE if c == 102 else _NULL
    n = word.shape[0]
    if p + n > end:
        return -1
    for q in range(n):
        if buf[p + q] != word[q]:
            return -1
    return p + n


@njit(cache=True, inline="always")
def _key_colon(buf, p, end):
    """A key string at p and its colon: the position of the value, or -1."""
    if p >= end or buf[p] != _QUOTE:
        return -1
    p = _string(buf, p, end)
    if p < 0:
        return -1
    p = _ws(buf, p, end)
    if p >= end or buf[p] != 58:  # :
        return -1
    return _ws(buf, p + 1, end)


@njit(cache=True, **NO_REFCOUNTS)
def _value(buf, p, end, stack):
    """Validate one JSON value from p: the position after it, or -1."""
    depth = 0
    while True:
        p = _ws(buf, p, end)
        if p >= end:
            return -1
        c = buf[p]
        if c == 123 or c == 91:  # { [
            close = 125 if c == 123 else 93
            p = _ws(buf, p + 1, end)
            if p < end and buf[p] == close:
                p += 1
            else:
                if depth == _MAX_DEPTH:
                    return -1
                stack[depth] = c
                depth += 1
                if c == 123:
                    p = _key_colon(buf, p, end)
                    if p < 0:
                        return -1
                continue
        elif c == _QUOTE:
            p = _string(buf, p, end)
        elif c == 45 or 48 <= c <= 57:
            p = _skip_number(buf, p, end)
        else:
            p = _literal(buf, p, end)
        if p < 0:
            return -1
        # A value is complete: close containers, or move to the next element.
        while depth:
            p = _ws(buf, p, end)
            if p >= end:
                return -1
            c = buf[p]
            top = stack[depth - 1]
            if c == 44:  # ,
                p = _ws(buf, p + 1, end)
                if top == 123:
                    p = _key_colon(buf, p, end)
                    if p < 0:
                        return -1
                break
            if (c == 125 and top == 123) or (c == 93 and top == 91):
                depth -= 1
                p += 1
                continue
            return -1
        if depth == 0:
            return p


@njit(cache=True, inline="always")
def _same(buf, p, word):
    """Is the key string at p (its opening quote) exactly `word`, with no escapes?"""
    n = word.shape[0]
    if p + n + 2 > buf.shape[0] or buf[p + n + 1] != _QUOTE:
        return False
    for q in range(n):  # noqa: SIM110 (Numba compiles no generator for all())
        if buf[p + 1 + q] != word[q]:
            return False
    return True


@njit(cache=True, **NO_REFCOUNTS)
def _record(buf, p, end, row, stack, features, id_word):
    """One record: FAST with its id's span, or SLOW (see the module)."""
    no_id = (np.int64(-1), np.int64(-1))
    p = _ws(buf, p, end)
    if p >= end or buf[p] != 123:
        return SLOW, no_id
    p = _ws(buf, p + 1, end)
    seen_features = False
    id_span = no_id
    while True:
        if p >= end or buf[p] != _QUOTE:
            return SLOW, no_id
        is_features = _same(buf, p, features)
        is_id = _same(buf, p, id_word)
        p = _key_colon(buf, p, end)
        if p < 0:
            return SLOW, no_id
        if is_features:
            if seen_features:
                return SLOW, no_id
            seen_features = True
            p = _features(buf, p, end, row)
        elif is_id:
            if id_span[0] >= 0:
                return SLOW, no_id
            start = p
            p = _value(buf, p, end, stack)
            id_span = (np.int64(start), np.int64(p))
        else:
            p = _value(buf, p, end, stack)
        if p < 0:
            return SLOW, no_id
        p = _ws(buf, p, end)
        if p < end and buf[p] == 44:  # ,
            p = _ws(buf, p + 1, end)
            continue
        if p < end and buf[p] == 125:  # }
            p += 1
            break
        return SLOW, no_id
    if _ws(buf, p, end) != end or not seen_features:
        return SLOW, no_id
    return FAST, id_span


@njit(cache=True, inline="always")
def _blocks(n):
    """Tasks of the parallel loop over n records: blocks of _BLOCK (both scanners; also how
    many rows of scratch the caller allocates)."""
    return (n + _BLOCK - 1) // _BLOCK


@njit(cache=True, parallel=True)
def scan_features(buf, offsets, X, status, id_spans, stacks):
    """Records buf[offsets[i]:offsets[i + 1]]: row i of X (float32, n x d), status[i] (FAST or
    SLOW) and, for FAST, the span of the id's value in buf (-1, -1 without an id). `stacks`
    holds one row of _MAX_DEPTH bytes of scratch per block of 64 records."""
    # Views without reference counts: the helpers take them once per value (engine/views.py).
    buf, X, stacks = borrowed(buf), borrowed(X), borrowed(stacks)
    n = offsets.shape[0] - 1
    for b in prange(_blocks(n)):
        for i in range(b * _BLOCK, min(n, (b + 1) * _BLOCK)):
            state, span = _record(buf, offsets[i], offsets[i + 1], X[i], stacks[b], _FEATURES, _ID)
            status[i] = state
            id_spans[i, 0] = span[0]
            id_spans[i, 1] = span[1]


class ScannedBatch(NamedTuple):
    """What the scanner made of a batch: rows, which of them it vouches for, and their ids."""

    X: np.ndarray  # float32 (n, d); row i is meaningful only where fast[i]
    fast: np.ndarray  # bool (n,)
    ids: list[Any]  # the id of each fast record (None without one), in order


def scan_batch(values: Sequence[bytes | None], dim: int, max_bytes: int) -> ScannedBatch:
    """Scan JSON record values for `{"id": ..., "features": [dim numbers]}`; tombstones and
    values over `max_bytes` are left to the general parser like any other slow record."""
    joined, lengths, offsets = join_values(values)
    n = len(lengths)
    X = np.empty((n, dim), np.float32)
    status = np.empty(n, np.uint8)
    spans = np.empty((n, 2), np.int64)
    stacks = np.empty((_blocks(n), _MAX_DEPTH), np.uint8)
    scan_features(np.frombuffer(joined, np.uint8), offsets, X, status, spans, stacks)
    fast = (status == FAST) & (lengths <= max_bytes)
    ids = ids_of(joined, spans, fast)
    return ScannedBatch(X, fast, ids)


def join_values(values: Sequence[bytes | None]) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A batch's values as one buffer (a tombstone as no bytes), their lengths and the n + 1
    offsets where they start and end."""
    if any(v is None for v in values):
        values = [b"" if v is None else v for v in values]
    joined = b"".join(values)  # type: ignore[arg-type]
    lengths = np.fromiter(map(len, values), np.int64, len(values))  # type: ignore[arg-type]
    offsets = np.zeros(len(values) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return joined, lengths, offsets


def ids_of(joined: bytes, spans: np.ndarray, fast: np.ndarray) -> list[Any]:
    """The ids of the fast records from their spans in `joined` (None where there is none),
    parsed by orjson in one call."""
    raw = [joined[s:e] if s >= 0 else b"null" for s, e in spans[fast].tolist()]
    return orjson.loads(b"[" + b",".join(raw) + b"]") if raw else []


def warm_scanner() -> None:
    """Compile (or load from Numba's cache) the scanner: `streamkm warmup` and `serve` call it
    before the first batch."""
    scan_batch([b'{"id":1,"features":[0.5,-1e-3]}'] * 8, 2, 1 << 20)
