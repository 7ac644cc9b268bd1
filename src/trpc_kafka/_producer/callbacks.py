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

Success reports nobody observes are not made: a proxy whose sends are all fire-and-forget
(``async=1``) and that has no success callback of its own gets, while the package success
callback is the default (do-nothing) one, a producer that librdkafka reports failures only to
(``delivery.report.only.error``: 14-21 % less CPU per message, bench/results/producer-go.md).
Failures still reach the error callback, exactly once each, and closing still waits for every
message. Assigning a package success callback retires those producers: every message sent from
then on is reported; the successes of messages already queued on them are not.

``key`` and ``value`` are ``bytes`` (or ``None``) as the broker got them; ``headers`` is a list of
``(str, bytes)`` pairs or ``None``. ``err`` is a :class:`~trpc_kafka.TrpcError` (code 141, or 101
for a delivery timeout) whose ``__cause__`` is the ``confluent_kafka.KafkaException``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final, TypeAlias

log = logging.getLogger("trpc_kafka.producer")

RecordHeaders: TypeAlias = "list[tuple[str, bytes | None]] | None"
"""Headers of a sent record as callbacks get them: ``(name, bytes)`` pairs, or None."""
SuccessCallback: TypeAlias = Callable[[str, "bytes | None", "bytes | None", Any], None]
"""``(topic, key, value, headers) -> None``"""
ErrorCallback: TypeAlias = Callable[[BaseException, str, "bytes | None", "bytes | None", Any], None]
"""``(err, topic, key, value, headers) -> None``"""


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


PACKAGE_NAMES: Final = ("async_producer_success_callback", "async_producer_error_callback")
"""The package attributes that hold the two callbacks (``trpc_kafka.<name> = fn`` sets one)."""


class PackageCallbacks:
    """The package-level pair as it is now; the one place the delivery path reads it.

    ``trpc_kafka``'s module class writes here whenever one of :data:`PACKAGE_NAMES` is assigned
    or deleted on the package (see ``trpc_kafka/__init__.py``), so nothing below the package
    reads the package's namespace.
    """

    __slots__ = ("error", "success")

    def __init__(self) -> None:
        self.success: SuccessCallback = async_producer_success_callback
        self.error: ErrorCallback = async_producer_error_callback

    def set(self, name: str, cb: Any) -> None:
        """Assign the callback of package attribute ``name`` (None: back to the default)."""
        if name == "async_producer_success_callback":
            self.success = async_producer_success_callback if cb is None else cb
            if self.success is not async_producer_success_callback:
                # After the assignment: a producer created from now on sees it (pool.py).
                for listener in success_listeners:
                    listener()
        elif name == "async_producer_error_callback":
            self.error = async_producer_error_callback if cb is None else cb
        else:  # pragma: no cover - the package forwards only PACKAGE_NAMES
            raise AttributeError(name)


package_callbacks: Final = PackageCallbacks()

success_listeners: Final[list[Callable[[], None]]] = []
"""Called (on the assigning thread) when the package success callback becomes one that does
something: the pool retires its producers that report failures only (``pool.py``)."""


def success_observed(own: SuccessCallback | None) -> bool:
    """Whether a success report of a proxy whose own success callback is ``own`` reaches code
    that does something: a callback of its own, or a package one other than the default.
    (No filter observes asynchronous successes: metrics count failures only.)"""
    return own is not None or package_callbacks.success is not async_producer_success_callback


def success_callback(own: SuccessCallback | None) -> SuccessCallback | None:
    """The success callback a report goes to; None for the do-nothing default (nothing to call)."""
    cb = package_callbacks.success if own is None else own
    return None if cb is async_producer_success_callback else cb


def error_callback(own: ErrorCallback | None) -> ErrorCallback:
    """The error callback a report goes to: the proxy's own, else the package's."""
    return package_callbacks.error if own is None else own
