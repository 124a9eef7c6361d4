"""Topic administration: wait for a broker, create the topics streamkm needs, count partitions."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError, for_code

__all__ = [
    "BrokerUnreachable",
    "TopicError",
    "TopicSpec",
    "client_config",
    "ensure_topics",
    "partition_count",
    "snapshots_topic",
    "updates_topic",
    "wait_for_broker",
]

_FIRST_BACKOFF_S = 0.1
_MAX_BACKOFF_S = 2.0


def updates_topic(model: str) -> str:
    """The model's updates log: one partition, shared by every instance and api (DESIGN.md §2)."""
    return f"{model}.updates"


def snapshots_topic(model: str) -> str:
    """The model's compacted topic of snapshots (DESIGN.md §2)."""
    return f"{model}.snapshots"


class BrokerUnreachable(ConnectionError):
    """No Kafka broker answered at the bootstrap address within the timeout."""

    def __init__(self, bootstrap: str, timeout: float) -> None:
        super().__init__(
            f"no Kafka broker answered at {bootstrap} within {timeout:g}s; "
            "check --bootstrap, or start one with `streamkm broker`"
        )
        self.bootstrap = bootstrap
        self.timeout = timeout


class TopicError(RuntimeError):
    """A topic could not be created or described."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic streamkm needs: its name, partition count and whether it is compacted."""

    name: str
    partitions: int = 1
    compact: bool = False


def client_config(bootstrap: str, client_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """aiokafka client keyword arguments: ``client_kwargs`` with ``bootstrap_servers`` set.

    ``client_kwargs`` may already hold ``bootstrap_servers`` (as ``kafka_client_kwargs()`` of the
    settings does); the explicit ``bootstrap`` wins.
    """
    return {**(client_kwargs or {}), "bootstrap_servers": bootstrap}


async def _list_topics(bootstrap: str, client_kwargs: dict[str, Any]) -> set[str]:
    """Connect once and return the topic names the broker reports."""
    consumer = AIOKafkaConsumer(**client_config(bootstrap, client_kwargs))
    try:
        await consumer.start()
        return set(await consumer.topics())
    finally:
        await consumer.stop()  # also after a failed start, which leaves a client behind


async def wait_for_broker(
    bootstrap: str, timeout: float, client_kwargs: dict[str, Any] | None = None
) -> None:
    """Retry a metadata request with bounded exponential backoff until the broker answers."""
    kwargs = dict(client_kwargs or {})
    deadline = time.monotonic() + timeout
    backoff = _FIRST_BACKOFF_S
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrokerUnreachable(bootstrap, timeout)
        # aiokafka's own bootstrap retry would outlast our deadline; cap each try by what is left.
        attempt_ms = max(int(min(remaining, 5.0) * 1000), 100)
        try:
            await asyncio.wait_for(
                _list_topics(bootstrap, {"request_timeout_ms": attempt_ms, **kwargs}),
                timeout=remaining,
            )
            return
        except (KafkaConnectionError, KafkaError, OSError, TimeoutError):
            pass
        await asyncio.sleep(min(backoff, max(deadline - time.monotonic(), 0)))
        backoff = min(backoff * 2, _MAX_BACKOFF_S)


async def ensure_topics(
    bootstrap: str,
    specs: list[TopicSpec],
    client_kwargs: dict[str, Any] | None = None,
    replication_factor: int = 1,
) -> None:
    """Create each topic in ``specs`` that does not exist yet; existing ones are left as they are."""
    if not specs:
        return
    admin = AIOKafkaAdminClient(**client_config(bootstrap, client_kwargs))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        for spec in missing:
            if spec.partitions < 1:
                raise TopicError(f"topic {spec.name!r} needs at least 1 partition")
            configs = {"cleanup.policy": "compact"} if spec.compact else {}
            new = NewTopic(spec.name, spec.partitions, replication_factor, topic_configs=configs)
            # One request per topic, so a topic created concurrently by another instance
            # only costs us that one TopicAlreadyExistsError.
            response = await admin.create_topics([new])
            for name, code, *rest in response.topic_errors:
                error = for_code(code)
                if code == 0 or error is TopicAlreadyExistsError:
                    continue
                detail = rest[0] if rest and rest[0] else error.__name__
                raise TopicError(
                    f"could not create topic {name!r} on {bootstrap}: {detail} (error code {code})"
                )
    finally:
        await admin.close()


async def partition_count(
    bootstrap: str, topic: str, client_kwargs: dict[str, Any] | None = None
) -> int:
    """Return how many partitions ``topic`` has; TopicError if the broker does not know it."""
    consumer = AIOKafkaConsumer(**client_config(bootstrap, client_kwargs))
    await consumer.start()
    try:
        partitions = await consumer._client.fetch_all_metadata()  # fresh, not cached metadata
        found = partitions.partitions_for_topic(topic)
    finally:
        await consumer.stop()
    if not found:
        raise TopicError(f"topic {topic!r} does not exist on {bootstrap}")
    return len(found)
