"""The named-field event scanner (stream/eventscan.py) never changes a decoded batch: for every
event it vouches for, the row, the id and the rejects are exactly what the general parser (orjson,
then the columns of model/fields.py) gives; everything else goes to that parser. These tests decode
the same batches both ways and compare every bit."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.fields import FieldSpec, parse_fields
from stream.eventscan import event_plan, scan_events
from stream.fields import _decode_events_general, decode_events
from stream.transactions import TRANSACTION_FIELDS, TransactionStream, encode_transactions
from tests.test_jsonscan import number_text, scalars, spaces, strings, values_text

FIELDS = parse_fields("amount:log1p,card.age,card.present,hour:sqrt,geo.km.home")
ID = ("meta", "id")
MAX = 1_048_576


def assert_same_as_general(values, fields=FIELDS, id_path=ID):
    scanned = decode_events(values, fields, id_path)
    general = _decode_events_general(values, fields, id_path, MAX)
    np.testing.assert_array_equal(scanned.index, general.index)
    assert scanned.X.dtype == general.X.dtype == np.float32
    d = len(fields)
    assert scanned.X.tobytes() == general.X.reshape(-1, d).tobytes()  # bits, -0.0 included
    assert scanned.ids == general.ids
    assert [type(i) for i in scanned.ids] == [type(i) for i in general.ids]
    assert scanned.rejects == general.rejects
    assert scanned.dim == general.dim == d
    return scanned


def rarely(one_in: int) -> st.SearchStrategy[bool]:
    """True once in `one_in` draws; False is the simplest example (where Hypothesis leans)."""
    return st.sampled_from([False] * (one_in - 1) + [True])


def mostly(common, rare, one_in=8):
    """`common`, but `rare` once in `one_in` draws."""
    return rarely(one_in).flatmap(lambda r: rare if r else common)


# Numbers as events carry them (a few significant digits, the scanner's to take), sometimes any
# number text at all, a boolean, or a value that is no number.
event_numbers = mostly(
    st.one_of(
        st.tuples(st.integers(-(10**9), 10**9), st.integers(0, 8)).map(
            lambda t: repr(t[0] / 10 ** t[1])
        ),
        st.integers(-1000, 1000).map(str),
        st.sampled_from(["true", "false", "-0", "-0.0", "1e3", "2.5E-3"]),
    ),
    number_text,
    20,
)
field_value = mostly(event_numbers, st.one_of(scalars, values_text), 25)
plain_values = st.one_of(
    event_numbers, st.text("abc -", max_size=5).map(json.dumps), st.just("null")
)


@st.composite
def objects(draw, keys, depth=0):
    """An object holding `keys` (each a tuple path below this object), in any order, with extra
    keys, sometimes a key missing, repeated or escaped."""
    heads: dict[str, list[tuple[str, ...]]] = {}
    for path in keys:
        heads.setdefault(path[0], []).append(path[1:])
    ws = draw(mostly(st.just(""), spaces, 4))
    members = []
    for head, rests in heads.items():
        if draw(rarely(30)):
            continue  # missing
        if all(rests) and not draw(rarely(30)):
            value = draw(objects([r for r in rests if r], depth + 1))
        else:
            value = draw(field_value)
        key = json.dumps(head)
        if draw(rarely(40)):
            key = '"' + "".join(f"\\u{ord(c):04x}" for c in head) + '"'  # the same key, escaped
        members.append(f"{key}{ws}:{ws}{value}")
        if draw(rarely(40)):
            members.append(f"{key}:{draw(field_value)}")  # repeated
    for _ in range(draw(st.sampled_from([0, 1, 2]))):
        key = draw(mostly(st.text("abcxyz_ -:", max_size=6).map(json.dumps), strings))
        members.append(f"{key}:{draw(mostly(plain_values, values_text, 4))}")
    draw(st.randoms()).shuffle(members)
    return "{" + ws + ("," + ws).join(members) + ws + "}"


@st.composite
def events(draw):
    """An event for FIELDS and the id at meta.id, sometimes broken as text."""
    paths = [f.path for f in FIELDS]
    if not draw(rarely(4)):
        paths.append(ID)
    text = draw(objects(paths))
    if draw(rarely(40)):
        text = draw(st.sampled_from(["[1,2]", "null", "3", '"x"', ""]))
    if draw(rarely(40)):
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from(["", "}", ",", "x", "\x00", "]"])) + text[cut:]
    return text.encode()


@settings(max_examples=300, deadline=None)
@given(st.lists(events(), min_size=8, max_size=24))
def test_any_batch_of_events_decodes_exactly_as_the_general_parser_decodes_it(values):
    assert_same_as_general(values)


@settings(max_examples=60, deadline=None)
@given(st.lists(events(), min_size=8, max_size=16), st.lists(st.integers(0, 15), max_size=4))
def test_tombstones_and_oversized_events_among_events_are_the_general_parsers(values, holes):
    values = list(values)
    for h in holes:
        pad = b'{"pad":"' + b"x" * MAX + b'"}'
        values[h % len(values)] = [None, b"", b"  ", pad][h % 4]
    assert_same_as_general(values)


def test_generated_transactions_decode_through_the_scanner_as_through_the_general_parser():
    fields = parse_fields(TRANSACTION_FIELDS)
    plan = event_plan(fields, ("id",))
    assert plan is not None
    clean = encode_transactions(TransactionStream(3).block(0, 2000))
    assert scan_events(clean, plan, MAX).fast.all()
    decoded = assert_same_as_general(clean, fields, ("id",))
    assert len(decoded.index) == len(clean)
    dirty = encode_transactions(TransactionStream(4, invalid_fraction=0.2).block(0, 2000))
    decoded = assert_same_as_general(dirty, fields, ("id",))
    assert {r.reason for r in decoded.rejects} >= {"missing_field", "not_numeric"}


def test_numbers_booleans_and_integers_reach_the_columns_as_the_general_parsers_doubles():
    rng = np.random.default_rng(4)
    x = rng.normal(scale=rng.uniform(1e-6, 1e9, size=3000), size=3000)
    short = [f"{v:.15g}" for v in x] + [f"{v:.6e}" for v in x[:500]] + ["-0", "-0.0", "0", "1E5"]
    short += [str(int(v)) for v in rng.integers(-(10**18) + 1, 10**18, size=500)]  # 18 digits
    full = [repr(float(v)) for v in x[:500]] + [f"{v:.17e}" for v in x[:500]]  # often > 2**53
    fields = (FieldSpec(("v",)), FieldSpec(("b",)))
    plan = event_plan(fields, ("id",))
    assert plan is not None
    for texts, taken in ((short, 1.0), (full, 0.0)):
        values = [
            orjson.dumps({"b": bool(i % 2)})[:-1] + b',"v":' + t.encode() + b"}"
            for i, t in enumerate(texts)
        ]
        assert scan_events(values, plan, MAX).fast.mean() >= taken
        decoded = assert_same_as_general(values, fields, ("id",))
        assert decoded.X[:, 1].tolist() == [float(i % 2) for i in range(len(values))]


@pytest.mark.parametrize(
    ("fields", "id_path"),
    [
        ("a,a.b", ("id",)),  # a field inside another field
        ("a.b,c", ("a",)),  # the id where a field's object is
        ("a,b", ("a",)),  # the id is a field
        ("caf\u00e9", ("id",)),  # a key beyond ASCII
    ],
)
def test_schemas_the_scanner_cannot_take_go_to_the_general_parser_whole(fields, id_path):
    specs = parse_fields(fields)
    assert event_plan(specs, id_path) is None
    values = [orjson.dumps({"a": {"b": i}, "c": 2.5, "b": 1, "caf\u00e9": 1.5}) for i in range(9)]
    assert_same_as_general(values, specs, id_path)


@pytest.mark.parametrize(
    "value",
    [
        b'{"amount":1,"card":{"age":2,"present":true},"hour":4,"geo":{"km":{"home":1e400}}}',
        b'{"amount":1,"card":{"age":2,"present":true},"hour":4,"geo":{"km":{"home":-1e-400}}}',
        b'{"amount":-1,"card":{"age":2,"present":true},"hour":4,"geo":{"km":{"home":1}}}',
        b'{"amount":1,"card":{"age":2,"present":true},"hour":-4,"geo":{"km":{"home":1}}}',
        b'{"amount":1,"card":{"age":2,"present":null},"hour":4,"geo":{"km":{"home":1}}}',
        b'{"amount":1,"card":[],"hour":4,"geo":{"km":{"home":1}}}',
        b'{"amount":1,"card":{},"hour":4,"geo":{"km":{"home":1}}}',
        b'{"amount":1,"card":{"age":2,"present":true},"hour":4,"geo":{"km":{}}}',
        b'{"amount":1,"card":{"age":2,"present":true},"hour":4,"geo":{"km":{"home":"1"}}}',
        b'{"amount":1,"card":{"age":2,"present":true},"hour":4,"geo":{"km":{"home":1}},"meta":7}',
        b'{"amount":1,"card":{"age":2,"present":true},"hour":4,"geo":{"km":{"home":1}},"meta":{}}',
        b'{"amount":3e38,"card":{"age":1e39,"present":true},"hour":4,"geo":{"km":{"home":1}}}',
        b'{"amount":1,"card":{"age":2,"present":true},"hour":4,"geo":{"km":{"home":1}}',
        b'{"amount":1,"card":{"age":2,"present":true},"hour":4,"geo":{"km":{"home":1}}}}',
        b'{"amount":1,"card":{"age":2,"present":tru},"hour":4,"geo":{"km":{"home":1}}}',
        b'{"amount":1,"card":{"a\\u0067e":2,"present":true},"hour":4,"geo":{"km":{"home":1}}}',
        b'{"amount":1,"card":{"age":2,"present":true},"hour":4,"geo":{"km":{"home":1}},"x":"\xff"}',
        b'{"amount":12345678901234567890,"card":{"age":2,"present":true},"hour":4,'
        b'"geo":{"km":{"home":1}}}',
        b'{"amount":1.00000000000000000001,"card":{"age":2,"present":true},"hour":4,'
        b'"geo":{"km":{"home":1}}}',
    ],
)
def test_events_at_the_edges_of_the_scanner_decode_as_the_general_parser_decodes_them(value):
    ok = b'{"meta":{"id":"a"},"amount":9.5,"card":{"age":2,"present":false},"hour":4,'
    ok += b'"geo":{"km":{"home":0.25}}}'
    assert_same_as_general([ok] * 4 + [value] + [ok] * 4)


def test_a_schema_of_many_nested_fields_is_scanned_with_every_column_in_place():
    paths = [f"g{i % 7}.s{i % 3}.f{i}" for i in range(120)]
    fields = parse_fields(",".join(paths))
    rng = np.random.default_rng(5)
    rows = np.round(rng.normal(size=(40, 120)), 6)
    values = []
    for r in rows:
        obj: dict = {}
        for f, v in zip(fields, r.tolist(), strict=True):
            obj.setdefault(f.path[0], {}).setdefault(f.path[1], {})[f.path[2]] = v
        values.append(orjson.dumps(obj))
    plan = event_plan(fields, ("id",))
    assert plan is not None
    assert scan_events(values, plan, MAX).fast.all()
    decoded = assert_same_as_general(values, fields, ("id",))
    np.testing.assert_array_equal(decoded.X, rows.astype(np.float32))
