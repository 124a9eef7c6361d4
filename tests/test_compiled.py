"""Compiled kernels: the CPU baseline check, and `serve` compiling only what its model needs."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from serve_process import streamkm_env

from stream.compiled import BASELINES, check_cpu_target, cpu_flags, quiet_worker_threads
from stream.config import Settings
from stream.service import warm_kernels


def test_a_baseline_this_cpu_has_is_kept():
    env = {"NUMBA_CPU_NAME": "x86-64-v3", "NUMBA_CPU_FEATURES": "+avx2"}
    assert check_cpu_target(env, flags=BASELINES["x86-64-v3"] | {"sse2"}) is None
    assert env == {"NUMBA_CPU_NAME": "x86-64-v3", "NUMBA_CPU_FEATURES": "+avx2"}


def test_a_baseline_this_cpu_lacks_is_dropped_with_a_warning_naming_what_is_missing():
    env = {"NUMBA_CPU_NAME": "x86-64-v4", "NUMBA_CPU_FEATURES": "+avx512f", "PATH": "/bin"}
    warning = check_cpu_target(env, flags=BASELINES["x86-64-v3"])
    assert env == {"PATH": "/bin"}
    assert warning is not None
    assert "x86-64-v4" in warning and "avx512f" in warning and "avx2" not in warning


@pytest.mark.parametrize("name", [None, "host", "skylake", "generic"])
def test_no_setting_or_a_name_that_is_not_a_baseline_is_left_to_numba(name):
    env = {} if name is None else {"NUMBA_CPU_NAME": name}
    before = dict(env)
    assert check_cpu_target(env, flags=frozenset()) is None
    assert env == before


def test_cpu_flags_come_from_the_first_flags_line_of_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\nflags : x\n")
    assert cpu_flags(info) == {"fpu", "sse2", "avx2", "fma"}
    assert cpu_flags(tmp_path / "absent") == frozenset()


def test_a_cpu_without_the_shipped_baseline_warns_and_still_runs_the_command():
    # No x86 CPU has every flag of a made-up level; stand in for one with a level this CPU lacks.
    missing = [name for name, need in BASELINES.items() if not need <= cpu_flags()]
    if not missing:
        missing = ["x86-64-v4"]  # with every level present, the warning cannot show; the
        # command must then run without one
    env = streamkm_env({"NUMBA_CPU_NAME": missing[-1]})
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "warmup", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert "compile every kernel" in done.stdout
    lacks = not BASELINES[missing[-1]] <= cpu_flags()
    assert ("lacks " + missing[-1] in done.stderr) == lacks


def _compiled_after(dim: int, k: int) -> list[str]:
    """Signatures of the assignment kernels after `warmup_model(dim, k)` in a fresh process."""
    code = (
        "import engine.kernels as K\n"
        "from engine import warmup_model\n"
        f"warmup_model({dim}, {k}, False)\n"
        "for f in (K._assign_serial, K._assign_parallel, K._stats_serial, K._stats_parallel):\n"
        "    for s in f.signatures:\n"
        "        print(f.__name__, s)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True
    )
    return done.stdout.splitlines()


def test_serve_compiles_the_float32_kernels_of_its_own_shape_class_only():
    narrow = _compiled_after(8, 8)
    wide = _compiled_after(384, 64)
    # Batches are float32 and C-ordered; the warm-up fit runs in float64. Nothing in F order.
    for lines in (narrow, wide):
        assert any(s.startswith("_stats_parallel (Array(float32, 2, 'C'") for s in lines)
        assert not any("2, 'F'" in s for s in lines)
        assert not any(s.startswith("_stats_parallel (Array(float64") for s in lines)
    # The dot-product form's centres (a tuple) only where the model's shape takes it.
    assert not any("Tuple" in s or "UniTuple" in s for s in narrow)
    assert any(s.startswith("_stats_parallel (Array(float32") and "Tuple" in s for s in wide)


@pytest.mark.parametrize(
    ("changes", "scanner"),
    [
        ({}, "kernels: JSON scanner"),
        ({"fields": "amount:log1p,card.age"}, "kernels: JSON event scanner"),
        ({"input_format": "f32"}, None),
    ],
)
def test_serve_warms_the_json_scanner_its_input_needs(changes, scanner, caplog):
    settings = Settings(**{"dim": 2, "k": 3, **changes})
    with caplog.at_level(logging.INFO, logger="streamkm"):
        warm_kernels(settings)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("kernels: JSON")]
    assert said == ([scanner] if scanner else [])


def test_idle_openmp_workers_sleep_unless_the_user_chose_a_wait_policy():
    env: dict[str, str] = {}
    quiet_worker_threads(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    chosen = {"OMP_WAIT_POLICY": "ACTIVE"}
    quiet_worker_threads(chosen)
    assert chosen == {"OMP_WAIT_POLICY": "ACTIVE"}
