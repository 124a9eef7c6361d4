"""StreamingKMeans: mini-batch updates converge, forget with a half-life, snapshot exactly."""

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from engine import KMeans, StreamingKMeans


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=40_000, n_features=6, centers=6, random_state=5)
    return X, y


def stream(model, X, batch=512):
    for start in range(0, len(X), batch):
        model.partial_fit(X[start : start + batch])
    return model


def test_first_batch_seeds_with_kmeans_plus_plus_and_versions_count_messages(blobs):
    X, _ = blobs
    skm = StreamingKMeans(n_clusters=6, seed=0)
    assert skm.version == 0
    skm.partial_fit(X[:512])
    assert skm.version == 2  # the init, then the first batch's statistics
    skm.partial_fit(X[512:1024])
    assert skm.version == 3
    assert skm.cluster_centers_.shape == (6, 6)
    assert skm.weights_.sum() == 1024


def test_streaming_inertia_is_within_three_percent_of_batch_kmeans(blobs):
    X, _ = blobs
    skm = stream(StreamingKMeans(n_clusters=6, seed=0), X)
    batch = KMeans(6, seed=0).fit(X)
    inertia = ((X - skm.cluster_centers_[skm.predict(X)]) ** 2).sum()
    assert inertia <= batch.inertia_ * 1.03


def test_half_life_tracks_drifting_centres_better_than_infinite_memory():
    rng = np.random.default_rng(0)
    truth = rng.uniform(-20, 20, size=(3, 2))
    velocity = rng.normal(size=(3, 2))
    models = {hl: StreamingKMeans(3, half_life=hl, seed=0) for hl in (None, 500.0)}
    for step in range(60):
        centres = truth + velocity * step * 0.5
        X = centres[rng.integers(0, 3, 1000)] + rng.normal(scale=0.5, size=(1000, 2))
        for m in models.values():
            m.partial_fit(X)

    def error(m):
        d = np.linalg.norm(m.cluster_centers_[:, None] - centres[None], axis=2)
        return d.min(axis=0).mean()

    assert error(models[500.0]) < 1.0
    assert error(models[500.0]) < error(models[None]) / 3


def test_snapshot_restores_the_model_exactly_and_continues_identically(blobs):
    X, _ = blobs
    skm = stream(StreamingKMeans(n_clusters=6, half_life=5000.0, seed=2), X[:10_000])
    restored = StreamingKMeans.from_bytes(skm.to_bytes())
    assert restored.state.equals(skm.state)
    assert restored.half_life == 5000.0
    stream(skm, X[10_000:12_000])
    stream(restored, X[10_000:12_000])
    assert restored.state.equals(skm.state)
    empty = StreamingKMeans.from_bytes(StreamingKMeans(3).to_bytes())
    assert empty.version == 0


def test_scores_are_near_one_for_members_and_large_for_outliers(blobs):
    X, _ = blobs
    skm = stream(StreamingKMeans(n_clusters=6, seed=0), X)
    _, distance, score = skm.score_samples(X)
    assert 0.7 < np.median(score) < 1.3
    _, _, outlier = skm.score_samples(np.full((1, 6), 1e3))
    assert outlier[0] > 50
    np.testing.assert_allclose(
        distance**2, ((X - skm.cluster_centers_[skm.predict(X)]) ** 2).sum(1)
    )


@pytest.mark.parametrize(
    "model, batches, message",
    [
        (StreamingKMeans(8), [np.zeros((4, 2))], "should be >= n_clusters"),
        (StreamingKMeans(2), [np.ones((4, 2)), np.ones((4, 3))], "has 3 features"),
        (StreamingKMeans(2), [np.array([[1.0, np.nan], [0.0, 0.0]])], "NaN or infinity"),
        (StreamingKMeans(2, half_life=0), [np.ones((4, 2))], "half_life"),
        (StreamingKMeans(0), [np.ones((4, 2))], "n_clusters"),
    ],
)
def test_bad_arguments_raise_value_errors(model, batches, message):
    with pytest.raises(ValueError, match=message):
        for b in batches:
            model.partial_fit(b)


def test_predict_before_any_data_says_what_to_do():
    with pytest.raises(ValueError, match="partial_fit"):
        StreamingKMeans(2).predict(np.zeros((1, 2)))


@pytest.mark.parametrize("data", [b"", b"SKMK\xff\xff\xff\xff", b"nope" * 4])
def test_corrupt_snapshots_are_refused(data):
    with pytest.raises(ValueError):
        StreamingKMeans.from_bytes(data)


@pytest.mark.parametrize("half_life", [None, 3000.0])
def test_whole_number_weights_update_as_repeated_rows(blobs, half_life):
    X, _ = blobs
    reps = np.random.default_rng(2).integers(0, 4, len(X))
    init = X[:6]
    weighted = StreamingKMeans(6, half_life=half_life, init=init)
    repeated = StreamingKMeans(6, half_life=half_life, init=init)
    for start in range(0, 8192, 1024):
        part, r = X[start : start + 1024], reps[start : start + 1024]
        weighted.partial_fit(part, sample_weight=r.astype(float))
        repeated.partial_fit(np.repeat(part, r, axis=0))
    np.testing.assert_allclose(weighted.cluster_centers_, repeated.cluster_centers_, rtol=1e-9)
    np.testing.assert_allclose(weighted.weights_, repeated.weights_, rtol=1e-9)


def test_a_row_of_weight_zero_neither_moves_a_centre_nor_reseeds_one(blobs):
    X, _ = blobs
    skm = StreamingKMeans(2, init=np.array([[0.0] * 6, [1.0] * 6]))
    far = np.full((1, 6), 1e6)
    batch = np.concatenate([X[:500], far])
    w = np.r_[np.ones(500), 0.0]
    skm.partial_fit(batch, sample_weight=w)
    reference = StreamingKMeans(2, init=np.array([[0.0] * 6, [1.0] * 6])).partial_fit(X[:500])
    np.testing.assert_array_equal(skm.cluster_centers_, reference.cluster_centers_)
    assert np.abs(skm.cluster_centers_).max() < 1e5
