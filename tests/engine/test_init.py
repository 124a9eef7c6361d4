"""Seeding draws the same rows as scikit-learn's seeding for the same seed, weighted or not."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster._kmeans import _kmeans_plusplus
from sklearn.datasets import make_blobs
from sklearn.utils.extmath import row_norms

from engine.init import _repeated_sum, _search_uniform_cdf, kmeans_plusplus, random_init


def numpy_uniform_cdf(n, dtype):
    p = (np.ones(n, dtype) / np.ones(n, dtype).sum()).astype(np.float64)
    cdf = np.cumsum(p)
    return cdf / cdf[-1]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5000), seed=st.integers(0, 2**31), f32=st.booleans())
def test_cdf_search_matches_numpy_searchsorted(n, seed, f32):
    dtype = np.float32 if f32 else np.float64
    rng = np.random.default_rng(seed)
    cdf = numpy_uniform_cdf(n, dtype)
    # Random draws, draws sitting exactly on cdf values, and the ends of [0, 1).
    draws = np.concatenate([rng.random(4), cdf[rng.integers(0, n, 3)], [0.0, np.nextafter(1, 0)]])
    p = float(dtype(1) / dtype(n))
    np.testing.assert_array_equal(
        _search_uniform_cdf(n, draws, p), cdf.searchsorted(draws, side="right")
    )


@pytest.mark.parametrize("n", [999_983, 2**20, 4_194_309])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_repeated_sums_equal_numpys_sequential_cumsum_at_every_length_tried(n, dtype):
    p = float(dtype(1) / dtype(n))
    cdf = np.cumsum(np.full(n, p))
    rng = np.random.default_rng(n)
    # Random lengths, and those around each power of two the sum crosses (binade edges).
    edges = np.searchsorted(cdf, 2.0 ** np.arange(-24, 1))
    lengths = np.unique(np.clip(np.concatenate([
        rng.integers(1, n + 1, 500), edges - 1, edges, edges + 1, edges + 2, [1, 2, n]
    ]), 1, n))  # fmt: skip
    got = np.array([_repeated_sum(p, int(m)) for m in lengths])
    np.testing.assert_array_equal(got, cdf[lengths - 1])
    draws = np.concatenate([rng.random(8), cdf[rng.integers(0, n, 4)] / cdf[-1]])
    np.testing.assert_array_equal(
        _search_uniform_cdf(n, draws, p), (cdf / cdf[-1]).searchsorted(draws, side="right")
    )


@pytest.mark.parametrize("n", [3, 1000, 1_000_003])
@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_random_init_picks_the_rows_randomstate_choice_picks(n, seed, dtype):
    X = np.arange(n, dtype=np.float64).reshape(n, 1)
    k = 3
    w = np.ones(n, dtype)
    expected = np.random.RandomState(seed).choice(n, size=k, replace=False, p=w / w.sum())
    np.testing.assert_array_equal(random_init(X.astype(dtype), k, seed)[:, 0], expected)


def test_random_init_with_weights_and_a_continuing_generator():
    n, k = 500, 6
    X = np.arange(n, dtype=np.float64).reshape(n, 1)
    w = np.random.default_rng(0).uniform(0, 3, n)
    rng, ref = np.random.RandomState(4), np.random.RandomState(4)
    for _ in range(3):  # the generator goes on where the last draw left it
        expected = ref.choice(n, size=k, replace=False, p=w / w.sum())
        np.testing.assert_array_equal(random_init(X, k, rng, w)[:, 0], expected)


def test_random_init_never_picks_a_row_of_weight_zero():
    X = np.arange(40, dtype=np.float64).reshape(40, 1)
    w = np.zeros(40)
    w[[3, 17, 29]] = 1.0
    for seed in range(5):
        assert sorted(random_init(X, 3, seed, w)[:, 0].tolist()) == [3.0, 17.0, 29.0]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("n", "d", "k"), [(20_000, 64, 256), (3_000, 3, 12)])
@pytest.mark.parametrize("weighted", [False, True])
def test_kmeans_plusplus_picks_scikit_learns_rows(dtype, n, d, k, weighted):
    X, _ = make_blobs(n_samples=n, n_features=d, centers=k, random_state=0)
    X = X.astype(dtype)
    w = np.random.default_rng(1).uniform(0.5, 2, n).astype(dtype) if weighted else None
    # scikit-learn seeds on the centred data, with weights of ones when none are given.
    Xc = X - X.mean(axis=0)
    sw = np.ones(n, dtype) if w is None else w
    for seed in (0, 3):
        _, idx = _kmeans_plusplus(
            Xc, k, row_norms(Xc, squared=True), sw, np.random.RandomState(seed)
        )
        np.testing.assert_array_equal(kmeans_plusplus(X, k, seed, sample_weight=w), X[idx])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted", [False, True])
def test_exact_kmeans_plusplus_draws_alike_and_spreads_the_seeds(dtype, weighted):
    X, y = make_blobs(n_samples=4000, n_features=16, centers=12, cluster_std=0.5, random_state=2)
    X = X.astype(dtype)
    w = np.random.default_rng(0).uniform(0.5, 2, len(X)) if weighted else None
    exact = kmeans_plusplus(X, 12, 5, sample_weight=w, exact=True)
    # Well separated blobs: both arithmetics pick one seed in each, the same rows.
    np.testing.assert_array_equal(exact, kmeans_plusplus(X, 12, 5, sample_weight=w))
    rows = [int(np.flatnonzero((c == X).all(axis=1))[0]) for c in exact]
    assert sorted(y[rows]) == list(range(12))


def test_exact_kmeans_plusplus_never_seeds_on_a_row_of_weight_zero():
    X, _ = make_blobs(n_samples=600, n_features=3, centers=4, random_state=1)
    w = np.ones(len(X))
    w[::2] = 0.0
    for seed in range(4):
        for exact in (False, True):
            C = kmeans_plusplus(X, 4, seed, sample_weight=w, exact=exact)
            rows = [int(np.flatnonzero((c == X).all(axis=1))[0]) for c in C]
            assert all(r % 2 == 1 for r in rows)
