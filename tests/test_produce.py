"""The synthetic blob producer: a deterministic generator and what it writes to Kafka."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import orjson
import pytest
from aiokafka.partitioner import murmur2
from hypothesis import given
from hypothesis import strategies as st
from kafka_helpers import consume_records, unique_name

from stream.codec import decode_batch
from stream.produce import (
    BAD_REASONS,
    BLOCK,
    WARMUP_VALID,
    BlobStream,
    encode_block,
    murmur2_partitions,
    produce_blobs,
    run_produce,
)


def _all_bad(stream: BlobStream, count: int) -> list[str]:
    return [r for block in stream.blocks(count) for r in block.bad]


# --- the generator ------------------------------------------------------------------------


def test_same_seed_gives_the_same_stream_and_another_seed_does_not():
    a, b, c = (BlobStream(3, 4, seed=s, invalid_fraction=0.1).block(1, 10_000) for s in (7, 7, 8))
    assert np.array_equal(a.X, b.X) and np.array_equal(a.truth, b.truth) and a.bad == b.bad
    assert not np.array_equal(a.X, c.X)


def test_blocks_cover_ids_in_order_with_truth_in_range():
    count = 2 * BLOCK + 5
    blocks = list(BlobStream(2, 5, seed=1).blocks(count))
    ids = np.concatenate([b.ids for b in blocks])
    truth = np.concatenate([b.truth for b in blocks])
    assert np.array_equal(ids, np.arange(count))
    assert truth.min() >= 0 and truth.max() < 5
    assert all(b.X.dtype == np.float32 and b.X.shape == (len(b.ids), 2) for b in blocks)


def test_records_sit_around_their_blob_centre_with_unit_noise():
    stream = BlobStream(4, 3, seed=2)
    block = stream.block(0, BLOCK)
    residual = block.X - stream.centres[block.truth]
    assert np.abs(residual.mean(axis=0)).max() < 0.1
    assert np.allclose(residual.std(axis=0), 1.0, atol=0.1)


def test_embedding_records_are_unit_vectors_nearest_their_own_topic():
    stream = BlobStream(dim=384, k=16, seed=4, embeddings=True)
    block = stream.block(0, 3000)
    norms = np.linalg.norm(block.X.astype(np.float64), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(stream.centres, axis=1), 1.0)
    nearest = np.argmax(block.X @ stream.centres.T, axis=1)  # cosine similarity
    np.testing.assert_array_equal(nearest, block.truth)
    # Not trivially tight: a record is clearly off its topic direction.
    similarity = np.einsum("ij,ij->i", block.X, stream.centres[block.truth])
    assert 0.7 < similarity.mean() < 0.95


def test_embedding_streams_are_deterministic_and_differ_from_blobs():
    a = BlobStream(dim=64, k=4, seed=1, embeddings=True).block(0, 100)
    b = BlobStream(dim=64, k=4, seed=1, embeddings=True).block(0, 100)
    blobs = BlobStream(dim=64, k=4, seed=1).block(0, 100)
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.allclose(a.X, blobs.X)


def test_drift_moves_each_centre_by_drift_units_per_10k_records():
    stream = BlobStream(3, 2, seed=3, drift=2.5)
    moved = np.linalg.norm(stream.centres_at(40_000) - stream.centres_at(0), axis=1)
    assert np.allclose(moved, 10.0)
    block = stream.block(5, 6 * BLOCK)
    residual = block.X - stream.centres_at(0)[block.truth]
    expected = block.ids[:, None] * (2.5 / 10_000) * stream.directions[block.truth]
    assert np.abs((residual - expected).mean(axis=0)).max() < 0.1


def test_centres_are_well_separated_when_there_is_room():
    c = BlobStream(2, 5, seed=4).centres
    gaps = [np.linalg.norm(c[i] - c[j]) for i in range(5) for j in range(i)]
    assert min(gaps) >= 6.0


@pytest.mark.parametrize("fmt", ["json", "f32"])
def test_invalid_fraction_is_roughly_honoured_and_spares_the_first_records(fmt):
    bad = _all_bad(BlobStream(2, 3, seed=5, invalid_fraction=0.2, fmt=fmt), 20_000)
    assert not any(bad[:WARMUP_VALID])
    assert 0.18 < sum(map(bool, bad)) / len(bad) < 0.22
    assert set(filter(None, bad)) == set(BAD_REASONS[fmt])


@pytest.mark.parametrize("fmt", ["json", "f32"])
def test_bad_records_decode_to_the_reason_the_generator_promised(fmt):
    stream = BlobStream(3, 3, seed=6, invalid_fraction=0.3, fmt=fmt)
    block = stream.block(0, 2000)
    decoded = decode_batch(encode_block(block, fmt), fmt, dim=3)
    got = {r.index: r.reason for r in decoded.rejects}
    promised = {i: r for i, r in enumerate(block.bad) if r}
    assert got == promised


def test_valid_json_records_carry_id_features_and_truth():
    block = BlobStream(2, 3, seed=7).block(0, 10)
    values = [orjson.loads(v) for v in encode_block(block, "json")]
    assert [v["id"] for v in values] == list(range(10))
    assert [v["truth"] for v in values] == block.truth.tolist()
    assert np.allclose([v["features"] for v in values], block.X)


@given(st.lists(st.binary(max_size=40), max_size=50), st.integers(1, 64))
def test_partitions_match_kafkas_default_partitioner(keys, partitions):
    expected = [(murmur2(k) & 0x7FFFFFFF) % partitions for k in keys]
    assert murmur2_partitions(keys, partitions).tolist() == expected


# --- against the broker -------------------------------------------------------------------


@pytest.mark.integration
async def test_produced_records_carry_each_id_once_with_keys_and_promised_bad_records(broker):
    topic, count = unique_name("blobs"), 5000
    report = await produce_blobs(
        broker.bootstrap, topic, count, dim=3, k=4, seed=11, invalid_fraction=0.05, partitions=3
    )
    records = await consume_records(broker.bootstrap, topic, count)
    bad = _all_bad(BlobStream(3, 4, seed=11, invalid_fraction=0.05), count)
    assert report.invalid == sum(map(bool, bad))
    assert report.invalid_by_reason == dict(Counter(filter(None, bad)))
    assert sorted(int(r.key) for r in records) == list(range(count))
    assert {r.partition for r in records} == {0, 1, 2}
    for r in records:
        if not bad[int(r.key)]:
            value = orjson.loads(r.value)
            assert value["id"] == int(r.key)
            assert 0 <= value["truth"] < 4


@pytest.mark.integration
async def test_a_rate_limited_run_still_delivers_every_record(broker):
    topic = unique_name()
    report = await produce_blobs(broker.bootstrap, topic, 300, rate=3000, fmt="f32")
    records = await consume_records(broker.bootstrap, topic, 300)
    assert report.count == 300
    assert sorted(int(r.key) for r in records) == list(range(300))


@pytest.mark.integration
def test_run_produce_prints_a_closing_line_and_exits_0(broker, capsys):
    opts = SimpleNamespace(
        bootstrap=broker.bootstrap,
        topic=unique_name(),
        scenario="blobs",
        count=300,
        rate=0,
        dim=2,
        k=3,
        seed=0,
        drift=0.0,
        invalid_fraction=0.0,
        format="f32",
        partitions=2,
    )
    assert run_produce(opts) == 0
    assert "produced 300 records (0 invalid)" in capsys.readouterr().out
