"""Bring your own model: import, freeze, replace, show and export the served model.

The `streamkm model` commands run as real processes (and in-process through `stream.cli.main`
where only the exit code and message matter); `streamkm serve` runs as a process too.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka_helpers import consume_records, produce_records, unique_name
from serve_process import ServeProcess
from sklearn.cluster import KMeans

from engine import ModelState, batch_stats
from model.messages import (
    INIT,
    REPLACE,
    RESEED,
    STATS,
    ModelEvent,
    ModelParams,
    ModelReplica,
    decode_snapshot,
    encode_init,
    encode_snapshot,
)
from model.topics import TopicSpec, ensure_topics
from stream.cli import main

# --- the replica's rules for `replace` (pure, no Kafka) -------------------------------------


def _init(centers, half_life=None) -> bytes:
    c = np.asarray(centers, np.float64)
    return encode_init(ModelState.initial(c), ModelParams(c.shape[0], c.shape[1], half_life), "t")


def _stats(k: int, d: int, n: int = 10) -> bytes:
    X = np.random.default_rng(k * d).normal(size=(n, d))
    return batch_stats(X, X[:k].copy())[2].to_bytes()


def test_a_replace_swaps_the_model_at_its_log_position_and_counts_as_a_version():
    replica = ModelReplica()
    replica.apply(0, INIT, _init([[0.0, 0.0], [1.0, 1.0]]), 1_000)
    replica.apply(1, STATS, _stats(2, 2), 2_000)
    applied = replica.apply(2, REPLACE, _init([[5.0, 5.0, 5.0]] * 3, 100.0), 3_000)
    assert applied is not None and applied.kind == REPLACE
    assert replica.version == 3
    assert (replica.params.k, replica.params.d, replica.params.half_life) == (3, 3, 100.0)
    assert replica.state.centers.tolist() == [[5.0, 5.0, 5.0]] * 3
    assert (replica.replaces, replica.base_offset, replica.updated_at) == (1, 2, 3.0)
    assert [(e.version, e.kind, e.clusters) for e in replica.events] == [
        (1, INIT, (0, 1)),
        (3, REPLACE, (0, 1, 2)),
    ]


def test_statistics_of_the_replaced_shape_are_skipped_and_later_inits_ignored():
    replica = ModelReplica()
    replica.apply(0, INIT, _init([[0.0, 0.0], [1.0, 1.0]]))
    replica.apply(1, REPLACE, _init([[5.0], [6.0], [7.0]]))
    assert replica.apply(2, STATS, _stats(2, 2)) is None
    assert replica.apply(3, INIT, _init([[9.0]])) is None
    assert replica.apply(4, STATS, _stats(3, 1)) is not None
    assert (replica.version, replica.next_offset) == (3, 5)


def test_a_replace_creates_the_model_when_there_is_none():
    replica = ModelReplica()
    replica.apply(0, REPLACE, _init([[1.0, 2.0]]))
    assert (replica.ready, replica.version, replica.replaces) == (True, 1, 1)


def test_a_reseed_is_recorded_with_its_version_and_clusters():
    replica = ModelReplica()
    replica.apply(0, INIT, _init([[0.0, 0.0], [100.0, 100.0]]))
    near_cluster_0 = np.random.default_rng(0).normal(size=(50, 2))
    stats = batch_stats(near_cluster_0, replica.centers())[2]
    applied = replica.apply(1, STATS, stats.to_bytes(), 7_000)
    assert applied is not None and applied.result.reseeded == (1,)
    assert (replica.reseeds, replica.base_offset) == (1, 0)
    assert replica.events[-1] == ModelEvent(2, RESEED, (1,), 1, 7.0)


def test_snapshots_keep_the_history_of_reseeds_and_replaces():
    replica = ModelReplica()
    replica.apply(0, INIT, _init([[0.0], [1.0]]), 5_000)
    replica.apply(1, REPLACE, _init([[3.0], [4.0]]), 6_000)
    restored = ModelReplica()
    restored.restore(decode_snapshot(encode_snapshot(replica.snapshot("t"))))
    assert restored.history() == replica.history()
    assert restored.state.equals(replica.state)


# --- bad files through the command line ----------------------------------------------------


@pytest.mark.parametrize(
    "name, content, words",
    [
        ("c.json", b"[[1, 2], [3]]", "ragged centres"),
        ("c.json", b"[[1, NaN]]", "NaN and infinity are not allowed"),
        ("c.csv", b"1,2\nnan,4\n", "NaN or infinity"),
        ("c.npy", b"\x80\x04\x95 pickle bytes", "is a pickle, which is never loaded"),
        ("c.json", b"[1, 2]", "must be a 2-D (k, d) array"),
        ("c.txt", b"1,2", "unknown extension '.txt'"),
    ],
)
def test_import_refuses_a_bad_file_with_exit_2_before_touching_kafka(
    tmp_path, capsys, name, content, words
):
    path = tmp_path / name
    path.write_bytes(content)
    # An unreachable broker proves the file is judged first.
    assert main(["model", "import", "--bootstrap", "127.0.0.1:1", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"streamkm model import: {path}: ")
    assert words in err
    assert "Traceback" not in err


# --- over the embedded broker --------------------------------------------------------------

CENTERS = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
# The replacement has another k: four centres, none where the old ones were.
NEW_CENTERS = np.array([[5.0, 5.0], [-8.0, -8.0], [12.0, 12.0], [-8.0, 12.0]])
N = 300


def model_cli(bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`streamkm model ...` as a real process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKM_")}
    argv = [sys.executable, "-m", "stream.cli", "model", *args, "--bootstrap", bootstrap]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)


def records(first_id: int, seed: int) -> tuple[np.ndarray, list[bytes]]:
    """N points spread over the plane (so every centre gets some), as JSON input records."""
    X = np.random.default_rng(seed).uniform(-12, 14, size=(N, 2)).astype(np.float32)
    values = [orjson.dumps({"id": first_id + i, "features": x.tolist()}) for i, x in enumerate(X)]
    return X, values


def sklearn_labels(centers: np.ndarray, X: np.ndarray) -> list[int]:
    """scikit-learn's labels for X with exactly these centres (the README's recipe)."""
    km = KMeans(n_clusters=len(centers), init=centers, n_init=1, max_iter=1).fit(X)
    km.cluster_centers_ = centers.astype(X.dtype)  # fit moved them one step; put them back
    return km.predict(X).tolist()


async def updates_count(bootstrap: str, model: str) -> int:
    """Records in `<model>.updates` (its high watermark)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(f"{model}.updates", 0)
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


@dataclass
class Lifecycle:
    """What one import -> frozen serve -> replace -> show -> export run produced."""

    imported: subprocess.CompletedProcess[str]
    second_import: subprocess.CompletedProcess[str]
    replaced: subprocess.CompletedProcess[str]
    shown: subprocess.CompletedProcess[str]
    shown_json: subprocess.CompletedProcess[str]
    exported: dict[str, subprocess.CompletedProcess[str]]
    export_dir: Path
    updates_before: int
    updates_after_serving: int
    before: tuple[np.ndarray, list[dict]]  # records labeled before the replace, in id order
    after: tuple[np.ndarray, list[dict]]  # and after it


@pytest.fixture(scope="module")
def lifecycle(broker, tmp_path_factory) -> Lifecycle:
    tmp = tmp_path_factory.mktemp("lifecycle")
    bootstrap, model, topic = broker.bootstrap, unique_name("m"), unique_name("in")
    asyncio.run(ensure_topics(bootstrap, [TopicSpec(topic, 2)]))
    np.save(tmp / "centers.npy", CENTERS)
    (tmp / "new.json").write_bytes(orjson.dumps({"centers": NEW_CENTERS.tolist()}))

    imported = model_cli(bootstrap, "import", "--model", model, str(tmp / "centers.npy"))
    second_import = model_cli(bootstrap, "import", "--model", model, str(tmp / "new.json"))
    updates_before = asyncio.run(updates_count(bootstrap, model))
    X1, v1 = records(0, seed=1)
    X2, v2 = records(N, seed=2)
    serve = ServeProcess(
        bootstrap, tmp / "serve.log", "--input-topic", topic, "--output-topic", f"{topic}.out",
        "--model", model, "--group", unique_name("g"), "--frozen", "--k", "3",
    )  # fmt: skip
    try:
        serve.wait_ready()
        asyncio.run(produce_records(bootstrap, topic, v1))
        first = asyncio.run(consume_records(bootstrap, f"{topic}.out", N, 120))
        updates_after_serving = asyncio.run(updates_count(bootstrap, model))
        replaced = model_cli(
            bootstrap, "import", "--model", model, "--replace", str(tmp / "new.json")
        )
        wait_for(lambda: serve.model()["version"] == 2, 60, "the service to apply the replace")
        asyncio.run(produce_records(bootstrap, topic, v2))
        both = asyncio.run(consume_records(bootstrap, f"{topic}.out", 2 * N, 120))
    finally:
        serve.terminate()
        serve.close()
    shown = model_cli(bootstrap, "show", "--model", model)
    shown_json = model_cli(bootstrap, "show", "--model", model, "--json")
    exported = {
        name: model_cli(bootstrap, "export", "--model", model, str(tmp / name))
        for name in ("out.npy", "out.json")
    }
    labels = {doc["id"]: doc for doc in (orjson.loads(r.value) for r in both)}
    assert {orjson.loads(r.value)["id"] for r in first} == set(range(N))
    return Lifecycle(
        imported, second_import, replaced, shown, shown_json, exported, tmp, updates_before,
        updates_after_serving,
        (X1, [labels[i] for i in range(N)]),
        (X2, [labels[i] for i in range(N, 2 * N)]),
    )  # fmt: skip


@pytest.mark.integration
def test_import_publishes_the_file_as_version_1(lifecycle):
    assert lifecycle.imported.returncode == 0, lifecycle.imported.stderr
    assert "version 1 (updates offset 0)" in lifecycle.imported.stdout
    assert lifecycle.updates_before == 1


@pytest.mark.integration
def test_import_refuses_a_model_that_exists_unless_told_to_replace(lifecycle):
    assert lifecycle.second_import.returncode == 2
    assert "already exists (version 1, k=3, d=2)" in lifecycle.second_import.stderr
    assert "--replace" in lifecycle.second_import.stderr


@pytest.mark.integration
def test_a_frozen_service_labels_every_record_like_scikit_learn_with_the_imported_centres(
    lifecycle,
):
    X, docs = lifecycle.before
    assert [d["cluster"] for d in docs] == sklearn_labels(CENTERS, X)
    assert {d["model_version"] for d in docs} == {1}


@pytest.mark.integration
def test_a_frozen_service_publishes_nothing_to_the_updates_log(lifecycle):
    assert lifecycle.updates_after_serving == lifecycle.updates_before == 1


@pytest.mark.integration
def test_after_a_replace_records_are_labeled_with_the_new_centres_and_version(lifecycle):
    assert lifecycle.replaced.returncode == 0, lifecycle.replaced.stderr
    assert "version 2" in lifecycle.replaced.stdout
    X, docs = lifecycle.after
    assert [d["cluster"] for d in docs] == sklearn_labels(NEW_CENTERS, X)
    assert {d["model_version"] for d in docs} == {2}
    assert max(d["cluster"] for d in docs) == 3  # the new k is in use


@pytest.mark.integration
def test_show_lists_version_centres_and_the_replace(lifecycle):
    assert lifecycle.shown.returncode == 0, lifecycle.shown.stderr
    out = lifecycle.shown.stdout
    assert "version 2" in out and "k=4, d=2" in out and "replaces: 1" in out
    assert "[-8, 12]" in out
    assert "schema: a features vector, --scale none" in out
    doc = orjson.loads(lifecycle.shown_json.stdout)
    assert (doc["version"], doc["k"], doc["d"], doc["replaces"]) == (2, 4, 2, 1)
    assert (doc["fields"], doc["scale"], doc["scaler"]) == (None, "none", None)
    assert doc["centers"] == NEW_CENTERS.tolist()
    assert [(e["version"], e["kind"]) for e in doc["events"]] == [(1, INIT), (2, REPLACE)]
    assert doc["updated_at"] == doc["events"][-1]["at"]


@pytest.mark.integration
@pytest.mark.parametrize("name", ["out.npy", "out.json"])
def test_exported_centres_give_scikit_learn_the_same_labels_as_streamkm(lifecycle, name):
    assert lifecycle.exported[name].returncode == 0, lifecycle.exported[name].stderr
    path = lifecycle.export_dir / name
    if name.endswith(".npy"):
        centers = np.load(path, allow_pickle=False)
    else:
        doc = orjson.loads(path.read_bytes())
        assert (doc["fields"], doc["scaler"], doc["version"]) == (None, None, 2)
        centers = np.array(doc["centers"])
    assert centers.tobytes() == NEW_CENTERS.tobytes()
    X, docs = lifecycle.after
    assert sklearn_labels(centers, X) == [d["cluster"] for d in docs]


@pytest.mark.integration
@pytest.mark.parametrize("action", ["show", "export"])
def test_show_and_export_of_a_model_that_does_not_exist_exit_1(broker, tmp_path, capsys, action):
    file = [str(tmp_path / "out.json")] if action == "export" else []
    argv = ["model", action, *file, "--bootstrap", broker.bootstrap, "--model", unique_name("m")]
    assert main(argv) == 1
    assert "does not exist" in capsys.readouterr().err
