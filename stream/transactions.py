"""Synthetic card transactions for `streamkm produce --scenario transactions`: named, mixed-scale fields.

Each record is a JSON object such as::

    {"id": "t-91", "amount": 1840.0, "merchant": {"risk": 0.72, "category": "electronics"},
     "hour": 3, "km_from_home": 412.5, "account_age_days": 41, "card_present": false,
     "online": true, "tx_last_24h": 14, "segment": "commuter", "is_fraud": true}

Customers come from a few segments (`SEGMENTS`), each its own distribution over the fields, on
very different scales: amounts in cents to thousands (lognormal), distances in metres to
thousands of kilometres, account ages in days, hours, counts and booleans. A share of the records
(`fraud_share`, 0.7% by default) is injected fraud: an unusual combination drawn over the
customer's own record: 2 to 4 of `FRAUD_TRAITS` (a large amount, far from home, at night, at a
risky merchant, from a young account, in a burst, card not present and online), a different mix
for each, so fraud is rare in every combination rather than one profile a cluster could learn.
`is_fraud` and `segment` are the truth to score against, never features: the recommended
`--fields` spec is `TRANSACTION_FIELDS`, and `feature_matrix` gives the same 8 columns as arrays.

Like the blob generator (`stream.produce`) the stream is pure and deterministic for a seed, in
blocks of `BLOCK` records, block b drawn from ``numpy.random.default_rng([seed, b])``, so it does
not depend on how the producer slices it; each field is drawn for a whole block at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import orjson

__all__ = [
    "BAD_REASONS",
    "FRAUD_SHARE",
    "SEGMENTS",
    "TRANSACTION_FIELDS",
    "Segment",
    "TransactionBlock",
    "TransactionStream",
    "encode_transactions",
    "feature_matrix",
    "transaction_id",
    "transaction_numbers",
]

# The fields `serve --fields` should read: 8 features, the heavy-tailed ones through log1p.
TRANSACTION_FIELDS = (
    "amount:log1p,merchant.risk,hour,km_from_home:log1p,account_age_days:log1p,"
    "card_present,online,tx_last_24h"
)
BLOCK = 4096  # records drawn at once, from one generator
WARMUP_VALID = 100  # the first ids are always valid: the service's warm-up sample is all usable
ID_PREFIX = "t-"  # record ids are "t-<number>"
FRAUD_SHARE = 0.007
FRAUD_MIN_TRAITS, FRAUD_MAX_TRAITS = 2, 4  # traits a fraud shows, of FRAUD_TRAITS
MIN_AMOUNT = 0.5  # smallest payment; keeps a negated amount below log1p's domain (> -1)
BAD_REASONS = ("missing_field", "not_numeric", "out_of_domain")
CATEGORIES = ("grocery", "transport", "restaurant", "fuel", "electronics", "travel", "online")
# Merchant risk by category: beta a, b (means from 0.05 for groceries to 0.27 online).
CATEGORY_RISK = ((2, 40), (2, 30), (2, 25), (2, 25), (3, 9), (3, 10), (3, 8))


@dataclass(frozen=True)
class Segment:
    """One kind of customer: the distribution of each field of their transactions."""

    name: str
    share: float  # of all customers' transactions
    amount: tuple[float, float]  # lognormal: median, sigma of the log
    hour: tuple[float, float]  # peak hour, spread in hours (wrapped around the day)
    km: tuple[float, float]  # lognormal distance from home: median, sigma of the log
    age_days: tuple[float, float]  # lognormal account age: median, sigma of the log
    card_present: float  # P(card present)
    online: float  # P(online | card not present)
    tx_24h: float  # mean of earlier transactions in the last 24 h (Poisson)
    categories: tuple[float, ...]  # weight of each of CATEGORIES


SEGMENTS: tuple[Segment, ...] = (
    Segment("commuter", 0.30, (14.0, 0.6), (13.0, 5.0), (6.0, 0.7), (1400, 0.5),
            0.92, 0.3, 3.0, (3, 5, 2, 2, 0, 0, 0)),
    Segment("online_shopper", 0.20, (55.0, 0.8), (20.0, 3.0), (2.0, 1.0), (900, 0.6),
            0.05, 0.95, 2.0, (0, 0, 0, 0, 3, 0, 7)),
    Segment("family", 0.22, (80.0, 0.7), (15.0, 3.5), (4.0, 0.6), (3000, 0.5),
            0.85, 0.6, 2.0, (6, 0, 2, 2, 0, 0, 1)),
    Segment("student", 0.12, (9.0, 0.6), (16.0, 4.5), (1.5, 0.8), (250, 0.6),
            0.75, 0.8, 5.0, (2, 3, 4, 0, 0, 0, 1)),
    Segment("traveler", 0.08, (150.0, 0.9), (12.0, 5.0), (900.0, 0.8), (2500, 0.5),
            0.70, 0.7, 4.0, (0, 2, 3, 1, 0, 4, 0)),
    Segment("business", 0.08, (400.0, 0.7), (13.0, 3.0), (40.0, 1.0), (3500, 0.4),
            0.50, 0.9, 8.0, (0, 2, 3, 1, 2, 2, 0)),
    Segment("night_shift", 0.08, (25.0, 0.7), (2.0, 2.0), (8.0, 0.7), (1800, 0.5),
            0.85, 0.5, 3.0, (3, 2, 3, 2, 0, 0, 0)),
)  # fmt: skip


@dataclass(frozen=True)
class _Traits:
    """What injected fraud does to a customer's transaction, trait by trait."""

    amount_factor: tuple[float, float] = (8.0, 40.0)  # the customer's amount times U(a, b)
    km: tuple[float, float] = (600.0, 1.0)  # lognormal: median, sigma of the log
    hours: tuple[int, int] = (1, 5)  # uniform in [1, 5)
    risk: tuple[float, float] = (5.0, 3.0)  # beta a, b
    age_days: tuple[float, float] = (15.0, 0.8)  # lognormal: median, sigma of the log
    tx_24h: float = 6.0  # a burst: this many more, Poisson
    # and card_not_present: card_present false, online true, category "online"


FRAUD_TRAITS = ("amount", "km", "hour", "risk", "age_days", "tx_24h", "card_not_present")
# Card-not-present fraud is the common kind. Each trait's weight in the draw of a fraud's traits.
_TRAIT_WEIGHTS = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0])
FRAUD = _Traits()
_CATEGORY_RISK = np.array(CATEGORY_RISK, dtype=np.float64)


@dataclass(frozen=True)
class TransactionBlock:
    """One block of transactions, one array per field; ``bad`` holds "" or the record's DLQ reason."""

    ids: np.ndarray  # int64, consecutive; the record id is transaction_id(number)
    amount: np.ndarray  # float64, rounded to cents
    risk: np.ndarray  # float64 in [0, 1]
    category: np.ndarray  # int64 index into CATEGORIES
    hour: np.ndarray  # int64 0..23
    km: np.ndarray  # float64, 0.1 km
    age_days: np.ndarray  # int64
    card_present: np.ndarray  # bool
    online: np.ndarray  # bool
    tx_24h: np.ndarray  # int64
    segment: np.ndarray  # int64 index into SEGMENTS
    is_fraud: np.ndarray  # bool
    bad: list[str]


class TransactionStream:
    """Deterministic card transactions from customer segments, with injected fraud and bad records."""

    def __init__(
        self, seed: int = 0, invalid_fraction: float = 0.0, fraud_share: float = FRAUD_SHARE
    ) -> None:
        for name, value in (("invalid_fraction", invalid_fraction), ("fraud_share", fraud_share)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        self.seed, self.invalid_fraction, self.fraud_share = seed, invalid_fraction, fraud_share
        shares = np.array([s.share for s in SEGMENTS])
        self._segment_cdf = np.cumsum(shares / shares.sum())
        weights = np.array([s.categories for s in SEGMENTS], dtype=np.float64)
        self._category_cdf = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)

    def block(self, b: int, count: int) -> TransactionBlock:
        """Block ``b`` of a stream of ``count`` records (shorter at the end)."""
        start = b * BLOCK
        n = min(BLOCK, count - start)
        rng = np.random.default_rng([self.seed, b])
        ids = np.arange(start, start + n, dtype=np.int64)
        cols = self._customer_columns(rng, n)
        is_fraud = rng.random(n) < self.fraud_share
        _inject_fraud(rng, cols, is_fraud)
        is_bad = (rng.random(n) < self.invalid_fraction) & (ids >= WARMUP_VALID)
        kinds = rng.integers(0, len(BAD_REASONS), size=n)
        bad = [""] * n
        for i in np.flatnonzero(is_bad).tolist():
            bad[i] = BAD_REASONS[kinds[i]]
        return TransactionBlock(
            ids=ids,
            amount=np.maximum(np.round(cols["amount"], 2), MIN_AMOUNT),
            risk=np.round(cols["risk"], 3),
            category=cols["category"],
            hour=cols["hour"],
            km=np.round(cols["km"], 1),
            age_days=np.maximum(np.rint(cols["age_days"]), 1).astype(np.int64),
            card_present=cols["card_present"],
            online=cols["online"],
            tx_24h=cols["tx_24h"].astype(np.int64),
            segment=cols["segment"],
            is_fraud=is_fraud,
            bad=bad,
        )

    def _customer_columns(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Legitimate transactions: a segment per row, then every field from that segment."""
        seg = _pick(self._segment_cdf, rng.random(n))
        param = _SegmentParams(seg)
        card_present = rng.random(n) < param.one("card_present")
        category = _pick(self._category_cdf[seg], rng.random(n))
        return {
            "segment": seg,
            "amount": _lognormal(rng, param.pair("amount")),
            "hour": np.rint(rng.normal(*param.pair("hour"))).astype(np.int64) % 24,
            "km": _lognormal(rng, param.pair("km")),
            "age_days": _lognormal(rng, param.pair("age_days")),
            "card_present": card_present,
            "online": ~card_present & (rng.random(n) < param.one("online")),
            "tx_24h": rng.poisson(param.one("tx_24h")),
            "category": category,
            "risk": rng.beta(*_CATEGORY_RISK[category].T),
        }

    def blocks(self, count: int) -> Iterator[TransactionBlock]:
        """All blocks of a ``count``-record stream, in id order."""
        for b in range(-(-count // BLOCK)):
            yield self.block(b, count)

    def is_fraud(self, count: int) -> np.ndarray:
        """The `is_fraud` truth of every id of a ``count``-record stream (bool, indexed by id)."""
        parts = [blk.is_fraud for blk in self.blocks(count)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


class _SegmentParams:
    """Per-row parameters: each segment's value of a field, spread over the rows of that segment."""

    def __init__(self, seg: np.ndarray) -> None:
        self.seg = seg

    def pair(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        table = np.array([getattr(s, name) for s in SEGMENTS], dtype=np.float64)
        return table[self.seg, 0], table[self.seg, 1]

    def one(self, name: str) -> np.ndarray:
        return np.array([getattr(s, name) for s in SEGMENTS], dtype=np.float64)[self.seg]


def _inject_fraud(
    rng: np.random.Generator, cols: dict[str, np.ndarray], is_fraud: np.ndarray
) -> None:
    """Give each fraud row of ``cols`` 2 to 4 fraud traits, in place.

    Traits are drawn without replacement with weights `_TRAIT_WEIGHTS` (Efraimidis-Spirakis:
    the traits with the largest u ** (1 / w)).
    """
    n = len(is_fraud)
    keys = rng.random((n, len(FRAUD_TRAITS))) ** (1.0 / _TRAIT_WEIGHTS)
    ranks = (-keys).argsort(axis=1).argsort(axis=1)
    shown = rng.integers(FRAUD_MIN_TRAITS, FRAUD_MAX_TRAITS + 1, size=n)
    has = dict(zip(FRAUD_TRAITS, (is_fraud[:, None] & (ranks < shown[:, None])).T, strict=True))
    factor = rng.uniform(*FRAUD.amount_factor, size=n)
    cols["amount"] = np.where(has["amount"], cols["amount"] * factor, cols["amount"])
    cols["km"] = np.where(has["km"], _lognormal(rng, FRAUD.km, n), cols["km"])
    cols["hour"] = np.where(has["hour"], rng.integers(*FRAUD.hours, size=n), cols["hour"])
    cols["risk"] = np.where(has["risk"], rng.beta(*FRAUD.risk, size=n), cols["risk"])
    cols["age_days"] = np.where(
        has["age_days"], _lognormal(rng, FRAUD.age_days, n), cols["age_days"]
    )
    burst = rng.poisson(FRAUD.tx_24h, size=n)
    cols["tx_24h"] = np.where(has["tx_24h"], cols["tx_24h"] + burst, cols["tx_24h"])
    cnp = has["card_not_present"]
    cols["card_present"] = cols["card_present"] & ~cnp
    cols["online"] = cols["online"] | cnp
    cols["category"] = np.where(cnp, CATEGORIES.index("online"), cols["category"])


def _pick(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index drawn from each cumulative distribution: ``cdf`` one row, or one row per draw."""
    if cdf.ndim == 1:
        return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1).astype(np.int64)
    return np.minimum((u[:, None] >= cdf).sum(axis=1), cdf.shape[1] - 1).astype(np.int64)


def _lognormal(
    rng: np.random.Generator,
    params: tuple[np.ndarray, np.ndarray] | tuple[float, float],
    size: int | None = None,
) -> np.ndarray:
    """Lognormal draws given (median, sigma of the log)."""
    median, sigma = params
    return np.asarray(rng.lognormal(np.log(median), sigma, size=size), dtype=np.float64)


def transaction_id(number: int) -> str:
    """The record id (and Kafka key) of transaction ``number``: "t-<number>"."""
    return f"{ID_PREFIX}{number}"


def transaction_numbers(ids: list[object]) -> np.ndarray:
    """The numbers of record ids "t-<number>" (int64); -1 for anything else (a null id)."""
    out = np.full(len(ids), -1, dtype=np.int64)
    for i, rid in enumerate(ids):
        if isinstance(rid, str) and rid.startswith(ID_PREFIX) and rid[len(ID_PREFIX) :].isdigit():
            out[i] = int(rid[len(ID_PREFIX) :])
    return out


def encode_transactions(block: TransactionBlock) -> list[bytes]:
    """JSON values of a block; bad records are spoiled so the service dead-letters them by reason."""
    segments = [s.name for s in SEGMENTS]
    dumps = orjson.dumps
    values = [
        dumps(
            {
                "id": ID_PREFIX + str(i),
                "amount": a,
                "merchant": {"risk": r, "category": CATEGORIES[c]},
                "hour": h,
                "km_from_home": km,
                "account_age_days": age,
                "card_present": cp,
                "online": on,
                "tx_last_24h": tx,
                "segment": segments[s],
                "is_fraud": f,
            }
        )
        for i, a, r, c, h, km, age, cp, on, tx, s, f in zip(
            block.ids.tolist(),
            block.amount.tolist(),
            block.risk.tolist(),
            block.category.tolist(),
            block.hour.tolist(),
            block.km.tolist(),
            block.age_days.tolist(),
            block.card_present.tolist(),
            block.online.tolist(),
            block.tx_24h.tolist(),
            block.segment.tolist(),
            block.is_fraud.tolist(),
            strict=True,
        )
    ]
    for i, reason in enumerate(block.bad):
        if reason:
            values[i] = _spoil(reason, values[i])
    return values


def _spoil(reason: str, value: bytes) -> bytes:
    """A record that `serve --fields TRANSACTION_FIELDS` must dead-letter with ``reason``."""
    event = orjson.loads(value)
    if reason == "missing_field":
        # Alternate between a top-level and a nested field, so both kinds of path are exercised.
        if int(event["id"][len(ID_PREFIX) :]) % 2:
            del event["amount"]
        else:
            del event["merchant"]["risk"]
    elif reason == "not_numeric":
        event["amount"] = f"{event['amount']:.2f}"  # a number written as a string
    elif reason == "out_of_domain":
        event["amount"] = -1.0 - event["amount"]  # a refund as a negative amount: log1p undefined
    else:
        raise ValueError(f"unknown bad-record kind {reason!r}")
    return orjson.dumps(event)


def feature_matrix(block: TransactionBlock) -> np.ndarray:
    """The float64 (n, 8) features `TRANSACTION_FIELDS` makes of a block (log1p applied)."""
    return np.column_stack(
        [
            np.log1p(block.amount),
            block.risk,
            block.hour,
            np.log1p(block.km),
            np.log1p(block.age_days),
            block.card_present,
            block.online,
            block.tx_24h,
        ]
    ).astype(np.float64)
