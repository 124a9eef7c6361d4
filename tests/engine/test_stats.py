"""BatchStats: one pass gives per-cluster statistics that merge and serialise exactly."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import BatchStats, StatsFormatError, batch_stats
from engine.stats import MAX_FAR, _far_indices


def integer_batch(seed, n, d=3):
    # Integer-valued floats: every sum is exact, so merge must be bit-identical.
    rng = np.random.default_rng(seed)
    return rng.integers(-50, 50, size=(n, d)).astype(np.float64)


CENTERS = np.array([[-20.0, 0.0, 0.0], [0.0, 0.0, 0.0], [20.0, 5.0, -5.0], [1e6, 1e6, 1e6]])


def stats_of(X):
    return batch_stats(X, CENTERS)[2]


def test_batch_stats_match_a_numpy_reference():
    X = np.random.default_rng(0).normal(size=(500, 3)) * 10
    labels, dist, stats = batch_stats(X, CENTERS)
    for j in range(len(CENTERS)):
        members = labels == j
        assert stats.counts[j] == members.sum()
        np.testing.assert_allclose(stats.sums[j], X[members].sum(0), atol=1e-9)
        np.testing.assert_allclose(stats.sq_sums[j], dist[members].sum(), rtol=1e-12)
    far = np.sort(dist)[::-1][:MAX_FAR]
    np.testing.assert_array_equal(stats.far_sq, far)
    assert stats.n == 500


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 200), min_size=2, max_size=5), st.integers(0, 10_000))
def test_merging_batches_equals_statistics_of_their_union(sizes, seed):
    batches = [integer_batch(seed + i, n) for i, n in enumerate(sizes)]
    merged = BatchStats.empty(4, 3)
    for b in batches:
        merged = merged.merge(stats_of(b))
    union = stats_of(np.concatenate(batches))
    np.testing.assert_array_equal(merged.counts, union.counts)
    np.testing.assert_array_equal(merged.sums, union.sums)
    np.testing.assert_array_equal(merged.sq_sums, union.sq_sums)
    np.testing.assert_array_equal(merged.far_sq, union.far_sq)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 100), st.integers(1, 100), st.integers(1, 100), st.integers(0, 10_000))
def test_merge_is_associative_and_commutative(n1, n2, n3, seed):
    a, b, c = (stats_of(integer_batch(seed + i, n)) for i, n in enumerate((n1, n2, n3)))
    left = a.merge(b).merge(c)
    right = a.merge(b.merge(c))
    swapped = c.merge(a).merge(b)
    for other in (right, swapped):
        np.testing.assert_array_equal(left.counts, other.counts)
        np.testing.assert_array_equal(left.sums, other.sums)
        np.testing.assert_array_equal(left.sq_sums, other.sq_sums)
        np.testing.assert_array_equal(left.far_sq, other.far_sq)


def test_merge_of_real_valued_batches_agrees_to_rounding():
    rng = np.random.default_rng(3)
    parts = [rng.normal(size=(n, 3)) * 7 for n in (100, 1000, 10)]
    merged = stats_of(parts[0]).merge(stats_of(parts[1])).merge(stats_of(parts[2]))
    union = stats_of(np.concatenate(parts))
    np.testing.assert_array_equal(merged.counts, union.counts)
    np.testing.assert_allclose(merged.sums, union.sums, rtol=1e-12, atol=1e-12)


def test_merge_refuses_statistics_of_another_shape():
    with pytest.raises(ValueError, match="cannot merge"):
        BatchStats.empty(4, 3).merge(BatchStats.empty(5, 3))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 300), st.integers(0, 10_000), st.booleans())
def test_serialisation_round_trips_bit_exactly(n, seed, f32):
    X = np.random.default_rng(seed).normal(size=(n, 3)).astype(np.float32 if f32 else np.float64)
    stats = stats_of(X * 10)
    back = BatchStats.from_bytes(stats.to_bytes())
    assert back.equals(stats)


def test_clusters_without_rows_are_not_sent():
    X = np.zeros((10, 3))
    stats = stats_of(X)
    dense = BatchStats(stats.counts + 1, stats.sums, stats.sq_sums, stats.far_points, stats.far_sq)
    assert len(stats.to_bytes()) < len(dense.to_bytes())
    assert BatchStats.from_bytes(stats.to_bytes()).equals(stats)


def corrupt_messages():
    good = stats_of(integer_batch(0, 50)).to_bytes()
    bad_magic = b"XXXX" + good[4:]
    bad_format = good[:4] + bytes([99]) + good[5:]
    nan = bytearray(good)
    nan[-8:] = np.array([np.nan]).tobytes()
    return {
        "empty": b"",
        "truncated": good[:-3],
        "extended": good + b"\0",
        "bad_magic": bad_magic,
        "bad_format": bad_format,
        "nan": bytes(nan),
    }


@pytest.mark.parametrize("name", list(corrupt_messages()))
def test_malformed_bytes_raise_a_format_error(name):
    with pytest.raises(StatsFormatError):
        BatchStats.from_bytes(corrupt_messages()[name])


@settings(max_examples=80, deadline=None)
@given(
    dist=st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5, 7.0]), min_size=1, max_size=60),
    m=st.integers(0, 20),
)
def test_far_rows_are_the_largest_distances_largest_first_earlier_row_on_ties(dist, m):
    dist = np.array(dist)
    m = min(m, dist.size)
    expected = np.argsort(-dist, kind="stable")[:m]
    np.testing.assert_array_equal(_far_indices(dist, m, np.empty(0)), expected)
    # Rows of weight 0 are never candidates, however far.
    w = (np.arange(dist.size) % 3 != 0).astype(float)
    kept = np.flatnonzero(w)
    expected = kept[np.argsort(-dist[kept], kind="stable")][:m]
    np.testing.assert_array_equal(_far_indices(dist, m, w), expected)
