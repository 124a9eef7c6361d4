"""`streamkm demo` end to end, and the pure measures its summary rests on (ARI, ROC AUC, precision
at the top, histogram quantile)."""

from __future__ import annotations

import itertools
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
from hypothesis import assume, given
from hypothesis import strategies as st
from sklearn.metrics import adjusted_rand_score, precision_score, roc_auc_score

from metrics import histogram_quantile
from stream.quality import adjusted_rand_index, precision_at_top, roc_auc

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


# --- ranking: ROC AUC and precision at the top ---------------------------------------------


def _ranking(seed: int, n: int, share: float, levels: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Labels with about ``share`` positives and scores that favour them; ``levels`` distinct
    score values when given (many ties), all distinct otherwise."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < share
    y[:2] = [True, False]  # both classes, always
    scores = rng.normal(size=n) + 1.5 * y
    if levels is not None:
        scores = np.round((scores - scores.min()) / np.ptp(scores) * (levels - 1))
    return y, scores


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(
    "n, share, levels", [(10, 0.3, None), (2000, 0.01, None), (5000, 0.1, 7), (300, 0.5, 2)]
)
def test_roc_auc_matches_scikit_learn(seed, n, share, levels):
    y, scores = _ranking(seed, n, share, levels)
    assert roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)


@given(st.lists(st.tuples(st.booleans(), st.integers(-3, 3)), min_size=2, max_size=60))
def test_roc_auc_matches_scikit_learn_on_any_small_ranking(pairs):
    y = [a for a, _ in pairs]
    assume(any(y) and not all(y))
    scores = [b for _, b in pairs]
    assert roc_auc(y, scores) == pytest.approx(roc_auc_score(y, scores), abs=1e-12)


@pytest.mark.parametrize(
    "scores, expected", [([4, 3, 2, 1], 1.0), ([1, 2, 3, 4], 0.0), ([5, 5, 5, 5], 0.5)]
)
def test_roc_auc_is_one_for_a_perfect_ranking_zero_reversed_and_half_for_all_ties(scores, expected):
    assert roc_auc([1, 1, 0, 0], scores) == expected


@pytest.mark.parametrize(
    "labels, scores, match",
    [
        ([1, 1], [0.1, 0.2], "both positive and negative"),
        ([1, 0], [0.1], "differ in length"),
        ([1, 2], [0.1, 0.2], "binary"),
        ([1, 0], [0.1, math.nan], "NaN"),
    ],
)
def test_roc_auc_rejects_what_it_cannot_rank(labels, scores, match):
    with pytest.raises(ValueError, match=match):
        roc_auc(labels, scores)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.5])
def test_precision_at_top_matches_scikit_learn_when_scores_are_distinct(seed, fraction):
    y, scores = _ranking(seed, 2000, 0.05, None)
    m = math.ceil(fraction * len(scores))
    in_top = scores >= np.sort(scores)[-m]
    assert in_top.sum() == m
    assert precision_at_top(y, scores, fraction) == pytest.approx(precision_score(y, in_top))


def _precision_over_every_tie_order(y: list[bool], scores: list[int], m: int) -> float:
    """The mean precision of the top m over every order of the items (ties broken each way)."""
    precisions = []
    for order in itertools.permutations(range(len(y))):
        ranked = sorted(range(len(y)), key=lambda i: (-scores[i], order[i]))
        precisions.append(sum(y[i] for i in ranked[:m]) / m)
    return sum(precisions) / len(precisions)


@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 2)), min_size=1, max_size=6),
    st.sampled_from([0.1, 0.34, 0.5, 1.0]),
)
def test_precision_at_top_counts_ties_at_the_edge_as_every_order_would_on_average(pairs, fraction):
    y = [a for a, _ in pairs]
    scores = [b for _, b in pairs]
    m = max(1, math.ceil(fraction * len(y)))
    expected = _precision_over_every_tie_order(y, scores, m)
    assert precision_at_top(y, scores, fraction) == pytest.approx(expected)


def test_precision_at_top_takes_at_least_one_item():
    assert precision_at_top([0, 1, 0], [0.1, 0.9, 0.2], fraction=0.01) == 1.0


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
def test_the_demo_clusters_embeddings_at_sentence_embedding_width():
    result = streamkm(
        "demo", "--scenario", "embeddings", "--dim", "384", "--k", "8", "--count", "3000",
        "--rate", "0", "--metrics-port", "0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = DemoRun(0, result)
    assert run.count("labeled") == 3000 - run.count("invalid")
    assert "against the generating embeddings" in result.stdout
    assert float(run.field(r"adjusted Rand index ([\d.]+)")) > 0.9


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


# --- the transactions scenario ---------------------------------------------------------------


@pytest.fixture(scope="module")
def transactions_run() -> DemoRun:
    """One small demo of card transactions: named fields, scaled, beside an unscaled model."""
    result = streamkm(
        "demo",
        "--scenario",
        "transactions",
        "--count",
        "20000",
        "--rate",
        "10000",
        "--invalid-fraction",
        "0.002",
        "--metrics-port",
        "0",
    )
    return DemoRun(0, result)


def _ranking_line(run: DemoRun, scale: str) -> tuple[float, float]:
    auc = run.field(rf"--scale {scale}:\s+ROC AUC ([\d.]+), precision in top 1% [\d.]+")
    top = run.field(rf"--scale {scale}:\s+ROC AUC [\d.]+, precision in top 1% ([\d.]+)")
    return float(auc), float(top)


@pytest.mark.integration
def test_transactions_demo_labels_or_dead_letters_every_event_by_its_fields(transactions_run):
    run = transactions_run
    assert run.result.returncode == 0, run.result.stderr
    assert run.count("produced") == 20_000
    assert run.count("labeled") == 20_000 - run.count("invalid")
    assert run.count("invalid") > 0
    reasons = set(re.findall(r"(\w+) \d+", run.field(r"^\s+invalid\s+.*: (.*)$")))
    assert reasons <= {"missing_field", "not_numeric", "out_of_domain"}
    assert "amount:log1p,merchant.risk,hour" in run.field(r"^\s+fields\s+(\S+)")


@pytest.mark.integration
def test_transactions_demo_ranks_fraud_well_with_scaling_and_reports_it_beside_unscaled(
    transactions_run,
):
    fraud = transactions_run.count("fraud")
    ranked = int(transactions_run.field(r"fraud\s+[\d,]+ injected among ([\d,]+)").replace(",", ""))
    assert 0 < fraud < ranked
    scaled_auc, scaled_top = _ranking_line(transactions_run, "standard")
    unscaled_auc, unscaled_top = _ranking_line(transactions_run, "none")
    assert scaled_auc > 0.75  # chance is 0.5
    assert scaled_top > 10 * fraud / ranked  # far above the fraud share
    assert 0 <= unscaled_auc <= 1 and 0 <= unscaled_top <= 1
    stdout = transactions_run.result.stdout
    assert stdout.index("--scale standard:") < stdout.index("--scale none:")


@pytest.mark.integration
def test_transactions_demo_refuses_f32_input():
    result = streamkm("demo", "--scenario", "transactions", "--input-format", "f32", timeout=60)
    assert result.returncode == 2
    assert "--scenario transactions writes JSON events" in result.stderr
