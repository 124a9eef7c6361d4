"""When to write the model's snapshot, and the model as a JSON document for `/model`.

Writer rule: the instance that owns partition 0 of the input topic writes snapshots. The consumer
group always gives that partition to exactly one live member, so when the writer dies the group
hands partition 0, and with it the duty, to a survivor. During a rebalance two instances may both
write for a moment; that is harmless, since a snapshot is a pure function of the updates log up
to its offset and readers keep the one covering the most updates.

A snapshot too large for one Kafka record is written in parts (stream/modellog.py). Once all its
parts are written, the writer deletes (tombstones) the parts of the snapshots it supersedes: its
own earlier ones and, on its first such write, those a scan of the topic finds, left by earlier
writers or by a writer that died half-way. Only snapshots covering fewer updates are deleted, so
the complete snapshot covering the most is never touched, even by two writers at once.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from .files import scaler_json
from .log import SnapshotParts, publish_snapshot, scan_snapshots, tombstone
from .messages import ModelReplica

log = logging.getLogger("streamkm.snapshots")


class SnapshotWriter:
    """Writes a snapshot every `every` model versions, and on request (clean shutdown)."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        model: str,
        every: int,
        origin: str,
        client_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.model = model
        self.every = every
        self.origin = origin
        self.last_version = 0
        # Where to scan the topic for parts left by others (None: only delete our own).
        self._kafka = client_kwargs
        self._scanned = False
        self._written: list[SnapshotParts] = []  # our snapshots in parts, not yet deleted

    def restored(self, version: int) -> None:
        """The replica started from a snapshot of this version: no need to write it again."""
        self.last_version = version

    async def maybe_write(self, replica: ModelReplica, writer: bool, force: bool = False) -> bool:
        """Write a snapshot if this instance is the writer and one is due; True if written."""
        if not writer or not replica.ready:
            return False
        if replica.version == self.last_version:
            return False
        if not force and replica.version - self.last_version < self.every:
            return False
        snapshot = replica.snapshot(self.origin)
        parts = await publish_snapshot(self.producer, self.topic, self.model, snapshot)
        self.last_version = snapshot.state.version
        log.info(
            "wrote snapshot of model %r at version %d (updates offset %d%s)",
            self.model,
            snapshot.state.version,
            snapshot.next_offset,
            "" if parts is None else f", {len(parts.keys)} parts",
        )
        await self._delete_superseded(snapshot.next_offset, parts)
        return True

    async def _delete_superseded(self, next_offset: int, parts: SnapshotParts | None) -> None:
        """Tombstone the parts of snapshots covering fewer updates than the one just written."""
        superseded = [p for p in self._written if p.next_offset < next_offset]
        self._written = [p for p in self._written if p not in superseded]
        if parts is not None:
            self._written.append(parts)
        try:
            if parts is not None and not self._scanned and self._kafka is not None:
                self._scanned = True
                _, found = await scan_snapshots(self.topic, self.model, self._kafka)
                ours = {p.split for p in self._written} | {p.split for p in superseded}
                superseded += [
                    p for p in found if p.next_offset < next_offset and p.split not in ours
                ]
            if superseded:
                await tombstone(self.producer, self.topic, superseded)
                log.info("deleted %d superseded snapshots in parts", len(superseded))
        except KafkaError as exc:
            # Harmless: the parts stay until a later snapshot deletes them.
            log.warning("could not delete superseded snapshot parts: %s", exc)


def model_document(model: str, replica: ModelReplica, extra: dict[str, object]) -> bytes:
    """JSON view of the replica: version, parameters, schema, centres, weights, digest and events.

    Floats are written in their shortest round-trip form, so equal documents mean
    bit-identical centres; `sha256` digests the serialised state to make that one comparison.
    """
    state, params = replica.state, replica.params
    if state is None or params is None:
        return orjson.dumps({"model": model, "version": 0, "ready": False, **extra})
    return orjson.dumps(
        {
            "model": model,
            "ready": True,
            "version": state.version,
            **params.to_json(),
            "scaler": None if state.scaler is None else scaler_json(state.scaler),
            "updates_offset": replica.next_offset,
            "updated_at": replica.updated_at,
            "weights": state.weights.tolist(),
            "centers": state.centers.tolist(),
            "sha256": hashlib.sha256(state.to_bytes()).hexdigest(),
            # Label stability: when cluster ids changed meaning (re-seeds, replaces).
            "reseeds": replica.reseeds,
            "replaces": replica.replaces,
            "base_offset": replica.base_offset,
            "events": [e.to_json() for e in replica.events],
            **extra,
        }
    )
