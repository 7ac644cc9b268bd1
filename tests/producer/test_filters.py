"""Client filters wrap every producer call, async and blocking."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from tests.producer._util import consume
from tests.producer.test_proxy import Reports
from trpc_kafka._config.file import parse_config, set_global_config
from trpc_kafka._producer import CanceledError, ProducerMessage, new_client_proxy, syncloop
from trpc_kafka._runtime.context import Context, current_context, use_context
from trpc_kafka._runtime.errors import TrpcError, business_error
from trpc_kafka._runtime.filters import Handler, register_filter

NewTopic = Callable[..., str]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    async def __call__(self, ctx: Context, req: Any, next: Handler) -> Any:
        seen = {
            "rpc": ctx.rpc_name,
            "method": ctx.callee_method,
            "callee": ctx.callee_service,
            "caller": ctx.caller_service,
            "topic": req.topic,
            "deadline": ctx.deadline,
            "thread": threading.current_thread().name,
            "current": current_context(),
        }
        rsp = await next(ctx, req)
        seen["rsp"] = rsp
        with self.lock:
            self.calls.append(seen)
        return rsp


async def test_every_call_runs_the_chain_with_its_rpc_name(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()
    rec = Recorder()
    reports = Reports()
    name = "trpc.app.server.orders_producer"
    proxy = new_client_proxy(
        name, target=f"kafka://{kafka_bootstrap}?topic={topic}", filters=[rec], timeout=5
    )
    server_ctx = Context(caller_service="trpc.upstream", callee_service="trpc.app.server.handler")
    with use_context(server_ctx):
        await proxy.produce(b"k", b"1")
        assert await proxy.send_message(topic, b"k", b"2") == (0, 1)
        await proxy.async_send_message(topic, b"k", b"3")
        assert await proxy.send_raw_message(ProducerMessage(topic, b"4")) == (0, 3)
    reports.wait(1)
    assert [c["rpc"] for c in rec.calls] == [
        f"/{name}/produce",
        f"/{name}/send",
        f"/{name}/asyncSend",
        f"/{name}/sendRaw",
    ]
    assert [c["method"] for c in rec.calls] == ["produce", "send", "asyncSend", "sendRaw"]
    assert {c["callee"] for c in rec.calls} == {name}
    # Inside a server handler, the handling service calls out.
    assert {c["caller"] for c in rec.calls} == {"trpc.app.server.handler"}
    assert [c["rsp"] for c in rec.calls] == [None, (0, 1), None, (0, 3)]
    assert all(c["deadline"] is not None for c in rec.calls)
    assert all(c["current"] is server_ctx for c in rec.calls)
    assert len(consume(kafka_bootstrap, topic, 4)) == 4


def test_blocking_twins_run_the_chain(kafka_bootstrap: str, new_topic: NewTopic) -> None:
    topic = new_topic()
    rec = Recorder()
    proxy = new_client_proxy(
        "svc", target=f"kafka://{kafka_bootstrap}?topic={topic}", filters=[rec]
    )
    ctx = Context(caller_service="script", metadata={"a": b"1"})
    with use_context(ctx):
        proxy.produce_sync(b"k", b"1")
        assert proxy.send_message_sync(topic, b"k", b"2") == (0, 1)
        proxy.async_send_message_sync(topic, b"k", b"3")
        assert proxy.send_raw_message_sync(ProducerMessage(topic, b"4")) == (0, 3)
    assert [c["rpc"] for c in rec.calls] == [
        "/svc/produce",
        "/svc/send",
        "/svc/asyncSend",
        "/svc/sendRaw",
    ]
    assert {c["caller"] for c in rec.calls} == {"script"}
    # The chain ran on the background loop, with the caller's context current there (as for
    # the async calls); the call's own context is the filter's argument.
    assert {c["thread"] for c in rec.calls} == {"trpc-kafka-sync-calls"}
    assert all(c["current"] is ctx for c in rec.calls)
    # From other threads as well.
    results: list[tuple[int, int]] = []
    threads = [
        threading.Thread(target=lambda: results.append(proxy.send_message_sync(topic, None, b"t")))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(o for _, o in results) == [4, 5, 6, 7]


async def test_a_filter_can_short_circuit(kafka_bootstrap: str, new_topic: NewTopic) -> None:
    topic = new_topic()

    async def deny(ctx: Context, req: Any, next: Handler) -> Any:
        if req.value == b"blocked":
            raise business_error(10001, "blocked by policy")
        return await next(ctx, req)

    proxy = new_client_proxy("p", target=f"kafka://{kafka_bootstrap}", filters=[deny])
    with pytest.raises(TrpcError) as info:
        await proxy.send_message(topic, None, b"blocked")
    assert info.value.code == 10001
    with pytest.raises(TrpcError, match="blocked by policy"):
        proxy.send_message_sync(topic, None, b"blocked")
    assert await proxy.send_message(topic, None, b"fine") == (0, 0)


async def test_filters_can_change_request_and_metadata(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    topic = new_topic()

    async def stamp(ctx: Context, req: Any, next: Handler) -> Any:
        ctx.metadata["stamped-by"] = b"filter"
        req.headers = [*(req.headers or []), ("seen", b"yes")]
        return await next(ctx, req)

    proxy = new_client_proxy(
        "p", target=f"kafka://{kafka_bootstrap}?trpcMeta=true", filters=[stamp]
    )
    await proxy.send_message(topic, b"k", b"v", [("own", b"1")])
    (record,) = consume(kafka_bootstrap, topic, 1)
    assert record.headers == [("own", b"1"), ("seen", b"yes"), ("stamped-by", b"filter")]


async def test_filter_sees_the_deadline_and_timeouts_still_apply(kafka_bootstrap: str) -> None:
    async def slow(ctx: Context, req: Any, next: Handler) -> Any:
        await asyncio.sleep(0.3)  # a slow filter: the deadline is past when it goes on
        return await next(ctx, req)

    proxy = new_client_proxy("p", target=f"kafka://{kafka_bootstrap}", filters=[slow], timeout=0.2)
    with pytest.raises(TrpcError) as info:
        await proxy.send_message("t", None, b"v")
    assert info.value.code == 101


async def test_yaml_filter_names_are_resolved(kafka_bootstrap: str, new_topic: NewTopic) -> None:
    topic = new_topic()
    order: list[str] = []

    def named(label: str) -> Any:
        async def f(ctx: Context, req: Any, next: Handler) -> Any:
            order.append(label)
            return await next(ctx, req)

        return f

    register_filter("tracing", client=named("tracing"))
    register_filter("metrics", client=named("metrics"))
    set_global_config(
        parse_config(
            f"""
client:
  filter: [tracing]
  service:
    - name: trpc.app.server.events
      target: kafka://{kafka_bootstrap}?topic={topic}
      filter: [metrics]
""",
            file="trpc_python.yaml",
        )
    )
    proxy = new_client_proxy("trpc.app.server.events")
    await proxy.produce(None, b"v")
    assert order == ["tracing", "metrics"]


async def test_no_filters_means_no_chain(kafka_bootstrap: str) -> None:
    proxy = new_client_proxy("p", target=f"kafka://{kafka_bootstrap}")
    assert proxy._chains is None
    assert proxy._fast


def test_a_cancelled_blocking_call_is_161_canceled_error(kafka_bootstrap: str) -> None:
    """Code 161 has one type on both paths: a blocking twin whose filter is cancelled (its
    runner loop stops) raises CanceledError too, not a plain TrpcError."""
    entered = threading.Event()

    async def stuck(ctx: Context, req: Any, next: Handler) -> Any:
        entered.set()
        await asyncio.sleep(60)
        return await next(ctx, req)

    proxy = new_client_proxy("p", target=f"kafka://{kafka_bootstrap}", filters=[stuck])
    caught: list[BaseException] = []

    def call() -> None:
        try:
            proxy.send_message_sync("t", None, b"v")
        except BaseException as exc:  # CanceledError is a BaseException too
            caught.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    assert entered.wait(30)
    syncloop.stop()
    thread.join(30)
    [exc] = caught
    assert isinstance(exc, CanceledError) and isinstance(exc, TrpcError)
    assert exc.code == 161 and "SendMessage" in exc.msg
