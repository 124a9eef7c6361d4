"""Named-field events through a real service (DESIGN.md §7): fields, transforms, scaling.

The data are scikit-learn's bundled real data sets, streamed as JSON objects whose keys are the
data sets' own feature names, so nothing here was shaped to suit streamkm.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from kafka_helpers import consume_records, produce_records
from sklearn.cluster import KMeans as SkKMeans
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.metrics import adjusted_rand_score
from sklearn.preprocessing import StandardScaler
from test_service import running, settings_for, wait_labeled

from model.fields import path_value

pytestmark = pytest.mark.integration


def _events(data, passes: int, seed: int) -> tuple[list[bytes], np.ndarray, list[str]]:
    """`passes` shuffled passes over a data set as JSON objects keyed by its feature names."""
    names = [n.replace(" ", "_") for n in data.feature_names]
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(data.target)) for _ in range(passes)])
    rows = data.data.tolist()
    values = [
        orjson.dumps({"id": int(pos), "row": int(i), **dict(zip(names, rows[i], strict=True))})
        for pos, i in enumerate(order)
    ]
    return values, order, names


async def _serve_events(broker, new_topic, values, names, chunk: int, **settings):
    """Feed the events live, `chunk` at a time, each once the model learnt from the last."""
    topic = await new_topic(partitions=1)
    s = settings_for(broker, topic, fields=",".join(names), **settings)
    async with running(s) as service:
        for start in range(0, len(values), chunk):
            version = service.replica.version
            await produce_records(broker.bootstrap, topic, values[start : start + chunk])
            await wait_labeled(service, min(start + chunk, len(values)), timeout=60)
            if start >= settings["warmup"]:
                assert await service.updates.wait_until(lambda r, v=version: r.version > v, 10)
    out = await consume_records(broker.bootstrap, s.output_topic, len(values))
    labels = np.empty(len(values), np.int64)
    for rec in out:
        body = orjson.loads(rec.value)
        labels[body["id"]] = body["cluster"]
    return labels


async def _last_pass_ari(broker, new_topic, data, passes, k, scale, seed=0):
    values, order, names = _events(data, passes, seed)
    labels = await _serve_events(
        broker,
        new_topic,
        values,
        names,
        k=k,
        scale=scale,
        chunk=len(data.target) // 2,
        warmup=len(data.target),
        refit_every=32,
    )
    last = slice(len(values) - len(data.target), None)
    return adjusted_rand_score(data.target[order[last]], labels[last])


async def test_wine_cultivars_are_recovered_with_standard_scaling(
    broker, new_topic, record_property
):
    wine = load_wine()
    scaled = await _last_pass_ari(broker, new_topic, wine, passes=8, k=3, scale="standard")
    raw = await _last_pass_ari(broker, new_topic, wine, passes=8, k=3, scale="none")
    record_property("wine_ari_standard", scaled)
    record_property("wine_ari_none", raw)
    print(f"wine ARI of the last pass: standard {scaled:.3f}, none {raw:.3f}")
    assert scaled >= 0.85
    assert scaled > raw + 0.2  # raw fields are dominated by proline (hundreds to a thousand)


async def test_breast_cancer_matches_a_batch_scaler_and_kmeans(broker, new_topic, record_property):
    data = load_breast_cancer()
    streamed = await _last_pass_ari(broker, new_topic, data, passes=4, k=2, scale="standard")
    Z = StandardScaler().fit_transform(data.data)
    batch = adjusted_rand_score(
        data.target, SkKMeans(n_clusters=2, n_init=10, random_state=0).fit_predict(Z)
    )
    record_property("breast_cancer_ari_streamed", streamed)
    record_property("breast_cancer_ari_batch", batch)
    print(f"breast cancer ARI: streamed {streamed:.3f}, batch pipeline {batch:.3f}")
    assert abs(streamed - batch) <= 0.05


async def test_bad_events_are_dead_lettered_naming_the_field(broker, new_topic):
    topic = await new_topic(partitions=1)
    ok = {"id": "t-1", "amount": 12.5, "merchant": {"risk": 0.2}, "card_present": True}
    bad = {
        "missing_field": {"id": "b1", "amount": 3.0, "card_present": False},
        "not_numeric": {**ok, "id": "b2", "amount": "12.50"},
        "out_of_domain": {**ok, "id": "b3", "amount": -7.0},
        "not_an_object": [1.0, 2.0, 3.0],
    }
    values = [orjson.dumps({**ok, "id": f"ok-{i}", "amount": float(i)}) for i in range(300)]
    values += [orjson.dumps(v) for v in bad.values()]
    await produce_records(broker.bootstrap, topic, values)
    s = settings_for(
        broker,
        topic,
        k=2,
        warmup=100,
        fields="amount:log1p,merchant.risk,card_present",
        id_field="id",
        scale="standard",
    )
    async with running(s) as service:
        await wait_labeled(service, len(values))
        assert (service.labeled, service.invalid) == (300, 4)
    dead = await consume_records(broker.bootstrap, s.dlq, 4)
    reasons = {dict(r.headers)["streamkm.error.reason"].decode(): r for r in dead}
    assert set(reasons) == set(bad)
    message = dict(reasons["missing_field"].headers)["streamkm.error.message"].decode()
    assert "merchant.risk" in message
    assert "log1p" in dict(reasons["out_of_domain"].headers)["streamkm.error.message"].decode()
    labels = await consume_records(broker.bootstrap, s.output_topic, 300)
    ids = {orjson.loads(r.value)["id"] for r in labels}
    assert ids == {f"ok-{i}" for i in range(300)}


async def test_a_nested_id_field_is_echoed(broker, new_topic):
    topic = await new_topic(partitions=1)
    values = [orjson.dumps({"meta": {"tx": f"t{i}"}, "a": i % 7, "b": i % 3}) for i in range(200)]
    await produce_records(broker.bootstrap, topic, values)
    s = settings_for(broker, topic, k=2, warmup=50, fields="a,b", id_field="meta.tx")
    async with running(s) as service:
        await wait_labeled(service, 200)
    out = await consume_records(broker.bootstrap, s.output_topic, 200)
    assert {orjson.loads(r.value)["id"] for r in out} == {f"t{i}" for i in range(200)}
    assert path_value({"meta": {"tx": 1}}, ("meta", "tx")) == 1
