"""Registration of handlers (registration.py) and the checks made when a service starts."""

from __future__ import annotations

import asyncio
import functools

import pytest

from trpc_kafka._config.errors import ConfigError
from trpc_kafka._consumer import (
    ConsumerMessage,
    register_batch_handler_service,
    register_kafka_consumer_service,
    register_kafka_handler_service,
)
from trpc_kafka._consumer.registration import is_async_callable, registration_of
from trpc_kafka._runtime.context import Context
from trpc_kafka._runtime.server import Server, Service, get_transport

ADDR = "127.0.0.1:9?topics=t&group=g"


async def _async_handle(ctx: Context, msg: ConsumerMessage) -> None:
    return None


def _sync_handle(ctx: Context, msg: ConsumerMessage) -> None:
    return None


async def _async_batch(ctx: Context, msgs: list[ConsumerMessage]) -> None:
    return None


def test_the_kafka_transport_is_registered_at_import() -> None:
    from trpc_kafka._consumer.transport import KafkaServiceTransport

    assert get_transport("kafka") is KafkaServiceTransport


def test_async_detection() -> None:
    class AsyncCall:
        async def __call__(self, ctx: Context, msg: ConsumerMessage) -> None:
            return None

    class SyncCall:
        def __call__(self, ctx: Context, msg: ConsumerMessage) -> None:
            return None

    class Consumer:
        async def handle(self, ctx: Context, msg: ConsumerMessage) -> None:
            return None

        def handle_sync(self, ctx: Context, msg: ConsumerMessage) -> None:
            return None

    assert is_async_callable(_async_handle)
    assert not is_async_callable(_sync_handle)
    assert is_async_callable(AsyncCall())
    assert not is_async_callable(SyncCall())
    assert is_async_callable(Consumer().handle)
    assert not is_async_callable(Consumer().handle_sync)
    assert is_async_callable(functools.partial(_async_handle))
    assert not is_async_callable(functools.partial(_sync_handle))
    assert not is_async_callable(print)


async def _serve_expecting(server: Server, match: str) -> ConfigError:
    with pytest.raises(ConfigError, match=match) as info:
        await asyncio.wait_for(server.serve(), 30)
    return info.value


async def test_no_handler_refuses_to_start() -> None:
    server = Server()
    server.add_service(Service("lonely", address=ADDR))
    err = await _serve_expecting(server, "no handler registered")
    assert "service 'lonely'" in str(err)
    assert "register_kafka_consumer_service" in str(err)


async def test_batch_handler_needs_batch_in_the_address() -> None:
    server = Server()
    server.add_service(Service("batcher", address=ADDR))
    register_batch_handler_service(server.service("batcher"), _async_batch)
    err = await _serve_expecting(server, "needs key 'batch' > 0")
    assert "got batch=0" in str(err)


async def test_single_handler_with_batch_refuses_to_start() -> None:
    server = Server()
    server.add_service(Service("single", address=ADDR + "&batch=10"))
    register_kafka_handler_service(server, _async_handle)
    await _serve_expecting(server, "needs a batch handler")


@pytest.mark.parametrize(
    ("address", "match"),
    [
        ("127.0.0.1:9?group=g", "names no topic"),
        ("127.0.0.1:9?topics=t", "names no consumer group"),
        ("127.0.0.1:9?topics=t&group=g&strategy=fair", "strategy"),
        ("127.0.0.1:9?topics=t&group=g&password=s3cret&user=u&mechanism=PLAIN&bogus=1", "bogus"),
    ],
)
async def test_bad_addresses_refuse_to_start(address: str, match: str) -> None:
    server = Server()
    server.add_service(Service("svc", address=address))
    register_kafka_handler_service(server, _async_handle)
    err = await _serve_expecting(server, match)
    assert "s3cret" not in str(err)


def test_register_on_a_service_of_another_protocol() -> None:
    service = Service("http", address="x", protocol="http")
    with pytest.raises(ConfigError, match="protocol 'http'"):
        register_kafka_handler_service(service, _async_handle)


def test_register_on_a_server_without_kafka_services() -> None:
    server = Server()
    server.add_service(Service("http", address="x", protocol="http"))
    with pytest.raises(ConfigError, match="no service with protocol: kafka"):
        register_kafka_handler_service(server, _async_handle)


def test_consumer_needs_a_handle_method() -> None:
    with pytest.raises(TypeError, match="has no handle"):
        register_kafka_consumer_service(Service("s", address=ADDR), object())  # type: ignore[arg-type]


def test_own_handler_wins_over_the_server_wide_one() -> None:
    server = Server()
    a = server.add_service(Service("a", address=ADDR))
    b = server.add_service(Service("b", address=ADDR))
    register_kafka_handler_service(a, _sync_handle)
    register_kafka_handler_service(server, _async_handle)
    reg_a, reg_b = registration_of(a), registration_of(b)
    assert reg_a is not None and reg_a.fn is _sync_handle and not reg_a.is_async
    assert reg_b is not None and reg_b.fn is _async_handle and reg_b.is_async
