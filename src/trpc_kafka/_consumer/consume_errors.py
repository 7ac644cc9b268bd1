"""Consume errors of one service, for the classic and the share-group member alike.

librdkafka reports a failing cluster on every retry; a service logs each error code at most once
per :data:`ERROR_REPEAT` seconds, at WARNING when librdkafka recovers by itself (reconnects,
coordinator moves) and at ERROR when someone must act (a failed login or TLS handshake, any
other error). A fatal error fails the service, logged or not.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from confluent_kafka import KafkaError

from trpc_kafka._kafka_errors import describe, is_auth_failure
from trpc_kafka._rdkafka_log import RateLimiter, suppressed_note
from trpc_kafka._runtime import errors as codes
from trpc_kafka._runtime.errors import framework_error
from trpc_kafka._runtime.server import Service

logger = logging.getLogger("trpc_kafka.consumer")

ERROR_REPEAT: Final = 30.0
"""Seconds during which a service logs one consume error code once."""

_TRANSIENT_CODES: Final = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
        KafkaError._TIMED_OUT,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
    }
)


def is_transient(err: KafkaError) -> bool:
    """An error librdkafka recovers from by itself (retries, reconnects); not a failed login or
    TLS handshake (which librdkafka also retries, but which needs someone to act)."""
    if err.fatal() or is_auth_failure(err):
        return False
    return err.retriable() or err.code() in _TRANSIENT_CODES


class ConsumeErrors:
    """Reports the consume errors of one service (called on its poll thread)."""

    __slots__ = ("_log", "_service")

    def __init__(self, service: Service) -> None:
        self._service = service
        self._log = RateLimiter(ERROR_REPEAT)

    def report(self, err: KafkaError, topic: str | None = None) -> None:
        suppressed = self._log.admit(err.code())
        if suppressed is not None:
            logger.log(
                logging.WARNING if is_transient(err) else logging.ERROR,
                "kafka server transport: consume fail: %s%s [service %s]",
                describe(err, topic),
                suppressed_note(suppressed, ERROR_REPEAT),
                self._service.name,
            )
        if err.fatal():
            self._service.fail(
                framework_error(
                    codes.RET_SERVER_SYSTEM_ERR,
                    f"kafka server transport: consume fail: {describe(err, topic)}",
                )
            )


def set_done(done: asyncio.Future[None]) -> None:
    """Complete ``done`` unless it already is (a stop signal handed to the event loop)."""
    if not done.done():
        done.set_result(None)
