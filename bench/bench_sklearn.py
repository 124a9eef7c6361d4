"""streamkm's scikit-learn estimators against scikit-learn itself, under pytest-benchmark (issue 16).

The seed's benchmark: `fit_predict` on `make_blobs(n_samples=1_000_000)` (its defaults: 2
features, 3 centres, float64) by `estimators.KMeans(3, init="random", n_init=1)` and by
scikit-learn's `KMeans(3, init="random", algorithm="lloyd", n_init=1)`, same `random_state`;
the labels are checked equal. Then `StreamingKMeans.partial_fit` with sample weights against
without them, and against the unweighted `partial_fit` of the code before weights existed
(commit `BEFORE_WEIGHTS`, its sources in `.bench-trees/`, imported beside today's engine in the
same processes: how fast this shared machine runs differs more from one process to the next
than the code does).

    python bench/bench_sklearn.py            # all of it; the tables go to docs/benchmarks.md
    pytest bench/bench_sklearn.py --benchmark-only    # pytest-benchmark's own table
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

N_BLOBS = 1_000_000
K_BLOBS = 3  # make_blobs' default centres
BEFORE_WEIGHTS = "c654391"  # the last commit before sample weights reached the kernels
# (rows, d, k) of the partial_fit loops, batches of 1024 float32 rows: bench_engine's stream
# and the embedding width of issue 15.
PARTIAL_SHAPES = ((1_000_000, 16, 8), (51_200, 384, 64))
BATCH = 1024


# --- pytest-benchmark ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def blobs() -> np.ndarray:
    from sklearn.datasets import make_blobs

    return make_blobs(n_samples=N_BLOBS, random_state=0)[0]


@pytest.fixture(scope="module")
def sklearn_labels(blobs: np.ndarray) -> np.ndarray:
    from sklearn.cluster import KMeans

    return (
        KMeans(K_BLOBS, init="random", algorithm="lloyd", n_init=1, random_state=0)
        .fit(blobs)
        .labels_
    )


@pytest.fixture(autouse=True)
def quiet_threads() -> None:
    """A pause before each benchmark: the other library's OpenMP threads stop spinning."""
    time.sleep(1.0)


def estimator(library: str) -> object:
    if library == "streamkm":
        from estimators import KMeans
    else:
        from sklearn.cluster import KMeans
    kw = {"algorithm": "lloyd"} if library == "scikit-learn" else {}
    return KMeans(K_BLOBS, init="random", n_init=1, random_state=0, **kw)


@pytest.mark.benchmark(group="fit_predict, make_blobs(1_000_000), k = 3")
@pytest.mark.parametrize("library", ["streamkm", "scikit-learn"])
def test_fit_predict(benchmark, blobs, sklearn_labels, library):
    est = estimator(library)
    labels = benchmark.pedantic(est.fit_predict, args=(blobs,), rounds=7, warmup_rounds=1)
    np.testing.assert_array_equal(labels, sklearn_labels)


def stream_batches(n: int, d: int, k: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """float32 blobs in batches of BATCH rows, and a weight in [0.5, 2) for each row."""
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=8.0, size=(k, d))
    X = (centres[rng.integers(0, k, n)] + rng.normal(size=(n, d))).astype(np.float32)
    w = rng.uniform(0.5, 2.0, n)
    return [X[i : i + BATCH] for i in range(0, n, BATCH)], [
        w[i : i + BATCH] for i in range(0, n, BATCH)
    ]


def seeded(StreamingKMeans, batches, weights, k) -> object:
    """A model that has learnt from the first batch (the k-means++ seeding, timed apart)."""
    model = StreamingKMeans(k, seed=0)
    if weights is None:
        return model.partial_fit(batches[0])
    return model.partial_fit(batches[0], sample_weight=weights[0])


def updates(model, batches, weights) -> object:
    """partial_fit on every batch but the first: the updates whose speed the target is about."""
    if weights is None:
        for b in batches[1:]:
            model.partial_fit(b)
    else:
        for b, w in zip(batches[1:], weights[1:], strict=True):
            model.partial_fit(b, sample_weight=w)
    return model


@pytest.mark.benchmark(group="StreamingKMeans.partial_fit, 1,000,000 x 16 float32, k = 8")
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_partial_fit(benchmark, weighted):
    from engine import StreamingKMeans

    n, d, k = PARTIAL_SHAPES[0]
    batches, weights = stream_batches(n, d, k)
    w = weights if weighted else None

    def setup():
        model = seeded(StreamingKMeans, batches, w, k)
        return (model, batches, w), {}

    model = benchmark.pedantic(updates, setup=setup, rounds=5, warmup_rounds=1)
    assert model.version == len(batches) + 1


# --- partial_fit: today's code against the code before weights, in the same processes -------


def engine_at(tree: Path, name: str = "engine_before") -> Any:
    """The `engine` package of another source tree, imported under `name` beside today's."""
    spec = importlib.util.spec_from_file_location(
        name, tree / "engine" / "__init__.py", submodule_search_locations=[str(tree / "engine")]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def child(tree: str, n: int, d: int, k: int, rounds: int) -> None:
    """Time `rounds` loops of updates of each kind, interleaved (before weights, today
    unweighted, today weighted); print the seconds as JSON."""
    import engine

    kinds = {
        "before": (engine_at(Path(tree)).StreamingKMeans, False),
        "unweighted": (engine.StreamingKMeans, False),
        "weighted": (engine.StreamingKMeans, True),
    }
    batches, weights = stream_batches(n, d, k)
    for cls, weighted in kinds.values():  # compiles
        w = weights[:4] if weighted else None
        updates(seeded(cls, batches[:4], w, k), batches[:4], w)
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(rounds):
        for kind, (cls, weighted) in kinds.items():
            w = weights if weighted else None
            model = seeded(cls, batches, w, k)
            start = time.perf_counter()
            updates(model, batches, w)
            times[kind].append(time.perf_counter() - start)
    print(json.dumps(times))


def partial_fit_figures(runs: int, rounds: int) -> list[dict[str, object]]:
    """Per shape: median loop seconds of before-weights, today unweighted, today weighted."""
    from drain_at import tree_at

    before = tree_at(BEFORE_WEIGHTS, warm=False)
    rows = []
    for shape in PARTIAL_SHAPES:
        times: dict[str, list[float]] = {"before": [], "unweighted": [], "weighted": []}
        for _ in range(runs):
            argv = [sys.executable, __file__, "--child", str(before), *map(str, shape), str(rounds)]
            out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
            for kind, values in json.loads(out.splitlines()[-1]).items():
                times[kind] += values
        rows.append({"shape": shape, **{key: statistics.median(v) for key, v in times.items()}})
    return rows


def fit_predict_figures(processes: int) -> list[dict[str, float]]:
    """pytest-benchmark's median seconds per fit_predict test, one pytest process per run: how
    fast two threads go differs from one process to the next on this shared machine (one
    thread: 71-72 ms every time; two: 46-76 ms), so each run is a process of its own."""
    runs = []
    for _ in range(processes):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "bench.json"
            argv = [sys.executable, "-m", "pytest", __file__, "-k", "fit_predict",
                    "--benchmark-only", f"--benchmark-json={out}", "-q",
                    "-p", "no:cacheprovider", "-o", "testpaths=", "-o", "addopts="]  # fmt: skip
            code = subprocess.run(argv, cwd=ROOT).returncode
            if code != 0:
                raise SystemExit(f"bench_sklearn: the benchmarks failed (pytest exit {code})")
            data = json.loads(out.read_text())
        runs.append({b["name"]: b["stats"]["median"] for b in data["benchmarks"]})
    return runs


def report(
    fit: list[dict[str, float]], partial: list[dict[str, object]], args: argparse.Namespace
) -> str:
    from report import listed, machine_facts

    ours_runs = [r["test_fit_predict[streamkm]"] for r in fit]
    theirs_runs = [r["test_fit_predict[scikit-learn]"] for r in fit]
    ratios = [t / o for o, t in zip(ours_runs, theirs_runs, strict=True)]
    ours, theirs = statistics.median(ours_runs), statistics.median(theirs_runs)
    lines = [
        "## scikit-learn drop-in: `estimators/` against scikit-learn (issue 16)",
        "",
        machine_facts("numba and scikit-learn each on both cores, timed in separate blocks."),
        "",
        "Command: `.venv/bin/python bench/bench_sklearn.py` (`make bench`); the fit_predict "
        "figures are pytest-benchmark's (`pytest bench/bench_sklearn.py --benchmark-only`), "
        f"median of 7 rounds after one warm-up, a 1 s pause before each benchmark, in "
        f"{len(fit)} pytest processes (the table gives the median over them).",
        "",
        "| fit_predict, `make_blobs(n_samples=1_000_000)` (2 features, 3 centres, float64) | "
        "median s |",
        "| --- | ---: |",
        f'| streamkm `estimators.KMeans(3, init="random", n_init=1, random_state=0)` | {ours:.4f} |',
        f'| scikit-learn `KMeans(3, init="random", algorithm="lloyd", n_init=1, random_state=0)` '
        f"| {theirs:.4f} |",
        f"| **speed-up**, median of the processes' (target >= 5x; same labels: checked) | "
        f"**{statistics.median(ratios):.1f}x** ({listed(ratios, '{:.1f}x')}) |",
        "",
        f"`StreamingKMeans.partial_fit` in batches of {BATCH} float32 rows, weights in [0.5, 2), "
        "timed from the second batch (the first one seeds the centres); the three kinds "
        "interleaved in each "
        f"of {args.runs} processes (the code before weights, commit `{BEFORE_WEIGHTS}`, "
        f"imported beside today's), median of {args.runs} x {args.rounds} loops:",
        "",
        "| rows x d, k | before weights, s | today unweighted, s | today weighted, s | "
        "weighted / before (target <= 1.10) | unweighted / before |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in partial:
        n, d, k = row["shape"]  # type: ignore[misc]
        b, u, w = row["before"], row["unweighted"], row["weighted"]
        lines.append(
            f"| {n:,} x {d}, k = {k} | {b:.4f} | {u:.4f} | {w:.4f} | {w / b:.2f} | {u / b:.2f} |"  # type: ignore[operator]
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, default=3, help="fit_predict pytest processes (3)")
    p.add_argument("--runs", type=int, default=3, help="interleaved partial_fit runs (3)")
    p.add_argument("--rounds", type=int, default=3, help="loops per partial_fit process (3)")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        tree, n, d, k, rounds = args.child
        child(tree, int(n), int(d), int(k), int(rounds))
        return
    fit = fit_predict_figures(args.processes)
    partial = partial_fit_figures(args.runs, args.rounds)
    text = report(fit, partial, args)
    print(text)
    if not args.no_write:
        from report import write_section

        write_section("sklearn", text)


if __name__ == "__main__":
    main()
