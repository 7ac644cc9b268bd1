"""Callbacks of asynchronous sends, with the reference plugin's two module-level hooks.

``trpc_kafka.async_producer_success_callback(topic, key, value, headers)`` and
``trpc_kafka.async_producer_error_callback(err, topic, key, value, headers)`` are attributes of
the top-level package, replaceable by assignment at any time (as ``kafka.AsyncProducerSuccCallback``
in Go). They are looked up when a delivery report arrives, not when a message is queued, so a
replacement applies to every report from then on. A proxy may carry its own pair instead.

Callbacks run on the producer's delivery thread: they must be quick and must not block (hand
long work to a queue). An exception inside a callback is logged and never affects the delivery
of other messages. Each message whose send returned gets exactly one callback, success or error
(purged messages at close or exit included); a send that raised queued nothing and gets none.
A process killed by a signal keeps no promise: see :mod:`trpc_kafka._producer.signals`.

``key`` and ``value`` are ``bytes`` (or ``None``) as the broker got them; ``headers`` is a list of
``(str, bytes)`` pairs or ``None``. ``err`` is a :class:`~trpc_kafka.TrpcError` (code 141, or 101
for a delivery timeout) whose ``__cause__`` is the ``confluent_kafka.KafkaException``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any, Final, TypeAlias

log = logging.getLogger("trpc_kafka.producer")

RecordHeaders: TypeAlias = "list[tuple[str, bytes | None]] | None"
"""Headers of a sent record as callbacks get them: ``(name, bytes)`` pairs, or None."""
SuccessCallback: TypeAlias = Callable[[str, "bytes | None", "bytes | None", Any], None]
"""``(topic, key, value, headers) -> None``"""
ErrorCallback: TypeAlias = Callable[[BaseException, str, "bytes | None", "bytes | None", Any], None]
"""``(err, topic, key, value, headers) -> None``"""

_PACKAGE: Final = "trpc_kafka"


def async_producer_success_callback(
    topic: str, key: bytes | None, value: bytes | None, headers: RecordHeaders
) -> None:
    """Default success callback of asynchronous sends: does nothing."""


def async_producer_error_callback(
    err: BaseException,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: RecordHeaders,
) -> None:
    """Default error callback of asynchronous sends: logs the error with the topic."""
    log.error(
        "kafka async send to topic %r failed (key %d bytes, value %d bytes): %s",
        topic,
        0 if key is None else len(key),
        0 if value is None else len(value),
        err,
    )


_DEFAULT_SUCCESS: Final = async_producer_success_callback
_DEFAULT_ERROR: Final = async_producer_error_callback


def current_success_callback() -> SuccessCallback:
    """``trpc_kafka.async_producer_success_callback`` as it is now (the default if unset)."""
    module = sys.modules.get(_PACKAGE)
    cb = getattr(module, "async_producer_success_callback", None)
    return _DEFAULT_SUCCESS if cb is None else cb


def current_error_callback() -> ErrorCallback:
    """``trpc_kafka.async_producer_error_callback`` as it is now (the default if unset)."""
    module = sys.modules.get(_PACKAGE)
    cb = getattr(module, "async_producer_error_callback", None)
    return _DEFAULT_ERROR if cb is None else cb


def is_default_success(cb: object) -> bool:
    """Whether ``cb`` is the do-nothing default (lets the delivery thread skip building args)."""
    return cb is _DEFAULT_SUCCESS
