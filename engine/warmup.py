"""Compile, or load from Numba's on-disk cache, the kernels before the first record arrives.

`warmup` compiles every kernel for every input it accepts (float32 and float64, any layout, narrow
and wide rows): what an image or a fresh install runs once, so that its cache holds them all.
`warmup_model` runs only what one model of the service needs (float32 batches, its own shape
class, its scaling): what `serve` runs at start, which with no cache compiles a fraction of the
kernels `warmup` does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .init import kmeans_plusplus, random_init
from .kernels import distances, parallel_rows, warmup_kernels
from .kmeans import KMeans
from .scaling import Scaler
from .state import ModelState
from .stats import BatchStats, batch_stats, model_batch_stats, seeded_state
from .update import anomaly_scores, apply_update
from .validation import check_weights

Progress = Callable[[str, int, int], None]  # (step, its number from 1, steps in all)

# Widths standing for a model whose width is not known yet: one below the dot-product form's
# shapes and one inside them (engine/kernels.py `_wide`).
_NARROW_DIM, _WIDE_DIM = 8, 384


def warmup() -> None:
    """Run each Numba function once, for float32 and float64 input, narrow and wide rows, as
    the library and as a service's model (scaled or not)."""
    warmup_kernels()
    for dtype in (np.float32, np.float64):
        X = np.arange(8, dtype=dtype).reshape(4, 2)
        state = ModelState.initial(random_init(X, 2, 0))
        apply_update(state, batch_stats(X, state.centers)[2])
        kmeans_plusplus(X, 2, 0)
        # Sample weights (the library's, and scikit-learn's estimators over it): float counts.
        w = check_weights(np.ones(4), 4)
        apply_update(state, batch_stats(X, state.centers, sample_weight=w)[2])
        distances(X, state.centers)
    for scaled in (False, True):
        warmup_model(None, 64, scaled)


def warmup_model(dim: int | None, k: int, scaled: bool, progress: Progress | None = None) -> None:
    """Run what a service's model of `dim` features (None: not known yet) and `k` centres
    needs, on float32 batches: the warm-up fit, batches on one thread and on many, updates and
    scores; `progress` hears of each step before it runs."""
    dims = [dim] if dim is not None else [_NARROW_DIM, _WIDE_DIM]
    steps: list[tuple[str, Callable[[], object]]] = []
    for d in dims:
        steps += _model_steps(d, k, scaled)
    for i, (name, step) in enumerate(steps, 1):
        if progress is not None:
            progress(name, i, len(steps))
        step()


def _model_steps(d: int, k: int, scaled: bool) -> list[tuple[str, Callable[[], object]]]:
    rng = np.random.default_rng(0)
    n = max(parallel_rows(k, d), 2 * k)
    X = rng.normal(size=(n, d)).astype(np.float32)
    sample = X[: max(2 * k, 64)]
    scaler = Scaler.fit(sample) if scaled else None
    held: dict[str, ModelState] = {}

    def fit() -> None:
        Z = sample if scaler is None else scaler.standardize(sample)
        centers = KMeans(k, seed=0, max_iter=2).fit(Z.astype(np.float64)).cluster_centers_
        if scaler is not None:
            centers = scaler.to_original(centers)
        # As replicas hold it: read back from the log (Numba compiles read-only arrays apart).
        held["state"] = ModelState.from_bytes(seeded_state(sample, centers, scaler).to_bytes())

    def batch(rows: int) -> None:
        state = held["state"]
        labels, sq, stats = model_batch_stats(X[:rows], state)
        anomaly_scores(state, labels, sq)
        applied = BatchStats.from_bytes(stats.merge(stats).to_bytes())  # as the log delivers it
        held["state"] = apply_update(state, applied, half_life=1000.0).state

    return [
        (f"warm-up fit (d={d}, k={k})", fit),
        (f"batch on one thread (d={d})", lambda: batch(64)),
        (f"batch on all threads (d={d})", lambda: batch(n)),
    ]
