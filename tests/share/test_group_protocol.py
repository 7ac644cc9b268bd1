"""groupProtocol=consumer (KIP-848) on the real broker: broker-side assignment, incremental
handover, at-least-once commits as with the classic protocol."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import trpc_kafka
from tests.consumer._util import (
    assignment,
    committed,
    end_offsets,
    new_group,
    one_service,
    produce_spread,
    serving,
    transport_of,
    wait_until,
)
from trpc_kafka import ConsumerMessage, Context

NewTopic = Callable[..., str]


async def test_two_members_of_the_new_protocol_share_partitions_and_commit_everything(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic(4)
    group = new_group()
    # No groupSessionTimeout: the broker decides the session with this protocol.
    addr = f"{kafka_bootstrap}?topics={topic}&group={group}&initial=oldest&groupProtocol=consumer"
    handled: Counter[tuple[int, int]] = Counter()

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        handled[(msg.partition, msg.offset)] += 1

    first, second = one_service(addr, "first"), one_service(addr, "second")
    for server in (first, second):
        trpc_kafka.register_kafka_handler_service(server, handle)
    produce_spread(kafka_bootstrap, topic, 4, 50)
    async with serving(first):
        service = first.service("first")
        assert transport_of(service).settings["group.protocol"] == "consumer"
        assert transport_of(service).settings["group.remote.assignor"] == "uniform"
        await wait_until(lambda: len(handled) == 200, 60, "the first 200 handled")
        async with serving(second):
            other = second.service("second")
            await wait_until(
                lambda: len(assignment(service)) == 2 and len(assignment(other)) == 2,
                60,
                "2 partitions each",
            )
            produce_spread(kafka_bootstrap, topic, 4, 50)
            await wait_until(lambda: len(handled) == 400, 60, "all 400 handled")
            await asyncio.sleep(1)
        # The second member left: its partitions come back to the first.
        await wait_until(lambda: len(assignment(service)) == 4, 60, "all 4 back")
    assert set(handled.values()) == {1}, "no record handled twice across the handovers"
    assert committed(kafka_bootstrap, group, topic, 4) == end_offsets(kafka_bootstrap, topic, 4)
