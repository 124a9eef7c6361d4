"""Flink ML's `OnlineKMeans` on one stream, for bench/bench_peers.py (issue 17).

Runs in its own interpreter: `apache-flink-ml` (2.3.0, its newest release) installs only on
Python 3.7 or 3.8, so `bench_peers.py` builds `.venv-flink` with such a Python and calls

    .venv-flink/bin/python bench/flink_peer.py ROWS.csv K BATCH DECAY EVERY

with the stream already written as CSV (one row a line, arrival order). It prints one JSON line
in the shape of `bench_peers.child`'s report. Kept to Python 3.8 and the standard library.

The job is the one Flink ML's documentation shows, on a local environment of parallelism 2 (as
Spark's `local[2]`): a filesystem CSV source, `VectorAssembler` into a `features` column,
`OnlineKMeans` (global batch BATCH, decay factor DECAY, random initial centres from
`KMeansModelData.generateRandomModelData`), and the model-data stream collected. Flink emits a
model version per global batch; the learning time runs from the arrival of the first learnt
version to the last (the first batch seeds, as for the other peers), over a job that reads the
file while it learns. The same CSV read and assembled alone, without learning, is timed too:
Flink's rate cannot exceed what that source delivers. An untimed job over the first batches warms
the JVM first.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

# Flink 1.17 reflects into the JDK's own classes; Java 17 allows that only where opened.
_OPENS = [
    "java.lang",
    "java.lang.reflect",
    "java.util",
    "java.util.concurrent",
    "java.util.concurrent.atomic",
    "java.io",
    "java.net",
    "java.nio",
    "java.math",
    "java.text",
    "java.time",
    "sun.nio.ch",
]
os.environ["JDK_JAVA_OPTIONS"] = " ".join(f"--add-opens=java.base/{p}=ALL-UNNAMED" for p in _OPENS)
PARALLELISM = 2
WARM_BATCHES = 3
_NUMBER = re.compile(r"-?(?:\d+\.?\d*(?:E-?\d+)?|Infinity)|NaN")


def _status_mb(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def _jvm_pids():
    """The JVM that PyFlink started beside this process (its child)."""
    me, pids = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            pids.append(stat.parent.name)
    return pids


class Job:
    """One local Flink environment and its table environment."""

    def __init__(self, d):
        from pyflink.datastream import StreamExecutionEnvironment
        from pyflink.table import StreamTableEnvironment

        self.env = StreamExecutionEnvironment.get_execution_environment()
        self.env.set_parallelism(PARALLELISM)
        self.t_env = StreamTableEnvironment.create(self.env)
        self.d = d
        self.tables = 0

    def features(self, csv):
        """The CSV as a table with one vector column, `features`."""
        from pyflink.ml.feature.vectorassembler import VectorAssembler

        self.tables += 1
        name = f"rows{self.tables}"
        columns = ", ".join(f"f{i} DOUBLE" for i in range(self.d))
        self.t_env.execute_sql(
            f"CREATE TABLE {name} ({columns}) WITH "
            f"('connector' = 'filesystem', 'path' = '{csv}', 'format' = 'csv')"
        )
        assembler = (
            VectorAssembler()
            .set_input_cols(*[f"f{i}" for i in range(self.d)])
            .set_output_col("features")
            .set_input_sizes(*[1] * self.d)
        )
        return assembler.transform(self.t_env.from_path(name))[0]

    def versions(self, csv, k, batch, decay):
        """Run OnlineKMeans over the CSV; yield each model version as it arrives (text)."""
        from pyflink.java_gateway import get_gateway
        from pyflink.ml.clustering.kmeans import OnlineKMeans

        jvm = get_gateway().jvm
        initial = jvm.org.apache.flink.ml.clustering.kmeans.KMeansModelData.generateRandomModelData(
            self.t_env._j_tenv, k, self.d, 0.0, 0
        )
        kmeans = (
            OnlineKMeans()
            .set_features_col("features")
            .set_prediction_col("prediction")
            .set_k(k)
            .set_global_batch_size(batch)
            .set_decay_factor(decay)
        )
        # The Python wrapper of 2.3.0 lacks these two: the Java object has them.
        kmeans._java_obj.setInitialModelData(initial)
        model = kmeans.fit(self.features(csv))
        results = model._java_obj.getModelData()[0].execute().collect()
        try:
            while results.hasNext():
                yield results.next().toString()
        finally:
            results.close()

    def read_seconds(self, csv):
        """Time a job that reads and assembles the CSV into a sink that drops it, learning
        nothing."""
        view, sink = f"read{self.tables}", f"dropped{self.tables}"
        self.t_env.create_temporary_view(view, self.features(csv))
        self.t_env.execute_sql(f"CREATE TABLE {sink} (n INT) WITH ('connector' = 'blackhole')")
        t0 = time.perf_counter()
        self.t_env.execute_sql(f"INSERT INTO {sink} SELECT 1 FROM {view}").wait()
        return time.perf_counter() - t0


def centres(version, k, d):
    values = [float(v) for v in _NUMBER.findall(version)]
    return [values[j * d : (j + 1) * d] for j in range(k)]


def main():
    csv, decay = sys.argv[1], float(sys.argv[4])
    k, batch, every = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
    with open(csv) as f:
        lines = f.readlines()
    d, rows = lines[0].count(",") + 1, len(lines)
    head = lines[: WARM_BATCHES * batch]
    del lines
    warm_csv = csv + ".warm.csv"
    Path(warm_csv).write_text("".join(head))
    job = Job(d)
    for _ in job.versions(warm_csv, k, batch, decay):
        pass
    read_s = job.read_seconds(csv)
    pids = ["self", *_jvm_pids()]
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = [_status_mb(p, "VmRSS") for p in pids]
    t_start = time.perf_counter()
    arrivals, snapshots, last = [], [], ""
    for i, version in enumerate(job.versions(csv, k, batch, decay)):
        arrivals.append(time.perf_counter())
        last = version
        if i > 0 and i % every == 0:
            snapshots.append((i * batch, centres(version, k, d)))
    peaks = [_status_mb(p, "VmHWM") for p in pids]
    learning_mb = sum(peak - start for peak, start in zip(peaks, before))  # noqa: B905 (3.8)
    updates = len(arrivals) - 1  # the first version is the initial model
    # From the first learnt version on; a stream of one batch is timed from the job's start.
    timed_from = arrivals[1] if updates > 1 else t_start
    report = {
        "peer": "Flink",
        "batch": batch,
        "forget": decay,
        "rows": rows,
        "timed_rows": (updates - 1 if updates > 1 else updates) * batch,
        "seconds": arrivals[-1] - timed_from,
        "first_batch_seconds": arrivals[1] - t_start,
        "read_seconds": read_s,
        "centres": centres(last, k, d),
        "snapshots": snapshots,
        "learning_mb": learning_mb,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
