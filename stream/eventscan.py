"""The JSON scanner for named-field events (DESIGN.md §7): dotted paths straight into float64 columns.

`--fields amount:log1p,merchant.risk,...` events go through a general parser at about 4 us a
record (orjson builds every value of the object, then one NumPy conversion per field). This kernel
walks a batch's bytes once, follows only the paths the schema names (a small tree of keys, the
`EventPlan`) and writes each field's number as the exact double the general parser would give;
transforms and checks then run on the columns as they do for the general path.

Like `stream/jsonscan.py` it vouches for a record ("fast") only when it is sure: strictly valid
JSON, every field present once and holding a number it converts exactly (at most 18 significant
digits and a decimal exponent within +-22, or 2**53 for a mantissa with a fraction) or a boolean,
every object on a field's path present once, keys free of escapes. Anything else is "slow" and
goes to the general parser, which also names the dead-letter reason (`missing_field`,
`not_numeric`, ...). The scanner therefore never changes a result, only how fast it is reached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from numba import njit, prange

from engine.views import NO_REFCOUNTS, borrowed
from model.fields import FieldSpec

from .jsonscan import (
    _BACKSLASH,
    _BLOCK,
    _EXACT_MANTISSA,
    _MAX_DEPTH,
    _QUOTE,
    FAST,
    SLOW,
    _blocks,
    _decimal,
    _key_colon,
    _literal,
    _scaled,
    _value,
    _ws,
    ids_of,
    join_values,
)

__all__ = ["EventPlan", "ScannedEvents", "event_plan", "scan_events", "warm_event_scanner"]

_MAX_NODES = 255  # the path of nodes is kept in bytes
# A tree node's role: the object on some field's path, the id's value, or field number r >= 0.
_OBJECT, _ID = -1, -2


class EventPlan(NamedTuple):
    """The schema's paths as a tree of keys: node 0 is the event object; node i > 0 is reached by
    the key keys[start[i]:start[i] + length[i]] from node parent[i], and holds role[i]."""

    keys: np.ndarray  # uint8, every key's bytes
    start: np.ndarray  # int64 per node
    length: np.ndarray  # int64 per node
    parent: np.ndarray  # int64 per node (-1 for the root)
    role: np.ndarray  # int64 per node: _OBJECT, _ID, or a field's column
    dim: int


def event_plan(fields: Sequence[FieldSpec], id_path: tuple[str, ...]) -> EventPlan | None:
    """The plan for these paths, or None when the scanner cannot take them (a path that is a
    prefix of another or the id's own path, a key outside printable ASCII or with a quote or
    backslash, more than _MAX_NODES keys in all): every record then goes to the general parser."""
    paths = [(f.path, t) for t, f in enumerate(fields)] + [(id_path, _ID)]
    nodes: dict[tuple[str, ...], int] = {(): 0}
    start, length, parent, role = [0], [0], [-1], [_OBJECT]
    keys = bytearray()
    for path, r in paths:
        for depth in range(1, len(path) + 1):
            key, prefix = path[depth - 1], path[: depth - 1]
            if not key.isascii() or not key.isprintable() or '"' in key or "\\" in key:
                return None
            raw = key.encode("ascii")
            leaf = depth == len(path)
            node = nodes.get(path[:depth])
            if node is not None:
                if leaf or role[node] != _OBJECT:
                    return None  # one path ends where another goes on, or two end together
                continue
            nodes[path[:depth]] = len(role)
            start.append(len(keys))
            length.append(len(raw))
            parent.append(nodes[prefix])
            role.append(r if leaf else _OBJECT)
            keys += raw
    if len(role) > _MAX_NODES:
        return None
    return EventPlan(
        np.frombuffer(bytes(keys) or b"\0", np.uint8),
        np.asarray(start, np.int64),
        np.asarray(length, np.int64),
        np.asarray(parent, np.int64),
        np.asarray(role, np.int64),
        len(fields),
    )


@njit(cache=True, inline="always")
def _number(buf, p, end, out, j):
    """A JSON number from p written into out[j] as the double orjson gives (an integer as its
    nearest double). Returns the position after it, -1 when it is not a number, -2 when it is one
    but not converted here."""
    p, m, exp10, neg, integer, many = _decimal(buf, p, end)
    if p < 0:
        return -1
    if many:
        return -2
    if integer:
        # orjson gives an int (-0 is 0); NumPy then takes its nearest double, as this does.
        y = np.float64(m)
        out[j] = -y if neg and m else y
        return p
    if m == 0:
        out[j] = -0.0 if neg else 0.0
        return p
    if exp10 < -22 or exp10 > 22 or m > _EXACT_MANTISSA:
        return -2
    y = _scaled(m, exp10)  # exact: m is at most 2**53
    out[j] = -y if neg else y
    return p


@njit(cache=True, inline="always")
def _scalar(buf, p, end, out, j):
    """A field's value: a number or a boolean into out[j]; the position after it, or -1."""
    if p >= end:
        return -1
    c = buf[p]
    if c == 116 or c == 102:  # true false
        q = _literal(buf, p, end)
        out[j] = 1.0 if c == 116 else 0.0
        return q
    if c == 45 or 48 <= c <= 57:
        q = _number(buf, p, end, out, j)
        return q if q >= 0 else -1
    return -1


@njit(cache=True, inline="always")
def _child(buf, p, end, node, keys, start, length, parent):
    """The node reached from `node` by the key string at p (its opening quote): its index, -1
    when the schema does not name that key there, -2 when the key has an escape (not compared)."""
    q = p + 1
    while q < end and buf[q] != _QUOTE:
        if buf[q] == _BACKSLASH:
            return -2
        q += 1
    n = q - p - 1
    for c in range(1, parent.shape[0]):
        if parent[c] != node or length[c] != n:
            continue
        s = start[c]
        same = True
        for t in range(n):
            if buf[p + 1 + t] != keys[s + t]:
                same = False
                break
        if same:
            return c
    return -1


@njit(cache=True, **NO_REFCOUNTS)
def _event(buf, p, end, row, seen, on_path, stack, keys, start, length, parent, role):
    """One event: (FAST, id span) or (SLOW, ...) (see the module)."""
    no = (SLOW, np.int64(-1), np.int64(-1))
    id_start, id_end = np.int64(-1), np.int64(-1)
    for c in range(seen.shape[0]):
        seen[c] = 0
    p = _ws(buf, p, end)
    if p >= end or buf[p] != 123:  # {
        return no
    node = 0
    depth = 0
    p = _ws(buf, p + 1, end)
    if p < end and buf[p] == 125:  # }
        p += 1
        depth = -1
    while depth >= 0:
        # At a key of the object at `node`.
        if p >= end or buf[p] != _QUOTE:
            return no
        child = _child(buf, p, end, node, keys, start, length, parent)
        if child == -2:
            return no
        p = _key_colon(buf, p, end)
        if p < 0:
            return no
        if child < 0:
            p = _value(buf, p, end, stack)
        else:
            if seen[child]:
                return no
            seen[child] = 1
            r = role[child]
            if r >= 0:
                p = _scalar(buf, p, end, row, r)
            elif r == _ID:
                id_start = np.int64(p)
                p = _value(buf, p, end, stack)
                id_end = np.int64(p)
            else:
                if p >= end or buf[p] != 123:
                    return no
                on_path[depth] = node
                depth += 1
                node = child
                p = _ws(buf, p + 1, end)
                if not (p < end and buf[p] == 125):
                    continue
                p += 1
                depth -= 1
                node = on_path[depth]
        if p < 0:
            return no
        # A value is complete: close objects, or move to the next key.
        while True:
            p = _ws(buf, p, end)
            if p >= end:
                return no
            c = buf[p]
            if c == 44:  # ,
                p = _ws(buf, p + 1, end)
                break
            if c != 125:
                return no
            p += 1
            if depth == 0:
                depth = -1
                break
            depth -= 1
            node = on_path[depth]
    if _ws(buf, p, end) != end:
        return no
    for c in range(1, role.shape[0]):
        if role[c] >= 0 and not seen[c]:
            return no
    return (FAST, id_start, id_end)


@njit(cache=True, parallel=True)
def _scan(buf, offsets, A, status, id_spans, scratch, keys, start, length, parent, role):
    """Records buf[offsets[i]:offsets[i + 1]]: row i of A (float64 columns), status[i] and,
    for FAST, the span of the id's value in buf (-1, -1 without an id). `scratch` holds one row
    per block of _BLOCK records: a nesting stack, then the seen flags and the path of nodes."""
    # Views without reference counts: the helpers take them once per key (engine/views.py).
    buf, A, scratch = borrowed(buf), borrowed(A), borrowed(scratch)
    keys, start, length = borrowed(keys), borrowed(start), borrowed(length)
    parent, role = borrowed(parent), borrowed(role)
    n = offsets.shape[0] - 1
    m = role.shape[0]
    for b in prange(_blocks(n)):
        stack = scratch[b, :_MAX_DEPTH]
        seen = scratch[b, _MAX_DEPTH : _MAX_DEPTH + m]
        on_path = scratch[b, _MAX_DEPTH + m :]
        for i in range(b * _BLOCK, min(n, (b + 1) * _BLOCK)):
            state, s, e = _event(
                buf, offsets[i], offsets[i + 1], A[i], seen, on_path, stack,
                keys, start, length, parent, role,
            )  # fmt: skip
            status[i] = state
            id_spans[i, 0] = s
            id_spans[i, 1] = e


class ScannedEvents(NamedTuple):
    """What the scanner made of a batch of events: columns, which rows it vouches for, their ids."""

    A: np.ndarray  # float64 (n, d) before transforms; row i is meaningful only where fast[i]
    fast: np.ndarray  # bool (n,)
    ids: list[Any]  # the id of each fast record (None without one), in order


def scan_events(values: Sequence[bytes | None], plan: EventPlan, max_bytes: int) -> ScannedEvents:
    """Scan JSON event values by `plan`; tombstones and values over `max_bytes` are left to
    the general parser like any other slow record."""
    joined, lengths, offsets = join_values(values)
    n = len(lengths)
    A = np.empty((n, plan.dim), np.float64)
    status = np.empty(n, np.uint8)
    spans = np.empty((n, 2), np.int64)
    m = plan.role.shape[0]
    scratch = np.empty((_blocks(n), _MAX_DEPTH + 2 * m), np.uint8)
    _scan(
        np.frombuffer(joined, np.uint8), offsets, A, status, spans, scratch,
        plan.keys, plan.start, plan.length, plan.parent, plan.role,
    )  # fmt: skip
    fast = (status == FAST) & (lengths <= max_bytes)
    ids = ids_of(joined, spans, fast)
    return ScannedEvents(A, fast, ids)


def warm_event_scanner() -> None:
    """Compile (or load from Numba's cache) the event scanner: `streamkm warmup` and `serve`
    with `--fields` call it before the first batch."""
    plan = event_plan((FieldSpec(("a",)), FieldSpec(("b", "c"))), ("id",))
    assert plan is not None
    scan_events([b'{"id":1,"a":0.5,"b":{"c":true}}'] * 8, plan, 1 << 20)
