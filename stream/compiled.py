"""Numba's compiled kernels: building them ahead of time, and the CPU they are built for.

`streamkm warmup` compiles every kernel into Numba's on-disk cache (`NUMBA_CACHE_DIR`, or
`__pycache__` beside the sources): the Docker image runs it at build time and `make` after
installing, so that `serve` and `api` load kernels instead of compiling them.

Numba keys its cache to the CPU the code is compiled for. By default that is the CPU at hand, so a
cache built on one machine is ignored (and rebuilt) on another. An image therefore builds for a
stated baseline, `NUMBA_CPU_NAME` (x86-64-v3 in the Dockerfile: AVX2 and FMA, every x86 server
since 2015); such kernels run on any CPU with that baseline's features. On a CPU without them
they would stop the process with an illegal instruction, so `check_cpu_target` drops the setting
there before Numba starts, and the kernels are compiled for that CPU at start instead (slower,
never wrong).

Numba's parallel kernels run on OpenMP's thread pool, whose idle workers by default spin for a
while after each parallel region before they sleep. A service runs one short region per batch
(the JSON scanner, the assignment pass), so on a small machine the spinning worker holds the
core the broker, or the service's own network I/O, needs next: with the staleness bound, the
drain on two cores went from 102,000 to 128,000 records/s when the workers slept at once.
`quiet_worker_threads` makes that the default (`OMP_WAIT_POLICY=PASSIVE`); a user's own setting
wins.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path

__all__ = ["BASELINES", "check_cpu_target", "cpu_flags", "quiet_worker_threads", "run_warmup"]

_V2 = frozenset({"cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3"})
_V3 = _V2 | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
_V4 = _V3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
# LLVM's names of the x86-64 microarchitecture levels and the /proc/cpuinfo flags each needs.
BASELINES: Mapping[str, frozenset[str]] = {"x86-64-v2": _V2, "x86-64-v3": _V3, "x86-64-v4": _V4}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The feature flags of this machine's first CPU (empty where /proc/cpuinfo has none)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def quiet_worker_threads(environ: MutableMapping[str, str] | None = None) -> None:
    """Let idle OpenMP workers sleep at once (see the module) unless `OMP_WAIT_POLICY` is set.
    Call before the first parallel kernel runs: OpenMP reads it when Numba loads it."""
    env = os.environ if environ is None else environ
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def check_cpu_target(
    environ: MutableMapping[str, str] | None = None, flags: frozenset[str] | None = None
) -> str | None:
    """Drop `NUMBA_CPU_NAME` (and `NUMBA_CPU_FEATURES`) from `environ` when it names a baseline
    this CPU lacks; returns the warning to print then, None when nothing changed. Call before
    Numba is imported: it reads the setting once."""
    env = os.environ if environ is None else environ
    name = env.get("NUMBA_CPU_NAME")
    need = BASELINES.get(name or "")
    if need is None:
        return None
    missing = need - (cpu_flags() if flags is None else flags)
    if not missing:
        return None
    env.pop("NUMBA_CPU_NAME", None)
    env.pop("NUMBA_CPU_FEATURES", None)
    return (
        f"this CPU lacks {name} ({', '.join(sorted(missing))}), the baseline the shipped "
        "kernels were compiled for: compiling them for this CPU instead, which takes longer"
    )


def run_warmup() -> int:
    """Entry point of `streamkm warmup`: compile every kernel into the cache, with progress."""
    t0 = time.perf_counter()
    import numba

    from engine import warmup
    from stream.eventscan import warm_event_scanner
    from stream.jsonscan import warm_scanner

    target = getattr(numba.config, "CPU_NAME", None) or "this machine's CPU"
    cache = getattr(numba.config, "CACHE_DIR", None) or "__pycache__ beside the sources"
    print(f"streamkm warmup: compiling every kernel for {target} into {cache}", file=sys.stderr)
    warmup()
    warm_scanner()
    warm_event_scanner()
    print(f"streamkm warmup: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0
