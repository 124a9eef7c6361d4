"""`streamkm demo` end to end, and the pure measures its summary rests on (ARI, histogram quantile)."""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import adjusted_rand_score

from metrics import histogram_quantile
from stream.quality import adjusted_rand_index

DEMO_TIMEOUT_S = 240


def clean_env() -> dict[str, str]:
    """The environment without STREAMKM_* variables, so only the flags given count."""
    return {k: v for k, v in os.environ.items() if not k.startswith("STREAMKM_")}


def listening_socket() -> socket.socket:
    """A TCP listener on a free local port, to make that port busy."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def streamkm(*args: str, timeout: float = DEMO_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
    )


# --- adjusted Rand index -------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n, classes, clusters", [(10, 2, 3), (500, 8, 8), (3000, 4, 12)])
def test_ari_matches_scikit_learn_on_random_labelings(seed, n, classes, clusters):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, n)
    pred = rng.integers(0, clusters, n)
    assert adjusted_rand_index(truth, pred) == pytest.approx(adjusted_rand_score(truth, pred))


@pytest.mark.parametrize("noise", [0.0, 0.05, 0.3])
def test_ari_matches_scikit_learn_on_mostly_agreeing_labelings(noise):
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 6, 200_000)
    pred = (truth * 7 + 3) % 11  # same partition, other label names
    flip = rng.random(truth.size) < noise
    pred[flip] = rng.integers(0, 11, int(flip.sum()))
    assert adjusted_rand_index(truth, pred) == pytest.approx(adjusted_rand_score(truth, pred))


@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(-3, 3)), min_size=1, max_size=60),
)
def test_ari_matches_scikit_learn_on_any_small_labeling(pairs):
    truth = [a for a, _ in pairs]
    pred = [b for _, b in pairs]
    assert adjusted_rand_index(truth, pred) == pytest.approx(adjusted_rand_score(truth, pred))


def test_ari_is_one_for_the_same_partition_under_other_names():
    truth = np.array([0, 0, 1, 1, 2, 2])
    assert adjusted_rand_index(truth, np.array([5, 5, 9, 9, 1, 1])) == 1.0


def test_ari_rejects_labelings_of_different_lengths():
    with pytest.raises(ValueError, match="differ in length"):
        adjusted_rand_index([0, 1, 2], [0, 1])


# --- histogram quantile --------------------------------------------------------------------

BOUNDS = (0.1, 0.2, 0.5, math.inf)


@pytest.mark.parametrize(
    "q, counts, expected",
    [
        (0.5, (10, 0, 0, 0), 0.05),  # the first bucket starts at 0
        (0.5, (0, 10, 0, 0), 0.15),  # halfway through the 0.1..0.2 bucket
        (0.75, (5, 5, 0, 0), 0.15),
        (0.99, (50, 40, 10, 0), 0.5 - 0.3 * 0.1),  # 9 of the 10 in 0.2..0.5
        (0.99, (0, 0, 0, 5), 0.5),  # in +Inf: the largest finite bound, as PromQL
        (0.0, (0, 4, 4, 0), 0.1),
    ],
)
def test_histogram_quantile_interpolates_within_the_bucket_like_promql(q, counts, expected):
    assert histogram_quantile(q, BOUNDS, counts) == pytest.approx(expected)


def test_histogram_quantile_of_no_observations_is_nan():
    assert math.isnan(histogram_quantile(0.5, BOUNDS, (0, 0, 0, 0)))


# --- the demo itself -----------------------------------------------------------------------


@dataclass(frozen=True)
class DemoRun:
    busy_metrics_port: int
    result: subprocess.CompletedProcess[str]

    def field(self, pattern: str) -> str:
        match = re.search(pattern, self.result.stdout, re.M)
        assert match, f"no {pattern!r} in the summary:\n{self.result.stdout}\n{self.result.stderr}"
        return match.group(1)

    def count(self, label: str) -> int:
        return int(self.field(rf"^\s+{label}\s+([\d,]+)").replace(",", ""))


@pytest.fixture(scope="module")
def demo_run() -> Iterator[DemoRun]:
    """One small demo, run with its metrics port taken by another listener."""
    with listening_socket() as busy:
        port = busy.getsockname()[1]
        result = streamkm(
            "demo", "--count", "5000", "--rate", "0", "--k", "4", "--metrics-port", str(port)
        )
    yield DemoRun(port, result)


@pytest.mark.integration
def test_demo_labels_or_dead_letters_every_record_and_exits_0(demo_run):
    assert demo_run.result.returncode == 0, demo_run.result.stderr
    produced = demo_run.count("produced")
    assert produced == 5000
    assert demo_run.count("labeled") == produced - demo_run.count("invalid")
    assert "duplicates: 0" in demo_run.result.stdout


@pytest.mark.integration
def test_demo_clusters_well_separated_blobs_with_ari_above_0_9(demo_run):
    assert float(demo_run.field(r"adjusted Rand index ([\d.]+)")) > 0.9


@pytest.mark.integration
def test_demo_reports_latency_percentiles_and_throughput(demo_run):
    p50 = float(demo_run.field(r"latency\s+p50 ([\d.]+) ms"))
    p99 = float(demo_run.field(r"latency\s+p50 [\d.]+ ms, p99 ([\d.]+) ms"))
    assert 0 < p50 <= p99
    assert float(demo_run.field(r"throughput\s+([\d,]+) records/s").replace(",", "")) > 0


@pytest.mark.integration
def test_demo_falls_back_to_a_free_metrics_port_when_the_asked_one_is_busy(demo_run):
    note = re.search(
        rf"metrics port {demo_run.busy_metrics_port} is in use; serving metrics on port (\d+)",
        demo_run.result.stderr,
    )
    assert note, demo_run.result.stderr
    assert f"127.0.0.1:{note.group(1)}/metrics" in demo_run.field(r"metrics\s+(\S+)")


@pytest.mark.integration
def test_demo_shows_progress_lines_on_stderr(demo_run):
    assert re.search(r"produced\s+[\d,]+\s+labeled\s+[\d,]+.*model v\d+", demo_run.result.stderr)


@pytest.mark.integration
def test_demo_exits_2_naming_the_port_when_the_broker_cannot_start():
    with listening_socket() as busy:
        port = busy.getsockname()[1]
        result = streamkm("demo", "--broker-port", str(port), "--metrics-port", "0", timeout=60)
    assert result.returncode == 2
    assert f"port {port}" in result.stderr
    assert result.stdout == ""
