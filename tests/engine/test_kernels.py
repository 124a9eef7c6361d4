"""engine.assign and the fused statistics pass agree with a NumPy reference."""

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine.kernels as kernels
from engine import assign
from engine.kernels import assign_labels, assign_stats, column_variance, parallel_rows


def reference(X, C):
    d2 = ((X[:, None, :].astype(np.float64) - C[None, :, :].astype(np.float64)) ** 2).sum(-1)
    return d2.argmin(axis=1), d2.min(axis=1)


def layouts(X):
    return {
        "C": np.ascontiguousarray(X),
        "F": np.asfortranarray(X),
        "strided": np.repeat(X, 2, axis=0)[::2],
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
@pytest.mark.parametrize("n", [1, 37, parallel_rows(4, 5) + 5])  # the last on all threads
def test_assign_matches_reference_for_every_dtype_and_layout(dtype, layout, n):
    rng = np.random.default_rng(n)
    X = layouts(rng.normal(size=(n, 5)).astype(dtype))[layout]
    C = rng.normal(size=(4, 5)).astype(dtype)
    labels, dist = assign(X, C)
    ref_labels, ref_dist = reference(X, C)
    assert labels.dtype == np.int32
    assert dist.dtype == dtype
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-4 if dtype == np.float32 else 1e-10)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    k=st.integers(1, 12),
    d=st.integers(1, 40),
    seed=st.integers(0, 2**31),
    f32=st.booleans(),
)
def test_assign_matches_reference_on_random_shapes(n, k, d, seed, f32):
    rng = np.random.default_rng(seed)
    dtype = np.float32 if f32 else np.float64
    X = rng.normal(size=(n, d)).astype(dtype)
    C = rng.normal(size=(k, d)).astype(dtype)
    labels, _ = assign(X, C)
    ref_labels, ref_dist = reference(X, C)
    # Near-ties may round either way in float32; the chosen centre must still be nearest.
    chosen = ((X.astype(np.float64) - C[labels].astype(np.float64)) ** 2).sum(1)
    np.testing.assert_allclose(chosen, ref_dist, rtol=1e-4 if f32 else 1e-12, atol=1e-6)
    if not f32:
        np.testing.assert_array_equal(labels, ref_labels)


def test_assign_handles_large_k_and_d_with_memory_linear_in_n():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 2048)).astype(np.float32)
    C = rng.normal(size=(1024, 2048)).astype(np.float32)
    C[17] = X[3]
    labels, dist = assign(X, C)
    assert labels[3] == 17
    assert dist[3] == 0.0
    assert labels.shape == dist.shape == (64,)


@pytest.mark.parametrize("d", [2, 6])  # the scalar kernel and the vector one (engine/simd.py)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_equally_near_centres_go_to_the_lowest_index_even_across_vector_blocks(d, dtype):
    rng = np.random.default_rng(d)
    X = rng.normal(size=(parallel_rows(20, d) + 7, d)).astype(dtype)
    C = rng.normal(size=(20, d)).astype(dtype) + 50  # far from every row but centres 5, 13, 19
    C[5] = C[13] = C[19] = X.mean(axis=0)  # identical centres in lanes of different blocks
    labels, _ = assign(X, C)
    assert set(np.unique(labels)) == {5}
    counts, _, _, _ = assign_stats(X, C, np.zeros(len(X), np.int32))
    assert counts[5] == len(X)


@pytest.mark.parametrize("d", [2, 6])
def test_rows_with_nan_get_centre_zero_at_infinite_distance(d):
    X = np.ones((9, d))
    X[[2, 7], 1] = np.nan
    labels, dist = assign(X, np.stack([np.zeros(d), np.ones(d)]))
    np.testing.assert_array_equal(labels, [1, 1, 0, 1, 1, 1, 1, 0, 1])
    assert np.isinf(dist[[2, 7]]).all() and (dist[[0, 1, 3, 4, 5, 6, 8]] == 0).all()


@pytest.mark.parametrize("d", [2, 6])
@pytest.mark.parametrize("parallel", [False, True])
def test_labels_only_pass_agrees_with_assign_and_counts_non_finite_rows(d, parallel):
    n = parallel_rows(9, d) + 3 if parallel else 50
    assert kernels._parallel(n, 9, d) == parallel
    rng = np.random.default_rng(n + d)
    X = rng.normal(size=(n, d)).astype(np.float32)
    C = rng.normal(size=(9, d)).astype(np.float32)
    labels, non_finite = assign_labels(X, C)
    np.testing.assert_array_equal(labels, assign(X, C)[0])
    assert non_finite == 0
    X[[0, 7, n - 1], [0, 1, d - 1]] = [np.nan, np.inf, -np.inf]
    assert assign_labels(X, C)[1] == 3


def test_integer_input_is_converted_to_float64():
    labels, dist = assign(np.array([[0, 0], [10, 10]]), np.array([[9.0, 9.0], [0.5, 0.0]]))
    np.testing.assert_array_equal(labels, [1, 0])
    assert dist.dtype == np.float64


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 2, 3, 4, 5, 17])  # 1-3: unrolled loops; 4 and up: engine/simd.py
@pytest.mark.parametrize("k", [1, 5])  # each parallel block's partials sit a cache line apart
def test_fused_pass_sums_each_cluster(parallel, dtype, d, k):
    n = parallel_rows(k, d) * 3 + 11 if parallel else 100
    assert kernels._parallel(n, k, d) == parallel
    rng = np.random.default_rng(d)
    X = rng.normal(size=(n, d)).astype(dtype)
    C = rng.normal(size=(k, d)).astype(dtype)
    labels = np.full(n, -1, np.int32)
    dist = np.empty(n, dtype)
    counts, sums, sq, changed = assign_stats(X, C, labels, dist)
    ref_labels, ref_dist = reference(X, C)
    np.testing.assert_array_equal(labels, ref_labels)
    assert changed == n
    np.testing.assert_array_equal(counts, np.bincount(ref_labels, minlength=k))
    for j in range(k):
        np.testing.assert_allclose(
            sums[j], X[ref_labels == j].astype(np.float64).sum(0), rtol=1e-9, atol=1e-9
        )
        np.testing.assert_allclose(sq[j], ref_dist[ref_labels == j].sum(), rtol=1e-4)
    # A second pass with the same centres changes no label.
    assert assign_stats(X, C, labels)[3] == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 2, 3, 4, 17])
def test_a_rows_answer_is_the_same_bits_wherever_it_sits_in_a_block(dtype, d):
    # Rows go through several row-at-a-time loops (four rows at once up to 3 features, vector
    # groups beyond, one at a time for what is left); dropping leading rows moves every row to
    # another place in them, and across the parallel blocks.
    rng = np.random.default_rng(d)
    X = (rng.normal(size=(parallel_rows(7, d) + 37, d)) * 100).astype(dtype)
    C = (rng.normal(size=(7, d)) * 100).astype(dtype)
    labels, dist = assign(X, C)
    for shift in (1, 2, 3, 5):
        part_labels, part_dist = assign(X[shift:], C)
        np.testing.assert_array_equal(part_labels, labels[shift:])
        np.testing.assert_array_equal(part_dist, dist[shift:])
        fused_labels = np.full(len(X) - shift, -1, np.int32)
        fused_dist = np.empty(len(X) - shift, dtype)
        assign_stats(X[shift:], C, fused_labels, fused_dist)
        np.testing.assert_array_equal(fused_labels, labels[shift:])
        np.testing.assert_array_equal(fused_dist, dist[shift:])


def test_column_variance_matches_numpy():
    X = np.random.default_rng(2).normal(5.0, 3.0, size=(50_000, 4))
    np.testing.assert_allclose(column_variance(X), X.var(axis=0), rtol=1e-12)


@pytest.mark.parametrize(("n", "k", "d"), [(40_000, 8, 16), (20_000, 64, 384), (3_000, 256, 768)])
def test_statistics_are_the_same_bits_whatever_the_thread_count(n, k, d):
    """Blocks are fixed by the shapes and reduced in block order, whichever thread zeroed,
    filled or reduced them: one thread and all of them give the same sums."""
    assert kernels._parallel(n, k, d) and kernels._n_blocks(n, k, d) > 1
    rng = np.random.default_rng(k)
    C = rng.normal(size=(k, d)).astype(np.float32)
    X = (C[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(np.float32)
    results = []
    threads = numba.get_num_threads()
    try:
        for count in (1, threads):
            numba.set_num_threads(count)
            labels = np.zeros(n, np.int32)
            results.append((labels, *assign_stats(X, C, labels)))
    finally:
        numba.set_num_threads(threads)
    for one, many in zip(*results, strict=True):
        np.testing.assert_array_equal(many, one)
