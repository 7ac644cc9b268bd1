"""How a handler gets to a kafka service: the reference's three ``Register*`` functions.

A registration only records the handler; the service checks it against its address when it
starts (a batch handler needs ``batch`` > 0), so handlers may be registered before a
``fake_address`` config is.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

from trpc_kafka._config.errors import ConfigError
from trpc_kafka._consumer.message import ConsumerMessage
from trpc_kafka._runtime.context import Context
from trpc_kafka._runtime.server import Server, Service

KAFKA_PROTOCOL = "kafka"

ConsumerHandle = Callable[[Context, ConsumerMessage], "Awaitable[object] | object"]
"""``async def handle(ctx, msg)`` or ``def handle(ctx, msg)``; the return value is ignored."""

BatchConsumerHandle = Callable[[Context, list[ConsumerMessage]], "Awaitable[object] | object"]
"""``async def handle(ctx, msgs)`` or ``def handle(ctx, msgs)``; one partition's messages."""


class KafkaConsumer(Protocol):
    """An object with a ``handle(ctx, msg)`` method (``async def`` or plain)."""

    def handle(self, ctx: Context, msg: ConsumerMessage) -> Awaitable[object] | object: ...


Kind = Literal["single", "batch"]


class Registration:
    """A registered handler: its kind, the callable, and whether it is a coroutine function."""

    __slots__ = ("fn", "is_async", "kind", "name")

    def __init__(self, kind: Kind, fn: Callable[[Context, Any], Any], name: str) -> None:
        self.kind: Kind = kind
        self.fn = fn
        self.is_async = is_async_callable(fn)
        self.name = name

    def __repr__(self) -> str:
        how = "async" if self.is_async else "sync"
        return f"Registration({self.kind}, {self.name}, {how})"


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` returns a coroutine: ``async def`` functions, bound methods,
    ``functools.partial`` of them, and objects whose ``__call__`` is ``async def``."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    if inspect.isfunction(fn) or inspect.ismethod(fn) or inspect.isbuiltin(fn):
        return False
    call = getattr(type(fn), "__call__", None)  # noqa: B004 - the class's, not the instance's
    return call is not None and inspect.iscoroutinefunction(call)


# Server-wide handlers of register_kafka_handler_service(server, ...): they serve every kafka
# service of that server without a handler of its own, whatever the order of registration.
_server_defaults: weakref.WeakKeyDictionary[Server, Registration] = weakref.WeakKeyDictionary()


def _name_of(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__


def _check_service(service: Service, what: str) -> None:
    if service.protocol != KAFKA_PROTOCOL:
        raise ConfigError(
            f"{what}: service {service.name!r} has protocol {service.protocol!r}; kafka "
            f"handlers serve services with protocol: {KAFKA_PROTOCOL}",
            key="protocol",
            value=service.protocol,
        )


def _register(target: Server | Service, reg: Registration, what: str) -> None:
    if isinstance(target, Server):
        kafka = [s for s in target.services.values() if s.protocol == KAFKA_PROTOCOL]
        if not kafka:
            known = ", ".join(f"{s.name} ({s.protocol})" for s in target.services.values())
            raise ConfigError(
                f"{what}: the server has no service with protocol: {KAFKA_PROTOCOL} "
                f"(services: {known or 'none'})",
                key="protocol",
            )
        _server_defaults[target] = reg
        return
    if not isinstance(target, Service):
        raise TypeError(f"{what}: expected a Server or a Service, got {type(target).__name__}")
    _check_service(target, what)
    target.handler = reg


def register_kafka_consumer_service(service: Service | Server, consumer: KafkaConsumer) -> None:
    """Serve ``service`` with ``consumer.handle(ctx, msg)`` (``async def`` or plain ``def``).

    Given the Server, serves every kafka service that has no handler of its own.
    """
    handle = getattr(consumer, "handle", None)
    if not callable(handle):
        raise TypeError(
            f"register_kafka_consumer_service: {type(consumer).__name__} has no handle(ctx, msg)"
        )
    reg = Registration("single", handle, _name_of(handle))
    _register(service, reg, "register_kafka_consumer_service")


def register_kafka_handler_service(
    server_or_service: Server | Service, handle: ConsumerHandle
) -> None:
    """Serve with the function ``handle(ctx, msg)`` (``async def`` or plain ``def``).

    Given the Server, it serves every kafka service that has no handler of its own
    (reference Q1); given one Service, only that one.
    """
    if not callable(handle):
        raise TypeError(f"register_kafka_handler_service: {handle!r} is not callable")
    reg = Registration("single", handle, _name_of(handle))
    _register(server_or_service, reg, "register_kafka_handler_service")


def register_batch_handler_service(
    server_or_service: Server | Service, handle: BatchConsumerHandle
) -> None:
    """Serve with ``handle(ctx, msgs)``: up to ``batch`` messages of one partition per call.

    The service's address must set ``batch`` > 0; otherwise it refuses to start.
    """
    if not callable(handle):
        raise TypeError(f"register_batch_handler_service: {handle!r} is not callable")
    reg = Registration("batch", handle, _name_of(handle))
    _register(server_or_service, reg, "register_batch_handler_service")


def registration_of(service: Service) -> Registration | None:
    """The handler serving ``service``: its own, else its server's default, else None."""
    if isinstance(service.handler, Registration):
        return service.handler
    if service.handler is not None and callable(service.handler):  # set by hand: a handle(ctx, msg)
        return Registration("single", service.handler, _name_of(service.handler))
    if service.server is not None:
        return _server_defaults.get(service.server)
    return None
