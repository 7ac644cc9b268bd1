"""Rebalances with two members of one group: revocation stops handling at once, uncommitted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from tests.consumer._util import (
    address,
    assignment,
    committed,
    load_factor,
    new_group,
    one_service,
    produce,
    serving,
    transport_of,
    wait_assigned,
    wait_until,
)
from trpc_kafka._consumer import ConsumerMessage, register_kafka_handler_service
from trpc_kafka._runtime.context import Context

NewTopic = Callable[..., str]

pytestmark = pytest.mark.slow


async def test_revoked_partition_stops_retrying_and_the_new_owner_gets_the_message(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    """Member A retries forever (maxRetry=0); B joins (range): A stays in the group, A's retry
    of the partition that moves stops at once without a commit, and B gets that message."""
    topic = new_topic(partitions=2)
    produce(kafka_bootstrap, topic, [b"p0"], partition=0)
    produce(kafka_bootstrap, topic, [b"p1"], partition=1)
    group = new_group()
    addr = address(kafka_bootstrap, topic, group, "strategy=range&retryInterval=100")
    a_calls: list[tuple[int, int, float]] = []
    b_calls: list[tuple[int, int, float]] = []

    async def a_handle(ctx: Context, msg: ConsumerMessage) -> None:
        a_calls.append((msg.partition, msg.offset, time.monotonic()))
        raise RuntimeError("A cannot handle anything")

    async def b_handle(ctx: Context, msg: ConsumerMessage) -> None:
        b_calls.append((msg.partition, msg.offset, time.monotonic()))

    server_a = one_service(addr, name="a")
    register_kafka_handler_service(server_a, a_handle)
    server_b = one_service(addr, name="b")
    register_kafka_handler_service(server_b, b_handle)
    async with serving(server_a):
        service_a = server_a.service("a")
        await wait_assigned(service_a, 2)
        await wait_until(lambda: {p for p, _, _ in a_calls} == {0, 1}, what="A retrying both")
        before = transport_of(service_a).session_view()
        async with serving(server_b):
            service_b = server_b.service("b")
            await wait_until(lambda: bool(b_calls), what="B gets a message")
            await wait_assigned(service_a, 1)
            moved = b_calls[0][0]
            kept = 1 - moved
            taken_over = b_calls[0][2]
            await asyncio.sleep(0.5 * load_factor())  # any late retry by A would show up here
            after = transport_of(service_a).session_view()
            assert assignment(service_b) == ((topic, moved),)
            assert assignment(service_a) == ((topic, kept),)
        # B got the very message A was retrying: A committed nothing for it.
        assert b_calls[0][:2] == (moved, 0)
        # A's retries of the moved partition ended before B took over, and never resumed.
        last_a_on_moved = max(t for p, _, t in a_calls if p == moved)
        assert last_a_on_moved < taken_over
        # A kept retrying its own partition after the rebalance.
        assert max(t for p, _, t in a_calls if p == kept) > taken_over
        # A was not kicked out: same member, next generation.
        assert after.member_id == before.member_id
        assert before.generation_id is not None and after.generation_id is not None
        assert after.generation_id > before.generation_id
    offsets = committed(kafka_bootstrap, group, topic, 2)
    assert offsets[moved] == 1, "B handled and committed it"
    assert offsets[kept] < 0, "A never committed the message it kept failing on"


async def test_a_handler_in_progress_at_revocation_gets_a_bounded_grace(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic(partitions=2)
    produce(kafka_bootstrap, topic, [b"p0"], partition=0)
    produce(kafka_bootstrap, topic, [b"p1"], partition=1)
    group = new_group()
    addr = address(kafka_bootstrap, topic, group, "strategy=roundrobin&maxProcessingTime=1500")
    cancelled: list[tuple[int, float]] = []
    started: dict[int, float] = {}
    b_calls: list[int] = []

    async def a_handle(ctx: Context, msg: ConsumerMessage) -> None:
        started[msg.partition] = time.monotonic()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append((msg.partition, time.monotonic()))
            raise

    async def b_handle(ctx: Context, msg: ConsumerMessage) -> None:
        b_calls.append(msg.partition)

    server_a = one_service(addr, name="a", close_wait=3)
    register_kafka_handler_service(server_a, a_handle)
    server_b = one_service(addr, name="b")
    register_kafka_handler_service(server_b, b_handle)
    async with serving(server_a):
        await wait_until(lambda: len(started) == 2, what="A busy on both partitions")
        async with serving(server_b):
            joined = time.monotonic()
            await wait_until(lambda: bool(b_calls), what="B takes over a partition")
            taken_over = time.monotonic()
        # Eager protocol: A's revocation covers both partitions; each call in progress got
        # maxProcessingTime (1.5 s) to finish, then was cancelled, and nothing was committed.
        assert len(cancelled) >= 1
        waited = cancelled[0][1] - joined
        assert 1.2 <= waited < 6.0 * load_factor(), waited
        assert taken_over - joined < 15.0 * load_factor()
    moved = b_calls[0]
    offsets = committed(kafka_bootstrap, group, topic, 2)
    assert offsets[moved] == 1, "B handled it"
    assert offsets[1 - moved] < 0, "A's cancelled calls committed nothing"


async def test_cooperative_sticky_members_share_the_work(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic(partitions=4)
    group = new_group()
    addr = address(kafka_bootstrap, topic, group, "strategy=sticky")
    seen: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}
    servers = []
    for name in ("a", "b"):
        server = one_service(addr, name=name)

        async def handle(ctx: Context, msg: ConsumerMessage, name: str = name) -> None:
            seen[name].append((msg.partition, msg.offset))

        register_kafka_handler_service(server, handle)
        servers.append(server)
    async with serving(servers[0]):
        await wait_assigned(servers[0].service("a"), 4)
        for p in range(4):
            produce(kafka_bootstrap, topic, [b"before"] * 10, partition=p)
        await wait_until(lambda: len(seen["a"]) == 40)
        async with serving(servers[1]):
            await wait_assigned(servers[1].service("b"), 2)
            await wait_assigned(servers[0].service("a"), 2)
            for p in range(4):
                produce(kafka_bootstrap, topic, [b"after"] * 10, partition=p)
            await wait_until(lambda: len(seen["a"]) + len(seen["b"]) == 80)
        b_parts = {p for p, _ in seen["b"]}
        assert len(b_parts) == 2
        # Incremental: A kept its other two partitions throughout.
        assert all(p not in b_parts for p, o in seen["a"] if o >= 10)
    handled = sorted(seen["a"] + seen["b"])
    assert handled == sorted((p, o) for p in range(4) for o in range(20))
