"""Offset commits in the background: acknowledged batches are committed while the next ones run.

Offsets are cumulative per partition, so one commit covers every acknowledged batch before it,
and a failed commit costs nothing but a retry with the next one: the records behind it were
already delivered, so at worst a crash relabels them (at-least-once), never loses them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError, KafkaTimeoutError
from aiokafka.structs import OffsetAndMetadata

log = logging.getLogger("streamkm.commits")

Offsets = dict[TopicPartition, int]
_COMMIT_TIMEOUT_S = 10.0


class Committer:
    """Commits the highest acknowledged offset of each partition, one request at a time."""

    def __init__(
        self, consumer: AIOKafkaConsumer, on_commit: Callable[[float], None] | None = None
    ) -> None:
        self._consumer = consumer
        self._on_commit = on_commit
        self._due: Offsets = {}
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def add(self, offsets: Offsets) -> None:
        """Mark offsets as safe to commit (their batch is acknowledged) and start a commit."""
        _merge(self._due, offsets)
        if self._task is None or self._task.done():
            self._start()

    async def flush(self) -> None:
        """Commit everything due now, within one commit timeout in all; raises KafkaError if
        the broker refuses or does not answer in time."""
        deadline = time.monotonic() + _COMMIT_TIMEOUT_S
        if self._task is not None:
            # Waited for, never cancelled: its offsets go back to _due if it fails.
            await asyncio.wait({self._task}, timeout=_COMMIT_TIMEOUT_S)
            if not self._task.done():
                raise _unanswered()
        if self._due:
            offsets, self._due = self._due, {}
            try:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _unanswered()
                await self._commit(offsets, left)
            except KafkaError:
                _merge(self._due, offsets)
                raise

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop what is due for partitions this instance no longer owns."""
        for tp in partitions:
            self._due.pop(tp, None)

    def _start(self) -> None:
        if not self._due:
            return
        offsets, self._due = self._due, {}
        self._task = asyncio.create_task(self._background(offsets), name="commit")

    async def _background(self, offsets: Offsets) -> None:
        try:
            await self._commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # A rebalance moved the partitions: their new owner reads from the last commit.
            log.warning("commit refused after a rebalance (%s); the new owner relabels", exc)
            return
        except KafkaError as exc:
            if not self._failing:
                log.warning("offset commit failed (%s); retrying with the next one", exc)
            self._failing = True
            _merge(self._due, offsets)
            return
        self._failing = False
        if self._due:
            self._start()

    async def _commit(self, offsets: Offsets, timeout: float = _COMMIT_TIMEOUT_S) -> None:
        t0 = time.perf_counter()
        request = {tp: OffsetAndMetadata(off, "") for tp, off in offsets.items()}
        try:
            # aiokafka retries some commit errors forever (an unknown partition, say, after the
            # broker lost its topics); bound it, and retry from here with the next commit.
            await asyncio.wait_for(self._consumer.commit(request), timeout)
        except TimeoutError:
            raise _unanswered() from None
        if self._on_commit is not None:
            self._on_commit(time.perf_counter() - t0)


def _unanswered() -> KafkaTimeoutError:
    return KafkaTimeoutError(f"offset commit unanswered after {_COMMIT_TIMEOUT_S:g}s")


def _merge(into: Offsets, offsets: Offsets) -> None:
    for tp, off in offsets.items():
        if off > into.get(tp, -1):
            into[tp] = off
