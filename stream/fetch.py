"""Reading the input: one `getmany`, and a record batch no consumer can read as one clear error.

A batch whose codec is unknown, whose compressed bytes do not decompress, or whose CRC fails
cannot be read by any client, so its raw values cannot be dead-lettered either. aiokafka raises
on every fetch of it (with the codec library's own exception type), returns none of the
partition's records fetched with it, and never moves past it. Skipping it would lose records
silently, so the service stops (exit 2) with the partition and offsets an operator needs
(docs/architecture.md, *Compression*).
"""

from __future__ import annotations

import gzip
import logging
import zlib
from types import TracebackType
from typing import Any, NamedTuple

import cramjam
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CorruptRecordException, UnsupportedCodecError
from aiokafka.structs import ConsumerRecord

__all__ = ["CODECS", "UnreadableBatchError", "fetch"]

log = logging.getLogger("streamkm.fetch")

# Codec ids in the low three bits of a record batch's attributes, as Kafka numbers them.
CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}

# What aiokafka lets through from unpacking a batch: its own two errors, gzip's and cramjam's.
_UNREADABLE = (
    UnsupportedCodecError,
    CorruptRecordException,
    gzip.BadGzipFile,
    EOFError,
    zlib.error,
    cramjam.DecompressionError,
)


class UnreadableBatchError(Exception):
    """A record batch of the input that cannot be read; the message says where and what to do."""

    def __init__(self, message: str, tp: TopicPartition | None, offset: int | None) -> None:
        super().__init__(message)
        self.tp = tp
        self.offset = offset  # first offset of the unreadable batch, when known


async def fetch(
    consumer: AIOKafkaConsumer, timeout_ms: int, max_records: int, *, group: str, bootstrap: str
) -> dict[TopicPartition, list[ConsumerRecord]]:
    """`consumer.getmany`, raising UnreadableBatchError (logged at ERROR) for an unreadable batch.

    `group` and `bootstrap` only go into the error's advice.
    """
    try:
        return await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
    except _UNREADABLE as exc:
        err = _unreadable(exc, group, bootstrap)
        log.error("%s", err)
        raise err from exc


class _Where(NamedTuple):
    """Where the unreadable batch is, as far as aiokafka's frames tell."""

    tp: TopicPartition | None = None
    first: int | None = None  # the batch's first offset
    end: int | None = None  # the offset after its last record
    codec: int | None = None  # its codec id


def _unreadable(exc: BaseException, group: str, bootstrap: str) -> UnreadableBatchError:
    at = _locate(exc.__traceback__)
    where = "a partition" if at.tp is None else f"partition {at.tp.partition} of {at.tp.topic!r}"
    if at.first is not None:
        last = "" if at.end is None else f"-{at.end - 1}"
        where = f"offsets {at.first}{last} of {where}"
    what = f"{type(exc).__name__}: {exc}"
    if at.codec is not None:
        what = f"compression {CODECS.get(at.codec, f'id {at.codec}, unknown')}; {what}"
    head = f"cannot read the record batch at {where} ({what})"
    if isinstance(exc, UnsupportedCodecError) and at.codec in CODECS:
        # A known codec without its library: this installation is at fault, not the data.
        return UnreadableBatchError(
            f"{head}. This installation lacks the codec's library: install the `cramjam` "
            "package (a dependency of streamkm) and start again; nothing was skipped",
            at.tp,
            at.first,
        )
    partition = "<topic>:<partition>" if at.tp is None else f"{at.tp.topic}:{at.tp.partition}"
    end = "<the batch's last offset + 1>" if at.end is None else at.end
    return UnreadableBatchError(
        f"{head}. No client can read these records, so they cannot be dead-lettered either; "
        "streamkm stops here rather than skip them, and commits what came before. To go on, "
        "have the producer resend the records if it can, then move the group past the batch "
        f"(its records are then lost): kafka-consumer-groups.sh --bootstrap-server {bootstrap} "
        f"--group {group} --topic {partition} --reset-offsets --to-offset {end} --execute",
        at.tp,
        at.first,
    )


def _locate(tb: TracebackType | None) -> _Where:
    """The partition, offsets and codec of the batch aiokafka was unpacking when it raised.

    aiokafka unpacks batches in `PartitionRecords._unpack_records`, whose frame holds the
    partition `tp`, the batch `next_batch` and `self.next_fetch_offset`; tests pin this.
    """
    found: dict[str, Any] | None = None
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "_unpack_records":
            found = tb.tb_frame.f_locals
        tb = tb.tb_next
    if found is None:
        return _Where()
    tp, batch = found.get("tp"), found.get("next_batch")
    position = getattr(found.get("self"), "next_fetch_offset", None)
    if batch is not None and (position is None or position < batch.next_offset):
        return _Where(tp, batch.base_offset, batch.next_offset, batch.compression_type)
    # Raised while reading the next batch's header: that batch starts where the last one ended.
    return _Where(tp, position)
