"""KMeans.fit gives scikit-learn's result for the same initialisation."""

import numpy as np
import pytest
from sklearn.cluster import KMeans as SKKMeans
from sklearn.datasets import make_blobs

from engine import KMeans


@pytest.fixture(scope="module")
def blobs():
    X, _ = make_blobs(n_samples=30_000, n_features=4, centers=5, cluster_std=2.0, random_state=3)
    return X


def sklearn_fit(X, **kw):
    return SKKMeans(algorithm="lloyd", n_init=1, **kw).fit(X)


@pytest.mark.parametrize("init", ["random", "k-means++"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", [0, 1])
def test_same_seed_gives_scikit_learns_result(blobs, init, dtype, seed):
    X = blobs.astype(dtype)
    ours = KMeans(5, init=init, max_iter=100, tol=1e-4, seed=seed).fit(X)
    ref = sklearn_fit(X, n_clusters=5, init=init, max_iter=100, tol=1e-4, random_state=seed)
    rtol = 1e-4 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=rtol)
    assert ours.n_iter_ == ref.n_iter_


@pytest.mark.parametrize("max_iter, tol", [(1, 1e-4), (3, 0.0), (300, 0.0), (100, 1e-2)])
def test_explicit_init_matches_scikit_learn_for_tol_and_max_iter(blobs, max_iter, tol):
    init = blobs[[0, 1, 2, 3, 4]]
    ours = KMeans(5, init=init, max_iter=max_iter, tol=tol).fit(blobs)
    ref = sklearn_fit(blobs, n_clusters=5, init=init, max_iter=max_iter, tol=tol)
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-9)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)


def test_empty_cluster_is_relocated_like_scikit_learn():
    X = np.array([[0.0, 0.0], [0.1, 0.0], [0.0, 0.1], [9.0, 9.0], [9.1, 9.0], [30.0, 30.0]])
    init = np.array([[0.0, 0.0], [9.0, 9.0], [500.0, 500.0]])
    ours = KMeans(3, init=init, max_iter=10).fit(X)
    ref = sklearn_fit(X, n_clusters=3, init=init, max_iter=10)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_)
    assert sorted(np.bincount(ours.labels_, minlength=3)) == sorted(
        np.bincount(ref.labels_, minlength=3)
    )
    assert np.bincount(ours.labels_, minlength=3).min() > 0


def test_predict_agrees_with_scikit_learn(blobs):
    ours = KMeans(5, seed=0).fit(blobs)
    ref = sklearn_fit(blobs, n_clusters=5, init=ours.cluster_centers_, max_iter=1)
    ref.cluster_centers_ = ours.cluster_centers_
    queries = np.random.default_rng(0).normal(size=(1000, 4)) * 10
    np.testing.assert_array_equal(ours.predict(queries), ref.predict(queries))
    assert ours.predict(queries.astype(np.float32)).dtype == np.int32
    assert ours.score(blobs) == pytest.approx(-ours.inertia_, rel=1e-9)
    np.testing.assert_allclose(ours.transform(queries[:5]), ref.transform(queries[:5]), rtol=1e-9)


def test_same_seed_same_result_and_fit_predict(blobs):
    a = KMeans(5, seed=11).fit(blobs)
    b = KMeans(5, seed=11)
    np.testing.assert_array_equal(b.fit_predict(blobs), a.labels_)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


@pytest.mark.parametrize(
    "kwargs, X, message",
    [
        ({"n_clusters": 5}, np.zeros((3, 2)), "should be >= n_clusters"),
        ({"n_clusters": 0}, np.zeros((3, 2)), "n_clusters must be >= 1"),
        ({"n_clusters": 2.5}, np.zeros((3, 2)), "n_clusters must be an integer"),
        ({"n_clusters": 2}, np.array([[0.0, np.nan], [1, 1], [2, 2]]), "NaN or infinity"),
        ({"n_clusters": 2}, np.array([[0.0, np.inf], [1, 1], [2, 2]]), "NaN or infinity"),
        ({"n_clusters": 2}, np.zeros(5), "must be 2-D"),
        ({"n_clusters": 2}, np.array([["a", "b"], ["c", "d"]]), "must hold numbers"),
        ({"n_clusters": 2, "init": "bogus"}, np.zeros((3, 2)), "init must be"),
        ({"n_clusters": 2, "init": np.zeros((3, 2))}, np.zeros((3, 2)), "init has shape"),
        ({"n_clusters": 2, "max_iter": 0}, np.zeros((3, 2)), "max_iter"),
        ({"n_clusters": 2, "tol": -1.0}, np.zeros((3, 2)), "tol"),
    ],
)
def test_bad_arguments_raise_value_errors_that_say_what_to_fix(kwargs, X, message):
    with pytest.raises(ValueError, match=message):
        KMeans(**kwargs).fit(X)


def test_predict_checks_fitted_and_dimension(blobs):
    with pytest.raises(ValueError, match="not fitted"):
        KMeans(2).predict(blobs)
    km = KMeans(2).fit(blobs)
    with pytest.raises(ValueError, match="has 3 features but the model was fitted with 4"):
        km.predict(np.zeros((2, 3)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predict_refuses_non_finite_rows_and_names_the_first(blobs, bad, dtype):
    km = KMeans(3, seed=0).fit(blobs)
    X = blobs[:100].astype(dtype)
    X[42, 1] = bad
    with pytest.raises(ValueError, match="row 42"):
        km.predict(X)
    with pytest.raises(ValueError, match="row 42"):
        km.score(X)
    with pytest.raises(ValueError, match="row 42"):
        KMeans(3).fit(X)


@pytest.mark.parametrize("init", ["random", "k-means++"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sample_weights_give_scikit_learns_weighted_result(blobs, init, dtype):
    X = blobs.astype(dtype)
    w = np.random.default_rng(5).uniform(0.1, 3.0, len(X)).astype(dtype)
    ours = KMeans(5, init=init, max_iter=100, seed=2).fit(X, sample_weight=w)
    ref = SKKMeans(5, init=init, n_init=1, max_iter=100, random_state=2).fit(X, sample_weight=w)
    rtol = 1e-4 if dtype == np.float32 else 1e-9
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=rtol, atol=rtol)
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=rtol)
    assert ours.score(X, sample_weight=w) == pytest.approx(-ours.inertia_, rel=rtol)


def test_whole_number_weights_count_rows_that_many_times(blobs):
    X = blobs[:3000]
    reps = np.random.default_rng(1).integers(0, 4, len(X))
    init = X[np.flatnonzero(reps)[:5]]
    weighted = KMeans(5, init=init, tol=0).fit(X, sample_weight=reps.astype(float))
    repeated = KMeans(5, init=init, tol=0).fit(np.repeat(X, reps, axis=0))
    np.testing.assert_allclose(weighted.cluster_centers_, repeated.cluster_centers_, rtol=1e-9)
    assert weighted.inertia_ == pytest.approx(repeated.inertia_, rel=1e-9)
    np.testing.assert_array_equal(np.repeat(weighted.labels_, reps), repeated.labels_)


@pytest.mark.parametrize(
    "weights, message",
    [
        (np.ones(7), r"shape \(7,\)"),
        (-np.ones(30_000), "must be >= 0"),
        (np.zeros(30_000), "sums to 0"),
        (np.full(30_000, np.nan), "NaN or infinity"),
        (np.array(["a"] * 30_000), "must hold real numbers"),
    ],
)
def test_bad_sample_weights_say_what_to_fix(blobs, weights, message):
    with pytest.raises(ValueError, match=message):
        KMeans(3).fit(blobs, sample_weight=weights)


@pytest.mark.parametrize("weighted", [False, True])
def test_cluster_weights_are_the_final_labels_counted_by_weight(blobs, weighted):
    w = np.random.default_rng(3).uniform(0, 2, len(blobs)) if weighted else None
    km = KMeans(n_clusters=4, seed=1, max_iter=3).fit(blobs, sample_weight=w)
    expected = np.bincount(km.labels_, weights=w, minlength=4)
    np.testing.assert_allclose(km.cluster_weights_, expected, rtol=1e-12)
    assert km.cluster_weights_.dtype == np.float64
