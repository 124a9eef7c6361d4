"""The card-transaction scenario: a deterministic generator of named-field events, and what
`streamkm produce --scenario transactions` writes to Kafka."""

from __future__ import annotations

import time
from collections import Counter
from types import SimpleNamespace

import numpy as np
import orjson
import pytest
from kafka_helpers import consume_records, unique_name

from model.fields import parse_fields
from stream.fields import decode_events
from stream.produce import produce_transactions, run_produce
from stream.transactions import (
    BAD_REASONS,
    BLOCK,
    CATEGORIES,
    SEGMENTS,
    TRANSACTION_FIELDS,
    WARMUP_VALID,
    TransactionStream,
    encode_transactions,
    feature_matrix,
    transaction_id,
    transaction_numbers,
)

FIELDS = parse_fields(TRANSACTION_FIELDS)


def _events(stream: TransactionStream, count: int) -> list[dict]:
    return [orjson.loads(v) for b in stream.blocks(count) for v in encode_transactions(b)]


def _all_bad(stream: TransactionStream, count: int) -> list[str]:
    return [r for block in stream.blocks(count) for r in block.bad]


# --- the generator ------------------------------------------------------------------------


def test_events_carry_named_fields_of_mixed_types_and_scales():
    events = _events(TransactionStream(seed=1), 3000)
    assert [e["id"] for e in events] == [f"t-{i}" for i in range(3000)]
    for e in events:
        assert set(e) == {
            "id",
            "amount",
            "merchant",
            "hour",
            "km_from_home",
            "account_age_days",
            "card_present",
            "online",
            "tx_last_24h",
            "segment",
            "is_fraud",
        }
        assert type(e["amount"]) is float and e["amount"] > 0
        assert type(e["merchant"]["risk"]) is float and 0 <= e["merchant"]["risk"] <= 1
        assert e["merchant"]["category"] in CATEGORIES
        assert type(e["hour"]) is int and 0 <= e["hour"] <= 23
        assert type(e["km_from_home"]) is float and e["km_from_home"] >= 0
        assert type(e["account_age_days"]) is int and e["account_age_days"] >= 1
        assert type(e["tx_last_24h"]) is int and e["tx_last_24h"] >= 0
        for flag in ("card_present", "online", "is_fraud"):
            assert type(e[flag]) is bool
        assert not (e["card_present"] and e["online"])
        assert e["segment"] in {s.name for s in SEGMENTS}


def test_amounts_and_distances_are_heavy_tailed_across_several_segments():
    block = TransactionStream(seed=2).block(0, BLOCK)
    assert np.quantile(block.amount, 0.99) > 20 * np.median(block.amount)
    assert np.quantile(block.km, 0.99) > 50 * np.median(block.km)
    assert set(np.unique(block.segment).tolist()) == set(range(len(SEGMENTS)))


def test_same_seed_gives_the_same_events_and_another_seed_does_not():
    a, b, c = (
        TransactionStream(seed=s, invalid_fraction=0.05).block(2, 5 * BLOCK) for s in (7, 7, 8)
    )
    assert encode_transactions(a) == encode_transactions(b)
    assert encode_transactions(a) != encode_transactions(c)


def test_blocks_cover_ids_in_order_and_end_short():
    count = 2 * BLOCK + 5
    ids = np.concatenate([b.ids for b in TransactionStream(seed=3).blocks(count)])
    assert np.array_equal(ids, np.arange(count))


@pytest.mark.parametrize("share", [0.005, 0.007, 0.01])
def test_fraud_share_is_near_the_requested_one(share):
    is_fraud = TransactionStream(seed=4, fraud_share=share).is_fraud(100_000)
    assert is_fraud.size == 100_000
    # Binomial: 4 standard deviations at 100,000 records is about 0.0003 for these shares.
    assert abs(is_fraud.mean() - share) < 4 * np.sqrt(share / 100_000)


def test_fraud_is_unusual_in_several_fields_at_once():
    blocks = list(TransactionStream(seed=5).blocks(50_000))
    X = np.concatenate([feature_matrix(b) for b in blocks])
    fraud = np.concatenate([b.is_fraud for b in blocks])
    z = np.abs((X - X[~fraud].mean(axis=0)) / X[~fraud].std(axis=0))
    unusual = (z > 2.5).sum(axis=1)  # fields far out from all legitimate records, per record
    assert np.mean(unusual[fraud] >= 1) > 0.8 > 0.2 > np.mean(unusual[~fraud] >= 1)
    assert np.mean(unusual[fraud] >= 2) > 0.3 > 0.02 > np.mean(unusual[~fraud] >= 2)


def test_truth_fields_are_never_features():
    names = {f.name for f in FIELDS}
    assert len(FIELDS) == 8
    assert not names & {"id", "is_fraud", "segment", "merchant.category"}


def test_valid_events_decode_to_the_feature_matrix():
    block = TransactionStream(seed=6).block(0, 2000)
    decoded = decode_events(encode_transactions(block), FIELDS)
    assert decoded.rejects == []
    assert decoded.ids == [transaction_id(i) for i in range(2000)]
    np.testing.assert_allclose(decoded.X, feature_matrix(block), rtol=1e-6)


def test_invalid_fraction_is_roughly_honoured_and_spares_the_first_records():
    bad = _all_bad(TransactionStream(seed=7, invalid_fraction=0.2), 20_000)
    assert not any(bad[:WARMUP_VALID])
    assert 0.18 < sum(map(bool, bad)) / len(bad) < 0.22
    assert set(filter(None, bad)) == set(BAD_REASONS)
    assert set(BAD_REASONS) == {"missing_field", "not_numeric", "out_of_domain"}


def test_bad_events_decode_to_the_reason_the_generator_promised():
    block = TransactionStream(seed=8, invalid_fraction=0.3).block(0, 3000)
    decoded = decode_events(encode_transactions(block), FIELDS)
    got = {r.index: r.reason for r in decoded.rejects}
    assert got == {i: r for i, r in enumerate(block.bad) if r}
    missing = {r.message for r in decoded.rejects if r.reason == "missing_field"}
    assert any("merchant.risk" in m for m in missing) and any("amount" in m for m in missing)


def test_transaction_numbers_invert_transaction_id():
    ids = [transaction_id(i) for i in (0, 7, 123_456)] + [None, 5, "x-1", "t-", "t-1a"]
    assert transaction_numbers(ids).tolist() == [0, 7, 123_456, -1, -1, -1, -1, -1]


def test_200k_events_are_built_and_encoded_in_a_few_seconds():
    start = time.perf_counter()
    n = sum(len(encode_transactions(b)) for b in TransactionStream(seed=9).blocks(200_000))
    assert n == 200_000
    assert time.perf_counter() - start < 6.0  # about 1 s on one core of a laptop


# --- against the broker -------------------------------------------------------------------


@pytest.mark.integration
async def test_produced_transactions_are_keyed_by_id_with_the_promised_fraud_and_bad_records(
    broker,
):
    topic, count = unique_name("tx"), 5000
    report = await produce_transactions(
        broker.bootstrap, topic, count, seed=11, invalid_fraction=0.05, partitions=3
    )
    records = await consume_records(broker.bootstrap, topic, count)
    stream = TransactionStream(seed=11, invalid_fraction=0.05)
    bad = _all_bad(stream, count)
    assert report.fraud == int(stream.is_fraud(count).sum()) > 0
    assert report.invalid_by_reason == dict(Counter(filter(None, bad)))
    assert sorted(transaction_numbers([r.key.decode() for r in records]).tolist()) == list(
        range(count)
    )
    assert {r.partition for r in records} == {0, 1, 2}
    for r in records:
        if not bad[int(r.key[2:])]:
            assert orjson.loads(r.value)["id"] == r.key.decode()


def _produce_opts(broker, **overrides) -> SimpleNamespace:
    opts = {
        "bootstrap": broker.bootstrap,
        "topic": unique_name(),
        "scenario": "transactions",
        "count": 300,
        "rate": 0,
        "dim": 8,
        "k": 8,
        "seed": 0,
        "drift": 0.0,
        "invalid_fraction": 0.0,
        "format": "json",
        "partitions": 2,
    }
    return SimpleNamespace(**{**opts, **overrides})


@pytest.mark.integration
def test_run_produce_reports_fraud_and_the_fields_to_serve_with(broker, capsys):
    assert run_produce(_produce_opts(broker)) == 0
    out = capsys.readouterr().out
    assert "produced 300 records (0 invalid, " in out and " fraud) to " in out
    assert f"--fields {TRANSACTION_FIELDS} --scale standard" in out


def test_run_produce_refuses_f32_for_transactions(capsys):
    opts = _produce_opts(SimpleNamespace(bootstrap="localhost:1"), format="f32")
    assert run_produce(opts) == 2
    assert "--scenario transactions writes JSON" in capsys.readouterr().err
