"""Shared fixtures: one embedded broker per session, unique topics per test."""

from __future__ import annotations

import os

# scikit-learn's check_array_api_input (tests/estimators) needs SciPy's array API mode, which
# SciPy reads once, at its first import; NumPy input behaves the same either way.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

from collections.abc import Awaitable, Callable, Iterator

import pytest
from kafka_helpers import unique_name

from model.topics import TopicSpec, ensure_topics
from stream.broker import EmbeddedBroker

NewTopic = Callable[..., Awaitable[str]]


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """One Tansu broker for the whole session; tests must not stop or restart it."""
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def private_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, for tests that kill or restart it."""
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def new_topic(broker: EmbeddedBroker) -> NewTopic:
    """Factory: ``await new_topic(partitions=4, compact=False)`` creates a uniquely named topic."""

    async def create(partitions: int = 1, compact: bool = False, prefix: str = "t") -> str:
        name = unique_name(prefix)
        await ensure_topics(broker.bootstrap, [TopicSpec(name, partitions, compact)])
        return name

    return create


@pytest.fixture
async def topic(new_topic: NewTopic) -> str:
    """A fresh single-partition topic."""
    return await new_topic()
