"""Every consumer key of the address is applied: settings given to librdkafka, and behaviour."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Producer

from tests.consumer._util import (
    address,
    assignment,
    load_factor,
    new_group,
    one_service,
    produce,
    serving,
    transport_of,
    wait_assigned,
    wait_until,
)
from trpc_kafka._config.address import (
    get_default_config,
    register_addr_config,
    unregister_addr_config,
)
from trpc_kafka._consumer import (
    ConsumerMessage,
    get_raw_kafka_context,
    register_kafka_consumer_service,
    register_kafka_handler_service,
)
from trpc_kafka._consumer import transport as transport_mod
from trpc_kafka._runtime.context import Context, current_context
from trpc_kafka._runtime.filters import Handler
from trpc_kafka._runtime.server import Server, Service

NewTopic = Callable[..., str]


async def _noop(ctx: Context, msg: ConsumerMessage) -> None:
    return None


async def test_keys_reach_librdkafka(
    kafka_bootstrap: str, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[dict[str, Any]] = []
    real = transport_mod.create_consumer

    def spy(settings: dict[str, Any]) -> Any:
        created.append(dict(settings))
        return real(settings)

    monkeypatch.setattr(transport_mod, "create_consumer", spy)
    extra = (
        "strategy=range&initial=newest&isolationLevel=ReadCommitted&fetchDefault=65536"
        "&fetchMax=2097152&maxWaitTime=250&groupSessionTimeout=7000"
        "&groupRebalanceTimeout=20000&netMaxOpenRequests=3&clientid=my-client"
        "&rdkafka.statistics.interval.ms=0&version=2.8.0&maxProcessingTime=700"
    )
    server = one_service(address(kafka_bootstrap, topic, "the-group", extra))
    register_kafka_handler_service(server, _noop)
    async with serving(server):
        pass
    s = created[0]
    assert s["bootstrap.servers"] == kafka_bootstrap
    assert s["group.id"] == "the-group"
    assert s["client.id"] == "my-client"
    assert s["partition.assignment.strategy"] == "range"
    assert s["auto.offset.reset"] == "latest"
    assert s["isolation.level"] == "read_committed"
    assert s["max.partition.fetch.bytes"] == 65536
    assert s["fetch.max.bytes"] == 2097152
    assert s["fetch.wait.max.ms"] == 250
    assert s["session.timeout.ms"] == 7000
    assert s["max.poll.interval.ms"] == 20000
    assert s["max.in.flight.requests.per.connection"] == 3
    assert s["statistics.interval.ms"] == "0"
    # At-least-once: our code stores offsets after handling; librdkafka commits every 3 s.
    assert s["enable.auto.offset.store"] is False
    assert s["enable.auto.commit"] is True
    assert s["auto.commit.interval.ms"] == 3000
    # The prefetch queue is the bounded buffer ahead of the handlers: refill it promptly.
    assert s["fetch.queue.backoff.ms"] == 20
    # version: librdkafka negotiates protocol versions with each broker; nothing to set.
    assert not any("version" in k for k in s)


@pytest.mark.parametrize(
    ("strategy", "assignor"),
    [("sticky", "cooperative-sticky"), ("range", "range"), ("roundrobin", "roundrobin")],
)
async def test_strategy_and_default_client_id(
    kafka_bootstrap: str, topic: str, strategy: str, assignor: str
) -> None:
    group = new_group()
    server = one_service(address(kafka_bootstrap, topic, group, f"strategy={strategy}"))
    register_kafka_handler_service(server, _noop)
    async with serving(server):
        service = server.service("consumer")
        await wait_assigned(service, 1)
        settings = transport_of(service).settings
        assert settings["partition.assignment.strategy"] == assignor
        # A consumer left at the default client id uses its group (reference).
        assert settings["client.id"] == group
        assert transport_of(service).session_view().member_id.startswith(group)


async def test_initial_oldest_and_newest(kafka_bootstrap: str, topic: str) -> None:
    produce(kafka_bootstrap, topic, [b"old"])
    oldest: list[bytes | None] = []
    newest: list[bytes | None] = []
    server = Server(max_close_wait=10)
    server.add_service(Service("oldest", address=address(kafka_bootstrap, topic)))
    newest_addr = address(kafka_bootstrap, topic, extra="initial=newest")
    server.add_service(Service("newest", address=newest_addr))

    async def on_oldest(ctx: Context, msg: ConsumerMessage) -> None:
        oldest.append(msg.value)

    async def on_newest(ctx: Context, msg: ConsumerMessage) -> None:
        newest.append(msg.value)

    register_kafka_handler_service(server.service("oldest"), on_oldest)
    register_kafka_handler_service(server.service("newest"), on_newest)
    async with serving(server):
        service = server.service("newest")
        await wait_assigned(service, 1)
        state = transport_of(service)._states[(topic, 0)]
        # The high watermark is known once the first fetch answered: the start is resolved.
        await wait_until(lambda: state.high_watermark is not None, what="first fetch")
        produce(kafka_bootstrap, topic, [b"new"])
        await wait_until(lambda: len(oldest) == 2 and len(newest) == 1)
    assert oldest == [b"old", b"new"]
    assert newest == [b"new"]


async def test_isolation_level_hides_aborted_transactions(kafka_bootstrap: str, topic: str) -> None:
    producer = Producer(
        {"bootstrap.servers": kafka_bootstrap, "transactional.id": f"tx-{uuid.uuid4().hex}"}
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"committed-1")
    producer.commit_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"aborted")
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"committed-2")
    producer.commit_transaction(30)
    seen: dict[str, list[bytes | None]] = {"committed": [], "uncommitted": []}
    server = Server(max_close_wait=10)
    for name, level in (("committed", "ReadCommitted"), ("uncommitted", "ReadUncommitted")):
        addr = address(kafka_bootstrap, topic, extra=f"isolationLevel={level}")
        service = server.add_service(Service(name, address=addr))

        async def handle(ctx: Context, msg: ConsumerMessage, name: str = name) -> None:
            seen[name].append(msg.value)

        register_kafka_handler_service(service, handle)
    async with serving(server):
        await wait_until(lambda: len(seen["committed"]) == 2 and len(seen["uncommitted"]) == 3)
        await asyncio.sleep(0.3)
    assert seen["committed"] == [b"committed-1", b"committed-2"]
    assert seen["uncommitted"] == [b"committed-1", b"aborted", b"committed-2"]


async def test_trpc_meta_headers_become_metadata(kafka_bootstrap: str, topic: str) -> None:
    produce(kafka_bootstrap, topic, [b"v"], headers=[("caller", b"svc-a"), ("empty", b"")])
    seen: dict[str, dict[str, bytes]] = {}
    server = Server(max_close_wait=10)
    for name, extra in (("meta", "trpcMeta=true"), ("plain", "")):
        service = server.add_service(
            Service(name, address=address(kafka_bootstrap, topic, extra=extra))
        )

        async def handle(ctx: Context, msg: ConsumerMessage, name: str = name) -> None:
            seen[name] = dict(ctx.metadata)

        register_kafka_handler_service(service, handle)
    async with serving(server):
        await wait_until(lambda: len(seen) == 2)
    assert seen["meta"] == {"caller": b"svc-a", "empty": b""}
    assert seen["plain"] == {}


async def test_limiter_rate_is_kept_across_partitions(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic(partitions=2)
    for p in range(2):
        produce(kafka_bootstrap, topic, [b"x"] * 15, partition=p)
    server = one_service(address(kafka_bootstrap, topic, extra="limiterRate=20&limiterBurst=1"))
    times: list[float] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        times.append(time.monotonic())

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: len(times) == 30, timeout=20)
    # 30 messages at 20/s with a burst of 1: the 29 after the first take >= 1.45 s.
    elapsed = times[-1] - times[0]
    assert 1.35 <= elapsed < 3.0 * load_factor(), elapsed


async def test_limiter_burst(kafka_bootstrap: str, topic: str) -> None:
    produce(kafka_bootstrap, topic, [b"x"] * 15)
    server = one_service(address(kafka_bootstrap, topic, extra="limiterRate=10&limiterBurst=10"))
    times: list[float] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        times.append(time.monotonic())

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: len(times) == 15, timeout=20)
    assert times[9] - times[0] < 0.2, "the burst passes at once"
    assert 0.4 <= times[14] - times[0] < 1.5, "then 10 per second"


async def test_filters_wrap_every_handling(kafka_bootstrap: str, topic: str) -> None:
    produce(kafka_bootstrap, topic, [b"a", b"b"])
    events: list[str] = []
    contexts: list[tuple[str, str, str]] = []

    async def outer(ctx: Context, req: Any, next: Handler) -> Any:
        contexts.append((ctx.rpc_name, ctx.callee_method, ctx.callee_service))
        events.append(f"outer>{req.offset}")
        rsp = await next(ctx, req)
        events.append(f"outer<{req.offset}")
        return rsp

    async def inner(ctx: Context, req: Any, next: Handler) -> Any:
        events.append("inner>")
        return await next(ctx, req)

    server = Server(max_close_wait=10)
    server.add_service(
        Service("orders", address=address(kafka_bootstrap, topic), filters=[outer, inner])
    )

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        assert current_context() is ctx
        events.append(f"handle {msg.offset}")

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: len(events) == 8)
    assert events == [
        "outer>0",
        "inner>",
        "handle 0",
        "outer<0",
        "outer>1",
        "inner>",
        "handle 1",
        "outer<1",
    ]
    assert contexts[0] == ("/trpc.kafka.consumer.service/handle", topic, "orders")


async def test_raw_kafka_context_is_a_read_only_snapshot(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic(partitions=2)
    produce(kafka_bootstrap, topic, [b"a", b"b", b"c"], partition=1)
    group = new_group()
    server = one_service(address(kafka_bootstrap, topic, group))
    raws: list[Any] = []

    async def handle(ctx: Context, msg: ConsumerMessage) -> None:
        raw = get_raw_kafka_context(ctx)
        if msg.offset == 2:  # the cached high watermark is refreshed every second
            deadline = time.monotonic() + 30
            while raw is not None and raw.claim.high_watermark != 3:
                assert time.monotonic() < deadline, "the high watermark was never refreshed"
                await asyncio.sleep(0.05)
                raw = get_raw_kafka_context(ctx)
        raws.append(raw)

    register_kafka_handler_service(server, handle)
    async with serving(server):
        await wait_until(lambda: len(raws) == 3)
    raw = raws[-1]
    assert raw is not None
    assert raw.session.group == group
    assert raw.session.member_id.startswith(group)
    assert raw.session.generation_id is not None and raw.session.generation_id >= 1
    assert raw.session.assignment == ((topic, 0), (topic, 1))
    assert (raw.claim.topic, raw.claim.partition) == (topic, 1)
    assert raw.claim.initial_offset == 0
    assert raw.claim.high_watermark == 3
    with pytest.raises(AttributeError):
        raw.claim.partition = 0  # frozen
    public = [name for name in dir(raw) + dir(raw.session) + dir(raw.claim) if name[0] != "_"]
    assert not any(n in public for n in ("commit", "seek", "pause", "assign", "consumer"))
    assert get_raw_kafka_context(Context()) is None


async def test_several_services_with_their_own_groups_and_handlers(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    """Reference example consumer_with_mulit_service, and Q1: a server-wide handler serves
    every kafka service without one of its own, whatever the order of registration."""
    t1, t2, t3 = new_topic(), new_topic(), new_topic()
    for t in (t1, t2, t3):
        produce(kafka_bootstrap, t, [t.encode()])
    server = Server(max_close_wait=10)
    for name, t in (("one", t1), ("two", t2), ("three", t3)):
        server.add_service(Service(name, address=address(kafka_bootstrap, t)))
    seen: list[tuple[str, str, bytes | None]] = []

    async def fallback(ctx: Context, msg: ConsumerMessage) -> None:
        seen.append(("fallback", ctx.callee_service, msg.value))

    class Own:
        async def handle(self, ctx: Context, msg: ConsumerMessage) -> None:
            seen.append(("own", ctx.callee_service, msg.value))

    register_kafka_consumer_service(server.service("one"), Own())
    register_kafka_handler_service(server, fallback)
    register_kafka_consumer_service(server.service("three"), Own())
    async with serving(server):
        await wait_until(lambda: len(seen) == 3)
        groups = {transport_of(s).settings["group.id"] for s in server.services.values()}
        assert len(groups) == 3
    assert sorted(seen) == sorted(
        [
            ("own", "one", t1.encode()),
            ("fallback", "two", t2.encode()),
            ("own", "three", t3.encode()),
        ]
    )


@pytest.fixture
def fake_address() -> Iterator[str]:
    name = f"fake_address_{uuid.uuid4().hex[:6]}"
    yield name
    unregister_addr_config(name)


async def test_fake_address_uses_the_registered_config(
    kafka_bootstrap: str, topic: str, fake_address: str
) -> None:
    """FAQ 5: a placeholder address in the YAML file, the real config injected in code."""
    produce(kafka_bootstrap, topic, [b"x"])
    cfg = get_default_config()
    cfg.brokers = [kafka_bootstrap]
    cfg.topics = [topic]
    cfg.group = new_group()
    cfg.initial = "oldest"
    register_addr_config(fake_address, cfg)
    server = Server(max_close_wait=10)
    server.add_service(Service(fake_address, address=fake_address))
    seen: list[bytes | None] = []

    class Consumer:
        async def handle(self, ctx: Context, msg: ConsumerMessage) -> None:
            seen.append(msg.value)

    register_kafka_consumer_service(server.service(fake_address), Consumer())
    async with serving(server):
        await wait_until(lambda: seen == [b"x"])
        assert assignment(server.service(fake_address)) == ((topic, 0),)


async def test_inconsistent_strategies_are_reported_with_the_hint(
    kafka_bootstrap: str, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    """FAQ 4: members of one group with strategies that share no protocol."""
    group = new_group()
    server = Server(max_close_wait=10)
    server.add_service(
        Service("a", address=address(kafka_bootstrap, topic, group, "strategy=range"))
    )
    server.add_service(
        Service("b", address=address(kafka_bootstrap, topic, group, "strategy=roundrobin"))
    )
    register_kafka_handler_service(server, _noop)
    with caplog.at_level(logging.ERROR, logger="trpc_kafka.consumer"):
        async with serving(server):
            await wait_until(
                lambda: (
                    "INCONSISTENT_GROUP_PROTOCOL" in caplog.text
                    or "inconsistent" in caplog.text.lower()
                ),
                timeout=30,
                what="the inconsistent protocol error",
            )
            assert server.closing is False
    line = next(r.getMessage() for r in caplog.records if "strategy" in r.getMessage())
    assert "kafka server transport: consume fail:" in line
    assert "give every member the same 'strategy' key" in line


async def test_settings_shown_by_the_transport_hide_the_password(
    kafka_bootstrap: str, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[dict[str, Any]] = []

    def spy(settings: dict[str, Any]) -> Any:
        created.append(dict(settings))
        raise RuntimeError("no consumer needed")

    monkeypatch.setattr(transport_mod, "create_consumer", spy)
    extra = "mechanism=SCRAM-SHA-512&user=alice&password=s3cret-pw"
    server = one_service(address(kafka_bootstrap, topic, extra=extra))
    register_kafka_handler_service(server, _noop)
    with pytest.raises(RuntimeError, match="no consumer needed"):
        await asyncio.wait_for(server.serve(), 30)
    assert created[0]["sasl.password"] == "s3cret-pw"
    transport = transport_of(server.service("consumer"))
    assert transport.settings["sasl.password"] == "******"
    assert "s3cret-pw" not in repr(transport.settings)
