"""Filters (interceptors) as in tRPC-Go: one function type, a chain that is a list.

A filter is ``async def f(ctx, req, next) -> rsp``. It may act before and after calling
``await next(ctx, req)``, or return without calling it (short-circuit). The chain is built once
when a service or proxy is set up, so a service with no filters calls its handler directly.

Two names are built in but loaded on first use, so that nothing of them is imported unless a
service asks: ``otel`` (:mod:`trpc_kafka.otel`) and ``prometheus`` (:mod:`trpc_kafka.prometheus`).
What a filter cannot see from around one call, a consumer's retries and the messages it gives
up on, and the failed deliveries of asynchronous sends, goes to observers
(:func:`add_consumer_observer`, :func:`add_producer_observer`).
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Literal, Protocol

from trpc_kafka._config.errors import ConfigError
from trpc_kafka._runtime.context import Context

Handler = Callable[[Context, Any], Awaitable[Any]]
"""The innermost function a chain calls: ``async def handler(ctx, req) -> rsp``."""

Filter = Callable[[Context, Any, Handler], Awaitable[Any]]
"""An interceptor: ``async def f(ctx, req, next) -> rsp``."""

Side = Literal["server", "client"]

_registry: dict[tuple[Side, str], Filter] = {}
_registry_lock = threading.Lock()

# Named filters of the optional extras: the module that registers them on import, and the extra
# that installs what it imports.
_BUILT_IN: Final = {
    "otel": ("trpc_kafka.otel", "otel", "opentelemetry"),
    "prometheus": ("trpc_kafka.prometheus", "prometheus", "prometheus_client"),
}


def register_filter(
    name: str, *, server: Filter | None = None, client: Filter | None = None
) -> None:
    """Register a named filter for the server side, the client side, or both.

    Services switch it on by listing ``name`` under ``filter:`` in the YAML file.
    """
    if not name:
        raise ValueError("filter name must not be empty")
    if server is None and client is None:
        raise ValueError(f"filter {name!r}: give a server filter, a client filter, or both")
    with _registry_lock:
        if server is not None:
            _registry["server", name] = server
        if client is not None:
            _registry["client", name] = client


def get_filter(name: str, side: Side) -> Filter | None:
    """The registered filter of that name and side, or None.

    ``otel`` and ``prometheus`` load their module on first use; a ConfigError says which extra
    to install when its library is missing.
    """
    f = _registry.get((side, name))
    if f is None and name in _BUILT_IN:
        _load_built_in(name)
        f = _registry.get((side, name))
    return f


def _load_built_in(name: str) -> None:
    module, extra, library = _BUILT_IN[name]
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != library:
            raise
        raise ConfigError(
            f"filter {name!r} needs {library}, which is not installed: "
            f"pip install 'trpc-kafka[{extra}]'",
            key="filter",
            value=name,
        ) from None


def resolve_filters(names: Sequence[str], side: Side, *, where: str) -> list[Filter]:
    """The filters named in a YAML ``filter:`` list; an unknown name is an error naming it."""
    filters: list[Filter] = []
    for name in names:
        try:
            f = get_filter(name, side)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc.message}", key=exc.key, value=exc.value) from None
        if f is None:
            known = sorted({n for s, n in _registry if s == side} | set(_BUILT_IN))
            raise ConfigError(
                f"{where}: unknown {side} filter {name!r}; registered {side} filters: "
                f"{', '.join(known) or '(none)'}; register it with "
                f"trpc_kafka.register_filter({name!r}, {side}=...)",
                key="filter",
                value=name,
            )
        filters.append(f)
    return filters


def chain(filters: Sequence[Filter], handler: Handler) -> Handler:
    """Wrap ``handler`` in ``filters``; the first filter is the outermost.

    With no filters the handler itself is returned: the mechanism costs nothing then.
    """
    wrapped = handler
    for f in reversed(filters):
        wrapped = _bind(f, wrapped)
    return wrapped


def _bind(f: Filter, next_handler: Handler) -> Handler:
    async def call(ctx: Context, req: Any) -> Any:
        return await f(ctx, req, next_handler)

    return call


# -- consumer observers ---------------------------------------------------------------------


class ConsumerObserver(Protocol):
    """What a consumer service does between handlings, for metrics: called on the event loop,
    must not block or raise (an exception is logged and ignored)."""

    def retrying(self, service: str, topic: str, partition: int, attempt: int) -> None:
        """A failed handling is about to be tried again; ``attempt`` counts from 2."""

    def gave_up(self, service: str, topic: str, count: int, dead_letter_topic: str | None) -> None:
        """``count`` messages whose retries are exhausted were sent to ``dead_letter_topic``
        (None: no dead letter topic, they were marked consumed and dropped)."""


# Replaced whole under the lock, read without it (the retry path reads it).
_observers: list[tuple[ConsumerObserver, ...]] = [()]
_log = logging.getLogger("trpc_kafka")


def add_consumer_observer(observer: ConsumerObserver) -> None:
    """Tell ``observer`` about the retries and given-up messages of every consumer service."""
    with _registry_lock:
        if observer not in _observers[0]:
            _observers[0] = (*_observers[0], observer)


def remove_consumer_observer(observer: ConsumerObserver) -> None:
    with _registry_lock:
        _observers[0] = tuple(o for o in _observers[0] if o is not observer)


def notify_retrying(service: str, topic: str, partition: int, attempt: int) -> None:
    for observer in _observers[0]:
        try:
            observer.retrying(service, topic, partition, attempt)
        except Exception:
            _log.exception("consumer observer %r failed", observer)


def notify_gave_up(service: str, topic: str, count: int, dead_letter_topic: str | None) -> None:
    for observer in _observers[0]:
        try:
            observer.gave_up(service, topic, count, dead_letter_topic)
        except Exception:
            _log.exception("consumer observer %r failed", observer)


class ProducerObserver(Protocol):
    """What producers report after a call returned, for metrics: called on the producer's
    delivery thread, must not block or raise (an exception is logged and ignored)."""

    def delivery_failed(self, service: str, topic: str, code: int) -> None:
        """An asynchronous send of proxy ``service`` was not delivered (tRPC ``code``)."""


_producer_observers: list[tuple[ProducerObserver, ...]] = [()]


def add_producer_observer(observer: ProducerObserver) -> None:
    """Tell ``observer`` about the failed asynchronous deliveries of every client proxy."""
    with _registry_lock:
        if observer not in _producer_observers[0]:
            _producer_observers[0] = (*_producer_observers[0], observer)


def remove_producer_observer(observer: ProducerObserver) -> None:
    with _registry_lock:
        _producer_observers[0] = tuple(o for o in _producer_observers[0] if o is not observer)


def notify_delivery_failed(service: str, topic: str, code: int) -> None:
    for observer in _producer_observers[0]:
        try:
            observer.delivery_failed(service, topic, code)
        except Exception:
            _log.exception("producer observer %r failed", observer)
