"""The one place where the confluent-kafka clients of the library are built.

The producer pool, consumer services and dead-letter producers build their librdkafka clients
through :func:`new_producer` and :func:`new_consumer`. While a
:class:`trpc_kafka.testing.InMemoryKafka` is active it installs its in-memory clients here
(:func:`install`), so every layer above the SDK (proxies, filters, partitioners, the consumer
transport, error mapping) runs unchanged.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from confluent_kafka import Consumer, Producer


class Clients(Protocol):
    """What replaces the SDK: builders of Producer- and Consumer-like objects."""

    def producer(self, settings: dict[str, Any]) -> Any: ...

    def consumer(self, settings: dict[str, Any]) -> Any: ...


_installed: list[Clients | None] = [None]


def new_producer(settings: dict[str, Any]) -> Producer:
    """A librdkafka Producer (or the installed replacement) from its settings."""
    clients = _installed[0]
    if clients is None:
        return Producer(settings)
    return cast(Producer, clients.producer(settings))


def new_consumer(settings: dict[str, Any]) -> Consumer:
    """A librdkafka Consumer (or the installed replacement) from its settings."""
    clients = _installed[0]
    if clients is None:
        return Consumer(settings)
    return cast(Consumer, clients.consumer(settings))


def install(clients: Clients | None) -> Clients | None:
    """Route client creation to ``clients`` (None: confluent-kafka); returns the previous ones."""
    previous = _installed[0]
    _installed[0] = clients
    return previous


def installed() -> Clients | None:
    return _installed[0]


__all__ = ["Clients", "install", "installed", "new_consumer", "new_producer"]
