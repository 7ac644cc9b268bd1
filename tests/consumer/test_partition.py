"""Partition workers (partition.py) against the real broker: plain def handlers in chunks."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.consumer._util import (
    address,
    committed,
    new_group,
    one_service,
    produce,
    serving,
    transport_of,
    wait_until,
)
from trpc_kafka._consumer import (
    ConsumerMessage,
    ContinueWithoutCommit,
    register_kafka_handler_service,
)
from trpc_kafka._consumer.threads import DaemonThreadPool
from trpc_kafka._runtime.context import Context, current_context
from trpc_kafka._runtime.filters import Handler

NewTopic = Callable[..., str]


def _values(n: int) -> list[bytes]:
    return [str(i).encode() for i in range(n)]


async def test_a_blocked_plain_def_handler_never_stalls_the_other_partitions(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic(partitions=2)
    produce(kafka_bootstrap, topic, [b"a", b"b"], partition=0)
    produce(kafka_bootstrap, topic, _values(50), partition=1)
    server = one_service(address(kafka_bootstrap, topic))
    release = threading.Event()
    seen: list[tuple[int, int]] = []

    def handle(ctx: Context, msg: ConsumerMessage) -> None:
        if msg.partition == 0:
            release.wait(60)
        seen.append((msg.partition, msg.offset))

    register_kafka_handler_service(server, handle)
    try:
        async with serving(server):
            await wait_until(lambda: len(seen) == 50, what="partition 1 while 0 is blocked")
            assert seen == [(1, o) for o in range(50)]
            release.set()
            await wait_until(lambda: len(seen) == 52, what="partition 0 once released")
    finally:
        release.set()
    assert [o for p, o in seen if p == 0] == [0, 1]


async def test_a_plain_def_handler_gets_chunks_not_one_thread_hand_off_per_message(
    kafka_bootstrap: str, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (issue 13): each message was one submit to the pool and one trip back to
    the loop (7k msg/s); now a chunk of up to 500 records goes to the thread at once."""
    produce(kafka_bootstrap, topic, _values(2000))
    group = new_group()
    server = one_service(address(kafka_bootstrap, topic, group))
    submits = 0
    submit = DaemonThreadPool.submit

    def counting_submit(self: DaemonThreadPool, fn: Any, /, *args: Any) -> Any:
        nonlocal submits
        submits += 1
        return submit(self, fn, *args)

    monkeypatch.setattr(DaemonThreadPool, "submit", counting_submit)
    seen: list[tuple[int, bool]] = []

    def handle(ctx: Context, msg: ConsumerMessage) -> None:
        seen.append((msg.offset, current_context() is ctx))

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: len(seen) == 2000, what="2000 messages")
    assert [o for o, _ in seen] == list(range(2000))
    assert all(same for _, same in seen), "each call sees its own context as the current one"
    assert submits <= 200, f"{submits} thread hand-offs for 2000 messages"
    assert committed(kafka_bootstrap, group, topic, 1) == {0: 2000}


async def test_a_plain_def_failure_in_a_chunk_is_retried_then_the_rest_follows_in_order(
    kafka_bootstrap: str, topic: str
) -> None:
    produce(kafka_bootstrap, topic, _values(20))
    group = new_group()
    server = one_service(address(kafka_bootstrap, topic, group))
    calls: list[int] = []

    def handle(ctx: Context, msg: ConsumerMessage) -> None:
        calls.append(msg.offset)
        if msg.offset == 5 and calls.count(5) < 3:
            raise RuntimeError("failing offset 5 twice")
        if msg.offset == 7:
            raise ContinueWithoutCommit

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: 19 in calls, what="the last message")
    assert calls == [0, 1, 2, 3, 4, 5, 5, 5, *range(6, 20)]
    assert committed(kafka_bootstrap, group, topic, 1) == {0: 20}


async def test_a_plain_def_call_over_the_timeout_in_a_chunk_is_retried_after_its_thread(
    kafka_bootstrap: str, topic: str
) -> None:
    produce(kafka_bootstrap, topic, _values(5))
    group = new_group()
    server = one_service(
        address(kafka_bootstrap, topic, group, "maxRetry=2&retryInterval=10"), timeout=0.3
    )
    spans: list[tuple[int, float, float, float | None]] = []

    def handle(ctx: Context, msg: ConsumerMessage) -> None:
        start = time.monotonic()
        if msg.offset == 2 and not any(o == 2 for o, *_ in spans):
            time.sleep(1.0)
        spans.append((msg.offset, start, time.monotonic(), ctx.remaining()))

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: len(spans) == 6, what="5 messages and one retry")
    assert [o for o, *_ in spans] == [0, 1, 2, 2, 3, 4]
    (_, _, late_end, _), (_, retry_start, _, _) = spans[2], spans[3]
    assert retry_start >= late_end, "never two calls of one partition at once"
    assert all(r is not None and r <= 0.3 for *_, r in spans), "the deadline is on the context"
    assert committed(kafka_bootstrap, group, topic, 1) == {0: 5}


async def test_stopping_lets_the_plain_def_call_in_progress_finish_and_takes_no_more(
    kafka_bootstrap: str, topic: str
) -> None:
    produce(kafka_bootstrap, topic, _values(10))
    group = new_group()
    server = one_service(address(kafka_bootstrap, topic, group), close_wait=30)
    inside = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    def handle(ctx: Context, msg: ConsumerMessage) -> None:
        calls.append(msg.offset)
        if msg.offset == 3:
            inside.set()
            release.wait(60)

    register_kafka_handler_service(server, handle)
    try:
        async with serving(server) as task:
            await wait_until(inside.is_set, what="the call of offset 3")
            closing = asyncio.create_task(server.close())
            transport = transport_of(server.service("consumer"))
            await wait_until(lambda: not transport._fetching, what="the stop under way")
            release.set()
            await asyncio.wait_for(closing, 30)
            await asyncio.wait_for(task, 30)
    finally:
        release.set()
    assert calls == [0, 1, 2, 3]
    assert committed(kafka_bootstrap, group, topic, 1) == {0: 4}


async def test_a_plain_def_handler_with_filters_is_called_through_them_per_message(
    kafka_bootstrap: str, topic: str
) -> None:
    """Filters are async and wrap each call: such a service keeps one hand-off per message."""
    produce(kafka_bootstrap, topic, _values(30))
    server = one_service(address(kafka_bootstrap, topic))
    filtered: list[int] = []
    handled: list[tuple[int, bool]] = []

    async def spy(ctx: Context, req: Any, next: Handler) -> Any:
        filtered.append(req.offset)
        return await next(ctx, req)

    def handle(ctx: Context, msg: ConsumerMessage) -> None:
        handled.append((msg.offset, threading.current_thread() is threading.main_thread()))

    server.service("consumer").add_filter(spy)
    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: len(handled) == 30, what="30 messages")
    assert filtered == list(range(30))
    assert handled == [(o, False) for o in range(30)], "in order, off the loop's thread"


# -- messages reused only when nothing else holds them (partition.refcount) --------------------


async def test_a_message_the_handler_keeps_is_never_reused(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    """The worker reuses the last message object only when nothing else holds it; what a
    handler keeps (directly, in a task, in an exception) keeps its own record."""
    topic = new_topic(partitions=1)
    produce(kafka_bootstrap, topic, _values(3000), partition=0)
    server = one_service(address(kafka_bootstrap, topic, extra="retryInterval=1"))
    kept: list[ConsumerMessage] = []
    tasks: list[asyncio.Task[ConsumerMessage]] = []
    errors: list[BaseException] = []
    handled = 0

    async def later(msg: ConsumerMessage) -> ConsumerMessage:
        await asyncio.sleep(0.01)
        return msg

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        nonlocal handled
        handled += 1
        if msg.offset % 7 == 0:
            kept.append(msg)
        elif msg.offset % 7 == 1:
            tasks.append(asyncio.ensure_future(later(msg)))
        elif msg.offset % 7 == 2 and handled == msg.offset + 1:  # its first attempt fails
            try:
                raise ValueError(msg.offset)
            except ValueError as exc:
                errors.append(exc)  # holds the handler's frame, and so the message
                raise

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: handled >= 3000 + len(errors), timeout=60, what="all handled")
    assert len(kept) == len(range(0, 3000, 7))
    assert [(m.offset, m.value) for m in kept] == [(i, str(i).encode()) for i in range(0, 3000, 7)]
    later_msgs = [await t for t in tasks]
    assert [(m.offset, m.value) for m in later_msgs] == [
        (i, str(i).encode()) for i in range(1, 3000, 7)
    ]
    assert errors
    for exc in errors:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_name != "handle":
            tb = tb.tb_next
        assert tb is not None
        msg = tb.tb_frame.f_locals["msg"]
        assert (msg.offset, msg.value) == (exc.args[0], str(exc.args[0]).encode())


async def test_batch_messages_the_handler_keeps_are_never_reused(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic(partitions=1)
    produce(kafka_bootstrap, topic, _values(5000), partition=0)
    server = one_service(address(kafka_bootstrap, topic, extra="batch=100&batchFlush=20"))
    kept_lists: list[list[ConsumerMessage]] = []
    kept: list[ConsumerMessage] = []
    seen: list[int] = []

    async def handle(ctx: Context, msgs: list[ConsumerMessage]) -> None:
        seen.extend(m.offset for m in msgs)
        if len(kept_lists) < 5 and msgs[0].offset % 3 == 0:
            kept_lists.append(msgs)  # the whole list
        else:
            kept.extend(m for m in msgs if m.offset % 5 == 0)  # some of its messages

    from trpc_kafka._consumer import register_batch_handler_service

    register_batch_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: len(seen) >= 5000, timeout=60, what="all handled")
    assert seen == list(range(5000))
    assert kept_lists
    for msgs in kept_lists:
        first = msgs[0].offset
        assert [(m.offset, m.value) for m in msgs] == [
            (first + i, str(first + i).encode()) for i in range(len(msgs))
        ]
    assert kept
    assert all(m.offset % 5 == 0 and m.value == str(m.offset).encode() for m in kept)
    assert len({id(m) for m in kept}) == len(kept)


async def test_contexts_are_reused_only_when_nothing_holds_them(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    """A context is reused for a later record only once nothing holds it: not a handler that
    kept it, nor a task it started (which holds it through the context variables alone), and
    a reused one is as new: fields, metadata and values as for a fresh record."""
    topic = new_topic(partitions=1)
    produce(kafka_bootstrap, topic, _values(3000), partition=0)
    server = one_service(address(kafka_bootstrap, topic))
    kept: list[tuple[int, Context]] = []
    later: list[asyncio.Task[tuple[int, bytes | None]]] = []
    dirty: list[str] = []
    handled = 0

    async def read_later(offset: int) -> tuple[int, bytes | None]:
        await asyncio.sleep(0.005)
        ctx = current_context()
        assert ctx is not None
        return offset, ctx.metadata.get("offset")

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        nonlocal handled
        handled += 1
        fresh = (ctx.deadline, ctx.callee_method, ctx.caller_service, ctx.metadata)
        if fresh != (None, topic, "", {}) or ctx.value("k") is not None:
            dirty.append(f"offset {msg.offset}: {fresh}")
        ctx.metadata["offset"] = str(msg.offset).encode()
        if msg.offset % 5 == 0:
            kept.append((msg.offset, ctx))
        elif msg.offset % 5 == 1:
            later.append(asyncio.create_task(read_later(msg.offset)))  # holds no ctx itself
        else:  # changes it and lets it go
            ctx.deadline = 123.0
            ctx.callee_method = "changed"
            ctx.caller_service = "changed"
            ctx.set_value("k", msg.offset)

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: handled >= 3000, timeout=60, what="all handled")
        results = [await t for t in later]
    assert not dirty, dirty[:5]
    assert len({id(c) for _, c in kept}) == len(kept)
    assert all(c.metadata["offset"] == str(o).encode() for o, c in kept)
    assert results == [(o, str(o).encode()) for o in range(1, 3000, 5)]


async def test_plain_def_handlers_get_reused_objects_only_when_nothing_holds_them(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    """The chunk-per-thread path reuses messages and contexts as the async one does."""
    topic = new_topic(partitions=1)
    produce(kafka_bootstrap, topic, _values(3000), partition=0)
    server = one_service(address(kafka_bootstrap, topic))
    kept: list[tuple[ConsumerMessage, Context]] = []
    copies: list[tuple[int, contextvars.Context]] = []
    dirty: list[str] = []
    handled = 0

    def handle(ctx: Context, msg: ConsumerMessage) -> None:
        nonlocal handled
        handled += 1
        fresh = (ctx.deadline, ctx.callee_method, ctx.metadata, ctx.value("k"))
        if fresh != (None, topic, {}, None) or current_context() is not ctx:
            dirty.append(f"offset {msg.offset}: {fresh}")
        ctx.metadata["offset"] = str(msg.offset).encode()
        if msg.offset % 5 == 0:
            kept.append((msg, ctx))
        elif msg.offset % 5 == 1:
            copies.append((msg.offset, contextvars.copy_context()))  # holds the context only
        else:
            ctx.deadline = 1.0
            ctx.callee_method = "changed"
            ctx.set_value("k", msg.offset)

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: handled >= 3000, timeout=60, what="all handled")
    assert not dirty, dirty[:5]
    assert [(m.offset, m.value, c.metadata["offset"]) for m, c in kept] == [
        (i, str(i).encode(), str(i).encode()) for i in range(0, 3000, 5)
    ]
    seen = [(o, copy.run(current_context)) for o, copy in copies]
    assert [(o, c.metadata["offset"] if c else None) for o, c in seen] == [
        (i, str(i).encode()) for i in range(1, 3000, 5)
    ]
