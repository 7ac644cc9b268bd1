"""A kafka service against the real broker: delivery, order, commits, concurrency, flow control."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.consumer._util import (
    address,
    committed,
    load_factor,
    new_group,
    offsets_by_partition,
    one_service,
    produce,
    produce_spread,
    serving,
    transport_of,
    wait_assigned,
    wait_until,
)
from trpc_kafka._consumer import (
    ConsumerMessage,
    register_kafka_consumer_service,
    register_kafka_handler_service,
)
from trpc_kafka._consumer import transport as transport_mod
from trpc_kafka._runtime.context import Context, current_context, get_context

NewTopic = Callable[..., str]


async def test_every_message_in_partition_order_and_committed_at_close(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic(partitions=3)
    produce_spread(kafka_bootstrap, topic, 3, 200)
    group = new_group()
    server = one_service(address(kafka_bootstrap, topic, group))
    seen: list[tuple[int, int, bytes | None]] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        seen.append((msg.partition, msg.offset, msg.value))

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: len(seen) >= 600, what="600 messages")
    assert len(seen) == 600
    by_partition = offsets_by_partition([(p, o) for p, o, _ in seen])
    for p in range(3):
        assert by_partition[p] == list(range(200)), f"partition {p} out of order or incomplete"
    assert all(value == f"{p}:{o}".encode() for p, o, value in seen)
    assert committed(kafka_bootstrap, group, topic, 3) == {0: 200, 1: 200, 2: 200}


async def test_message_fields(kafka_bootstrap: str, topic: str) -> None:
    before = int(time.time() * 1000)
    produce(kafka_bootstrap, topic, [b"v"], key=b"k", headers=[("h1", b"x"), ("h2", b"")])
    server = one_service(address(kafka_bootstrap, topic))
    got: list[ConsumerMessage] = []

    class Handler:
        async def handle(self, ctx: Context, msg: ConsumerMessage) -> None:
            got.append(msg)

    register_kafka_consumer_service(server.service("consumer"), Handler())
    async with serving(server):
        await wait_until(lambda: bool(got))
    msg = got[0]
    assert (msg.topic, msg.partition, msg.offset) == (topic, 0, 0)
    assert (msg.key, msg.value) == (b"k", b"v")
    assert msg.headers == [("h1", b"x"), ("h2", b"")]
    assert msg.timestamp is not None and before - 5000 <= msg.timestamp <= before + 60_000
    assert "offset=0" in repr(msg)


async def test_partitions_are_handled_concurrently(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    """A handler blocked on partition 0 does not hold partition 1 back."""
    topic = new_topic(partitions=2)
    produce(kafka_bootstrap, topic, [b"a", b"b"], partition=0)
    produce(kafka_bootstrap, topic, [str(i).encode() for i in range(50)], partition=1)
    server = one_service(address(kafka_bootstrap, topic))
    release = asyncio.Event()
    seen: list[tuple[int, int]] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        if msg.partition == 0:
            await release.wait()
        seen.append((msg.partition, msg.offset))

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: len(seen) == 50, what="partition 1 while 0 is blocked")
        assert all(p == 1 for p, _ in seen)
        release.set()
        await wait_until(lambda: len(seen) == 52)
    assert offsets_by_partition(seen)[0] == [0, 1]


async def test_plain_def_handler_runs_off_the_loop(kafka_bootstrap: str, topic: str) -> None:
    produce(kafka_bootstrap, topic, [b"1", b"2", b"3"])
    server = one_service(address(kafka_bootstrap, topic))
    loop_thread = threading.get_ident()
    calls: list[tuple[int, bool, int]] = []

    def handle(ctx: Context, msg: ConsumerMessage) -> None:
        time.sleep(0.01)  # blocking is fine here
        calls.append((threading.get_ident(), get_context() is ctx, msg.offset))

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: len(calls) == 3)
    assert all(thread != loop_thread for thread, _, _ in calls)
    assert all(same for _, same, _ in calls)
    assert [o for _, _, o in calls] == [0, 1, 2]


async def test_async_handler_sees_its_context(kafka_bootstrap: str, topic: str) -> None:
    produce(kafka_bootstrap, topic, [b"1"])
    server = one_service(address(kafka_bootstrap, topic))
    seen: list[Context] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        assert current_context() is ctx
        seen.append(ctx)

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: bool(seen))
    ctx = seen[0]
    assert ctx.rpc_name == "/trpc.kafka.consumer.service/handle"
    assert ctx.callee_method == topic
    assert ctx.callee_service == "consumer"
    assert ctx.deadline is None
    assert ctx.metadata == {}


async def test_a_stuck_partition_is_paused_and_bounded_while_others_flow(
    kafka_bootstrap: str, new_topic: NewTopic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poll loop pauses the partition whose buffer is full, never itself."""
    monkeypatch.setattr(transport_mod, "PAUSE_MESSAGES", 1500)
    monkeypatch.setattr(transport_mod, "RESUME_MESSAGES", 300)
    monkeypatch.setattr(transport_mod, "STALL_TIME", 60.0)  # only the hard bound here
    topic = new_topic(partitions=2)
    produce(kafka_bootstrap, topic, [b"x" * 100] * 8000, partition=0)
    server = one_service(address(kafka_bootstrap, topic))
    release = asyncio.Event()
    counts = [0, 0]

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        if msg.partition == 0:
            await release.wait()
        counts[msg.partition] += 1

    register_kafka_handler_service(server, handle)
    async with serving(server):
        service = server.service("consumer")
        await wait_assigned(service, 2)
        state = transport_of(service)._states[(topic, 0)]
        await wait_until(lambda: state.paused, what="partition 0 paused")
        # Partition 1 is served while partition 0 stays paused with a bounded buffer.
        produce(kafka_bootstrap, topic, [b"y"] * 300, partition=1)
        peak = 0
        deadline = time.monotonic() + 30
        while counts[1] < 300 and time.monotonic() < deadline:
            peak = max(peak, state.delivered - state.taken)
            await asyncio.sleep(0.01)
        assert counts[1] == 300
        assert state.paused
        assert peak <= 1500 + transport_mod.CONSUME_BATCH
        assert state.delivered < 5000, "librdkafka kept fetching a paused partition"
        release.set()
        await wait_until(lambda: counts[0] == 8000, timeout=60, what="all of partition 0")
        # The poll thread resumes a drained partition on its next pass (it may have paused
        # it again while the last refill was being handled).
        await wait_until(lambda: not state.paused, timeout=30, what="partition 0 resumed")


class _CountingConsumer:
    """The service's librdkafka consumer, noting at each ``consume()`` how many records it
    returned earlier that the handler has not finished yet."""

    def __init__(self, inner: Any, handled: Callable[[], int]) -> None:
        self._inner = inner
        self._handled = handled
        self.returned = 0
        self.waiting_at_consume: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def consume(self, num: int, timeout: float) -> list[Any]:
        self.waiting_at_consume.append(self.returned - self._handled())
        records: list[Any] = self._inner.consume(num, timeout)
        self.returned += sum(1 for r in records if r.error() is None)
        return records


@pytest.mark.parametrize("kind", ["async", "def"])
async def test_records_are_fetched_once_the_worker_has_handled_the_last_ones(
    kafka_bootstrap: str, new_topic: NewTopic, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """With a handler that keeps up, fetching alternates with handling, as in a plain
    ``consume()`` loop: the records of one chunk are freed before the next are made, so few are
    alive at once and CPython's cyclic GC has nothing to do (transport.PACE_WAIT)."""
    monkeypatch.setattr(transport_mod, "PACE_WAIT", 120.0)  # only a worker out of work wakes it
    topic = new_topic(partitions=1)
    produce(kafka_bootstrap, topic, [b"x" * 100] * 5000, partition=0)
    handled = 0
    counting: list[_CountingConsumer] = []
    create = transport_mod.create_consumer

    def create_counting(settings: dict[str, Any]) -> Any:
        counting.append(_CountingConsumer(create(settings), lambda: handled))
        return counting[-1]

    monkeypatch.setattr(transport_mod, "create_consumer", create_counting)
    server = one_service(address(kafka_bootstrap, topic))

    def handle_def(ctx: Context, msg: ConsumerMessage) -> None:
        nonlocal handled
        handled += 1  # one thread at a time: a partition's chunk runs in one thread

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        handle_def(ctx, msg)

    register_kafka_handler_service(server, handle if kind == "async" else handle_def)
    async with serving(server):
        await wait_until(lambda: handled == 5000, timeout=60, what="every record handled")
    (consumer,) = counting
    assert consumer.returned == 5000
    assert len(consumer.waiting_at_consume) > 1
    assert max(consumer.waiting_at_consume) == 0


async def test_a_busy_partition_does_not_hold_back_a_record_of_another(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    """Pacing (transport.PACE_WAIT) waits for workers that make progress, but a record of an
    idle partition is still fetched within PACE_MAX while another partition works through a
    backlog at a steady pace."""
    topic = new_topic(partitions=2)
    produce(kafka_bootstrap, topic, [b"x"] * 3000, partition=0)
    server = one_service(address(kafka_bootstrap, topic))
    counts = [0, 0]
    handled_at: list[float] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        if msg.partition == 0:
            await asyncio.sleep(0.001)  # progress at every pacing step
        else:
            handled_at.append(time.monotonic())
        counts[msg.partition] += 1

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: counts[0] >= 200, what="partition 0 under way")
        for _ in range(5):
            before = len(handled_at)
            sent = time.monotonic()
            produce(kafka_bootstrap, topic, [b"y"], partition=1)
            await wait_until(
                lambda n=before: len(handled_at) > n,  # type: ignore[misc]
                timeout=30,
                what="the record",
            )
            assert counts[0] < 3000, "partition 0 finished: the test no longer measures anything"
            # librdkafka fetches within fetch.wait.max.ms; pacing adds PACE_MAX at most.
            assert handled_at[-1] - sent < 1.0 * load_factor()


async def test_a_partition_making_no_progress_is_paused(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic(partitions=2)
    produce(kafka_bootstrap, topic, [b"x"] * 3000, partition=0)
    server = one_service(address(kafka_bootstrap, topic))
    release = asyncio.Event()
    counts = [0, 0]

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        if msg.partition == 0:
            await release.wait()
        counts[msg.partition] += 1

    register_kafka_handler_service(server, handle)
    async with serving(server):
        service = server.service("consumer")
        await wait_assigned(service, 2)
        state = transport_of(service)._states[(topic, 0)]
        await wait_until(lambda: state.paused, timeout=10, what="stalled partition paused")
        produce(kafka_bootstrap, topic, [b"y"] * 100, partition=1)
        await wait_until(lambda: counts[1] == 100)
        release.set()
        await wait_until(lambda: counts[0] == 3000)


async def test_shutdown_waits_for_the_running_handler_and_commits_it(
    kafka_bootstrap: str, topic: str
) -> None:
    produce(kafka_bootstrap, topic, [b"1", b"2", b"3"])
    group = new_group()
    server = one_service(address(kafka_bootstrap, topic, group))
    started = asyncio.Event()
    finished: list[int] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        if msg.offset == 1:
            started.set()
            await asyncio.sleep(0.5)
        finished.append(msg.offset)

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await asyncio.wait_for(started.wait(), 30)
    # Offset 1 was in progress at close: it finished, was committed, and 2 was never begun.
    assert finished == [0, 1]
    assert committed(kafka_bootstrap, group, topic, 1) == {0: 2}


async def test_restart_redelivers_nothing_handled(kafka_bootstrap: str, topic: str) -> None:
    produce(kafka_bootstrap, topic, [b"a", b"b"])
    group = new_group()
    first: list[int] = []
    second: list[int] = []

    async def run(seen: list[int], count: int) -> None:
        server = one_service(address(kafka_bootstrap, topic, group))

        async def handle(ctx: Context, msg: ConsumerMessage) -> None:
            seen.append(msg.offset)

        register_kafka_handler_service(server, handle)
        async with serving(server):
            await wait_until(lambda: len(seen) >= count)

    await run(first, 2)
    produce(kafka_bootstrap, topic, [b"c"])
    await run(second, 1)
    assert first == [0, 1]
    assert second == [2]
