"""Delivery handling: what happens when librdkafka reports a message delivered or failed.

Reports arrive on the delivery thread of the message's producer (``entry.ProducerEntry``):

- acked sends (``send_message`` and co.) awaited on an event loop: ``ProducerEntry.collect``
  records the report, and once per poll :func:`dispatch` hands the batch to each loop with one
  ``call_soon_threadsafe`` (:func:`settle` sets the futures there);
- acked blocking sends: a :class:`SyncWaiter` per call, released by the report;
- fire-and-forget sends: the proxy's :class:`AsyncReporter`, which calls the success or error
  callback that :mod:`~trpc_kafka._producer.callbacks` resolves (the proxy's own, else the
  package's), exactly once per message.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from functools import partial
from typing import Any, Final

from confluent_kafka import KafkaError, Message

from trpc_kafka._producer.callbacks import (
    ErrorCallback,
    SuccessCallback,
    error_callback,
    package_callbacks,
    success_callback,
)
from trpc_kafka._producer.callbacks import (
    async_producer_success_callback as _default_success,
)
from trpc_kafka._producer.errors import ASYNC_SEND, CAUSED, SEND, CauseSource, delivery_error
from trpc_kafka._runtime.filters import notify_delivery_failed

log = logging.getLogger("trpc_kafka.producer")

AckedResult = tuple[int, int]
"""``(partition, offset)`` of an acknowledged send."""
NO_OFFSET: Final = -1
"""Offset reported when none is known: ``requiredAcks=0`` or an ``async=1`` send."""
Done = tuple["asyncio.Future[AckedResult]", "KafkaError | None", Message]
"""One report of an acked send awaited on a loop: its future, error and message."""

delivery_thread = threading.local()
"""``entry``: the producer whose delivery thread this is (unset on other threads)."""
caller_polling = threading.local()
"""``entry``: the producer this (non-delivery) thread polls now (``ProducerEntry.poll_here``)."""


def acked_result(msg: Message) -> AckedResult:
    """``(partition, offset)`` of a delivered message; -1 for what librdkafka does not know."""
    offset = msg.offset()
    partition = msg.partition()
    # acks=0: librdkafka knows no offset (None); -1 says so.
    return (
        -1 if partition is None else partition,
        NO_OFFSET if offset is None or offset < 0 else offset,
    )


def settle(done: list[Done]) -> None:
    """Runs on the futures' event loop: settle one batch of acked sends."""
    for fut, err, msg in done:
        if fut.done():  # timed out or cancelled meanwhile
            continue
        if err is None:
            # acked_result inlined: this runs once per acked send on the event loop.
            offset = msg.offset()
            partition = msg.partition()
            fut.set_result(
                (
                    -1 if partition is None else partition,
                    NO_OFFSET if offset is None or offset < 0 else offset,
                )
            )
        else:
            fut.set_exception(delivery_error(err, msg.topic(), SEND))


def dispatch(
    done: list[Done], cause: KafkaError | None, here: asyncio.AbstractEventLoop | None = None
) -> None:
    """Hand the reports of one poll to their loops: one wake-up per loop.

    ``cause``: the producer's known cause; a message purged or timed out because of it says so.
    ``here``: the running loop of the polling thread (``ProducerEntry.poll_here``): its
    futures are settled at once, the others' loops woken.
    """
    if cause is not None:
        done = [(f, cause if e is not None and e.code() in CAUSED else e, m) for f, e, m in done]
    first_loop = done[0][0].get_loop()
    same = True
    for item in done:
        if item[0].get_loop() is not first_loop:
            same = False
            break
    if same:
        if first_loop is here:
            settle(done)
        else:
            _call_soon(first_loop, done)
        return
    by_loop: dict[asyncio.AbstractEventLoop, list[Done]] = {}
    for item in done:
        by_loop.setdefault(item[0].get_loop(), []).append(item)
    for loop, items in by_loop.items():
        if loop is here:
            settle(items)
        else:
            _call_soon(loop, items)


def _call_soon(loop: asyncio.AbstractEventLoop, done: list[Done]) -> None:
    try:
        loop.call_soon_threadsafe(settle, done)
    except RuntimeError:  # the loop is closed: nobody awaits these any more
        log.debug("kafka producer: %d delivery report(s) for a closed event loop", len(done))


class SyncWaiter:
    """``on_delivery`` of a blocking acked send: the report releases the lock (served by the
    delivery thread, or by the caller's own poll)."""

    __slots__ = ("err", "lock", "msg")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.err: KafkaError | None = None
        self.msg: Message | None = None

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        self.err = err
        self.msg = msg
        self.lock.release()

    def delivered(self) -> bool:
        """Whether the report came (the caller polls for it: ``ProducerEntry.poll_here``)."""
        return self.msg is not None

    def result(self, source: CauseSource) -> AckedResult:
        """The outcome once released: ``(partition, offset)``, or the delivery's error."""
        msg = self.msg
        assert msg is not None
        if self.err is not None:
            raise delivery_error(self.err, msg.topic(), SEND, source)
        return acked_result(msg)


class AsyncReporter:
    """The reports of one proxy's fire-and-forget sends, to its callbacks (delivery thread).

    :attr:`deliver` is the ``on_delivery`` of every headerless message of the proxy (one object
    for all of them); :meth:`with_headers` makes the one of a message with headers, which
    librdkafka's reports do not carry back.
    """

    __slots__ = ("_error", "_success", "deliver", "name")

    def __init__(
        self, name: str, success: SuccessCallback | None, error: ErrorCallback | None
    ) -> None:
        self.name = name
        self._success = success
        self._error = error
        self.deliver = self._headerless()

    def _headerless(self) -> Any:
        # A closure, not a method: this runs once per message and a success with the default
        # (do-nothing) callback in place returns after one attribute read.
        own_success = self._success
        hooks = package_callbacks
        default = _default_success
        report = self.report

        def deliver(err: KafkaError | None, msg: Message) -> None:
            if err is None and own_success is None and hooks.success is default:
                return
            report(err, msg, None)

        return deliver

    def with_headers(self, headers: Any) -> Any:
        """The ``on_delivery`` of one message with ``headers`` (a list or dict, checked)."""
        return partial(self._report_with_headers, headers)

    def _report_with_headers(self, headers: Any, err: KafkaError | None, msg: Message) -> None:
        self.report(err, msg, headers)

    def report(self, err: KafkaError | None, msg: Message, headers: Any) -> None:
        """Call the success or error callback of one report; a callback that raises is logged.

        Served on a caller's poll (``ProducerEntry.poll_here``), it is passed to the delivery
        thread: callbacks run there, one at a time, as the README promises.
        """
        polling = getattr(caller_polling, "entry", None)
        if polling is not None:
            polling.defer(partial(self.report, err, msg, headers))
            return
        try:
            topic = msg.topic() or ""
            if err is None:
                success = success_callback(self._success)
                if success is not None:
                    success(topic, msg.key(), msg.value(), reported_headers(headers))
            else:
                source = getattr(delivery_thread, "entry", None)
                error = delivery_error(err, topic, ASYNC_SEND, source)
                notify_delivery_failed(self.name, topic, error.code)  # metrics, before user code
                error_callback(self._error)(
                    error,
                    topic,
                    msg.key(),
                    msg.value(),
                    reported_headers(headers),
                )
        except Exception:
            log.exception("kafka producer %r: async send callback raised", self.name)


def reported_headers(headers: Any) -> list[tuple[str, bytes | None]] | None:
    """Headers for a callback as the broker got them: ``(name, bytes)`` pairs, or None."""
    if not headers:
        return None
    items = headers.items() if isinstance(headers, dict) else headers
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in items]


__all__ = [
    "NO_OFFSET",
    "AckedResult",
    "AsyncReporter",
    "Done",
    "SyncWaiter",
    "acked_result",
    "caller_polling",
    "delivery_thread",
    "dispatch",
    "reported_headers",
    "settle",
]
