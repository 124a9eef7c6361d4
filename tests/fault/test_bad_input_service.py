"""Generated bad input among valid records at a running service: every record is accounted for."""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson
import pytest
from bad_values import DIM, bad_values, valid_features
from fault_helpers import produce_large
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka_helpers import consume_records, unique_name

from stream.config import Settings
from stream.service import Service

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REASON = "streamkm.error.reason"


@st.composite
def mixed_streams(draw):
    """(key, value, expected) records: valid ones with id = position, bad ones with a reason."""
    valid = draw(st.lists(valid_features, min_size=20, max_size=80))
    bad = draw(st.lists(bad_values(), min_size=10, max_size=60))
    empty_key = draw(st.lists(st.booleans(), min_size=len(valid), max_size=len(valid)))
    order = draw(st.permutations(range(len(valid) + len(bad))))
    items = [("valid", f, e) for f, e in zip(valid, empty_key, strict=True)]
    items += [("bad", value, reason) for value, reason in bad]
    stream = []
    for pos, j in enumerate(order):
        kind, a, b = items[j]
        if kind == "valid":
            key = b"" if b else b"%d" % pos
            stream.append((key, orjson.dumps({"id": pos, "features": a}), ("valid", pos)))
        else:
            stream.append((b"bad-%d" % pos, a, ("bad", b)))
    return stream


async def _run(bootstrap: str, stream) -> None:
    topic = unique_name("mix")
    await produce_large(bootstrap, topic, [(k, v) for k, v, _ in stream])
    s = Settings(
        bootstrap=bootstrap, input_topic=topic, output_topic=f"{topic}.labels",
        group=unique_name("g"), model=unique_name("m"), k=2, dim=DIM, warmup=20,
        max_batch=64, metrics_port=0, session_timeout=3.0,
    )  # fmt: skip
    service = Service(s)
    task = asyncio.create_task(service.run())
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while service.labeled + service.invalid < len(stream):
            assert not task.done(), task
            assert asyncio.get_running_loop().time() < deadline, (service.labeled, service.invalid)
            await asyncio.sleep(0.05)
        assert not task.done()
    finally:
        service.stopping.set()
        await asyncio.wait_for(task, 30)

    valid = {exp[1]: key for key, _, exp in stream if exp[0] == "valid"}
    bad = [(key, value, exp[1]) for key, value, exp in stream if exp[0] == "bad"]
    labels = await consume_records(bootstrap, s.output_topic, len(valid))
    dead = await consume_records(bootstrap, s.dlq, len(bad))
    got = {orjson.loads(r.value)["id"]: r.key for r in labels}
    assert got == valid  # every valid record once, under its own key (empty keys too)
    assert service.labeled == len(valid) and service.invalid == len(bad)
    by_key = {key: (value, reason) for key, value, reason in bad}
    for rec in dead:
        value, reason = by_key[rec.key]
        headers = dict(rec.headers)
        assert rec.value == value
        assert reason is None or headers[REASON].decode() == reason, (value[:60], headers)
    assert Counter(r.key for r in dead) == Counter(key for key, _, _ in bad)


@settings(max_examples=3, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(mixed_streams())
def test_every_record_of_a_generated_mix_is_labeled_or_dead_lettered_with_its_reason(
    broker, stream
):
    asyncio.run(_run(broker.bootstrap, stream))
