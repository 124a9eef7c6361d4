"""Seeding draws the same rows as NumPy's RandomState.choice, the way scikit-learn seeds."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.init import _search_uniform_cdf, random_init


def numpy_uniform_cdf(n):
    p = np.ones(n) / np.ones(n).sum()
    cdf = np.cumsum(p)
    return cdf / cdf[-1]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5000), seed=st.integers(0, 2**31))
def test_cdf_search_matches_numpy_searchsorted(n, seed):
    rng = np.random.default_rng(seed)
    cdf = numpy_uniform_cdf(n)
    # Random draws, draws sitting exactly on cdf values, and the ends of [0, 1).
    draws = np.concatenate([rng.random(4), cdf[rng.integers(0, n, 3)], [0.0, np.nextafter(1, 0)]])
    np.testing.assert_array_equal(
        _search_uniform_cdf(n, draws), cdf.searchsorted(draws, side="right")
    )


@pytest.mark.parametrize("n", [3, 1000, 1_000_003])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_random_init_picks_the_rows_randomstate_choice_picks(n, seed):
    X = np.arange(n, dtype=np.float64).reshape(n, 1)
    k = 3
    expected = np.random.RandomState(seed).choice(
        n, size=k, replace=False, p=np.ones(n) / np.ones(n).sum()
    )
    np.testing.assert_array_equal(random_init(X, k, seed)[:, 0], expected)
