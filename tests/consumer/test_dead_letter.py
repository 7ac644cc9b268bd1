"""Dead letters (dead_letter.py): what a message whose retries are exhausted becomes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

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
from trpc_kafka._runtime.context import Context

NewTopic = Callable[..., str]


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
    deadline = time.monotonic() + 30
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    assert len(out) == count
    return out
