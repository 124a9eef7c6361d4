"""Batches on their way through the service: fetched and decoded, then sent and awaiting acks."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from .codec import DecodedBatch


@dataclass
class Fetched:
    """Records of one getmany, decoded, waiting to be labeled."""

    records: list[ConsumerRecord]
    decoded: DecodedBatch
    poll_s: float
    decode_s: float
    at: float = field(default_factory=time.monotonic)
    first: dict[TopicPartition, int] = field(default_factory=dict)  # first offset per partition
    next: dict[TopicPartition, int] = field(default_factory=dict)  # offset to commit per partition


def partition_offsets(
    records: list[ConsumerRecord],
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """First offset and offset-to-commit of each partition in records grouped by partition."""
    first: dict[TopicPartition, int] = {}
    last: dict[TopicPartition, int] = {}
    prev = None
    for r in records:
        if prev is None or r.partition != prev.partition or r.topic != prev.topic:
            tp = TopicPartition(r.topic, r.partition)
            first.setdefault(tp, r.offset)
        last[tp] = r.offset
        prev = r
    return first, {tp: off + 1 for tp, off in last.items()}


@dataclass
class Sent:
    """A batch handed to the producer, waiting for the broker's acknowledgements."""

    fetched: Fetched
    done: asyncio.Future[Any]
    stamps_ms: np.ndarray  # input timestamps of the labeled records
    n_anomalies: int
    stages: dict[str, float]
    sent_at: float
    acked_at: float = 0.0  # perf_counter when the last acknowledgement arrived
    acked_ms: float = 0.0  # wall clock (ms) at that moment


def mark_acked(sent: Sent) -> None:
    """Record when (monotonic and wall clock) the last acknowledgement of a batch arrived."""
    sent.acked_at = time.perf_counter()
    sent.acked_ms = time.time() * 1000.0


def ignore_outcome(future: asyncio.Future[Any]) -> None:
    """Done-callback for futures nobody awaits: fetch the outcome so asyncio does not warn."""
    if not future.cancelled():
        future.exception()
