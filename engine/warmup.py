"""Compile, or load from Numba's on-disk cache, every kernel before the first record arrives."""

from __future__ import annotations

import numpy as np

from .init import random_init
from .kernels import warmup_kernels
from .state import ModelState
from .stats import batch_stats
from .update import apply_update


def warmup() -> None:
    """Run each Numba function once, for float32 and float64 input: the service calls this at
    start so that no batch pays for a compilation."""
    warmup_kernels()
    for dtype in (np.float32, np.float64):
        X = np.arange(8, dtype=dtype).reshape(4, 2)
        state = ModelState.initial(random_init(X, 2, 0))
        apply_update(state, batch_stats(X, state.centers)[2])
