"""Specification of the record codec (DESIGN.md §3): every value is either a row or one reject."""

from __future__ import annotations

import json
import struct

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.codec import (
    Reject,
    decode_batch,
    dlq_headers,
    encode_f32,
    encode_json_records,
    encode_labels,
)

VALID_JSON = b'{"id": 7, "features": [1, 2.5, -3]}'


def _assert_partition(batch, n: int) -> None:
    """Every input position appears exactly once, either as a row or as a reject."""
    seen = batch.index.tolist() + [r.index for r in batch.rejects]
    assert sorted(seen) == list(range(n))
    assert batch.X.shape[0] == len(batch.index) == len(batch.ids)
    assert batch.X.dtype == np.float32
    assert batch.X.flags.c_contiguous
    assert batch.index.dtype == np.int64


# --- json: valid records --------------------------------------------------------------------


def test_json_round_trip_keeps_features_ids_and_order():
    X = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    ids = [f"rec-{i}" for i in range(50)]
    batch = decode_batch(encode_json_records(X, ids, truth=np.zeros(50, int)), "json", None)
    np.testing.assert_array_equal(batch.X, X)
    assert batch.ids == ids
    assert batch.index.tolist() == list(range(50))
    assert batch.rejects == []
    assert batch.dim == 6


@pytest.mark.parametrize(
    "record_id",
    [0, -5, 2**63, 1.5, "abc", "", None, True, [1, "x"], {"nested": {"k": [1]}}],
)
def test_json_id_of_any_type_is_preserved(record_id):
    value = orjson.dumps({"id": record_id, "features": [1.0, 2.0]})
    batch = decode_batch([value], "json", 2)
    assert batch.ids == [record_id]


@pytest.mark.parametrize(
    "value, row",
    [
        (b"[1, 2, 3]", [1, 2, 3]),
        (b'{"features": [1, 2, 3]}', [1, 2, 3]),
        (b'{"features": [1, 2, 3], "truth": 4, "extra": {"a": [true, null]}}', [1, 2, 3]),
        (b'  {"features":[1e3,-0.0,3]}\n', [1000, 0, 3]),
        (b"[3.4e38, -3.4e38, 1e-50]", [3.4e38, -3.4e38, 0.0]),
        (b'{"features": [18446744073709551615, -9223372036854775808, 0]}', [2**64, -(2**63), 0]),
    ],
)
def test_json_accepts_bare_arrays_and_objects_and_ignores_other_fields(value, row):
    batch = decode_batch([value], "json", 3)
    assert batch.rejects == []
    np.testing.assert_allclose(batch.X[0], np.array(row, dtype=np.float32))
    assert batch.ids == [None]


# --- json: every malformed shape ------------------------------------------------------------

MALFORMED_JSON = [
    (None, "empty_value"),
    (b"", "empty_value"),
    (b"{", "invalid_json"),
    (b"nope", "invalid_json"),
    (b"[1, 2, 3,]", "invalid_json"),
    (b"[NaN, 1, 2]", "invalid_json"),
    (b"[Infinity, 1, 2]", "invalid_json"),
    (b"\xff\xfe[1,2,3]", "invalid_json"),
    (b'{"features": "\xff"}', "invalid_json"),
    (b"[1, 2, 3] [4]", "invalid_json"),
    (b"1],[2", "invalid_json"),
    (b"[" * 5000 + b"]" * 5000, "invalid_json"),
    (b'{"id": 1}', "missing_features"),
    (b'{"Features": [1, 2, 3]}', "missing_features"),
    (b'{"features": "1,2,3"}', "missing_features"),
    (b'{"features": 3}', "missing_features"),
    (b'{"features": null}', "missing_features"),
    (b'{"features": {"a": 1}}', "missing_features"),
    (b'{"features": []}', "missing_features"),
    (b"[]", "missing_features"),
    (b'"text"', "missing_features"),
    (b"42", "missing_features"),
    (b"null", "missing_features"),
    (b"true", "missing_features"),
    (b"[1, 2]", "wrong_dimension"),
    (b"[1, 2, 3, 4]", "wrong_dimension"),
    (b"[1e400, 2, 3]", "non_finite"),
    (b"[1e300, 2, 3]", "non_finite"),
    (b"[-1e39, 2, 3]", "non_finite"),
    (b"[" + b"9" * 400 + b", 2, 3]", "non_finite"),
    (b"[true, 2, 3]", "not_numeric"),
    (b"[1, false, 3]", "not_numeric"),
    (b'[1, "2", 3]', "not_numeric"),
    (b"[1, null, 3]", "not_numeric"),
    (b"[1, [2], 3]", "not_numeric"),
    (b'[1, {"v": 2}, 3]', "not_numeric"),
    (b"[[1, 2, 3]]", "not_numeric"),
    (b"[1, 2, 3]" + b" " * 2000, "too_large"),
]


@pytest.mark.parametrize("value, reason", MALFORMED_JSON)
@pytest.mark.parametrize("among_valid", [False, True], ids=["alone", "among_valid"])
def test_bad_json_records_are_rejected_with_reason(value, reason, among_valid):
    values = [b"[1, 2, 3]", value, b"[4, 5, 6]"] if among_valid else [value]
    batch = decode_batch(
        values, "json", 3, max_value_bytes=1024 if reason == "too_large" else 10**6
    )
    bad = 1 if among_valid else 0
    assert [(r.index, r.reason) for r in batch.rejects] == [(bad, reason)]
    assert batch.rejects[0].message  # a human explanation, never empty
    _assert_partition(batch, len(values))
    if among_valid:
        np.testing.assert_array_equal(batch.X, [[1, 2, 3], [4, 5, 6]])
        assert batch.index.tolist() == [0, 2]


@pytest.mark.parametrize(
    "value, words",
    [
        (b"[1, 2]", "expected 3 features, got 2"),
        (b'[1, "x", 3]', "feature 1 is a string"),
        (b"[1, 2, true]", "feature 2 is a boolean"),
        (b'{"id": 1}', '"features"'),
        (b"[1, 2, 1e300]", "feature 2 is not finite"),
        (None, "tombstone"),
    ],
)
def test_reject_messages_say_what_is_wrong(value, words):
    (reject,) = decode_batch([value], "json", 3).rejects
    assert words in reject.message


def test_a_value_cannot_smuggle_extra_records_into_a_batch():
    # Joined with commas these would read as [1, 2, [3, 4]]; each on its own is invalid.
    batch = decode_batch([b"1,2", b"[3", b"4]"], "json", None)
    assert [r.reason for r in batch.rejects] == ["invalid_json"] * 3
    assert batch.X.shape[0] == 0


def test_bool_features_are_rejected_even_when_they_look_like_zero_or_one():
    values = [b"[0, 1, 0]", b"[0, true, 0]", b"[1.0, 0.0, 1]", b"[false, 0, 0]"]
    batch = decode_batch(values, "json", 3)
    assert batch.index.tolist() == [0, 2]
    assert [(r.index, r.reason) for r in batch.rejects] == [(1, "not_numeric"), (3, "not_numeric")]


def test_non_finite_rows_are_dropped_from_an_otherwise_valid_batch():
    batch = decode_batch([b"[1, 2]", b"[1e300, 2]", b"[3, 4]"], "json", None)
    np.testing.assert_array_equal(batch.X, [[1, 2], [3, 4]])
    assert [(r.index, r.reason) for r in batch.rejects] == [(1, "non_finite")]


# --- dimension learning ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "f32"])
def test_dimension_is_learned_from_the_first_valid_record_and_enforced(fmt):
    rows = [[1.0, 2.0], [1.0, 2.0, 3.0], [4.0, 5.0]]
    values = [_encode(r, fmt) for r in rows]
    batch = decode_batch([None, *values], fmt, None)
    assert batch.dim == 2
    assert batch.index.tolist() == [1, 3]
    assert [(r.index, r.reason) for r in batch.rejects] == [
        (0, "empty_value"),
        (2, "wrong_dimension" if fmt == "json" else "wrong_size"),
    ]


@pytest.mark.parametrize("fmt", ["json", "f32"])
def test_a_non_finite_record_does_not_teach_the_dimension(fmt):
    values = [_encode(r, fmt) for r in ([np.inf, 1.0, 1.0], [1.0, 2.0])]
    if fmt == "json":
        values[0] = b"[1e300, 1, 1]"
    batch = decode_batch(values, fmt, None)
    assert batch.dim == 2
    assert [(r.index, r.reason) for r in batch.rejects] == [(0, "non_finite")]


@pytest.mark.parametrize("fmt", ["json", "f32"])
def test_dimension_stays_unknown_when_no_record_is_valid(fmt):
    batch = decode_batch([None, b"", b"\x00"], fmt, None)
    assert batch.dim is None
    assert batch.X.shape[0] == 0
    _assert_partition(batch, 3)


@pytest.mark.parametrize("fmt", ["json", "f32"])
def test_given_dimension_is_kept_for_an_empty_batch(fmt):
    batch = decode_batch([], fmt, 5)
    assert batch.dim == 5
    assert batch.X.shape[0] == 0
    assert batch.rejects == []


def test_unknown_format_is_a_value_error():
    with pytest.raises(ValueError, match="unknown input format 'csv'"):
        decode_batch([b"1,2"], "csv", None)


# --- f32 ------------------------------------------------------------------------------------


def test_f32_round_trip_is_exact():
    X = np.random.default_rng(1).normal(size=(100, 8)).astype(np.float32)
    batch = decode_batch(encode_f32(X), "f32", 8)
    np.testing.assert_array_equal(batch.X, X)
    assert batch.ids == [None] * 100
    assert batch.X.flags.writeable


@pytest.mark.parametrize(
    "value, reason",
    [
        (None, "empty_value"),
        (b"", "empty_value"),
        (b"\x00" * 7, "wrong_size"),
        (b"\x00" * 8, "wrong_size"),
        (b"\x00" * 16, "wrong_size"),
        (struct.pack("<3f", 1.0, float("nan"), 2.0), "non_finite"),
        (struct.pack("<3f", float("-inf"), 1.0, 2.0), "non_finite"),
        (b"\x00" * 12 * 100, "too_large"),
    ],
)
@pytest.mark.parametrize("among_valid", [False, True], ids=["alone", "among_valid"])
def test_bad_f32_records_are_rejected_with_reason(value, reason, among_valid):
    ok = struct.pack("<3f", 1.0, 2.0, 3.0)
    values = [ok, value, ok] if among_valid else [value]
    batch = decode_batch(values, "f32", 3, max_value_bytes=1024)
    bad = 1 if among_valid else 0
    assert [(r.index, r.reason) for r in batch.rejects] == [(bad, reason)]
    _assert_partition(batch, len(values))


def test_f32_is_little_endian():
    assert decode_batch([b"\x00\x00\x80\x3f"], "f32", 1).X.tolist() == [[1.0]]


# --- properties -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=12,
)
feature_lists = st.lists(
    st.floats(-1e6, 1e6) | st.integers(-(2**40), 2**40) | st.sampled_from([0, 1, True, 1e300]),
    min_size=2,
    max_size=4,
)


def _dumps(value) -> bytes:
    return json.dumps(value).encode()  # the stdlib writes integers beyond 64 bits too


record_values = st.one_of(
    st.binary(max_size=40),
    st.none(),
    json_values.map(_dumps),
    feature_lists.map(_dumps),
    st.builds(lambda i, f: _dumps({"id": i, "features": f}), json_values, feature_lists),
    st.integers(0, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(record_values, max_size=12), st.sampled_from([None, 2, 3]))
def test_json_decoding_never_raises_and_accounts_for_every_record(values, dim):
    batch = decode_batch(values, "json", dim)
    _assert_partition(batch, len(values))
    assert np.isfinite(batch.X).all()
    if batch.X.shape[0]:
        assert batch.X.shape[1] == batch.dim
        assert dim is None or batch.dim == dim


@settings(max_examples=300)
@given(st.lists(st.none() | st.binary(max_size=24), max_size=12), st.sampled_from([None, 1, 2]))
def test_f32_decoding_never_raises_and_accounts_for_every_record(values, dim):
    batch = decode_batch(values, "f32", dim)
    _assert_partition(batch, len(values))
    assert np.isfinite(batch.X).all()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(record_values, max_size=12), st.sampled_from(["json", "f32"]))
def test_decoding_a_batch_agrees_with_decoding_each_record_alone(values, fmt):
    dim = 3 if fmt == "json" else 2
    batch = decode_batch(values, fmt, dim)
    rows, rejects = [], []
    for i, v in enumerate(values):
        alone = decode_batch([v], fmt, dim)
        rows.extend((i, row, rid) for row, rid in zip(alone.X.tolist(), alone.ids, strict=True))
        rejects.extend((i, r.reason, r.message) for r in alone.rejects)
    assert [(i, row, rid) for i, row, rid in rows] == [
        (i, row, rid)
        for i, row, rid in zip(batch.index.tolist(), batch.X.tolist(), batch.ids, strict=True)
    ]
    assert rejects == [(r.index, r.reason, r.message) for r in batch.rejects]


# --- encoding -------------------------------------------------------------------------------


def test_labels_encode_as_one_json_object_per_record():
    ids = [1, "b", None, {"k": [1]}]
    out = encode_labels(
        ids,
        np.array([0, 3, 1, 2], dtype=np.int32),
        np.array([0.5, 1.0, 2.0, 0.0], dtype=np.float32),
        np.array([1.0, 2.5, 0.25, 0.0]),
        np.int64(17),
    )
    decoded = [json.loads(v) for v in out]
    assert decoded[1] == {
        "id": "b",
        "cluster": 3,
        "distance": 1.0,
        "score": 2.5,
        "model_version": 17,
    }
    assert [d["id"] for d in decoded] == ids
    assert [list(d) for d in decoded] == [
        ["id", "cluster", "distance", "score", "model_version"]
    ] * 4


json_ids = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet='},{"id:\\ab', max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["id", "x"]), inner)
    ),
    max_leaves=8,
)


@settings(max_examples=200)
@given(st.lists(json_ids, max_size=8))
def test_labels_encode_ids_of_any_json_shape_record_by_record(ids):
    n = len(ids)
    out = encode_labels(ids, np.arange(n), np.linspace(0, 1, n), np.ones(n), 2)
    assert [json.loads(v)["id"] for v in out] == ids
    assert out == [
        orjson.dumps({"id": i, "cluster": c, "distance": d, "score": 1.0, "model_version": 2})
        for i, c, d in zip(ids, range(n), np.linspace(0, 1, n).tolist(), strict=True)
    ]


def test_non_finite_distances_and_scores_are_written_as_null():
    out = encode_labels(
        [None, None], np.array([0, 1]), np.array([np.nan, 1.0]), np.array([1.0, np.inf]), 1
    )
    decoded = [json.loads(v) for v in out]  # strict JSON: would fail on NaN or Infinity
    assert decoded[0]["distance"] is None
    assert decoded[1]["score"] is None


def test_encode_labels_refuses_mismatched_lengths():
    with pytest.raises(ValueError):
        encode_labels([1, 2], np.array([0]), np.array([0.0]), np.array([0.0]), 1)


def test_dlq_headers_name_reason_message_and_source():
    headers = dlq_headers("wrong_dimension", "expected 8 features, got 3", "features", 2, 12345)
    assert headers == [
        ("streamkm.error.reason", b"wrong_dimension"),
        ("streamkm.error.message", b"expected 8 features, got 3"),
        ("streamkm.source.topic", b"features"),
        ("streamkm.source.partition", b"2"),
        ("streamkm.source.offset", b"12345"),
    ]


def test_dlq_headers_carry_non_ascii_messages_as_utf8():
    headers = dict(dlq_headers("invalid_json", "bad byte: ü", "t", 0, 0))
    assert headers["streamkm.error.message"].decode("utf-8") == "bad byte: ü"


def test_json_records_carry_ids_features_and_truth():
    X = np.array([[1.5, 2.0], [3.0, -4.25]], dtype=np.float32)
    values = encode_json_records(X, truth=np.array([4, 1]))
    assert [json.loads(v) for v in values] == [
        {"id": 0, "features": [1.5, 2.0], "truth": 4},
        {"id": 1, "features": [3.0, -4.25], "truth": 1},
    ]


@pytest.mark.parametrize("encode", [encode_f32, encode_json_records])
def test_encoders_refuse_arrays_that_are_not_matrices(encode):
    with pytest.raises(ValueError, match="2-D"):
        encode(np.zeros(3))


def test_reject_is_a_named_tuple_of_index_reason_message():
    assert Reject(3, "x", "y")._asdict() == {"index": 3, "reason": "x", "message": "y"}


def _encode(row: list[float], fmt: str) -> bytes:
    if fmt == "json":
        return orjson.dumps(row)
    return np.asarray(row, dtype="<f4").tobytes()
