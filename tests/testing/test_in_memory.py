"""InMemoryKafka itself: activation, helpers, injected failures, groups; no broker needed."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from confluent_kafka import KafkaError, Producer

import trpc_kafka
from trpc_kafka import (
    ConsumerMessage,
    Context,
    Server,
    Service,
    TrpcError,
    _sdk,
    get_raw_kafka_context,
)
from trpc_kafka._producer import pool
from trpc_kafka._producer.partitioner import hash_partition
from trpc_kafka.testing import InMemoryKafka
from trpc_kafka.testing._clients import MemoryConsumer, MemoryProducer

ADDRESS = "10.0.0.1:9092"


def service(name: str, topics: str, group: str, extra: str = "") -> Service:
    address = f"{ADDRESS}?topics={topics}&group={group}&retryInterval=10"
    return Service(name, address=address + (f"&{extra}" if extra else ""))


def server_of(*services: Service) -> Server:
    server = Server()
    for s in services:
        server.add_service(s)
    return server


# -- activation ---------------------------------------------------------------------------------


async def test_only_while_active_are_clients_in_memory() -> None:
    assert _sdk.installed() is None
    async with InMemoryKafka() as kafka:
        assert isinstance(_sdk.new_producer({}), MemoryProducer)
        assert isinstance(_sdk.new_consumer({"group.id": "g"}), MemoryConsumer)
        async with trpc_kafka.new_client_proxy("p", target=f"kafka://{ADDRESS}?topic=t") as proxy:
            await proxy.send_message("t", b"k", b"v")
            producers = pool.live_entries()
            assert len(producers) == 1
            with pytest.raises(RuntimeError, match="another in-memory Kafka is active"):
                async with InMemoryKafka():
                    pass
            with (
                pytest.raises(RuntimeError, match="another in-memory Kafka is active"),
                InMemoryKafka(),
            ):
                pass
            # The refused ones neither closed the active one's producers nor uninstalled it.
            assert pool.live_entries() == producers
            assert repr(_sdk.installed()) == repr(kafka)
    assert _sdk.installed() is None
    assert isinstance(_sdk.new_producer({"bootstrap.servers": "127.0.0.1:1"}), Producer)


async def test_a_proxy_outliving_one_in_memory_kafka_sends_to_the_next() -> None:
    async with trpc_kafka.new_client_proxy(
        "p", target=f"kafka://{ADDRESS}?topic=t&partitioner=hash"
    ) as proxy:
        async with InMemoryKafka(partitions=3) as kafka:
            assert await proxy.send_message("t", b"k", b"v1") == (hash_partition(b"k", 3), 0)
        async with InMemoryKafka() as other:
            await proxy.send_message("t", b"k", b"v2")
    assert [m.value for m in kafka.messages("t")] == [b"v1"]
    assert [m.value for m in other.messages("t")] == [b"v2"]


def test_blocking_code_uses_it_as_a_plain_context_manager() -> None:
    with InMemoryKafka() as kafka:
        proxy = trpc_kafka.new_client_proxy("p", target=f"kafka://{ADDRESS}?topic=orders")
        assert proxy.send_message_sync("orders", b"k", b"v") == (0, 0)
        proxy.async_send_message_sync("orders", b"k2", b"v2")
        proxy.close_sync()  # flushes the async send
        got = [(m.key, m.value) for m in kafka.messages("orders")]
    assert got == [(b"k", b"v"), (b"k2", b"v2")]


# -- records ------------------------------------------------------------------------------------


async def test_publish_places_keys_by_hash_and_keyless_records_in_turn() -> None:
    async with InMemoryKafka(partitions=4) as kafka:
        keyed = kafka.publish("t", b"v", key=b"user-7")
        assert keyed.partition == hash_partition(b"user-7", 4) and keyed.offset == 0
        assert [kafka.publish("t", b"x").partition for _ in range(5)] == [0, 1, 2, 3, 0]
        explicit = kafka.publish("t", "text", key="k", headers={"h": "1"}, partition=2)
        (stored,) = kafka.messages("t", partition=2)[-1:]
        assert (stored.key, stored.value, stored.headers) == (b"k", b"text", [("h", b"1")])
        assert stored.offset == explicit.offset
        assert kafka.topics() == {"t": 4}


async def test_publish_refuses_bad_input_naming_it() -> None:
    async with InMemoryKafka(topics={"t": 2}, auto_create_topics=False) as kafka:
        with pytest.raises(
            ValueError, match=r"partition 2 is not a partition of topic 't'; allowed: 0\.\.1"
        ):
            kafka.publish("t", b"v", partition=2)
        with pytest.raises(TypeError, match="value must be bytes, str or None, got int"):
            kafka.publish("t", 5)  # type: ignore[arg-type]
        with pytest.raises(
            ValueError, match="topic 'nope' does not exist and auto_create_topics is off"
        ):
            kafka.publish("nope", b"v")
        with pytest.raises(ValueError, match="count must be an int >= 1"):
            kafka.fail_sends(KafkaError._TRANSPORT, count=0)
        with pytest.raises(TypeError, match="librdkafka error code"):
            kafka.fail_sends("boom")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="partitions must be an int >= 1, got 0"):
        InMemoryKafka(partitions=0)


# -- injected failures ----------------------------------------------------------------------------


async def test_fail_sends_makes_the_next_send_fail_with_the_mapped_code() -> None:
    async with InMemoryKafka() as kafka:
        kafka.fail_sends(KafkaError._TRANSPORT, topic="orders")
        kafka.fail_sends(KafkaError._MSG_TIMED_OUT, topic="audit", count=None)
        async with trpc_kafka.new_client_proxy(
            "p", target=f"kafka://{ADDRESS}?topic=orders"
        ) as proxy:
            with pytest.raises(TrpcError) as caught:
                await proxy.send_message("orders", b"k", b"v")
            assert caught.value.code == 141
            assert "sending to topic 'orders'" in caught.value.msg
            assert "Is your cluster reachable?" in caught.value.msg
            assert await proxy.send_message("orders", b"k", b"v") == (0, 0)  # count=1: used up
            for _ in range(2):
                with pytest.raises(TrpcError) as timed_out:
                    await proxy.send_message("audit", b"k", b"v")
                assert timed_out.value.code == 101
            kafka.clear_failures()
            assert await proxy.send_message("audit", b"k", b"v") == (0, 0)


async def test_a_full_queue_makes_the_send_wait_then_time_out_with_101() -> None:
    async with InMemoryKafka() as kafka:
        async with trpc_kafka.new_client_proxy(
            "p", target=f"kafka://{ADDRESS}?topic=orders", timeout=0.3
        ) as proxy:
            kafka.fail_sends(KafkaError._QUEUE_FULL, count=None)
            with pytest.raises(TrpcError) as caught:
                await proxy.send_message("orders", b"k", b"v")
            assert caught.value.code == 101
            assert "waiting for room in the producer queue" in caught.value.msg
            kafka.clear_failures()
            kafka.fail_sends(KafkaError._QUEUE_FULL, count=2)  # room after two tries
            assert await proxy.send_message("orders", b"k", b"v") == (0, 0)
        assert [m.value for m in kafka.messages("orders")] == [b"v"]


async def test_a_failed_async_send_goes_to_the_error_callback() -> None:
    errors: list[tuple[int, str]] = []
    done = threading.Event()

    def on_error(
        err: BaseException, topic: str, key: object, value: object, headers: object
    ) -> None:
        assert isinstance(err, TrpcError)
        errors.append((err.code, topic))
        done.set()

    async with InMemoryKafka() as kafka:
        kafka.fail_sends(KafkaError.MSG_SIZE_TOO_LARGE)
        async with trpc_kafka.new_client_proxy(
            "p", target=f"kafka://{ADDRESS}?topic=orders", error_callback=on_error
        ) as proxy:
            await proxy.async_send_message("orders", b"k", b"v")
        assert done.wait(5)
    assert errors == [(141, "orders")]


async def test_an_unreachable_cluster_fails_sends_with_141_and_the_hint() -> None:
    async with (
        InMemoryKafka() as kafka,
        trpc_kafka.new_client_proxy(
            "p", target=f"kafka://{ADDRESS}?topic=orders", timeout=20.0
        ) as proxy,
    ):
        await proxy.send_message("orders", b"k", b"before")
        with kafka.unreachable():
            start = time.monotonic()
            with pytest.raises(TrpcError) as caught:
                await proxy.send_message("orders", b"k", b"during")
            took = time.monotonic() - start
        assert caught.value.code == 141
        assert "Connection refused" in caught.value.msg
        assert "Is your cluster reachable?" in caught.value.msg
        assert took < 15  # the outage is confirmed (~1.5 s), not the 20 s timeout
        # Back up: sends go through again once the library's probe sees the cluster.
        deadline = time.monotonic() + 20
        while True:
            try:
                await proxy.send_message("orders", b"k", b"after")
                break
            except TrpcError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
    assert [m.value for m in kafka.messages("orders")] == [b"before", b"after"]


async def test_a_consumer_service_keeps_running_through_an_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[bytes | None] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        seen.append(msg.value)

    async with InMemoryKafka() as kafka:
        server = server_of(service("svc", "orders", "g"))
        trpc_kafka.register_kafka_handler_service(server, handle)
        async with kafka.serving(server):
            with caplog.at_level(logging.WARNING, "trpc_kafka.consumer"), kafka.unreachable():
                kafka.publish("orders", b"held")
                deadline = time.monotonic() + 20
                while "consume fail" not in caplog.text:
                    assert time.monotonic() < deadline, "the outage was not reported"
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.1)
                assert seen == []
            assert "Is your cluster reachable?" in caplog.text
            await kafka.wait_handled("orders")
        assert seen == [b"held"]


# -- consuming ---------------------------------------------------------------------------------


async def test_wait_handled_names_what_is_behind_when_a_handler_keeps_failing() -> None:
    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        raise RuntimeError("always")

    async with InMemoryKafka() as kafka:
        server = server_of(service("svc", "orders", "g", "maxRetry=0"))  # retries forever
        trpc_kafka.register_kafka_handler_service(server, handle)
        async with kafka.serving(server):
            kafka.publish("orders", b"v")
            with pytest.raises(
                TimeoutError, match=r"group 'g' orders\[0\]: handled up to offset 0, end 1"
            ):
                await kafka.wait_handled("orders", timeout=0.3)
        with pytest.raises(TimeoutError, match="no consumer group subscribes to it"):
            await kafka.wait_handled("orders", timeout=0.05)


async def test_initial_newest_handles_what_is_published_once_serving() -> None:
    seen: list[bytes | None] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        seen.append(msg.value)

    async with InMemoryKafka() as kafka:
        kafka.publish("orders", b"before")
        server = server_of(service("svc", "orders", "g"))  # initial defaults to newest
        trpc_kafka.register_kafka_handler_service(server, handle)
        async with kafka.serving(server):
            kafka.publish("orders", b"after")
            await kafka.wait_handled("orders")
        assert seen == [b"after"]
        assert kafka.committed("g", "orders") == 2


async def test_serving_raises_why_the_server_did_not_start() -> None:
    async with InMemoryKafka() as kafka:
        server = server_of(service("svc", "orders", "g"))  # no handler registered
        with pytest.raises(trpc_kafka.ConfigError, match="no handler registered"):
            async with kafka.serving(server):
                pass


@pytest.mark.parametrize("strategy", ["range", "roundrobin", "sticky"])
async def test_a_group_shares_partitions_and_hands_them_over(strategy: str) -> None:
    handled: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}

    def handler(name: str):  # type: ignore[no-untyped-def]
        async def handle(ctx: Context, msg: ConsumerMessage) -> None:
            raw = get_raw_kafka_context(ctx)
            assert raw is not None and raw.session.group == "g"
            assert (msg.topic, msg.partition) in raw.session.assignment
            handled[name].append((msg.partition, msg.offset))

        return handle

    extra = f"strategy={strategy}&initial=oldest"
    async with InMemoryKafka(partitions=4) as kafka:
        first = server_of(service("a", "orders", "g", extra))
        trpc_kafka.register_kafka_handler_service(first, handler("a"))
        second = server_of(service("b", "orders", "g", extra))
        trpc_kafka.register_kafka_handler_service(second, handler("b"))
        async with kafka.serving(first):
            for i in range(8):
                kafka.publish("orders", f"{i}".encode(), partition=i % 4)
            async with kafka.serving(second):
                for i in range(8):
                    kafka.publish("orders", f"{i}".encode(), partition=i % 4)
                await kafka.wait_handled("orders")
                mine = {p for p, _ in handled["b"]}
                assert len(mine) == 2  # two members, four partitions: two each
            # b left: its partitions come back to a, from where b committed
            for i in range(8):
                kafka.publish("orders", f"{i}".encode(), partition=i % 4)
            await kafka.wait_handled("orders")
    every = sorted(handled["a"] + handled["b"])
    assert every == sorted((p, o) for p in range(4) for o in range(6))  # each exactly once


async def test_wait_handled_reports_a_server_that_failed_instead_of_waiting() -> None:
    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        pass

    async with InMemoryKafka() as kafka:
        server = server_of(service("svc", "orders", "g"))
        trpc_kafka.register_kafka_handler_service(server, handle)
        with pytest.raises(RuntimeError, match="broken on purpose") as caught:
            async with kafka.serving(server):
                server.service("svc").fail(RuntimeError("broken on purpose"))
                kafka.publish("orders", b"v")
                start = time.monotonic()
                try:
                    await kafka.wait_handled("orders", timeout=20)
                finally:
                    assert time.monotonic() - start < 10
        # Leaving serving() raises the server's own error; the wait had stopped at once with it.
        assert "the server failed: RuntimeError('broken on purpose')" in str(
            caught.value.__context__
        )


async def test_wait_handled_sync_waits_from_another_thread() -> None:
    seen: list[bytes | None] = []
    release = threading.Event()

    def handle(ctx: Context, msg: ConsumerMessage) -> None:
        time.sleep(0.05)  # slow enough that an early return would be caught below
        if msg.value == b"held":
            release.wait(30)
        seen.append(msg.value)

    async with InMemoryKafka() as kafka:
        server = server_of(service("svc", "orders", "g"))
        trpc_kafka.register_kafka_handler_service(server, handle)
        async with kafka.serving(server):
            for i in range(3):
                kafka.publish("orders", f"v{i}".encode())
            await asyncio.to_thread(kafka.wait_handled_sync, "orders", group="g", timeout=20)
            assert seen == [b"v0", b"v1", b"v2"]
            kafka.publish("orders", b"held")
            try:
                with pytest.raises(
                    TimeoutError, match=r"group 'g' orders\[0\]: handled up to offset 3, end 4"
                ):
                    await asyncio.to_thread(kafka.wait_handled_sync, "orders", timeout=0.2)
            finally:
                release.set()
            await asyncio.to_thread(kafka.wait_handled_sync, "orders", timeout=20)
            assert seen[-1] == b"held"
