"""The JSON scanner (stream/jsonscan.py) never changes a decoded batch: for every record it
vouches for, the row, the id and the absence of a reject are exactly what the general parser
(orjson, then float32) gives; everything else goes to that parser. These tests decode the same
batches both ways and compare every bit."""

from __future__ import annotations

import json
import struct

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.codec import _decode_json_general, decode_batch, encode_json_records
from stream.jsonscan import scan_batch

DIM = 4


def assert_same_as_general(values, dim=DIM):
    scanned = decode_batch(values, "json", dim)
    general = _decode_json_general(values, dim, 1_048_576, ("id",))
    np.testing.assert_array_equal(scanned.index, general.index)
    assert scanned.X.dtype == general.X.dtype == np.float32
    assert scanned.X.tobytes() == general.X.reshape(-1, dim).tobytes()  # bits, -0.0 included
    assert scanned.ids == general.ids
    assert [type(i) for i in scanned.ids] == [type(i) for i in general.ids]
    assert scanned.rejects == general.rejects
    assert scanned.dim == general.dim
    return scanned


# Number spellings: integers, -0 and -0.0, exponents, 17-digit doubles, float32 values printed as
# doubles, more digits than an int64 holds, tiny and huge values, bad grammar.
def mostly(common, rare, one_in=8):
    """`common`, but `rare` once in `one_in` draws."""
    return st.integers(1, one_in).flatmap(lambda i: rare if i == 1 else common)


finite = st.floats(allow_nan=False, allow_infinity=False)
ordinary_numbers = st.one_of(
    st.floats(-1e6, 1e6).map(repr),
    st.floats(-1e3, 1e3, width=32).map(repr),
    st.integers(-1000, 1000).map(str),
)
edge_numbers = st.one_of(
    finite.map(repr),
    finite.map(lambda x: f"{x:.17e}"),
    st.floats(width=32, allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(
        [
            "0",
            "-0",
            "-0.0",
            "0.0",
            "1E5",
            "1e-5",
            "2.5E+3",
            "00",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "1e400",
            "-1e999",
            "1e-400",
            "3.4028235e38",
            "3.4028236e38",
            "1.17549435e-38",
            "1.4e-45",
            "123456789012345678901234567890",
            "0.000000000000000000000123",
            "9007199254740993",
            "16777217",
            "0.1000000000000000055511151231257827",
        ]
    ),
)
number_text = mostly(ordinary_numbers, edge_numbers, 30)
strings = mostly(
    st.text("abcxyz_ -:", max_size=6).map(json.dumps),
    st.text(max_size=6).map(lambda s: json.dumps(s, ensure_ascii=False))
    | st.sampled_from(
        ['"a\\"b"', '"\\u00e9"', '"\\ud800"', '"tab\\tq"', '"bad\\x"', '"\x01"', '"features"']
    ),
)
scalars = st.one_of(
    number_text,
    strings,
    mostly(st.sampled_from(["true", "false", "null"]), st.sampled_from(["nul", "tru", "True"])),
)
values_text = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3).map(lambda xs: "[" + ",".join(xs) + "]")
        | st.lists(st.tuples(strings, inner), max_size=3).map(
            lambda kv: "{" + ",".join(f"{k}:{v}" for k, v in kv) + "}"
        )
    ),
    max_leaves=6,
)
spaces = st.sampled_from(["", " ", "\n", "\t ", "\r\n"])


@st.composite
def records(draw):
    """A JSON-ish record: usually `{"id": ..., "features": [...]}` with extra fields, sometimes
    broken in one of many ways."""
    n_features = draw(mostly(st.just(DIM), st.sampled_from([DIM - 1, DIM + 1]), 20))
    features = [draw(number_text) for _ in range(n_features)]
    if draw(st.integers(0, 19)) == 0:
        features[draw(st.integers(0, n_features - 1))] = draw(scalars)
    ws = draw(mostly(st.just(""), spaces, 4))
    fields = [f'"features"{ws}:{ws}[{ws}{(ws + "," + ws).join(features)}{ws}]']
    if draw(st.booleans()):
        fields.append(f'"id":{draw(values_text)}')
    for _ in range(draw(st.integers(0, 2))):
        fields.append(f"{draw(strings)}:{draw(mostly(scalars, values_text, 3))}")
    if draw(st.integers(0, 15)) == 0:
        fields.append(draw(st.sampled_from(['"features":[1,2,3,4]', '"id":2'])))  # repeated
    draw(st.randoms()).shuffle(fields)
    text = ws + "{" + ws + ("," + ws).join(fields) + ws + "}" + ws
    if draw(st.integers(0, 20)) == 0:
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from(["", "}", ",", "x", "\x00", "]"])) + text[cut:]
    return text.encode()


@settings(max_examples=300, deadline=None)
@given(st.lists(records(), min_size=8, max_size=24))
def test_any_batch_decodes_exactly_as_the_general_parser_decodes_it(values):
    assert_same_as_general(values)


@settings(max_examples=100, deadline=None)
@given(st.lists(records(), min_size=8, max_size=16), st.lists(st.integers(0, 15), max_size=4))
def test_tombstones_empty_and_oversized_values_among_records_are_the_general_parsers(values, holes):
    values = list(values)
    for h in holes:
        values[h % len(values)] = [None, b"", b"  ", b"[" + b"1," * 600_000 + b"1]"][h % 4]
    assert_same_as_general(values)


def test_doubles_near_float32_halfway_points_round_as_the_general_parser_rounds_them():
    # Halfway between two adjacent float32 numbers, and a hair either side, with 17 or more
    # significant digits: a double an ulp off would round to the other float32.
    rng = np.random.default_rng(0)
    f = rng.normal(size=4000).astype(np.float32)
    up = np.nextafter(f, np.float32(np.inf))
    mid = (f.astype(np.float64) + up.astype(np.float64)) / 2
    texts = []
    for m in mid:
        for x in (m, np.nextafter(m, np.inf), np.nextafter(m, -np.inf)):
            texts.append(repr(float(x)))
            texts.append(f"{x:.19g}")
    values = [
        ("[" + ",".join(texts[i : i + DIM]) + "]").encode() for i in range(0, len(texts), DIM)
    ]
    values = [
        b'{"features":' + v + b',"id":' + str(i).encode() + b"}" for i, v in enumerate(values)
    ]
    decoded = assert_same_as_general(values)
    assert len(decoded.index) == len(values)


def test_random_doubles_and_float32_values_are_exact_and_taken_by_the_scanner():
    rng = np.random.default_rng(1)
    X64 = rng.normal(scale=rng.uniform(1e-6, 1e6, size=(2000, 1)), size=(2000, DIM))
    for values in (
        [orjson.dumps({"id": i, "features": r}) for i, r in enumerate(X64.tolist())],
        encode_json_records(X64.astype(np.float32)),
    ):
        assert scan_batch(values, DIM, 1_048_576).fast.mean() > 0.99
        decoded = assert_same_as_general(values)
        np.testing.assert_array_equal(decoded.X, np.asarray(X64, dtype=np.float32))


@pytest.mark.parametrize("dim", [384, 768])
def test_embedding_records_from_streamkm_produce_are_all_taken_by_the_scanner(dim):
    rng = np.random.default_rng(dim)
    X = rng.normal(size=(64, dim)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    values = encode_json_records(X, truth=rng.integers(0, 8, 64))
    scanned = scan_batch(values, dim, 1_048_576)
    assert scanned.fast.all()
    assert scanned.ids == list(range(64))
    np.testing.assert_array_equal(assert_same_as_general(values, dim).X, X)


@pytest.mark.parametrize(
    "value",
    [
        b'{"features":[1,2,3,4],"x":1e400}',  # orjson refuses the overflowing float
        b'{"features":[1,2,3,4],"x":123456789012345678901234567890}',  # beyond 64 bits
        b'{"features":[1,2,3,4],"x":"\\ud800"}',  # a lone surrogate
        b'{"features":[1,2,3,4],"x":"\xff"}',  # not UTF-8
        b'{"features":[1,2,3,4]} {}',  # two values
        b'{"features":[1,2,3,4],}',  # trailing comma
        b'{"feat\\u0075res":[1,2,3,4]}',  # the key, escaped
        b'{"features":[1,2,3,4],"features":[5,6,7,8]}',  # the last one wins in orjson
        b'{"features":[1,2,3,true]}',
        b'{"features":[1,2,3,-0]}',
        b'{"features":[1,2,3,-0.0]}',
        b'{"features":[1,2,3,' + b"[" * 100 + b"]" * 100 + b"]}",
        b'{"features":[1,2,3,4],"deep":' + b"[" * 100 + b"]" * 100 + b"}",
    ],
)
def test_records_at_the_edges_of_the_scanner_decode_as_the_general_parser_decodes_them(value):
    ok = b'{"features":[0.5,1,2,3],"id":"a"}'
    assert_same_as_general([ok] * 4 + [value] + [ok] * 4)


def test_a_float32_value_written_with_nine_digits_comes_back_bit_for_bit():
    bits = np.arange(0, 2**32, 2**32 // 20_000, dtype=np.uint64).astype(np.uint32)
    f = bits.view(np.float32)
    f = f[np.isfinite(f)][: 4 * 4000].reshape(-1, DIM)
    values = [('{"features":[' + ",".join(f"{x:.9g}" for x in row) + "]}").encode() for row in f]
    decoded = assert_same_as_general(values)
    assert decoded.X.view(np.uint32).tolist() == f.view(np.uint32).tolist()
    assert struct.pack("<f", decoded.X[0, 0]) == struct.pack("<f", f[0, 0])


def test_digit_runs_of_every_length_read_eight_at_a_time_decode_as_the_general_parser_does():
    # Runs of 1 to 24 digits, split every way around the point, so that eight-digit words
    # start and end everywhere, meet the 18-digit limit, and border ':' and '/' (the bytes
    # either side of the digits) as well as the usual separators.
    texts = []
    for n in range(1, 25):
        digits = "".join(str((7 * i + n) % 10) for i in range(n)).lstrip("0") or "0"
        for cut in range(len(digits) + 1):
            texts.append(digits if cut == len(digits) else f"{digits[:cut] or '0'}.{digits[cut:]}")
    values = [('{"features":[' + ",".join([t] * DIM) + "]}").encode() for t in texts]
    values += [('{"features":[1,2,3,' + t + "]}").encode() for t in ("12345678:", "1234567/8")]
    decoded = assert_same_as_general(values)
    assert len(decoded.index) > len(texts) // 2
    # Up to 16 significant digits every spelling is the scanner's own (exact in a double).
    short = [len(t.replace(".", "").lstrip("0")) <= 16 for t in texts]
    assert scan_batch(values[: len(texts)], DIM, 1_048_576).fast[short].all()
