"""Batch handlers: ``batch=N`` messages of one partition per call, or fewer after batchFlush."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

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
from trpc_kafka._consumer import ConsumerMessage, register_batch_handler_service
from trpc_kafka._runtime.context import Context, get_context

NewTopic = Callable[..., str]


async def test_full_batches_then_a_partial_one_after_batch_flush(
    kafka_bootstrap: str, topic: str
) -> None:
    produce(kafka_bootstrap, topic, [str(i).encode() for i in range(25)])
    group = new_group()
    server = one_service(address(kafka_bootstrap, topic, group, "batch=10&batchFlush=400"))
    calls: list[tuple[list[int], float]] = []

    async def handle(ctx: Context, msgs: list[ConsumerMessage]) -> None:
        calls.append(([m.offset for m in msgs], time.monotonic()))

    register_batch_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: sum(len(o) for o, _ in calls) == 25)
    assert [o for o, _ in calls] == [list(range(10)), list(range(10, 20)), list(range(20, 25))]
    # The last 5 waited for batchFlush; the full batches did not wait at all.
    assert calls[2][1] - calls[1][1] >= 0.35
    assert calls[1][1] - calls[0][1] < 0.3 * load_factor()
    assert committed(kafka_bootstrap, group, topic, 1) == {0: 25}


async def test_batch_flush_hands_over_a_partial_batch(kafka_bootstrap: str, topic: str) -> None:
    server = one_service(address(kafka_bootstrap, topic, extra="batch=100&batchFlush=300"))
    calls: list[tuple[int, float]] = []

    async def handle(ctx: Context, msgs: list[ConsumerMessage]) -> None:
        calls.append((len(msgs), time.monotonic()))

    register_batch_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: bool(server.service("consumer").transport))
        sent = time.monotonic()
        produce(kafka_bootstrap, topic, [b"a", b"b", b"c"])
        await wait_until(lambda: bool(calls))
    size, when = calls[0]
    assert size == 3
    assert 0.25 <= when - sent < 5.0 * load_factor()


async def test_a_failed_batch_is_retried_whole(kafka_bootstrap: str, topic: str) -> None:
    produce(kafka_bootstrap, topic, [str(i).encode() for i in range(6)])
    group = new_group()
    server = one_service(
        address(kafka_bootstrap, topic, group, "batch=3&batchFlush=100&retryInterval=20")
    )
    calls: list[list[int]] = []

    async def handle(ctx: Context, msgs: list[ConsumerMessage]) -> None:
        calls.append([m.offset for m in msgs])
        if len(calls) <= 2:
            raise RuntimeError("downstream busy")

    register_batch_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: [3, 4, 5] in calls)
    assert calls == [[0, 1, 2], [0, 1, 2], [0, 1, 2], [3, 4, 5]]
    assert committed(kafka_bootstrap, group, topic, 1) == {0: 6}


async def test_batches_never_mix_partitions(kafka_bootstrap: str, new_topic: NewTopic) -> None:
    topic = new_topic(partitions=3)
    for p in range(3):
        produce(kafka_bootstrap, topic, [b"x"] * 40, partition=p)
    server = one_service(address(kafka_bootstrap, topic, extra="batch=16&batchFlush=200"))
    calls: list[list[tuple[int, int]]] = []

    async def handle(ctx: Context, msgs: list[ConsumerMessage]) -> None:
        calls.append([(m.partition, m.offset) for m in msgs])

    register_batch_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: sum(len(c) for c in calls) == 120)
    for call in calls:
        assert len({p for p, _ in call}) == 1
        offsets = [o for _, o in call]
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
        assert len(call) <= 16


async def test_plain_def_batch_handler_with_trpc_meta_of_the_first_message(
    kafka_bootstrap: str, topic: str
) -> None:
    produce(kafka_bootstrap, topic, [b"1"], headers=[("trace", b"first")])
    produce(kafka_bootstrap, topic, [b"2"], headers=[("trace", b"second")])
    server = one_service(
        address(kafka_bootstrap, topic, extra="batch=2&batchFlush=5000&trpcMeta=true")
    )
    seen: list[tuple[dict[str, bytes], bool, bool]] = []

    def handle(ctx: Context, msgs: list[ConsumerMessage]) -> None:
        in_thread = threading.current_thread() is not threading.main_thread()
        seen.append((dict(ctx.metadata), get_context() is ctx, in_thread))

    register_batch_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: bool(seen))
    assert seen == [({"trace": b"first"}, True, True)]


async def test_a_batch_spans_chunks_in_offset_order_then_flushes_the_rest() -> None:
    """The worker alone (no broker): chunks of 3, 4 and 5 records make batches of 5 that cross
    chunk boundaries, each message over its own record, then a partial batch after the flush;
    the handled offset follows each batch."""
    from confluent_kafka import Message

    from trpc_kafka._consumer.partition import HandlerSpec, PartitionState, PartitionWorker
    from trpc_kafka._consumer.raw import Claim, GroupSessionView

    class Source:
        def session_view(self) -> GroupSessionView:
            return GroupSessionView("g", "", None, ())

        def high_watermark(self, topic: str, partition: int) -> int | None:
            return None

    calls: list[list[tuple[int, int, bytes | None, bool]]] = []
    handled: list[int] = []
    state = PartitionState("t", 3, Claim(Source(), "t", 3))

    async def handle(ctx: Context, msgs: list[ConsumerMessage]) -> None:
        handled.append(state.handled)
        calls.append([(m.partition, m.offset, m.value, m.topic == "t") for m in msgs])

    spec = HandlerSpec(
        service_name="s",
        call=handle,
        is_async=True,
        batch=5,
        batch_flush=0.2,
        timeout=None,
        limiter=None,
        trpc_meta=False,
        max_retry=0,
        retry_interval=0.01,
        dead_letter=None,
        fail=lambda exc: None,
    )
    records = [Message(topic="t", partition=3, offset=o, value=b"%d" % o) for o in range(12)]
    worker = PartitionWorker(spec, state)
    for chunk in (records[:3], records[3:7], records[7:]):
        worker.push((chunk, sum(map(len, chunk))))
    worker.start()
    await wait_until(lambda: sum(map(len, calls)) == 12, what="12 records in batches")
    worker.request_stop()
    assert worker.task is not None
    await asyncio.wait_for(worker.task, 5.0)
    expected = [(3, o, b"%d" % o, True) for o in range(12)]
    assert calls == [expected[:5], expected[5:10], expected[10:]]
    assert handled == [-1, 4, 9]
    assert state.handled == 11
    assert state.taken == 12
    assert state.claim.initial_offset == 0
