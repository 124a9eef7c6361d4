"""The request path: the live model answered on request (DESIGN.md §8).

`scoring` holds the replica and the dynamic batcher every protocol shares; `http` the REST
endpoint (Open Inference Protocol v2 and named events); `grpc` the gRPC endpoint; `app` runs them.
Uses `model`, `engine` and `metrics`, never `stream`.

Names are loaded on first use, so that `streamkm --help` (which reads `api.config`) never pays
for Numba.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ApiOptions", "InvalidInput", "NotReady", "Overloaded", "Scorer", "Scores"]

_HOME = {"ApiOptions": "api.config"} | {
    name: "api.scoring" for name in ("InvalidInput", "NotReady", "Overloaded", "Scorer", "Scores")
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'api' has no attribute {name!r}")
