"""The model's schema in model files: named fields and a standard scaler, exported and imported.

DESIGN.md §7's promise, checked end to end: a model that learnt standard scaling from named-field
events (scikit-learn's wine data, keyed by its own feature names) is exported to JSON, rebuilt as
a scikit-learn `StandardScaler` + `KMeans`, and labels every record as `serve` did at that
version; importing the export gives back a model with the same bits, which serves the same
labels, and which an instance with another schema refuses to serve.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson
import pytest
from kafka_helpers import consume_records, produce_records, unique_name
from serve_process import streamkm_env
from sklearn.cluster import KMeans
from sklearn.datasets import load_wine
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from test_service import running, settings_for, wait_labeled

from engine import Scaler
from engine.scaling import feature_m2
from model.files import ModelFileError, exact_scaler, read_centers, write_centers
from model.topics import TopicSpec, ensure_topics
from stream.cli import main
from stream.config import ExportOptions, ImportOptions, ShowOptions
from stream.modelcli import export_model, import_model, show_model

# --- files: fields and scaler, written and read back ------------------------------------------

FIELDS = ["amount:log1p", "merchant.risk", "hour"]
CENTERS = [[1.0, 0.2, 3.0], [4.5, 0.9, 22.0]]
SCALER = {"mean": [3.0, 0.5, 12.0], "scale": [1.5, 0.25, 6.0]}


def learnt_scaler(d: int, seed: int) -> Scaler:
    """A scaler as a model holds one: fitted on a warm-up sample, then updated with decay."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(500, d)) * np.exp(rng.normal(size=d) * 4) + rng.normal(size=d) * 50
    scaler = Scaler.fit(X[:100])
    for start in range(100, 500, 100):
        batch = X[start : start + 100]
        scaler = scaler.updated(100, batch.sum(axis=0)[None, :], feature_m2(batch), 0.93)
    return scaler


@pytest.mark.parametrize("d, seed", [(3, 0), (13, 1), (400, 2)])
def test_fields_and_scaler_read_back_bit_identical(tmp_path, d, seed):
    scaler = learnt_scaler(d, seed)
    fields = [f"f{t}:log1p" if t % 2 else f"e.f{t}" for t in range(d)]
    centers = scaler.mean + np.random.default_rng(seed).normal(size=(4, d)) * scaler.scale
    write_centers(
        tmp_path / "m.json",
        centers,
        {"weights": [1.0, 2.0, 0.0, 4.5]},
        fields=fields,
        scaler=scaler,
    )
    got = read_centers(tmp_path / "m.json")
    assert got.fields == tuple(fields)
    assert got.centers.tobytes() == centers.tobytes()
    assert got.scaler is not None and got.scaler.weight == scaler.weight
    assert got.scaler.mean.tobytes() == scaler.mean.tobytes()
    assert got.scaler.scale.tobytes() == scaler.scale.tobytes()
    np.testing.assert_allclose(got.scaler.var, scaler.var, rtol=1e-14)


def test_a_scale_comes_back_exactly_where_scale_squared_times_weight_would_not():
    scaler = learnt_scaler(400, 2)
    naive = Scaler.from_scale(scaler.mean, scaler.scale, scaler.weight)
    assert (naive.scale != scaler.scale).any()  # M2 = scale**2 * W loses the last bit at times
    exact = exact_scaler(scaler.mean, scaler.scale, scaler.weight)
    assert exact.scale.tobytes() == scaler.scale.tobytes()


def test_scikit_learn_attribute_names_are_read(tmp_path):
    sk = StandardScaler().fit(np.random.default_rng(0).normal(size=(40, 3)) * [1, 10, 100])
    doc = {
        "centers": CENTERS,
        "fields": FIELDS,
        "scaler": {
            "mean_": sk.mean_.tolist(),
            "scale_": sk.scale_.tolist(),
            "var_": sk.var_.tolist(),
            "n_samples_seen_": int(sk.n_samples_seen_),
        },
    }
    (tmp_path / "m.json").write_bytes(orjson.dumps(doc))
    got = read_centers(tmp_path / "m.json").scaler
    assert got is not None and got.weight == 40.0
    assert got.mean.tobytes() == sk.mean_.tobytes()
    assert got.scale.tobytes() == sk.scale_.tobytes()


@pytest.mark.parametrize("weights, seen", [(None, 1.0), ([2, 3.5], 5.5), ([0, 0], 1.0)])
def test_n_samples_seen_defaults_to_the_total_weight_or_1(tmp_path, weights, seen):
    doc = {"centers": CENTERS, "weights": weights, "scaler": SCALER}
    (tmp_path / "m.json").write_bytes(orjson.dumps(doc))
    got = read_centers(tmp_path / "m.json")
    assert got.scaler is not None and got.scaler.weight == seen
    assert got.scaler.scale.tolist() == SCALER["scale"]
    assert got.fields is None


@pytest.mark.parametrize(
    "doc, fields, has_schema",
    [
        (CENTERS, None, False),
        ({"centers": CENTERS}, None, False),
        ({"centers": CENTERS, "fields": None, "scaler": None}, None, True),
        ({"centers": CENTERS, "fields": [" amount:log1p", "merchant.risk ", "hour"]}, FIELDS, True),
    ],
)
def test_the_schema_is_what_the_file_states(tmp_path, doc, fields, has_schema):
    (tmp_path / "m.json").write_bytes(orjson.dumps(doc))
    got = read_centers(tmp_path / "m.json")
    assert got.fields == (None if fields is None else tuple(fields))
    assert (got.scaler, got.has_schema) == (None, has_schema)


BAD_SCHEMAS = [
    ({"fields": FIELDS[:2]}, '"fields" names 2 fields, but the centres have d=3'),
    ({"fields": ["amount:log2", "b", "c"]}, "unknown transform 'log2'; expected one of log1p"),
    ({"fields": ["a", "a", "c"]}, "field 'a' is named more than once"),
    ({"fields": ["a..b", "c", "d"]}, "is not a dotted field path"),
    ({"fields": ["a,b", "c", "d"]}, "may not contain a comma"),
    ({"fields": "amount,hour,x"}, '"fields" must be a list of "path[:transform]" strings'),
    ({"fields": ["a", 2, "c"]}, '"fields" must be a list'),
    ({"scaler": [1, 2, 3]}, '"scaler" must be an object'),
    ({"scaler": {"mean": [0, 0, 0]}}, 'the scaler needs "scale" (or scikit-learn\'s "scale_")'),
    ({"scaler": {**SCALER, "mean": [0, 0]}}, "scaler mean needs one number per feature (d=3)"),
    ({"scaler": {**SCALER, "scale": [1, 2, 3, 4]}}, "scaler scale needs one number per feature"),
    ({"scaler": {**SCALER, "scale": [1, 0, 3]}}, "scale[1] is 0.0; every scale must be a positive"),
    ({"scaler": {**SCALER, "scale": [1, 2, -3]}}, "scale[2] is -3.0"),
    ({"scaler": {**SCALER, "scale": [1e-300, 2, 3]}}, "scale[0] is 1e-300"),
    ({"scaler": {**SCALER, "scale": [1, "2", 3]}}, "the scaler scale hold a str '2'"),
    ({"scaler": {**SCALER, "mean_": [0, 0, 0]}}, 'gives both "mean" and "mean_"; keep one'),
    ({"scaler": {**SCALER, "n_samples_seen": 0}}, "n_samples_seen must be a number > 0"),
    ({"scaler": {**SCALER, "n_samples_seen_": "9"}}, "n_samples_seen must be a number > 0"),
    ({"scaler": {**SCALER, "n_samples_seen": True}}, "n_samples_seen must be a number > 0"),
    ({"scaler": {**SCALER, "scale": [1e200] * 3, "n_samples_seen": 1e200}}, "cannot be held"),
]


@pytest.mark.parametrize("schema, words", BAD_SCHEMAS, ids=[w for _, w in BAD_SCHEMAS])
def test_a_bad_schema_is_refused_with_a_message_naming_the_problem(tmp_path, schema, words):
    path = tmp_path / "m.json"
    path.write_bytes(orjson.dumps({"centers": CENTERS, **schema}))
    with pytest.raises(ModelFileError) as info:
        read_centers(path)
    assert str(info.value).startswith(f"{path}: ")
    assert words in str(info.value)


def test_import_refuses_a_bad_schema_with_exit_2_before_touching_kafka(tmp_path, capsys):
    path = tmp_path / "m.json"
    path.write_bytes(orjson.dumps({"centers": CENTERS, "fields": ["a", "b"]}))
    assert main(["model", "import", "--bootstrap", "127.0.0.1:1", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"streamkm model import: {path}: ")
    assert '"fields" names 2 fields, but the centres have d=3' in err


@pytest.mark.parametrize(
    "schema, words",
    [
        ({"fields": FIELDS}, "the model has named fields, which .npy cannot hold"),
        ({"scaler": Scaler.fit(np.eye(3))}, "has a standard scaler"),
        ({"fields": FIELDS, "scaler": Scaler.fit(np.eye(3))}, "named fields and a standard"),
    ],
)
def test_npy_export_of_a_model_with_a_schema_is_refused_for_json(tmp_path, schema, words):
    with pytest.raises(ModelFileError, match=r"export to \.json instead") as info:
        write_centers(tmp_path / "m.npy", np.array(CENTERS), **schema)
    assert words in str(info.value)
    assert not (tmp_path / "m.npy").exists()


def test_json_export_of_a_plain_model_says_it_has_no_schema(tmp_path):
    write_centers(tmp_path / "m.json", np.array(CENTERS), {"version": 3})
    doc = orjson.loads((tmp_path / "m.json").read_bytes())
    assert doc == {"fields": None, "centers": CENTERS, "scaler": None, "version": 3}


# --- over the embedded broker: served, exported, rebuilt in scikit-learn, imported -----------

WINE = load_wine()
NAMES = list(WINE.feature_names)  # alcohol, malic_acid, ..., od280/od315_of_diluted_wines, proline
TRANSFORMS = {"malic_acid": "log1p", "magnesium": "sqrt", "proline": "log1p"}
WINE_FIELDS = [f"{n}:{TRANSFORMS[n]}" if n in TRANSFORMS else n for n in NAMES]
SPEC = ",".join(WINE_FIELDS)


def wine_events(order: np.ndarray) -> list[bytes]:
    """The wine rows in this order as JSON objects keyed by the data set's feature names."""
    rows = WINE.data.tolist()
    return [
        orjson.dumps({"id": pos, "row": int(i), **dict(zip(NAMES, rows[i], strict=True))})
        for pos, i in enumerate(order.tolist())
    ]


def wine_features() -> np.ndarray:
    """The feature vectors serve builds from the events: the transforms in float64, then
    float32 (stream/fields.py)."""
    X = WINE.data.copy()
    for t, name in enumerate(NAMES):
        if name in TRANSFORMS:
            X[:, t] = getattr(np, TRANSFORMS[name])(X[:, t])
    return X.astype(np.float32)


@dataclass
class Served:
    model: str
    version: int  # the version every record of the frozen pass was labeled with
    labels: np.ndarray  # serve's labels of the wine rows, in data order
    versions: set[int]  # model_version of every output record of the frozen pass
    learnt_versions: int  # model versions the learning run reached
    export: dict  # the exported JSON document
    export_path: Path
    shown: dict  # `model show --json`
    table: str  # `model show`


def model_options(cls, broker, model: str, **kw):
    return cls(bootstrap=broker.bootstrap, model=model, connect_timeout=10.0, **kw)


async def serve_frozen(broker, model: str, **settings) -> tuple[np.ndarray, set[int], int]:
    """Label one pass of the wine rows, in data order, with the model as it is (--frozen)."""
    topic = unique_name("wine")
    await ensure_topics(broker.bootstrap, [TopicSpec(topic, 1)])
    await produce_records(broker.bootstrap, topic, wine_events(np.arange(len(WINE.data))))
    s = settings_for(broker, topic, model=model, frozen=True, k=3, **settings)
    async with running(s) as service:
        await wait_labeled(service, len(WINE.data))
        version = service.replica.version
    out = [
        orjson.loads(r.value)
        for r in await consume_records(broker.bootstrap, s.output_topic, len(WINE.data))
    ]
    labels = np.empty(len(out), np.int64)
    for doc in out:
        labels[doc["id"]] = doc["cluster"]
    return labels, {doc["model_version"] for doc in out}, version


@pytest.fixture(scope="module")
async def served(broker, tmp_path_factory) -> Served:
    """Learn a scaled model from three shuffled passes, then label one pass with it frozen."""
    model, topic = unique_name("wine-m"), unique_name("wine")
    await ensure_topics(broker.bootstrap, [TopicSpec(topic, 1)])
    rng = np.random.default_rng(7)
    events = wine_events(np.concatenate([rng.permutation(len(WINE.data)) for _ in range(3)]))
    n, chunk = len(WINE.data), len(WINE.data) // 2
    learn = settings_for(
        broker, topic, model=model, fields=SPEC, scale="standard", k=3, warmup=n, refit_every=64
    )
    async with running(learn) as service:
        # The first pass initialises the model; each later half pass is fed once the model has
        # learnt from the one before, so that the model moves through several versions.
        for start in [0, *range(n, len(events), chunk)]:
            stop = n if start == 0 else start + chunk
            version = service.replica.version
            await produce_records(broker.bootstrap, topic, events[start:stop])
            await wait_labeled(service, stop)
            # The init (version 1) comes first, then the statistics of what was labeled.
            learnt = max(version, 1)
            assert await service.updates.wait_until(lambda r, v=learnt: r.version > v, 10)
    labels, versions, version = await serve_frozen(broker, model, fields=SPEC, scale="standard")
    path = tmp_path_factory.mktemp("schema") / "wine.json"
    await export_model(model_options(ExportOptions, broker, model, file=str(path)))
    shown = orjson.loads(await show_model(model_options(ShowOptions, broker, model, json=True)))
    table = await show_model(model_options(ShowOptions, broker, model))
    export = orjson.loads(path.read_bytes())
    return Served(
        model, version, labels, versions, service.replica.version, export, path, shown, table
    )


def sklearn_pipeline(export: dict, dtype: type):
    """scikit-learn's StandardScaler + KMeans with exactly the exported scaler and centres."""
    sc = export["scaler"]
    scaler = StandardScaler()
    scaler.mean_ = np.array(sc["mean"])
    scaler.scale_ = np.array(sc["scale"])
    scaler.var_ = np.array(sc["var"])
    scaler.n_samples_seen_ = sc["n_samples_seen"]
    scaler.n_features_in_ = len(sc["mean"])
    # Centres are exported in original units; KMeans sees standardized rows.
    centers = (np.array(export["centers"]) - scaler.mean_) / scaler.scale_
    km = KMeans(n_clusters=len(centers), init=centers, n_init=1, max_iter=1).fit(centers)
    km.cluster_centers_ = centers.astype(dtype)  # fit took one step; serve's centres exactly
    return make_pipeline(scaler, km)


def tie_margins(export: dict, X: np.ndarray) -> np.ndarray:
    """Per row, how far from a tie its two nearest centres are: (d2 - d1) / d2 in float64."""
    mean, scale = np.array(export["scaler"]["mean"]), np.array(export["scaler"]["scale"])
    Z = (X.astype(np.float64) - mean) / scale
    C = (np.array(export["centers"]) - mean) / scale
    d = np.sort(((Z[:, None, :] - C[None]) ** 2).sum(axis=2), axis=1)
    return (d[:, 1] - d[:, 0]) / d[:, 1]


@pytest.mark.integration
def test_the_frozen_pass_is_labeled_by_one_learnt_version(served):
    assert served.learnt_versions >= 6  # an init, then statistics of every pass and half pass
    assert served.versions == {served.version} == {served.learnt_versions}
    assert served.export["version"] == served.version


@pytest.mark.integration
def test_export_holds_fields_scaler_and_centres_in_original_units(served):
    doc = served.export
    assert doc["fields"] == WINE_FIELDS
    assert doc["scaler"]["n_samples_seen"] >= 3 * 178  # learnt from every labeled record
    X = wine_features().astype(np.float64)
    # Original units: the centres lie inside the range of the (transformed) feature values.
    centers = np.array(doc["centers"])
    assert (centers >= X.min(axis=0)).all() and (centers <= X.max(axis=0)).all()
    np.testing.assert_allclose(doc["scaler"]["mean"], X.mean(axis=0), rtol=0.05)
    for key in ("fields", "centers", "weights", "version"):
        assert served.shown[key] == doc[key]
    assert served.shown["scaler"] == doc["scaler"]
    assert served.shown["scale"] == "standard"


@pytest.mark.integration
def test_show_lists_each_field_with_its_transform_mean_and_scale(served):
    lines = served.table.splitlines()
    assert "schema: 13 named fields, --scale standard" in served.table
    mean, scale = served.export["scaler"]["mean"], served.export["scaler"]["scale"]
    row = next(line.split() for line in lines if line.startswith("proline "))
    assert row[1] == "log1p"
    assert float(row[2]) == pytest.approx(mean[-1], rel=1e-5)
    assert float(row[3]) == pytest.approx(scale[-1], rel=1e-5)
    assert next(line.split() for line in lines if line.startswith("alcohol "))[1] == "-"
    assert "centre (original units)" in served.table


@pytest.mark.integration
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_scikit_learn_pipeline_from_the_export_labels_every_record_as_serve_did(served, dtype):
    # serve labels float32 rows (z and the standardized centres in float32); scikit-learn
    # standardizes and measures in either dtype. Rounding differs by ~1e-7 relative, so only a
    # row that close to a tie between two centres could get another label: name any such row.
    X = wine_features()
    expected = sklearn_pipeline(served.export, dtype).predict(X.astype(dtype))
    differ = np.flatnonzero(expected != served.labels)
    margins = tie_margins(served.export, X)
    assert differ.size == 0, f"rows {differ.tolist()}, tie margins {margins[differ].tolist()}"
    assert len(set(expected.tolist())) == 3


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "stream.cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=streamkm_env())


@pytest.mark.integration
@pytest.mark.parametrize("replace", [False, True])
async def test_an_imported_export_is_the_same_model_and_serves_the_same_labels(
    broker, served, replace
):
    model = unique_name("wine-imported")
    options = model_options(
        ImportOptions, broker, model, file=str(served.export_path), replace=replace
    )
    said = await import_model(options)
    assert "13 named fields, --scale standard" in said
    shown = orjson.loads(await show_model(model_options(ShowOptions, broker, model, json=True)))
    for key in ("fields", "scale", "centers", "weights"):
        assert shown[key] == served.shown[key], key
    for key in ("mean", "scale", "n_samples_seen"):
        assert shown["scaler"][key] == served.shown["scaler"][key], key
    np.testing.assert_allclose(shown["scaler"]["var"], served.shown["scaler"]["var"], rtol=1e-14)
    labels, versions, _ = await serve_frozen(broker, model, fields=SPEC, scale="standard")
    assert versions == {1}
    assert labels.tolist() == served.labels.tolist()


@pytest.fixture(scope="module")
async def imported(broker, served) -> str:
    """The export imported as a model of its own."""
    model = unique_name("wine-imported")
    await import_model(model_options(ImportOptions, broker, model, file=str(served.export_path)))
    return model


@pytest.mark.integration
@pytest.mark.parametrize(
    "fields, scale, words",
    [
        (
            SPEC.replace("proline:log1p", "proline"),
            "standard",
            "proline:log1p; this instance reads",
        ),
        (SPEC, "none", "the model has --scale standard; this instance has --scale none"),
        (None, "standard", "this instance reads a features vector (no --fields)"),
    ],
)
def test_serve_with_another_schema_exits_2_naming_the_difference(
    broker, imported, fields, scale, words
):
    topic = unique_name("wine")
    args = ["--fields", fields] if fields else []
    done = cli(
        "serve", "--bootstrap", broker.bootstrap, "--model", imported, "--input-topic", topic,
        "--output-topic", f"{topic}.out", "--metrics-port", "0", "--k", "3", "--scale", scale,
        *args,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"model {imported!r} has another schema" in done.stderr
    assert words in done.stderr


def model_main(capsys, broker, model: str, *args: str) -> tuple[int, str, str]:
    """`streamkm model ARGS` in-process: exit code, stdout, stderr."""
    code = main(["model", *args, "--bootstrap", broker.bootstrap, "--model", model])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.integration
def test_a_replace_from_a_file_without_schema_keeps_the_models(broker, imported, tmp_path, capsys):
    shown = orjson.loads(model_main(capsys, broker, imported, "show", "--json")[1])
    new = np.array(shown["centers"])[::-1] + 0.125
    np.savetxt(tmp_path / "c.csv", new, delimiter=",", fmt="%.17g")  # round-trip digits
    code, out, err = model_main(
        capsys, broker, imported, "import", "--replace", f"{tmp_path}/c.csv"
    )
    assert code == 0, err
    assert "13 named fields, --scale standard" in out
    after = orjson.loads(model_main(capsys, broker, imported, "show", "--json")[1])
    assert after["centers"] == new.tolist()
    assert (after["fields"], after["scaler"]) == (shown["fields"], shown["scaler"])
    np.savetxt(tmp_path / "narrow.csv", new[:, :2], delimiter=",")
    code, _, err = model_main(
        capsys, broker, imported, "import", "--replace", f"{tmp_path}/narrow.csv"
    )
    assert code == 2
    assert "13 named fields, --scale standard of d=13, which a replace keeps" in err
    assert "these centres have d=2" in err


@pytest.mark.integration
def test_export_of_a_scaled_model_to_npy_is_refused_with_exit_2(broker, served, tmp_path, capsys):
    path = tmp_path / "wine.npy"
    code, _, err = model_main(capsys, broker, served.model, "export", str(path))
    assert code == 2
    assert "named fields and a standard scaler, which .npy cannot hold" in err
    assert "export to .json instead" in err
    assert not path.exists()
