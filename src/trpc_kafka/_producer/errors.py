"""The errors of producer calls, built in one place with the operation names tRPC prints.

Every error text starts ``kafka client transport <op>:`` where ``<op>`` is :data:`SEND`
(acked sends, producer creation, librdkafka's client errors) or :data:`ASYNC_SEND`
(fire-and-forget sends and their callbacks), as the Go plugin prints them.
"""

from __future__ import annotations

import asyncio
from typing import Final, Protocol

from confluent_kafka import KafkaError, KafkaException

from trpc_kafka._kafka_errors import kafka_error_of, timeout_with_cause, to_trpc_error
from trpc_kafka._runtime.errors import (
    RET_CLIENT_CANCELED,
    RET_CLIENT_NETWORK_ERR,
    RET_CLIENT_TIMEOUT_ERR,
    TrpcError,
    framework_error,
)

SEND: Final = "SendMessage"
ASYNC_SEND: Final = "AsyncSendMessage"
ACK: Final = "waiting for the broker's acknowledgement"
QUEUE_FULL: Final = "waiting for room in the producer queue (queue.buffering.max.messages)"

CAUSED: Final = frozenset({KafkaError._PURGE_QUEUE, KafkaError._MSG_TIMED_OUT})
"""Delivery errors that stand for a failure of the producer: its known cause says more."""


class CauseSource(Protocol):
    """What knows why its sends fail now (a pooled producer)."""

    def known_cause(self) -> KafkaError | None: ...


class CanceledError(TrpcError, asyncio.CancelledError):
    """Code 161: the call was cancelled (its awaiting task, or a blocking call's runner).

    Both a :class:`TrpcError` (``except TrpcError`` sees code 161) and an
    ``asyncio.CancelledError``, so the task still ends cancelled when nothing catches it and
    ``asyncio.wait_for``, ``gather`` and task groups keep working. The blocking twins raise it
    too, so code 161 has one type on both paths.
    """


def canceled(op: str) -> CanceledError:
    return CanceledError(RET_CLIENT_CANCELED, f"kafka client transport {op}: call canceled")


def timeout_error(op: str, what: str) -> TrpcError:
    return framework_error(RET_CLIENT_TIMEOUT_ERR, f"kafka client transport {op}: timeout {what}")


def closed_error(op: str) -> TrpcError:
    return framework_error(RET_CLIENT_NETWORK_ERR, f"kafka client transport {op}: producer closed")


def proxy_closed(name: str) -> TrpcError:
    return framework_error(
        RET_CLIENT_NETWORK_ERR, f"kafka client transport: client proxy {name!r} is closed"
    )


def empty_topic() -> TrpcError:
    return framework_error(
        RET_CLIENT_NETWORK_ERR,
        "kafka client transport Produce: empty topic: the target has no topic= key "
        "(Produce sends to the target's topic; use send_message to name one)",
    )


def with_cause(exc: TrpcError, source: CauseSource, topic: str, op: str, what: str) -> TrpcError:
    """A timeout (101) while the producer knows why it cannot send: that cause instead."""
    if exc.code != RET_CLIENT_TIMEOUT_ERR:
        return exc
    cause = source.known_cause()
    if cause is None:
        return exc
    return timeout_with_cause(cause, op, topic, what)


def delivery_error(
    err: KafkaError, topic: str | None, op: str, source: CauseSource | None = None
) -> TrpcError:
    """The tRPC error for a failed delivery, with the KafkaException as its cause.

    A purged or timed-out message (:data:`CAUSED`) reports its producer's known cause, when
    ``source`` (the producer of the message) knows one.
    """
    if source is not None and err.code() in CAUSED:
        err = source.known_cause() or err
    exc = to_trpc_error(err, op, topic)
    exc.__cause__ = KafkaException(err)
    return exc


def enqueue_error(exc: KafkaException, topic: str, op: str) -> TrpcError:
    """The error of a ``produce()`` that librdkafka refused at the call."""
    err = kafka_error_of(exc)
    if err is None:  # pragma: no cover - librdkafka always wraps a KafkaError
        return framework_error(RET_CLIENT_NETWORK_ERR, f"kafka client transport {op}: {exc}")
    return delivery_error(err, topic, op)


__all__ = [
    "ACK",
    "ASYNC_SEND",
    "CAUSED",
    "QUEUE_FULL",
    "SEND",
    "CanceledError",
    "CauseSource",
    "canceled",
    "closed_error",
    "delivery_error",
    "empty_topic",
    "enqueue_error",
    "proxy_closed",
    "timeout_error",
    "with_cause",
]
