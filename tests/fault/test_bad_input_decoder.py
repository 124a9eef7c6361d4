"""Generated bad input among valid records at the decoder: each bad one rejected for its reason.

tests/test_codec.py already shows decoding never raises on arbitrary bytes and JSON; this adds
that valid records survive any mix intact, and that each kind of bad record gets its own reason.
"""

from __future__ import annotations

import numpy as np
import orjson
from bad_values import DIM, bad_values, valid_features
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.codec import decode_batch

valid_records = st.builds(
    lambda rid, f: (orjson.dumps({"id": rid, "features": f}), rid, f),
    st.integers(0, 10**9) | st.text(max_size=5),
    valid_features,
)
mixes = st.lists(
    st.one_of(valid_records.map(lambda r: ("valid", r)), bad_values().map(lambda b: ("bad", b))),
    max_size=16,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mixes)
def test_valid_records_survive_any_mix_and_each_bad_one_gets_its_reason(mix):
    values = [item[0] for kind, item in mix]
    batch = decode_batch(values, "json", DIM)
    valid_at = [i for i, (kind, _) in enumerate(mix) if kind == "valid"]
    assert batch.index.tolist() == valid_at
    assert batch.ids == [mix[i][1][1] for i in valid_at]
    expected = np.array([mix[i][1][2] for i in valid_at], np.float32).reshape(-1, DIM)
    assert np.array_equal(batch.X.reshape(-1, DIM), expected)
    rejected = {r.index: r.reason for r in batch.rejects}
    for i, (kind, item) in enumerate(mix):
        if kind == "bad":
            reason = item[1]
            assert i in rejected, (item[0][:80] if item[0] else item[0], reason)
            assert reason is None or rejected[i] == reason, (item[0][:80], rejected[i], reason)
    assert len(batch.rejects) + len(batch.index) == len(values)
