"""estimators.KMeans and StreamingKMeans used the way scikit-learn users use its estimators."""

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.cluster import KMeans as SKKMeans
from sklearn.cluster import MiniBatchKMeans
from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from estimators import KMeans, StreamingKMeans

ESTIMATORS = [KMeans, StreamingKMeans]


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=6000, n_features=5, centers=4, cluster_std=1.5, random_state=7)
    return X, y


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("init, n_init", [("k-means++", 1), ("random", "auto"), ("k-means++", 3)])
@pytest.mark.parametrize("weighted", [False, True])
def test_kmeans_gives_scikit_learns_result_for_the_same_random_state(
    blobs, dtype, init, n_init, weighted
):
    X = blobs[0].astype(dtype)
    w = np.random.default_rng(3).uniform(0.2, 2, len(X)).astype(dtype) if weighted else None
    kw = dict(n_clusters=4, init=init, n_init=n_init, random_state=11)
    ours = KMeans(**kw).fit(X, sample_weight=w)
    ref = SKKMeans(**kw).fit(X, sample_weight=w)
    rtol = 1e-4 if dtype == np.float32 else 1e-9
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=rtol, atol=rtol)
    assert ours.cluster_centers_.dtype == ref.cluster_centers_.dtype == dtype
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=rtol)
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_array_equal(ours.predict(X[:500]), ref.predict(X[:500]))
    np.testing.assert_allclose(ours.transform(X[:50]), ref.transform(X[:50]), rtol=rtol)
    assert ours.score(X, sample_weight=w) == pytest.approx(ref.score(X, sample_weight=w), rel=rtol)


def test_float32_kmeans_plus_plus_at_d64_k256_picks_scikit_learns_seeds():
    X, _ = make_blobs(n_samples=20_000, n_features=64, centers=256, random_state=0)
    X = X.astype(np.float32)
    ours = KMeans(256, max_iter=1, random_state=0).fit(X)
    ref = SKKMeans(256, max_iter=1, random_state=0).fit(X)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-4, atol=1e-4)


def test_streaming_kmeans_learns_batches_as_well_as_minibatch_kmeans(blobs):
    X, y = blobs
    ours, ref = StreamingKMeans(4, random_state=0), MiniBatchKMeans(4, random_state=0, n_init=1)
    for part in np.array_split(np.random.default_rng(0).permutation(len(X)), 12):
        ours.partial_fit(X[part])
        ref.partial_fit(X[part])
    assert ours.n_steps_ == 12
    assert adjusted_rand_score(y, ours.predict(X)) >= adjusted_rand_score(y, ref.predict(X)) - 0.01
    assert -ours.score(X) <= -ref.score(X) * 1.01


def test_partial_fit_with_weights_follows_the_weighted_rows(blobs):
    X, _ = blobs
    init = X[:4]
    heavy = np.where(X[:, 0] > np.median(X[:, 0]), 5.0, 1.0)
    weighted = StreamingKMeans(4, init=init).partial_fit(X, sample_weight=heavy)
    plain = StreamingKMeans(4, init=init).partial_fit(X)
    repeated = StreamingKMeans(4, init=init).partial_fit(np.repeat(X, heavy.astype(int), axis=0))
    np.testing.assert_allclose(weighted.cluster_centers_, repeated.cluster_centers_, rtol=1e-9)
    assert not np.allclose(weighted.cluster_centers_, plain.cluster_centers_)
    assert weighted.weights_.sum() == pytest.approx(heavy.sum())


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_fit_predict_and_fit_transform_agree_with_fit_then_predict(blobs, Estimator):
    X, _ = blobs
    a = Estimator(4, random_state=5)
    labels = a.fit_predict(X)
    np.testing.assert_array_equal(labels, a.labels_)
    np.testing.assert_array_equal(labels, a.predict(X))
    b = Estimator(4, random_state=5)
    np.testing.assert_allclose(b.fit_transform(X), a.transform(X))
    assert a.transform(X).shape == (len(X), 4)
    assert a.transform(X.astype(np.float32)).dtype == np.float32


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_clone_and_pickle_keep_parameters_and_answers(blobs, Estimator):
    X, _ = blobs
    fitted = Estimator(4, random_state=2).fit(X)
    copy = clone(fitted)
    assert copy.get_params() == fitted.get_params()
    assert not hasattr(copy, "cluster_centers_")
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.predict(X), fitted.predict(X))
    if Estimator is StreamingKMeans:  # a restored model goes on learning where it stood
        restored.partial_fit(X[:500])
        fitted.partial_fit(X[:500])
        np.testing.assert_array_equal(restored.cluster_centers_, fitted.cluster_centers_)


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_dataframes_give_feature_names_and_pandas_output(blobs, Estimator):
    X, _ = blobs
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    est = Estimator(4, random_state=0).set_output(transform="pandas").fit(df)
    assert list(est.feature_names_in_) == list(df.columns)
    assert est.n_features_in_ == 5
    out = est.transform(df)
    assert isinstance(out, pd.DataFrame)
    name = type(est).__name__.lower()
    assert list(out.columns) == [f"{name}{i}" for i in range(4)]
    with pytest.raises(ValueError, match="feature names"):
        est.predict(df.rename(columns={"f0": "other"}))


@pytest.mark.parametrize("Estimator", ESTIMATORS)
def test_in_a_pipeline_and_a_grid_search(blobs, Estimator):
    X, y = blobs
    pipe = make_pipeline(StandardScaler(), Estimator(random_state=0))
    search = GridSearchCV(pipe, {Estimator.__name__.lower() + "__n_clusters": [2, 4]}, cv=3)
    search.fit(X)
    # -inertia always grows with k, so the search picks the larger k; labels are right.
    assert search.best_params_[Estimator.__name__.lower() + "__n_clusters"] == 4
    assert adjusted_rand_score(y, search.best_estimator_.predict(X)) > 0.95


@pytest.mark.parametrize("Estimator", ESTIMATORS)
@pytest.mark.parametrize(
    "params, message",
    [
        (dict(n_clusters=0), "n_clusters must be >= 1"),
        (dict(n_clusters=9000), "n_samples=6000 should be >= n_clusters=9000"),
        (dict(init="bogus"), "init must be"),
        (dict(init=np.zeros((3, 5))), "init has shape"),
        (dict(max_iter=0), "max_iter"),
    ],
)
def test_bad_parameters_are_refused_at_fit_with_what_to_fix(blobs, Estimator, params, message):
    est = Estimator(**params)  # scikit-learn's rule: nothing is checked before fit
    with pytest.raises(ValueError, match=message):
        est.fit(blobs[0])


def test_explicit_centres_run_once_whatever_n_init(blobs):
    X, _ = blobs
    with pytest.warns(RuntimeWarning, match="one run instead of n_init=5"):
        km = KMeans(4, init=X[:4], n_init=5).fit(X)
    ref = SKKMeans(4, init=X[:4], n_init=1).fit(X)
    np.testing.assert_array_equal(km.labels_, ref.labels_)


POINTS = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0], [9.0, 0.0]]), 4, axis=0)


@pytest.mark.parametrize(
    "k, weights, warns",
    [
        (4, None, True),  # three distinct points for four clusters
        (3, None, False),
        (3, np.where(np.arange(12) >= 8, 0.0, 1.0), True),  # a point weighing nothing
        (3, np.where(np.arange(12) == 11, 0.0, 1.0), False),  # one of its rows weighing nothing
    ],
)
def test_fewer_distinct_clusters_than_asked_warns_as_scikit_learn_does(k, weights, warns):
    init = POINTS[[0, 4, 8, 9][:k]]
    for Estimator in (KMeans, SKKMeans):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            Estimator(n_clusters=k, init=init, n_init=1).fit(POINTS, sample_weight=weights)
        assert any(issubclass(c.category, ConvergenceWarning) for c in caught) == warns
