"""Generated bad record values, each with the dead-letter reason the codec must give it (dim 3)."""

from __future__ import annotations

import json

from hypothesis import strategies as st

DIM = 3


def _dumps(value) -> bytes:
    return json.dumps(value).encode()  # writes NaN, Infinity and integers beyond 64 bits too


numbers = st.floats(-1e6, 1e6) | st.integers(-(2**40), 2**40)
valid_features = st.lists(numbers, min_size=DIM, max_size=DIM)
not_numbers = st.none() | st.booleans() | st.text(max_size=4) | st.just([1]) | st.just({"a": 1})

# (strategy of bad values, reason)
BAD = [
    (
        st.binary(min_size=1, max_size=40).filter(
            lambda b: b.strip() and b[:1] not in b'[{-0123456789tfn"\t\n\r '
        ),
        "invalid_json",
    ),
    (valid_features.map(lambda f: _dumps({"id": 1, "features": f})[:-2]), "invalid_json"),
    (
        st.sampled_from([b"NaN", b"[NaN, 1, 2]", b"[Infinity, 1, 2]", b"[-Infinity, 0, 0]"]),
        "invalid_json",
    ),
    (st.sampled_from([b"[1e400, 1, 2]", b'{"features": [-1e999, 0, 0]}']), "non_finite"),
    (st.sampled_from([b"[1e39, 1, 2]", b"[-3.5e38, 0, 0]", _dumps([2**200, 0, 0])]), "non_finite"),
    (
        st.lists(numbers, min_size=1, max_size=8).filter(lambda f: len(f) != DIM).map(_dumps),
        "wrong_dimension",
    ),
    (
        st.builds(
            lambda f, bad, at: _dumps([*f[:at], bad, *f[at + 1 :]]),
            valid_features,
            not_numbers,
            st.integers(0, DIM - 1),
        ),
        "not_numeric",
    ),
    (
        st.sampled_from(
            [
                b'{"id": 1}',
                b'{"features": "1,2,3"}',
                b'{"features": null}',
                b"42",
                b'"text"',
                b"null",
                b"true",
                b"[]",
                b'{"features": []}',
            ]
        ),
        "missing_features",
    ),
    (
        st.integers(1, 5000).map(
            lambda depth: b'{"features":' + b"[" * depth + b"]" * depth + b"}"
        ),
        None,
    ),
    (st.integers(1100, 4000).map(lambda depth: b"[" * depth + b"1" + b"]" * depth), None),
    (st.just(b"[" + b"1.0," * 300_000 + b"1.0]"), "too_large"),
    (st.just(None), "empty_value"),
    (st.just(b""), "empty_value"),
]


def bad_values():
    """A strategy of (value, expected reason or None when any reason will do)."""
    return st.one_of(*[strat.map(lambda v, r=reason: (v, r)) for strat, reason in BAD])
