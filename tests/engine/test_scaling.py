"""The per-feature scaler that learns with the model (engine/scaling.py)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from engine import (
    BatchStats,
    ModelState,
    Scaler,
    anomaly_scores,
    apply_update,
    batch_stats,
    model_batch_stats,
    scaled_batch_stats,
    seeded_state,
)
from engine.scaling import feature_m2


def _mixed_scale(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack(
        [
            rng.lognormal(6, 1, n),
            rng.uniform(0, 1, n),
            rng.integers(0, 24, n),
            rng.normal(0, 1e-3, n),
        ]
    ).astype(np.float32)


def test_fit_matches_scikit_learn_standard_scaler():
    X = _mixed_scale(500)
    ours = Scaler.fit(X)
    ref = StandardScaler().fit(X.astype(np.float64))
    np.testing.assert_allclose(ours.mean, ref.mean_, rtol=1e-12)
    np.testing.assert_allclose(ours.scale, ref.scale_, rtol=1e-9)


def test_constant_feature_keeps_scale_one():
    X = np.column_stack([np.full(10, 3.0), np.arange(10.0)])
    assert Scaler.fit(X).scale[0] == 1.0


@pytest.mark.parametrize("chunks", [1, 3, 10])
def test_updates_without_decay_equal_one_fit_of_all_rows(chunks):
    X = _mixed_scale(1000, seed=1)
    first, rest = X[:100], X[100:]
    scaler = Scaler.fit(first)
    for part in np.array_split(rest, chunks):
        # per-cluster sums as a stats message carries them: two clusters here
        sums = np.stack([part[::2].sum(0, dtype=np.float64), part[1::2].sum(0, dtype=np.float64)])
        scaler = scaler.updated(len(part), sums, feature_m2(part.astype(np.float64)), 1.0)
    ref = StandardScaler().fit(X.astype(np.float64))
    np.testing.assert_allclose(scaler.mean, ref.mean_, rtol=1e-9)
    np.testing.assert_allclose(scaler.scale, ref.scale_, rtol=1e-9)
    assert scaler.weight == len(X)


def test_decay_forgets_old_rows():
    old = Scaler.fit(np.full((100, 1), 0.0) + np.arange(100)[:, None] % 2)
    new_rows = np.full((100, 1), 50.0) + np.arange(100)[:, None] % 2
    s = old
    for _ in range(20):
        s = s.updated(100, new_rows.sum(0, keepdims=True), feature_m2(new_rows), 0.5)
    assert s.mean[0] == pytest.approx(50.5, abs=1e-3)


def test_scaled_statistics_are_in_original_units_and_label_like_a_pipeline():
    X = _mixed_scale(2000, seed=2)
    scaler = Scaler.fit(X)
    centers = X[[0, 10, 20, 30]].astype(np.float64)
    labels, sq, stats = scaled_batch_stats(X, centers, scaler)
    Z = (X.astype(np.float64) - scaler.mean) / scaler.scale
    Cz = (centers - scaler.mean) / scaler.scale
    ref = ((Z[:, None, :] - Cz[None]) ** 2).sum(-1)
    assert (labels == ref.argmin(1)).mean() > 0.999
    np.testing.assert_allclose(sq, ref.min(1), rtol=1e-4, atol=1e-4)
    for j in range(4):
        np.testing.assert_allclose(
            stats.sums[j], X[labels == j].astype(np.float64).sum(0), rtol=1e-5
        )
    np.testing.assert_allclose(stats.feature_m2, feature_m2(X.astype(np.float64)), rtol=1e-6)
    # far points are original rows
    assert any(np.array_equal(stats.far_points[0], row) for row in X.astype(np.float64))


def test_scaler_update_does_not_move_centres():
    X = _mixed_scale(1000, seed=3)
    state = ModelState.initial(
        X[:3].astype(np.float64), np.full(3, 100.0), scaler=Scaler.fit(X[:50])
    )
    _, _, stats = scaled_batch_stats(X[500:501], state.centers, state.scaler)
    after = apply_update(state, stats).state
    untouched = np.flatnonzero(stats.counts == 0)
    np.testing.assert_array_equal(after.centers[untouched], state.centers[untouched])
    assert not after.scaler.equals(state.scaler)


def test_state_with_scaler_round_trips_bit_for_bit():
    X = _mixed_scale(300, seed=4)
    state = ModelState.initial(X[:5].astype(np.float64), scaler=Scaler.fit(X))
    _, _, stats = scaled_batch_stats(X, state.centers, state.scaler)
    state = apply_update(state, stats, half_life=100.0).state
    back = ModelState.from_bytes(state.to_bytes())
    assert back.equals(state) and back.scaler is not None
    plain = ModelState.initial(X[:5].astype(np.float64))
    assert ModelState.from_bytes(plain.to_bytes()).scaler is None


def test_stats_with_moments_round_trip_and_merge_like_one_batch():
    X = _mixed_scale(600, seed=5)
    scaler = Scaler.fit(X)
    c = X[:3].astype(np.float64)
    whole = scaled_batch_stats(X, c, scaler)[2]
    merged = scaled_batch_stats(X[:250], c, scaler)[2].merge(
        scaled_batch_stats(X[250:], c, scaler)[2]
    )
    np.testing.assert_allclose(merged.feature_m2, whole.feature_m2, rtol=1e-9)
    back = BatchStats.from_bytes(merged.to_bytes())
    assert back.equals(merged)


def test_statistics_without_moments_are_refused_by_a_scaled_model():
    X = _mixed_scale(100, seed=6)
    state = ModelState.initial(X[:2].astype(np.float64), scaler=Scaler.fit(X))
    _, _, plain = batch_stats(X, state.centers)
    with pytest.raises(ValueError, match="feature moments"):
        apply_update(state, plain)


@pytest.mark.parametrize("scaled", [False, True])
def test_a_seeded_state_weighs_the_sample_so_first_scores_are_finite(scaled):
    X = _mixed_scale(400, seed=7)
    scaler = Scaler.fit(X) if scaled else None
    state = seeded_state(X, X[:3].astype(np.float64), scaler)
    assert state.weights.sum() == len(X) and state.version == 1
    assert (state.scaler is None) == (not scaled)
    labels, sq, _ = model_batch_stats(X, state)
    _, score = anomaly_scores(state, labels, sq)
    assert np.isfinite(score).all() and np.median(score) < 10
