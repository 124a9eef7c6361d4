"""Per-partition offsets of a fetched batch: where to resume, and what to commit."""

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from stream.batches import partition_offsets


def record(partition: int, offset: int, topic: str = "t") -> ConsumerRecord:
    return ConsumerRecord(topic, partition, offset, 0, 0, None, b"v", None, 0, 1, [])


def test_first_offset_and_the_offset_after_the_last_record_per_partition():
    records = [record(0, 5), record(0, 6), record(0, 9), record(2, 100), record(2, 101)]
    first, commit = partition_offsets(records)
    assert first == {TopicPartition("t", 0): 5, TopicPartition("t", 2): 100}
    assert commit == {TopicPartition("t", 0): 10, TopicPartition("t", 2): 102}


def test_partitions_of_different_topics_are_kept_apart():
    first, commit = partition_offsets([record(0, 1, "a"), record(0, 7, "b")])
    assert first == {TopicPartition("a", 0): 1, TopicPartition("b", 0): 7}
    assert commit == {TopicPartition("a", 0): 2, TopicPartition("b", 0): 8}


def test_no_records_means_nothing_to_commit():
    assert partition_offsets([]) == ({}, {})
