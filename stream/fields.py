"""Named-field events on the data path: record values -> a DecodedBatch (DESIGN.md §7).

The field spec, its transforms and the object -> row extraction are the model's schema and live
in `model.fields`, shared with the request path; this module adds what the data path needs: bytes
parsed a batch at a time, and every failure as a `Reject` for the dead-letter topic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from model.fields import FieldSpec, field_rows, ids_at, json_type

from .codec import MAX_VALUE_BYTES, UNPARSED, DecodedBatch, Reject, parse_all

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
