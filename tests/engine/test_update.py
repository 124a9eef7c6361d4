"""The update rule of DESIGN.md §2: exact formula, forgetting, re-seeding, bit-identical replay."""

import numpy as np
import pytest

from engine import BatchStats, ModelState, StateFormatError, apply_update, batch_stats, decay_factor


def stats(counts, sums, sq=None, far=None):
    counts = np.asarray(counts, np.int64)
    sums = np.asarray(sums, np.float64)
    far_points = np.zeros((0, sums.shape[1])) if far is None else np.asarray(far, np.float64)
    far_sq = np.arange(len(far_points), 0, -1, dtype=np.float64)
    sq = np.zeros(len(counts)) if sq is None else np.asarray(sq, np.float64)
    return BatchStats(counts, sums, sq, far_points, far_sq)


def test_update_without_half_life_is_the_running_weighted_mean():
    state = ModelState.initial([[0.0, 0.0], [10.0, 10.0]], weights=[3.0, 1.0])
    s = stats([1, 3], [[4.0, 4.0], [33.0, 33.0]], sq=[2.0, 6.0])
    new = apply_update(state, s).state
    np.testing.assert_allclose(new.centers, [[1.0, 1.0], [(10 + 33) / 4, (10 + 33) / 4]])
    np.testing.assert_array_equal(new.weights, [4.0, 4.0])
    np.testing.assert_array_equal(new.sq_sums, [2.0, 6.0])
    assert new.version == state.version + 1


def test_half_life_decays_old_weight_by_half_per_half_life_of_records():
    state = ModelState.initial([[0.0], [100.0]], weights=[8.0, 8.0])
    s = stats([4, 0], [[40.0], [0.0]])
    new = apply_update(state, s, half_life=4.0).state
    assert decay_factor(4, 4.0) == 0.5
    np.testing.assert_array_equal(new.weights, [4.0 + 4.0, 4.0])
    np.testing.assert_allclose(new.centers[0], [(4.0 * 0 + 40.0) / 8.0])
    np.testing.assert_array_equal(new.centers[1], [100.0])


def test_shift_is_the_total_centre_movement():
    state = ModelState.initial([[0.0, 0.0], [10.0, 0.0]], weights=[1.0, 1.0])
    result = apply_update(state, stats([1, 0], [[6.0, 8.0], [0.0, 0.0]]))
    assert result.shift == pytest.approx(5.0)


def test_dead_cluster_is_reseeded_at_the_farthest_row_with_the_lightest_live_weight():
    state = ModelState.initial([[0.0], [1.0], [50.0]], weights=[1000.0, 500.0, 0.0001])
    s = stats([10, 10, 0], [[0.0], [10.0], [0.0]], far=[[77.0], [66.0]])
    result = apply_update(state, s)
    assert result.reseeded == (2,)
    assert result.state.centers[2, 0] == 77.0
    assert result.state.weights[2] == result.state.weights[1]


def test_no_reseed_without_candidates_or_dead_clusters():
    state = ModelState.initial([[0.0], [1.0]], weights=[10.0, 10.0])
    assert apply_update(state, stats([1, 1], [[0.0], [1.0]], far=[[5.0]])).reseeded == ()
    dead = ModelState.initial([[0.0], [1.0]], weights=[10.0, 0.0])
    assert apply_update(dead, stats([1, 0], [[0.0], [0.0]])).reseeded == ()


def replay(seed, half_life):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(6, 4)) * 5
    state = ModelState.initial(centers)
    messages = []
    for _ in range(40):
        X = rng.normal(size=(256, 4)) * 5 + rng.integers(-10, 10, size=4)
        messages.append(batch_stats(X, state.centers)[2].to_bytes())
        state = apply_update(state, BatchStats.from_bytes(messages[-1]), half_life).state
    return centers, messages, state


@pytest.mark.parametrize("half_life", [None, 300.0])
def test_replaying_the_same_messages_gives_bit_identical_centres(half_life):
    centers, messages, original = replay(7, half_life)
    state = ModelState.initial(centers)
    for msg in messages:
        state = apply_update(state, BatchStats.from_bytes(msg), half_life).state
    assert state.equals(original)
    assert state.version == 41


def test_state_round_trips_through_bytes_bit_exactly():
    _, _, state = replay(3, 100.0)
    back = ModelState.from_bytes(state.to_bytes())
    assert back.equals(state)


@pytest.mark.parametrize("cut", [0, 5, 20, -1])
def test_malformed_state_bytes_raise_a_format_error(cut):
    data = ModelState.initial([[1.0, 2.0]]).to_bytes()
    with pytest.raises(StateFormatError):
        ModelState.from_bytes(data[:cut] if cut else b"junk" + data[4:])


def test_statistics_of_another_shape_are_refused():
    state = ModelState.initial(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="do not fit"):
        apply_update(state, BatchStats.empty(3, 4))


@pytest.mark.parametrize(
    "centers, weights",
    [(np.zeros((0, 2)), None), (np.zeros(3), None), ([[np.nan, 1.0]], None), ([[1.0]], [-1.0])],
)
def test_invalid_initial_states_are_refused(centers, weights):
    with pytest.raises(ValueError):
        ModelState.initial(centers, weights)
