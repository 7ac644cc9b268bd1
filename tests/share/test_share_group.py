"""Share groups (groupType=share) on the real broker: spread, acknowledgements, redelivery."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

import trpc_kafka
from tests.consumer._util import serving, wait_until
from tests.share._util import (
    available,
    new_group,
    produce_small_batches,
    set_group_configs,
    share_address,
)
from trpc_kafka import ConsumerMessage, Context, ContinueWithoutCommit
from trpc_kafka._runtime.server import Server, Service

NewTopic = Callable[..., str]


def _members(addr: str, count: int, close_wait: float = 10) -> Server:
    server = Server(max_close_wait=close_wait)
    for i in range(count):
        server.add_service(Service(f"member-{i}", address=addr))
    return server


async def test_four_members_on_one_partition_all_receive_and_none_is_accepted_twice(
    kafka_bootstrap: str, topic: str
) -> None:
    group = new_group()
    total = 400
    handled: dict[str, list[int]] = {}
    deliveries: Counter[int] = Counter()
    calls: list[str] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        raw = trpc_kafka.get_raw_kafka_context(ctx)
        assert raw is not None and raw.delivery_count is not None
        deliveries[raw.delivery_count] += 1
        await asyncio.sleep(0.01)
        handled.setdefault(ctx.callee_service, []).append(int(msg.value or b""))

    async def count_calls(ctx: Context, req: object, next: trpc_kafka.Handler) -> object:
        calls.append(ctx.callee_method)
        return await next(ctx, req)

    server = _members(share_address(kafka_bootstrap, topic, group), 4)
    for service in server.services.values():
        service.add_filter(count_calls)
    trpc_kafka.register_kafka_handler_service(server, handle)
    async with serving(server):
        # Members join within a second or two; records produced now spread over all four.
        await asyncio.sleep(3)
        produce_small_batches(kafka_bootstrap, topic, (str(i).encode() for i in range(total)))
        await wait_until(
            lambda: sum(map(len, handled.values())) >= total, 90, f"{total} records handled"
        )
        await asyncio.sleep(0.5)  # a record handled twice would show up now
    values = [v for vs in handled.values() for v in vs]
    assert sorted(values) == list(range(total)), "every record handled exactly once"
    assert sorted(handled) == [f"member-{i}" for i in range(4)], {
        k: len(v) for k, v in handled.items()
    }
    assert deliveries == {1: total}
    assert len(calls) == total and set(calls) == {topic}  # filters run per record
    assert available(kafka_bootstrap, topic, group) == []  # all accepted on the broker


async def test_failed_record_is_released_redelivered_then_dead_lettered_and_rejected(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    """A poison record: released after each failure (the others go on meanwhile), delivered
    again up to maxRetry, then dead-lettered and rejected: never delivered again."""
    topic, dead = new_topic(), new_topic()
    group = new_group()
    poison = 7
    seen: list[tuple[int, int, float]] = []  # value, delivery count, time

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        raw = trpc_kafka.get_raw_kafka_context(ctx)
        assert raw is not None and raw.delivery_count is not None
        value = int(msg.value or b"")
        seen.append((value, raw.delivery_count, time.monotonic()))
        if value == poison:
            raise RuntimeError("poison")

    addr = share_address(
        kafka_bootstrap,
        topic,
        group,
        f"maxRetry=2&retryInterval=1000&deadLetterTopic={dead}",
    )
    server = _members(addr, 2)
    trpc_kafka.register_kafka_handler_service(server, handle)
    produce_small_batches(kafka_bootstrap, topic, (str(i).encode() for i in range(50)))
    async with serving(server):
        await wait_until(
            lambda: (
                [d for v, d, _ in seen if v == poison] == [1, 2, 3]
                and len({v for v, _, _ in seen}) == 50
            ),
            60,
            "the poison record delivered 3 times and the others handled",
        )
        await asyncio.sleep(1.5)  # a 4th delivery would come now
    poison_times = [t for v, _, t in seen if v == poison]
    assert [d for v, d, _ in seen if v == poison] == [1, 2, 3]
    assert poison_times[1] - poison_times[0] >= 0.9  # released after retryInterval
    good = [(v, d, t) for v, d, t in seen if v != poison]
    assert sorted(v for v, _, _ in good) == [v for v in range(50) if v != poison]
    assert {d for _, d, _ in good} == {1}
    # The poison record held up nobody: everything else was done before its second delivery.
    assert max(t for _, _, t in good) < poison_times[1]
    letters = _read_all(kafka_bootstrap, dead, 1)
    assert [m.value() for m in letters] == [str(poison).encode()]
    headers = dict(letters[0].headers() or [])
    assert headers["trpc-kafka-attempts"] == b"3"
    assert available(kafka_bootstrap, topic, group) == []  # rejected, not available


async def test_without_max_retry_the_groups_delivery_limit_ends_a_poison_record(
    kafka_bootstrap: str, topic: str
) -> None:
    """maxRetry=0 (retry forever) meets the broker's delivery limit: at the last delivery the
    member gives up itself (logged, dead-lettered when set) instead of the broker archiving it
    silently."""
    group = new_group()
    set_group_configs(kafka_bootstrap, group, share_delivery_count_limit="3")
    deliveries: list[int] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        raw = trpc_kafka.get_raw_kafka_context(ctx)
        assert raw is not None and raw.delivery_count is not None
        deliveries.append(raw.delivery_count)
        raise RuntimeError("always")

    server = _members(share_address(kafka_bootstrap, topic, group), 1)
    trpc_kafka.register_kafka_handler_service(server, handle)
    produce_small_batches(kafka_bootstrap, topic, [b"x"])
    async with serving(server):
        await wait_until(lambda: deliveries == [1, 2, 3], 30, "3 deliveries")
        await asyncio.sleep(1)
    assert deliveries == [1, 2, 3]
    assert available(kafka_bootstrap, topic, group) == []


async def test_continue_without_commit_releases_the_record_at_once(
    kafka_bootstrap: str, topic: str
) -> None:
    group = new_group()
    seen: list[tuple[bytes, int]] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        raw = trpc_kafka.get_raw_kafka_context(ctx)
        assert raw is not None and raw.delivery_count is not None
        seen.append((msg.value or b"", raw.delivery_count))
        if msg.value == b"b" and raw.delivery_count == 1:
            raise ContinueWithoutCommit

    # retryInterval is long: a release at once does not wait for it.
    addr = share_address(kafka_bootstrap, topic, group, "retryInterval=60000")
    server = _members(addr, 1)
    trpc_kafka.register_kafka_handler_service(server, handle)
    produce_small_batches(kafka_bootstrap, topic, [b"a", b"b", b"c"])
    async with serving(server):
        await wait_until(lambda: (b"b", 2) in seen, 30, "b delivered again")
    assert sorted(seen) == [(b"a", 1), (b"b", 1), (b"b", 2), (b"c", 1)]
    assert available(kafka_bootstrap, topic, group) == []


async def test_batch_handler_gets_batches_of_one_partition_and_a_failed_batch_comes_again(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic(2)
    group = new_group()
    batches: list[list[tuple[int, int]]] = []
    failed = False

    def handle(ctx: Context, msgs: list[ConsumerMessage]) -> None:  # plain def: a thread
        nonlocal failed
        raw = trpc_kafka.get_raw_kafka_context(ctx)
        assert raw is not None and raw.delivery_count is not None
        batches.append([(m.partition, int(m.value or b"")) for m in msgs])
        if not failed:
            failed = True
            raise RuntimeError("first batch fails once")

    server = _members(share_address(kafka_bootstrap, topic, group, "batch=10"), 1)
    trpc_kafka.register_batch_handler_service(server, handle)
    produce_small_batches(kafka_bootstrap, topic, (str(i).encode() for i in range(100)))
    async with serving(server):
        await wait_until(
            lambda: sum(len(b) for b in batches[1:]) >= 100,
            60,
            "every record handled after the failed batch came again",
        )
        await asyncio.sleep(0.5)  # a record handled twice would show up now
    assert all(0 < len(b) <= 10 and len({p for p, _ in b}) == 1 for b in batches)
    assert sorted(v for b in batches[1:] for _, v in b) == list(range(100))
    assert available(kafka_bootstrap, topic, group) == []


async def test_graceful_stop_releases_held_records_to_the_other_members_at_once(
    kafka_bootstrap: str, topic: str
) -> None:
    """A stopping member gives back what it acquired but did not handle: the others get it
    without waiting for the lock (30 s) to expire."""
    group = new_group()
    total = 60
    handled: dict[str, list[int]] = {}

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        await asyncio.sleep(0.1)
        handled.setdefault(ctx.callee_service, []).append(int(msg.value or b""))

    first = _members(share_address(kafka_bootstrap, topic, group), 1)
    trpc_kafka.register_kafka_handler_service(first, handle)
    # One producer batch: the first member acquires all of it.
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 100})
    for i in range(total):
        producer.produce(topic, str(i).encode())
    assert producer.flush(30) == 0
    async with serving(first):
        await wait_until(lambda: len(handled.get("member-0", [])) >= 3, 30, "first handles")
    by_first = list(handled["member-0"])
    assert len(by_first) < total
    second = Server(max_close_wait=10)
    second.add_service(Service("member-1", address=share_address(kafka_bootstrap, topic, group)))
    trpc_kafka.register_kafka_handler_service(second, handle)
    started = time.monotonic()
    async with serving(second):
        await wait_until(
            lambda: len(by_first) + len(handled.get("member-1", [])) >= total,
            60,
            "the rest handled by the second member",
        )
    assert time.monotonic() - started < 25, "released at once, not after the lock expired"
    assert sorted(by_first + handled["member-1"]) == list(range(total))


def _read_all(bootstrap: str, topic: str, count: int) -> list[Any]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": new_group(), "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + 30
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


@pytest.mark.slow
async def test_records_whose_lock_ran_out_before_their_turn_are_not_handled_twice(
    kafka_bootstrap: str, topic: str, caplog: Any
) -> None:
    """One producer batch goes whole to one member; with a short lock and a slow handler the
    tail of it outlives its lock before its turn. Those records go back unhandled (another
    member has them by then), so no record is handled twice."""
    group = new_group()
    set_group_configs(kafka_bootstrap, group, share_record_lock_duration_ms="2000")
    total = 12
    handled: list[tuple[str, int, int]] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        raw = trpc_kafka.get_raw_kafka_context(ctx)
        assert raw is not None and raw.delivery_count is not None
        await asyncio.sleep(0.3)
        handled.append((ctx.callee_service, int(msg.value or b""), raw.delivery_count))

    server = _members(share_address(kafka_bootstrap, topic, group), 2)
    trpc_kafka.register_kafka_handler_service(server, handle)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 100})
    for i in range(total):
        producer.produce(topic, str(i).encode())
    assert producer.flush(30) == 0
    async with serving(server):
        await wait_until(lambda: len({v for _, v, _ in handled}) == total, 60, "all handled")
        await asyncio.sleep(2.5)  # a record handled after its lock ran out would come again
    assert sorted(v for _, v, _ in handled) == list(range(total)), handled
    assert max(d for _, _, d in handled) >= 2  # the tail did go back
    assert "outlived their lock" in caplog.text
    assert available(kafka_bootstrap, topic, group) == []


async def test_a_missing_topic_is_named_at_start_since_share_consumers_do_not_create_topics(
    kafka_bootstrap: str, caplog: Any
) -> None:
    missing = f"missing-{new_group()}"
    server = _members(share_address(kafka_bootstrap, missing, new_group()), 1)

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        pass

    trpc_kafka.register_kafka_handler_service(server, handle)
    async with serving(server):
        pass
    assert f"topic(s) {missing} do not exist" in caplog.text


async def test_timeout_trpc_meta_and_rate_limit_work_as_for_a_consumer_group(
    kafka_bootstrap: str, topic: str
) -> None:
    """The service timeout ends a handling (the record is released and comes again), trpcMeta
    headers reach the context metadata, limiterRate paces the handler calls."""
    group = new_group()
    seen: list[tuple[int, int, bytes, float]] = []  # value, delivery, metadata, time

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        raw = trpc_kafka.get_raw_kafka_context(ctx)
        assert raw is not None and raw.delivery_count is not None
        value = int(msg.value or b"")
        seen.append((value, raw.delivery_count, ctx.metadata.get("trace", b""), time.monotonic()))
        if value == 0 and raw.delivery_count == 1:
            await asyncio.sleep(5)  # beyond the service timeout

    addr = share_address(kafka_bootstrap, topic, group, "trpcMeta=true&limiterRate=20")
    server = Server(max_close_wait=10)
    server.add_service(Service("member-0", address=addr, timeout=0.3))
    trpc_kafka.register_kafka_handler_service(server, handle)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "batch.num.messages": 10})
    for i in range(20):
        producer.produce(topic, str(i).encode(), headers=[("trace", b"t-%d" % i)])
    assert producer.flush(30) == 0
    async with serving(server):
        await wait_until(
            lambda: (
                len({v for v, _, _, _ in seen}) == 20 and (0, 2) in {(v, d) for v, d, _, _ in seen}
            ),
            60,
            "all handled, record 0 twice",
        )
    assert {(v, m) for v, _, m, _ in seen} == {(i, b"t-%d" % i) for i in range(20)}
    assert sorted(d for v, d, _, _ in seen if v == 0) == [1, 2]
    times = sorted(t for _, _, _, t in seen)
    assert times[-1] - times[0] >= (len(times) - 1) / 20 * 0.8  # about 20 calls a second
    assert available(kafka_bootstrap, topic, group) == []
