"""Dead letters (dead_letter.py): what a message whose retries are exhausted becomes; its
producer is the pool's, and a copy too large to send is cut to fit, not retried for ever."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Message

from tests.consumer._util import (
    address,
    committed,
    new_group,
    one_service,
    produce,
    serving,
    wait_until,
)
from trpc_kafka._consumer import (
    DEAD_LETTER_HEADER_ATTEMPTS,
    DEAD_LETTER_HEADER_ERROR,
    DEAD_LETTER_HEADER_OFFSET,
    DEAD_LETTER_HEADER_PARTITION,
    DEAD_LETTER_HEADER_SERVICE,
    DEAD_LETTER_HEADER_TOPIC,
    ConsumerMessage,
    register_batch_handler_service,
    register_kafka_handler_service,
)
from trpc_kafka._consumer.dead_letter import DEAD_LETTER_HEADER_TRUNCATED
from trpc_kafka._producer import pool as pool_mod
from trpc_kafka._runtime.context import Context

NewTopic = Callable[..., str]
BIG = 200_000  # above the DLQ producer's message.max.bytes (maxMessageBytes, 131072 by default)


class BoomError(Exception):
    pass


async def test_dead_letter_topic_gets_the_message_then_it_is_committed(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()
    dead = new_topic()
    produce(kafka_bootstrap, topic, [b"poison"], key=b"k1", headers=[("trace", b"abc")])
    produce(kafka_bootstrap, topic, [b"fine"])
    group = new_group()
    extra = f"maxRetry=1&retryInterval=10&deadLetterTopic={dead}"
    server = one_service(address(kafka_bootstrap, topic, group, extra), name="orders")
    handled: list[int] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        if msg.value == b"poison":
            raise BoomError("cannot parse")
        handled.append(msg.offset)

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: handled == [1])
    assert committed(kafka_bootstrap, group, topic, 1) == {0: 2}
    records = _read_all(kafka_bootstrap, dead, 1)
    record = records[0]
    assert (record.key(), record.value()) == (b"k1", b"poison")
    headers = dict(record.headers() or [])
    assert headers["trace"] == b"abc"
    assert headers[DEAD_LETTER_HEADER_ERROR] == b"cannot parse"
    assert headers[DEAD_LETTER_HEADER_TOPIC] == topic.encode()
    assert headers[DEAD_LETTER_HEADER_PARTITION] == b"0"
    assert headers[DEAD_LETTER_HEADER_OFFSET] == b"0"
    assert headers[DEAD_LETTER_HEADER_ATTEMPTS] == b"2"
    assert headers[DEAD_LETTER_HEADER_SERVICE] == b"orders"


async def test_dead_letter_of_a_batch(kafka_bootstrap: str, new_topic: NewTopic) -> None:
    topic = new_topic()
    dead = new_topic()
    produce(kafka_bootstrap, topic, [b"a", b"b", b"c"])
    group = new_group()
    extra = f"batch=3&batchFlush=100&maxRetry=1&retryInterval=10&deadLetterTopic={dead}"
    server = one_service(address(kafka_bootstrap, topic, group, extra))
    calls: list[list[int]] = []

    async def handle(ctx: Context, msgs: list[ConsumerMessage]) -> None:
        calls.append([m.offset for m in msgs])
        raise BoomError("batch failed")

    register_batch_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: len(calls) == 2)
        await wait_until(lambda: committed(kafka_bootstrap, group, topic, 1) == {0: 3})
    assert calls == [[0, 1, 2], [0, 1, 2]]
    values = sorted(r.value() or b"" for r in _read_all(kafka_bootstrap, dead, 3))
    assert values == [b"a", b"b", b"c"]


def _read_all(bootstrap: str, topic: str, count: int) -> list[Message]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + 60
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    assert len(out) == count
    return out


async def _give_up_on_big(
    bootstrap: str, topic: str, dead: str, caplog: pytest.LogCaptureFixture
) -> Message:
    """Serve ``topic`` with a handler failing the big message; its dead letter, once the
    message after it was handled and both are committed."""
    value = os.urandom(BIG)  # incompressible: the DLQ producer compresses (gzip by default)
    produce(bootstrap, topic, [value], key=b"k", headers=[("trace", b"abc")])
    produce(bootstrap, topic, [b"next"])
    group = new_group()
    extra = f"maxRetry=1&retryInterval=10&deadLetterTopic={dead}"
    server = one_service(address(bootstrap, topic, group, extra), name="orders")
    handled: list[bytes] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        if msg.value == value:
            raise ValueError("too big to handle")
        handled.append(msg.value or b"")

    register_kafka_handler_service(server, handle)
    with caplog.at_level(logging.WARNING, logger="trpc_kafka"):
        async with serving(server):
            await wait_until(lambda: handled == [b"next"], timeout=60, what="the next message")
            await wait_until(lambda: committed(bootstrap, group, topic, 1) == {0: 2}, timeout=60)
    [record] = _read_all(bootstrap, dead, 1)
    got = record.value() or b""
    assert 0 < len(got) < len(value) and value.startswith(got)  # a cut copy of the value
    assert record.key() == b"k"
    headers = dict(record.headers() or [])
    assert headers[DEAD_LETTER_HEADER_TOPIC] == topic.encode()
    assert headers[DEAD_LETTER_HEADER_OFFSET] == b"0"
    assert headers[DEAD_LETTER_HEADER_SERVICE] == b"orders"
    raw_note = headers[DEAD_LETTER_HEADER_TRUNCATED]
    assert isinstance(raw_note, bytes)
    note = raw_note.decode()
    assert f"value {len(value)}->{len(got)} bytes" in note, note
    assert f"{topic}[0]@0" in caplog.text and "sending it cut" in caplog.text
    assert "KafkaException" not in caplog.text and "KafkaError{" not in caplog.text
    return record


async def test_a_copy_larger_than_message_max_bytes_is_cut_not_retried_for_ever(
    kafka_bootstrap: str, new_topic: NewTopic, caplog: pytest.LogCaptureFixture
) -> None:
    record = await _give_up_on_big(kafka_bootstrap, new_topic(), new_topic(), caplog)
    assert len(record.value() or b"") <= 131072
    assert dict(record.headers() or [])["trace"] == b"abc"  # the record's own headers fit


async def test_a_topic_with_a_lower_limit_gets_a_smaller_cut(
    kafka_bootstrap: str, new_topic: NewTopic, caplog: pytest.LogCaptureFixture
) -> None:
    # The broker refuses the first cut (131072 bytes) for this topic: halved until it fits.
    dead = new_topic(config={"max.message.bytes": "20000"})
    record = await _give_up_on_big(kafka_bootstrap, new_topic(), dead, caplog)
    assert len(record.value() or b"") < 20000


async def test_the_dead_letter_producer_is_the_pools(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic, dead = new_topic(), new_topic()
    produce(kafka_bootstrap, topic, [b"poison"])
    group = new_group()
    extra = f"maxRetry=1&retryInterval=10&deadLetterTopic={dead}"
    server = one_service(address(kafka_bootstrap, topic, group, extra))
    seen: list[int] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        seen.append(len(pool_mod.live_entries()))
        raise ValueError("no")

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: committed(kafka_bootstrap, group, topic, 1) == {0: 1})
        assert seen[0] == 0  # nothing pooled before the first dead letter
        [entry] = pool_mod.live_entries()
        assert entry.refs == 1
    assert _read_all(kafka_bootstrap, dead, 1)[0].value() == b"poison"
    await wait_until(lambda: pool_mod.live_entries() == [], what="the pool closed at shutdown")
