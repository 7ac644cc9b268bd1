"""Handler failures: retries, ContinueWithoutCommit, the service timeout (dead letters:
test_dead_letter.py)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.consumer._util import (
    address,
    committed,
    load_factor,
    new_group,
    one_service,
    produce,
    serving,
    wait_until,
)
from trpc_kafka._consumer import (
    ConsumerMessage,
    ContinueWithoutCommit,
    register_kafka_handler_service,
)
from trpc_kafka._runtime import errors as codes
from trpc_kafka._runtime.context import Context
from trpc_kafka._runtime.errors import TrpcError
from trpc_kafka._runtime.filters import Handler

NewTopic = Callable[..., str]


class BoomError(Exception):
    pass


async def test_retry_until_max_retry_then_move_on(
    kafka_bootstrap: str, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    produce(kafka_bootstrap, topic, [b"bad", b"good"])
    group = new_group()
    server = one_service(address(kafka_bootstrap, topic, group, "maxRetry=2&retryInterval=100"))
    calls: list[tuple[int, float]] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        calls.append((msg.offset, time.monotonic()))
        if msg.value == b"bad":
            raise BoomError("no good")

    register_kafka_handler_service(server, handle)
    with caplog.at_level(logging.ERROR, logger="trpc_kafka.consumer"):
        async with serving(server):
            await wait_until(lambda: any(o == 1 for o, _ in calls))
    offsets = [o for o, _ in calls]
    assert offsets == [0, 0, 0, 1], "1 call + maxRetry=2 retries, then the next message"
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(calls[:3])]
    assert all(gap >= 0.09 for gap in gaps), gaps
    assert committed(kafka_bootstrap, group, topic, 1) == {0: 2}
    text = caplog.text
    assert f"handle fail: service consumer topic {topic} partition 0 offset 0" in text
    assert "BoomError: no good" in text
    assert "giving up after 3 attempts (maxRetry=2)" in text


async def test_default_retries_forever_every_interval(kafka_bootstrap: str, topic: str) -> None:
    produce(kafka_bootstrap, topic, [b"x", b"y"])
    group = new_group()
    server = one_service(address(kafka_bootstrap, topic, group, "retryInterval=20"))
    calls: list[int] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        calls.append(msg.offset)
        if len(calls) < 30:
            raise BoomError("again")

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: 1 in calls)
    assert calls == [0] * 30 + [1]
    assert committed(kafka_bootstrap, group, topic, 1) == {0: 2}


async def test_continue_without_commit(kafka_bootstrap: str, new_topic: NewTopic) -> None:
    topic = new_topic(partitions=2)
    produce(kafka_bootstrap, topic, [b"ok", b"skip", b"ok"], partition=0)
    produce(kafka_bootstrap, topic, [b"ok", b"skip"], partition=1)
    group = new_group()
    server = one_service(address(kafka_bootstrap, topic, group))
    calls: list[tuple[int, int]] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        calls.append((msg.partition, msg.offset))
        if msg.value == b"skip":
            raise ContinueWithoutCommit

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: len(calls) == 5)
        await asyncio.sleep(0.3 * load_factor())  # a retry (every 50 ms) would show up here
    assert sorted(calls) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)], "never retried"
    # Partition 0: the later success covers the skipped offset. Partition 1: the skipped
    # message is the last one, so the committed position stays before it.
    assert committed(kafka_bootstrap, group, topic, 2) == {0: 3, 1: 1}


async def test_service_timeout_bounds_one_handling(kafka_bootstrap: str, topic: str) -> None:
    produce(kafka_bootstrap, topic, [b"slow"])
    group = new_group()
    server = one_service(
        address(kafka_bootstrap, topic, group, "maxRetry=1&retryInterval=10"), timeout=0.3
    )
    attempts: list[tuple[float, float | None]] = []
    cancelled: list[float] = []
    failures: list[BaseException] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        start = time.monotonic()
        attempts.append((start, ctx.remaining()))
        if len(attempts) == 1:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.append(time.monotonic() - start)
                raise

    async def spy(ctx: Context, req: Any, next: Handler) -> Any:
        try:
            return await next(ctx, req)
        except BaseException as exc:
            failures.append(exc)
            raise

    server.service("consumer").add_filter(spy)
    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: len(attempts) == 2)
        await wait_until(lambda: committed(kafka_bootstrap, group, topic, 1) == {0: 1})
    assert len(cancelled) == 1 and 0.25 <= cancelled[0] < 2.0 * load_factor()
    remaining = attempts[0][1]
    assert remaining is not None and 0 < remaining <= 0.3
    err = failures[0]
    assert isinstance(err, TrpcError) and err.code == codes.RET_SERVER_TIMEOUT_ERR


async def test_service_timeout_with_a_plain_def_handler(kafka_bootstrap: str, topic: str) -> None:
    """A thread cannot be interrupted: the late call counts as failed, and the retry waits
    for the thread to end (never two calls of one partition at once)."""
    produce(kafka_bootstrap, topic, [b"slow"])
    server = one_service(
        address(kafka_bootstrap, topic, new_group(), "maxRetry=1&retryInterval=10"), timeout=0.2
    )
    spans: list[tuple[float, float]] = []

    def handle(ctx: Context, msg: ConsumerMessage) -> None:
        start = time.monotonic()
        if not spans:
            time.sleep(0.6)
        spans.append((start, time.monotonic()))

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: len(spans) == 2)
    (_, first_end), (second_start, _) = spans
    assert second_start >= first_end
