"""Named-field events on the data path: record values -> a DecodedBatch (DESIGN.md §7).

The field spec, its transforms and the object -> row extraction are the model's schema and live
in `model.fields`, shared with the request path; this module adds what the data path needs: bytes
decoded a batch at a time (by the event scanner where it vouches for a record, by the general
parser otherwise), and every failure as a `Reject` for the dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from model.fields import FieldSpec, column_rows, field_rows, ids_at, json_type

from .codec import MAX_VALUE_BYTES, UNPARSED, DecodedBatch, Reject, merge_batches, parse_all
from .eventscan import event_plan, scan_events
from .jsonscan import SCAN_MIN_VALUES

__all__ = ["decode_events"]


def decode_events(
    values: Sequence[bytes | None],
    fields: Sequence[FieldSpec],
    id_path: tuple[str, ...] = ("id",),
    *,
    max_value_bytes: int = MAX_VALUE_BYTES,
) -> DecodedBatch:
    """Decode a batch of JSON event objects into one row of `len(fields)` features each.

    Never raises on any input bytes: each record becomes a row or exactly one `Reject`.
    """
    plan = event_plan(fields, id_path) if len(values) >= SCAN_MIN_VALUES else None
    if plan is None:
        return _decode_events_general(values, fields, id_path, max_value_bytes)
    scanned = scan_events(values, plan, max_value_bytes)
    fast = np.flatnonzero(scanned.fast)
    problems: list[tuple[int, str, str]] = []
    X, keep = column_rows(scanned.A[fast], fields, fast.tolist(), problems)
    ids = scanned.ids if len(keep) == len(fast) else [scanned.ids[j] for j in keep.tolist()]
    first = DecodedBatch(X, fast[keep], ids, sorted(Reject(*p) for p in problems), len(fields))
    if len(fast) == len(values):
        return first
    slow = np.flatnonzero(~scanned.fast)
    rest = _decode_events_general(
        [values[i] for i in slow.tolist()], fields, id_path, max_value_bytes
    )
    return merge_batches(first, slow, rest)


def _decode_events_general(
    values: Sequence[bytes | None],
    fields: Sequence[FieldSpec],
    id_path: tuple[str, ...],
    max_value_bytes: int,
) -> DecodedBatch:
    parsed, rejects = parse_all(values, max_value_bytes)
    good = [i for i, o in enumerate(parsed) if type(o) is dict]
    if len(good) < len(parsed):
        rejects.extend(
            Reject(i, "not_an_object", f"value is {json_type(o)}; expected a JSON object")
            for i, o in enumerate(parsed)
            if o is not UNPARSED and type(o) is not dict
        )
    objs = [parsed[i] for i in good]
    problems: list[tuple[int, str, str]] = []
    X, keep = field_rows(objs, fields, good, problems)
    rejects.extend(Reject(*p) for p in problems)
    ids = ids_at(objs, id_path)
    if len(keep) < len(objs):
        ids = [ids[j] for j in keep.tolist()]
    rejects.sort()
    index = np.asarray(good, dtype=np.int64)[keep]
    return DecodedBatch(X, index, ids, rejects, len(fields))
