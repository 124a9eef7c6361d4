"""Named fields -> feature rows (stream/fields.py): every record a row or exactly one Reject."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.fields import parse_fields
from stream.fields import decode_events

FIELDS = parse_fields("amount:log1p,merchant.risk,hour,card_present")
GOOD = {
    "id": "t-91",
    "amount": 1840.0,
    "merchant": {"risk": 0.72},
    "hour": 3,
    "card_present": False,
}


def test_fields_become_columns_with_booleans_as_numbers_and_transforms_applied():
    dec = decode_events([orjson.dumps(GOOD), orjson.dumps({**GOOD, "card_present": True})], FIELDS)
    assert dec.rejects == [] and dec.ids == ["t-91", "t-91"] and dec.dim == 4
    np.testing.assert_allclose(dec.X[0], [math.log1p(1840.0), 0.72, 3.0, 0.0], rtol=1e-6)
    assert dec.X[1, 3] == 1.0 and dec.X.dtype == np.float32


@pytest.mark.parametrize(
    ("event", "reason", "words"),
    [
        ({k: v for k, v in GOOD.items() if k != "hour"}, "missing_field", "'hour' is missing"),
        ({**GOOD, "merchant": {}}, "missing_field", "'merchant.risk' is missing"),
        ({**GOOD, "merchant": 7}, "missing_field", "merchant is a number"),
        ({**GOOD, "amount": "1840.00"}, "not_numeric", "'amount' is a string"),
        ({**GOOD, "hour": None}, "not_numeric", "'hour' is null"),
        ({**GOOD, "hour": [3]}, "not_numeric", "'hour' is an array"),
        ({**GOOD, "amount": -1.0}, "out_of_domain", "log1p of field 'amount' needs a value > -1"),
        ({**GOOD, "hour": 1e300}, "non_finite", "'hour' is not finite"),
        ([1, 2, 3, 4], "not_an_object", "expected a JSON object"),
    ],
)
def test_a_bad_event_is_rejected_naming_its_field(event, reason, words):
    values = [orjson.dumps(GOOD), orjson.dumps(event), orjson.dumps(GOOD)]
    dec = decode_events(values, FIELDS)
    assert [(r.index, r.reason) for r in dec.rejects] == [(1, reason)]
    assert words in dec.rejects[0].message
    assert dec.index.tolist() == [0, 2] and len(dec.X) == 2


def test_other_transforms_check_their_domains():
    fields = parse_fields("a:sqrt,b:log")
    dec = decode_events([b'{"a": 4, "b": 1}', b'{"a": -1, "b": 1}', b'{"a": 1, "b": 0}'], fields)
    assert dec.X.tolist() == [[2.0, 0.0]]
    assert [r.reason for r in dec.rejects] == ["out_of_domain", "out_of_domain"]


def test_an_integer_beyond_float32_is_non_finite_not_a_crash():
    big = b'{"amount": 1, "merchant": {"risk": 0}, "hour": 1' + b"0" * 60 + b', "card_present": 1}'
    dec = decode_events([big], FIELDS)
    assert [r.reason for r in dec.rejects] == ["non_finite"]


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
_event = st.fixed_dictionaries(
    {},
    optional={
        "amount": _json,
        "merchant": st.fixed_dictionaries({}, optional={"risk": _json}) | _json,
        "hour": _json,
        "card_present": _json,
    },
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_event | _json, max_size=8))
def test_any_json_gives_each_record_one_row_or_one_reject(events):
    values = [orjson.dumps(e) for e in events]
    dec = decode_events(values, FIELDS)
    seen = sorted(dec.index.tolist() + [r.index for r in dec.rejects])
    assert seen == list(range(len(values)))
    assert dec.X.shape == (len(dec.index), 4) and np.isfinite(dec.X).all()
