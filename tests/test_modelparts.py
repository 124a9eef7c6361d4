"""Split model messages: every replica reassembles the same messages at the same offsets.

Pure tests, no Kafka: records are fed to `ModelReplica.apply_record` as the updates log would
deliver them, with small part sizes so that small models make many-part messages.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import model.parts as modelparts
from engine import ModelState, batch_stats
from model.messages import (
    INIT,
    STATS,
    TYPE_HEADER,
    ModelParams,
    ModelReplica,
    decode_snapshot,
    encode_init,
    encode_snapshot,
)
from model.parts import (
    MAX_PARTS,
    PART_BYTES,
    MessageTooLarge,
    Part,
    PartError,
    PendingMessage,
    decode_pending,
    encode_pending,
    part_headers,
    read_part,
    split_body,
)

K, D = 3, 4
CENTERS = np.arange(K * D, dtype=np.float64).reshape(K, D)


@dataclasses.dataclass(frozen=True)
class Record:
    """One record of the updates log, as a test writes it."""

    kind: str
    value: bytes
    part: Part | None = None

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        if self.part is None:
            return [(TYPE_HEADER, self.kind.encode())]
        return part_headers(self.kind, self.part)


def init_body() -> bytes:
    return encode_init(ModelState.initial(CENTERS), ModelParams(K, D, 500.0), "test")


def stats_body(seed: int) -> bytes:
    X = np.random.default_rng(seed).normal(size=(20, D)) * 5 + 5
    return batch_stats(X, CENTERS)[2].to_bytes()


def parts_of(kind: str, body: bytes, split: str, size: int = 61) -> list[Record]:
    chunks = split_body(body, size)
    return [Record(kind, c, Part(split, i, len(chunks))) for i, c in enumerate(chunks, 1)]


def feed(replica: ModelReplica, records: list[Record], start: int = 0) -> dict[int, str]:
    """Apply records from offset `start`; returns {offset: kind} of the messages applied."""
    applied = {}
    for offset, rec in enumerate(records[start:], start):
        done = replica.apply_record(offset, rec.headers, rec.value, 1_000 + offset)
        if done is not None:
            applied[offset] = done.kind
    return applied


def same_replicas(a: ModelReplica, b: ModelReplica) -> bool:
    """Identical state, history, log position and parts held: snapshots equal byte for byte."""
    return encode_snapshot(a.snapshot()) == encode_snapshot(b.snapshot())


# --- the parts of one message --------------------------------------------------------------


def test_a_body_that_fits_in_one_record_is_not_split():
    body = b"x" * PART_BYTES
    assert split_body(body) == [body]


@given(size=st.integers(1, 5000), part=st.integers(1, 700))
def test_parts_are_at_most_the_part_size_and_join_back_to_the_body(size, part):
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    part = max(part, -(-size // MAX_PARTS))
    chunks = split_body(body, part)
    assert b"".join(chunks) == body
    assert all(0 < len(c) <= part for c in chunks)


def test_a_message_beyond_the_parts_a_replica_reads_is_refused_when_written():
    with pytest.raises(MessageTooLarge, match=f"at most {MAX_PARTS}"):
        split_body(b"x" * (MAX_PARTS * 10 + 1), 10)


def test_split_headers_round_trip_and_unsplit_records_have_none():
    part = Part("ab12", 2, 5)
    assert read_part(part_headers(STATS, part)) == part
    assert read_part([(TYPE_HEADER, b"stats")]) is None
    assert read_part(None) is None


@pytest.mark.parametrize("text", [b"", b"2", b"0/3", b"4/3", b"a/b", b"-1/2"])
def test_a_malformed_part_header_is_refused(text):
    with pytest.raises(PartError):
        read_part([("streamkm.split", b"ab12"), ("streamkm.part", text)])


# --- the replica: applied at the last part -------------------------------------------------


def test_split_messages_apply_at_their_last_part_like_whole_ones():
    whole = [Record(INIT, init_body()), Record(STATS, stats_body(1))]
    split = parts_of(INIT, init_body(), "i") + parts_of(STATS, stats_body(1), "s")
    reference, replica = ModelReplica(), ModelReplica()
    assert feed(reference, whole) == {0: INIT, 1: STATS}
    applied = feed(replica, split)
    n_init = len(parts_of(INIT, init_body(), "i"))
    assert applied == {n_init - 1: INIT, len(split) - 1: STATS}
    assert replica.state.equals(reference.state)
    assert replica.version == 2
    assert replica.base_offset == n_init - 1  # the init took effect at its last part
    assert replica.events[0].offset == n_init - 1


def test_a_malformed_split_record_is_skipped_and_still_counts_as_read():
    replica = ModelReplica()
    feed(replica, [Record(INIT, init_body())])
    assert replica.apply_record(1, [("streamkm.split", b"x"), ("streamkm.part", b"9")], b"") is None
    assert replica.next_offset == 2


# --- interleaved writers, repeated parts, gaps ---------------------------------------------


@st.composite
def interleaved_log(draw, drop: bool = False):
    """The log after an init: several writers' split stats messages, parts interleaved (each
    writer's in order), some parts repeated right after themselves (producer retries), and,
    with `drop`, some parts lost or moved."""
    writers = draw(st.integers(1, 4))
    queues = []
    for w in range(writers):
        queue = []
        for m in range(draw(st.integers(1, 3))):
            size = draw(st.integers(40, 400))
            queue += parts_of(STATS, stats_body(10 * w + m), f"w{w}m{m}", size)
        queues.append(queue)
    records = [Record(INIT, init_body())]
    while any(queues):
        w = draw(st.sampled_from([i for i, q in enumerate(queues) if q]))
        rec = queues[w].pop(0)
        records.append(rec)
        if draw(st.booleans()) and draw(st.booleans()):
            records.append(rec)  # a retry wrote it twice
    if drop:
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(1, len(records) - 1))
            moved = records.pop(i)
            if draw(st.booleans()):
                records.insert(draw(st.integers(1, len(records))), moved)
    return records


def complete_at(records: list[Record]) -> dict[int, str]:
    """Where messages complete, by the rules written out once more: a message begins at a part
    1, takes each next part in turn, ignores repeats, and is forgotten at a gap or when done."""
    done: dict[int, str] = {}
    have: dict[str, int] = {}
    for offset, rec in enumerate(records):
        if rec.part is None:
            done[offset] = rec.kind
            continue
        split, index = rec.part.split, rec.part.index
        if split not in have:
            if index == 1:
                have[split] = 0
            else:
                continue
        if index <= have[split]:
            continue
        if index != have[split] + 1:
            del have[split]
            continue
        have[split] = index
        if index == rec.part.count:
            done[offset] = rec.kind
            del have[split]
    return done


def whole_messages_at(records: list[Record], offsets: dict[int, str]) -> ModelReplica:
    """A replica given each message whole, at the offsets where the split ones completed."""
    replica = ModelReplica()
    bodies: dict[str, dict[int, bytes]] = {}
    for offset, rec in enumerate(records):
        if rec.part is None:
            replica.apply(offset, rec.kind, rec.value, 1_000 + offset)
            continue
        bodies.setdefault(rec.part.split, {}).setdefault(rec.part.index, rec.value)
        if offset in offsets:
            body = b"".join(v for _, v in sorted(bodies[rec.part.split].items()))
            replica.apply(offset, rec.kind, body, 1_000 + offset)
    return replica


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=interleaved_log())
def test_interleaved_and_repeated_parts_apply_every_message_once_at_its_last_part(records):
    replica = ModelReplica()
    applied = feed(replica, records)
    assert applied == complete_at(records)
    assert len(applied) == 1 + len({r.part.split for r in records if r.part is not None})
    assert whole_messages_at(records, applied).state.equals(replica.state)
    assert replica.snapshot().pending == ()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=interleaved_log(drop=True))
def test_a_message_with_a_part_missing_or_out_of_order_is_never_applied(records):
    replica = ModelReplica()
    applied = feed(replica, records)
    assert applied == complete_at(records)
    lost = {
        split
        for split in {r.part.split for r in records if r.part is not None}
        if len({r.part.index for r in records if r.part and r.part.split == split})
        < next(r.part.count for r in records if r.part and r.part.split == split)
    }
    assert not lost & {records[o].part.split for o in applied if records[o].part is not None}
    assert whole_messages_at(records, applied).state.equals(replica.state)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=interleaved_log(drop=True), cut=st.integers(1, 10_000))
def test_a_replica_restored_from_a_snapshot_taken_mid_message_ends_identical(records, cut):
    cut = 1 + cut % (len(records) - 1 or 1)
    following, early = ModelReplica(), ModelReplica()
    feed(following, records)
    feed(early, records[:cut])
    restored = ModelReplica()
    restored.restore(decode_snapshot(encode_snapshot(early.snapshot("test"))))
    feed(restored, records, start=cut)
    assert same_replicas(following, restored)
    assert following.state.equals(restored.state)


# --- the crash rule: half-written messages are dropped, memory stays bounded ---------------


def test_a_half_written_message_is_never_applied_and_dropped_after_the_span(monkeypatch):
    monkeypatch.setattr(modelparts, "PENDING_SPAN", 10)
    half = parts_of(STATS, stats_body(1), "dead")[:2]
    records = [Record(INIT, init_body()), *half] + [Record(STATS, stats_body(2))] * 9
    replica = ModelReplica()
    feed(replica, records)
    assert replica.pending_parts == 2  # offset 1 + 10 = 11 is not yet past the span
    feed(replica, [*records, Record(STATS, stats_body(3))], start=len(records))
    assert replica.pending_parts == 0
    assert replica.version == 1 + 10  # the init and the whole stats, never the half message
    # Its remaining parts, should they come after all, are ignored.
    rest = parts_of(STATS, stats_body(1), "dead")[2:]
    assert feed(replica, [*records, records[-1], *rest], start=len(records) + 1) == {}


def test_parts_held_beyond_the_byte_bound_drop_the_oldest_message(monkeypatch):
    monkeypatch.setattr(modelparts, "PENDING_BYTES", len(stats_body(2)) + 100)
    a = parts_of(STATS, stats_body(1), "a", 100)
    b = parts_of(STATS, stats_body(2), "b", 100)
    assert len(a) > 6
    replica = ModelReplica()
    feed(replica, [Record(INIT, init_body()), *a[:6], *b, *a[6:]])
    assert replica.version == 2  # b completed; a was dropped while b's parts came in
    assert replica.pending_parts == 0


def test_a_message_announcing_too_many_parts_is_not_held():
    replica = ModelReplica()
    feed(replica, [Record(INIT, init_body())])
    rec = Record(STATS, b"x", Part("big", 1, MAX_PARTS + 1))
    assert replica.apply_record(1, rec.headers, rec.value) is None
    assert replica.pending_parts == 0


# --- snapshots carry the parts held ----------------------------------------------------------


def test_a_snapshot_without_parts_held_keeps_format_1():
    replica = ModelReplica()
    feed(replica, [Record(INIT, init_body())])
    value = encode_snapshot(replica.snapshot())
    assert value[4] == 1
    assert decode_snapshot(value).pending == ()


def test_a_snapshot_with_parts_held_round_trips_them():
    records = [Record(INIT, init_body()), *parts_of(STATS, stats_body(1), "s")[:3]]
    replica = ModelReplica()
    feed(replica, records)
    snap = decode_snapshot(encode_snapshot(replica.snapshot()))
    assert snap.pending == (
        PendingMessage("s", STATS, snap.pending[0].count, 1, tuple(r.value for r in records[1:])),
    )


@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=8),
            st.sampled_from([INIT, STATS, None]),
            st.lists(st.binary(max_size=50), min_size=1, max_size=4),
        ),
        max_size=4,
    )
)
def test_pending_parts_round_trip(items):
    pending = tuple(
        PendingMessage(split, kind, len(parts) + 1, i, tuple(parts))
        for i, (split, kind, parts) in enumerate(items)
    )
    assert decode_pending(encode_pending(pending)) == pending


def test_truncated_pending_parts_are_refused():
    data = encode_pending([PendingMessage("s", STATS, 3, 1, (b"abc", b"def"))])
    with pytest.raises(PartError):
        decode_pending(data[:-1])
