"""The dot-product form (engine/wide.py) gives the exact kernel's labels and distances, bit for
bit, on data built to fool it: near-duplicate centres, exact ties, large offsets, rows that are
not finite. The exact kernel is the vector code engine.assign runs below the crossover."""

from __future__ import annotations

import numpy as np
import pytest

import engine.kernels as kernels
from engine.kernels import assign, assign_stats


@pytest.fixture
def exact_only(monkeypatch):
    """Run engine.assign / assign_stats with the vector loops whatever the shape."""

    def force(wide: bool) -> None:
        monkeypatch.setattr(kernels, "_wide", lambda k, d: wide)

    return force


def assert_same_answers(X, C, force):
    """engine.assign gives the same labels and squared distances, bit for bit, either way."""
    force(False)
    labels, dist = assign(X, C)
    force(True)
    wide_labels, wide_dist = assign(X, C)
    np.testing.assert_array_equal(wide_labels, labels)
    np.testing.assert_array_equal(wide_dist, dist)
    return labels, dist


def near_duplicate_centres(rng, k, d, dtype, offset):
    base = rng.normal(size=(k // 2, d))
    C = np.concatenate([base, base + rng.normal(scale=1e-6, size=base.shape)]) + offset
    X = C[rng.integers(0, k, 3001)] + rng.normal(scale=1e-3, size=(3001, d))
    return X.astype(dtype), C.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0.0, 1e3, 1e5])
def test_near_duplicate_centres_far_from_the_origin_get_the_exact_labels(exact_only, dtype, offset):
    rng = np.random.default_rng(int(offset) + 1)
    X, C = near_duplicate_centres(rng, 64, 128, dtype, offset)
    assert_same_answers(X, C, exact_only)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_equal_centres_go_to_the_lowest_index(exact_only, dtype):
    rng = np.random.default_rng(7)
    C = np.repeat(rng.normal(size=(8, 96)), 8, axis=0).astype(dtype)  # each centre 8 times
    X = rng.normal(size=(2000, 96)).astype(dtype)
    labels, _ = assert_same_answers(X, C, exact_only)
    assert set(np.unique(labels) % 8) == {0}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("n", "d", "k"), [(5003, 384, 64), (3001, 768, 256), (4002, 64, 1024)])
def test_embedding_shapes_give_the_exact_labels_and_distances(exact_only, dtype, n, d, k):
    rng = np.random.default_rng(d + k)
    X = rng.normal(size=(n, d)).astype(dtype)
    C = X[rng.choice(n, k, replace=False)].copy()
    assert_same_answers(X, C, exact_only)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_that_are_not_finite_are_decided_as_the_exact_kernel_does(exact_only, dtype):
    rng = np.random.default_rng(11)
    X = rng.normal(size=(1500, 64)).astype(dtype)
    C = X[:256].copy()
    X[5, 3], X[17, 0], X[40, 1] = np.nan, np.inf, -np.inf
    X[18] = np.nan
    X[60] = np.finfo(dtype).max  # finite, but its distances overflow
    _, dist = assert_same_answers(X, C, exact_only)
    assert kernels.assign_labels(X, C)[1] == np.count_nonzero(~np.isfinite(dist))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [3000, kernels.parallel_rows(256, 128) * 64 + 7])  # many blocks
def test_the_fused_statistics_are_the_same_bits_either_way(exact_only, dtype, n):
    rng = np.random.default_rng(n)
    C = rng.normal(scale=2, size=(256, 128)).astype(dtype)
    X = (C[rng.integers(0, 256, n)] + rng.normal(size=(n, 128))).astype(dtype)
    start = rng.integers(0, 256, n).astype(np.int32)
    results = []
    for wide in (False, True):
        exact_only(wide)
        labels, dist = start.copy(), np.empty(n, dtype)
        results.append((labels, dist, *assign_stats(X, C, labels, dist)))
    for exact, product in zip(*results, strict=True):
        np.testing.assert_array_equal(product, exact)


def test_wide_shapes_take_the_product_form_and_narrow_ones_do_not():
    assert kernels._wide(64, 384)
    assert kernels._wide(256, 768)
    assert kernels._wide(1024, 64)
    assert not kernels._wide(8, 16)  # the issue 2 shapes keep the vector loops
    assert not kernels._wide(8, 2)
    assert not kernels._wide(16, 384)  # few centres: the vector loops win


def test_centres_so_far_out_that_products_overflow_take_the_exact_kernel(exact_only):
    rng = np.random.default_rng(3)
    C = (rng.normal(size=(64, 64)) * 1e19).astype(np.float32)  # ||c||^2 overflows float32
    X = C[rng.integers(0, 64, 500)] * np.float32(1.0001)
    assert_same_answers(X, C, exact_only)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wide_batches_of_a_few_hundred_rows_split_across_threads_give_the_same_statistics(
    exact_only, dtype
):
    n, k, d = 1024, 256, 768
    assert kernels._parallel(n, k, d) and kernels._n_blocks(n, k, d) > 1
    rng = np.random.default_rng(5)
    C = rng.normal(size=(k, d)).astype(dtype)
    X = (C[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(dtype)
    results = []
    for wide in (False, True):
        exact_only(wide)
        labels = np.zeros(n, np.int32)
        results.append((labels, *assign_stats(X, C, labels)))
    for exact, product in zip(*results, strict=True):
        np.testing.assert_array_equal(product, exact)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [4, 9, 15, 61, 385])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_any_width_and_layout_gives_the_exact_labels_and_distances(exact_only, dtype, d, layout):
    """The exact sums run eight features at a time, then feature by feature: widths that are not
    a multiple of eight, and rows whose features are not adjacent in memory, change nothing."""
    rng = np.random.default_rng(d)
    C = rng.normal(size=(40, d)).astype(dtype)
    X = (C[rng.integers(0, 40, 2003)] + rng.normal(scale=0.3, size=(2003, d))).astype(dtype)
    if layout == "F":
        X = np.asfortranarray(X)
    elif layout == "strided":
        X = np.repeat(X, 2, axis=1)[:, ::2]
    labels, _ = assert_same_answers(X, C, exact_only)
    assert len(np.unique(labels)) > 30
