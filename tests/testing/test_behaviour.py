"""Behaviour shared by the in-memory cluster and the real broker (each test runs on both).

What a user's test relies on: where keys land, headers and trpcMeta, retries, maxRetry and the
dead letter topic, batches, ContinueWithoutCommit, commits at shutdown, and the error codes of
failed sends.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

import trpc_kafka
from tests.testing._backends import Backend, eventually
from trpc_kafka import (
    DEAD_LETTER_HEADER_ATTEMPTS,
    DEAD_LETTER_HEADER_ERROR,
    DEAD_LETTER_HEADER_OFFSET,
    DEAD_LETTER_HEADER_TOPIC,
    ConsumerMessage,
    Context,
    ContinueWithoutCommit,
    Server,
    Service,
    TrpcError,
)
from trpc_kafka._consumer.transport import KafkaServiceTransport
from trpc_kafka._producer.partitioner import hash_partition


def consumer_address(cluster: Backend, topic: str, group: str, extra: str = "") -> str:
    address = f"{cluster.bootstrap}?topics={topic}&group={group}&initial=oldest&retryInterval=20"
    return address + (f"&{extra}" if extra else "")


def new_group() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


def one_service(address: str) -> Server:
    server = Server()
    server.add_service(Service("trpc.test.behaviour.consumer", address=address))
    return server


async def test_hash_partitioner_puts_keys_where_sarama_does(cluster: Backend) -> None:
    topic = cluster.topic(partitions=4)
    keys = [f"user-{i}".encode() for i in range(12)]
    async with trpc_kafka.new_client_proxy(
        "p", target=f"kafka://{cluster.bootstrap}?topic={topic}&partitioner=hash"
    ) as proxy:
        results = [await proxy.send_message(topic, key, b"v-" + key) for key in keys]
    assert [p for p, _ in results] == [hash_partition(k, 4) for k in keys]
    records = cluster.read(topic, len(keys), partitions=4)
    by_place = {(m.partition, m.offset): m for m in records}
    for key, (partition, offset) in zip(keys, results, strict=True):
        assert by_place[(partition, offset)].key == key
        assert by_place[(partition, offset)].value == b"v-" + key


async def test_roundrobin_partitioner_cycles_the_partitions(cluster: Backend) -> None:
    topic = cluster.topic(partitions=3)
    async with trpc_kafka.new_client_proxy(
        "p", target=f"kafka://{cluster.bootstrap}?topic={topic}&partitioner=roundrobin"
    ) as proxy:
        partitions = [(await proxy.send_message(topic, None, b"x"))[0] for _ in range(6)]
    assert partitions == [0, 1, 2, 0, 1, 2]


async def test_headers_and_trpc_meta_reach_the_handler(cluster: Backend) -> None:
    topic = cluster.topic()
    seen: list[tuple[dict[str, bytes], list[tuple[str, bytes | None]], bytes | None]] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        seen.append((dict(ctx.metadata), msg.headers, msg.value))

    server = one_service(consumer_address(cluster, topic, new_group(), "trpcMeta=true"))
    trpc_kafka.register_kafka_handler_service(server, handle)
    async with cluster.serving(server):
        async with trpc_kafka.new_client_proxy(
            "p", target=f"kafka://{cluster.bootstrap}?topic={topic}&trpcMeta=1"
        ) as proxy:
            with trpc_kafka.use_context(Context(metadata={"trace-id": b"abc"})):
                await proxy.send_message(topic, b"k", b"v", headers=[("h", b"1")])
        await eventually(lambda: len(seen) == 1)
    metadata, headers, value = seen[0]
    assert value == b"v"
    assert metadata == {"h": b"1", "trace-id": b"abc"}
    assert headers == [("h", b"1"), ("trace-id", b"abc")]


async def test_retries_then_the_dead_letter_topic_then_commit(cluster: Backend) -> None:
    topic, dead = cluster.topic(), cluster.topic()
    group = new_group()
    calls: list[bytes | None] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        calls.append(msg.value)
        if msg.value == b"bad":
            raise ValueError("cannot handle bad")

    address = consumer_address(cluster, topic, group, f"maxRetry=2&deadLetterTopic={dead}")
    server = one_service(address)
    trpc_kafka.register_kafka_handler_service(server, handle)
    cluster.publish(topic, b"bad", key=b"k1", headers=[("origin", b"test")])
    cluster.publish(topic, b"good", key=b"k2")
    async with cluster.serving(server):
        await eventually(lambda: b"good" in calls)
    assert calls == [b"bad", b"bad", b"bad", b"good"]  # maxRetry=2: three attempts
    (letter,) = cluster.read(dead, 1)
    headers = dict(letter.headers)
    assert (letter.key, letter.value) == (b"k1", b"bad")
    assert headers["origin"] == b"test"
    assert headers[DEAD_LETTER_HEADER_ERROR] == b"cannot handle bad"
    assert headers[DEAD_LETTER_HEADER_TOPIC] == topic.encode()
    assert headers[DEAD_LETTER_HEADER_OFFSET] == b"0"
    assert headers[DEAD_LETTER_HEADER_ATTEMPTS] == b"3"
    assert cluster.committed(group, topic) == 2


async def test_batch_handler_gets_every_message_in_order_in_bounded_batches(
    cluster: Backend,
) -> None:
    topic = cluster.topic()
    batches: list[list[bytes | None]] = []

    async def handle(ctx: Context, msgs: list[ConsumerMessage]) -> None:
        batches.append([m.value for m in msgs])

    server = one_service(consumer_address(cluster, topic, new_group(), "batch=3&batchFlush=100"))
    trpc_kafka.register_batch_handler_service(server, handle)
    values = [f"m{i}".encode() for i in range(7)]
    for value in values:
        cluster.publish(topic, value)
    async with cluster.serving(server):
        await eventually(lambda: sum(map(len, batches)) == 7)
    assert [v for batch in batches for v in batch] == values
    assert all(1 <= len(batch) <= 3 for batch in batches)


async def test_continue_without_commit_skips_without_retry(cluster: Backend) -> None:
    topic = cluster.topic()
    group = new_group()
    calls: list[bytes | None] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        calls.append(msg.value)
        if msg.value == b"skip":
            raise ContinueWithoutCommit

    server = one_service(consumer_address(cluster, topic, group))
    trpc_kafka.register_kafka_handler_service(server, handle)
    cluster.publish(topic, b"skip")
    async with cluster.serving(server):
        await eventually(lambda: calls == [b"skip"])
    # Nothing after it succeeded: the skipped offset is not committed...
    assert cluster.committed(group, topic) is None
    cluster.publish(topic, b"next")
    calls.clear()
    server = one_service(consumer_address(cluster, topic, group))
    trpc_kafka.register_kafka_handler_service(server, handle)
    async with cluster.serving(server):
        # ...so a restart delivers it again; a later success moves the position past both.
        await eventually(lambda: calls == [b"skip", b"next"])
    assert cluster.committed(group, topic) == 2


async def test_a_restarted_service_resumes_after_what_it_committed(cluster: Backend) -> None:
    topic = cluster.topic(partitions=2)
    group = new_group()
    calls: list[bytes | None] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        calls.append(msg.value)

    for i in range(4):
        cluster.publish(topic, f"first-{i}".encode(), partition=i % 2)
    server = one_service(consumer_address(cluster, topic, group))
    trpc_kafka.register_kafka_handler_service(server, handle)
    async with cluster.serving(server):
        await eventually(lambda: len(calls) == 4)
    assert (cluster.committed(group, topic, 0), cluster.committed(group, topic, 1)) == (2, 2)
    cluster.publish(topic, b"second", partition=1)
    calls.clear()
    server = one_service(consumer_address(cluster, topic, group))
    trpc_kafka.register_kafka_handler_service(server, handle)
    async with cluster.serving(server):
        await eventually(lambda: len(calls) == 1)
    assert calls == [b"second"]


async def test_a_message_larger_than_max_message_bytes_fails_with_141(cluster: Backend) -> None:
    topic = cluster.topic()
    async with trpc_kafka.new_client_proxy(
        "p", target=f"kafka://{cluster.bootstrap}?topic={topic}&maxMessageBytes=1000"
    ) as proxy:
        with pytest.raises(TrpcError) as caught:
            await proxy.send_message(topic, b"k", b"x" * 2000)
    assert caught.value.code == 141
    assert "Message size too large" in caught.value.msg and "maxMessageBytes" in caught.value.msg


async def test_a_topic_the_cluster_will_not_create_fails_with_141_naming_it(
    cluster: Backend,
) -> None:
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    async with trpc_kafka.new_client_proxy(
        "p",
        target=f"kafka://{cluster.bootstrap}?topic={missing}&metadataAllowAutoTopicCreation=false",
        timeout=20.0,
    ) as proxy:
        with pytest.raises(TrpcError) as caught:
            await proxy.send_message(missing, b"k", b"v")
    assert caught.value.code == 141
    assert f"topic {missing!r} does not exist" in caught.value.msg


async def test_a_key_of_a_bad_type_fails_with_121_before_sending(cluster: Backend) -> None:
    topic = cluster.topic()
    async with trpc_kafka.new_client_proxy(
        "p", target=f"kafka://{cluster.bootstrap}?topic={topic}"
    ) as proxy:
        with pytest.raises(TrpcError) as caught:
            await proxy.send_message(topic, 42, b"v")  # type: ignore[arg-type]
    assert caught.value.code == 121


async def test_a_cluster_nobody_answers_fails_sends_with_141_and_the_hint(
    cluster: Backend,
) -> None:
    with cluster.unreachable() as address:
        async with trpc_kafka.new_client_proxy(
            "p", target=f"kafka://{address}?topic=orders", timeout=20.0
        ) as proxy:
            start = time.monotonic()
            with pytest.raises(TrpcError) as caught:
                await proxy.send_message("orders", b"k", b"v")
            took = time.monotonic() - start
    assert caught.value.code == 141
    assert "Connection refused" in caught.value.msg
    assert "sending to topic 'orders'" in caught.value.msg
    assert "Is your cluster reachable?" in caught.value.msg
    assert took < 15  # confirmed by the library's probe (~1.5 s), not the 20 s timeout


@pytest.mark.parametrize("strategy", ["range", "sticky"])
async def test_members_of_a_group_split_the_partitions_and_handle_each_record_once(
    cluster: Backend, strategy: str
) -> None:
    topic = cluster.topic(partitions=4)
    group = new_group()
    handled: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}

    def handler(name: str) -> trpc_kafka.ConsumerHandle:
        async def handle(ctx: Context, msg: ConsumerMessage) -> None:
            handled[name].append((msg.partition, msg.offset))

        return handle

    server = Server()
    for name in handled:
        address = consumer_address(cluster, topic, group, f"strategy={strategy}")
        svc = server.add_service(Service(name, address=address))
        trpc_kafka.register_kafka_handler_service(svc, handler(name))

    def assignment(name: str) -> tuple[tuple[str, int], ...]:
        transport = server.service(name).transport
        assert isinstance(transport, KafkaServiceTransport)
        return transport.session_view().assignment

    async with cluster.serving(server):
        # Until both joined, one member may hold every partition.
        await eventually(lambda: len(assignment("a")) == len(assignment("b")) == 2)
        for i in range(8):
            cluster.publish(topic, f"v{i}".encode(), partition=i % 4)
        await eventually(lambda: len(handled["a"]) + len(handled["b"]) >= 8)
    every = sorted(handled["a"] + handled["b"])
    assert every == [(p, o) for p in range(4) for o in range(2)]  # each record once
    assert {len({p for p, _ in got}) for got in handled.values()} == {2}  # two partitions each


async def test_client_and_server_filters_see_every_call(cluster: Backend) -> None:
    topic = cluster.topic()
    calls: list[str] = []

    async def client_filter(ctx: Context, req: Any, next_: trpc_kafka.Handler) -> Any:
        calls.append(f"client {ctx.callee_method} {req.topic}")
        return await next_(ctx, req)

    async def server_filter(ctx: Context, req: Any, next_: trpc_kafka.Handler) -> Any:
        calls.append(f"server {ctx.callee_service} {req.value!r}")
        return await next_(ctx, req)

    def handle(ctx: Context, msg: ConsumerMessage) -> None:  # plain def: runs on a thread
        calls.append(f"handler {msg.value!r}")

    server = Server()
    svc = server.add_service(
        Service(
            "trpc.test.filtered",
            address=consumer_address(cluster, topic, new_group()),
            filters=[server_filter],
        )
    )
    trpc_kafka.register_kafka_handler_service(svc, handle)
    async with cluster.serving(server):
        async with trpc_kafka.new_client_proxy(
            "p", target=f"kafka://{cluster.bootstrap}?topic={topic}", filters=[client_filter]
        ) as proxy:
            await proxy.send_message(topic, b"k", b"v")
        await eventually(lambda: len(calls) == 3)
    assert calls == [
        f"client send {topic}",
        "server trpc.test.filtered b'v'",
        "handler b'v'",
    ]
