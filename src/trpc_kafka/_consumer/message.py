"""What a handler receives: :class:`ConsumerMessage`, and the :class:`ContinueWithoutCommit` signal.

A message handed to a handler is a thin view over librdkafka's record: ``topic``, ``partition``
and ``offset`` are plain attributes, ``key``, ``value``, ``headers`` and ``timestamp`` are read
from the record when asked for (nothing is copied per message for a handler that does not look).
Handlers may also build messages themselves (for unit tests of their own code) with
``ConsumerMessage(topic, partition, offset, key=..., value=...)``.

Headers are read through :func:`record_headers` only: confluent-kafka (2.16 and earlier) cannot
convert a header whose name is not UTF-8 (legal on the wire; Sarama, the Java client and
aiokafka write them). Its ``Message.headers()`` fails on the first call (SystemError, or nothing
at all from a call site the interpreter has specialised) and returns a list holding a NULL name
on every later call, which crashes the interpreter when touched.
"""

from __future__ import annotations

import logging
import operator
import threading
from collections.abc import Sequence
from typing import Any

Header = tuple[str, "bytes | None"]
"""One record header: its key (text) and value (bytes, or None for a null value)."""

# librdkafka's "no timestamp" type.
_TIMESTAMP_NOT_AVAILABLE = 0

logger = logging.getLogger("trpc_kafka.consumer")

# record.headers() as a C-level call, which always turns a result returned with an exception
# set into SystemError. A Python call site that the interpreter has specialised (3.11+, after a
# few calls) skips that check: headers() then returns the list with the NULL name silently and
# leaves the exception pending, to surface in whatever C call comes next.
_call_headers = operator.methodcaller("headers")

# Serialises the first headers() call of a record with the repair of a poisoned one: between
# the SystemError and set_headers() another thread (a plain def handler) would get the
# poisoned list from headers().
_HEADERS_LOCK = threading.Lock()


def record_headers(record: Any) -> list[Header]:
    """The headers of a librdkafka record: the only safe way to read them.

    A header whose name is not valid UTF-8 is left out, with a warning. The record is repaired
    on the spot (``set_headers`` with the readable headers), so every later ``headers()`` call
    on it, ours or anyone's, returns that list: confluent-kafka converts headers once and keeps
    the result on the record.
    """
    with _HEADERS_LOCK:
        try:
            headers: list[Header] | None = _call_headers(record)
        except SystemError as exc:
            headers = _repair_headers(record, exc)
    return [] if headers is None else headers


def _repair_headers(record: Any, exc: SystemError) -> list[Header]:
    """After headers() failed: keep the readable headers, make the record safe to read again."""
    try:
        readable = _readable_headers(_call_headers(record))
    except Exception:  # ctypes missing or changed: drop every header instead
        readable = None
    record.set_headers([] if readable is None else readable)
    logger.warning(
        "kafka server transport: topic %s partition %d offset %d: a header name is not UTF-8 "
        "(%s); handled without %s",
        record.topic(),
        record.partition(),
        record.offset(),
        _bad_name(exc),
        "any headers" if readable is None else "the headers whose name is not UTF-8",
    )
    return [] if readable is None else readable


def _bad_name(exc: BaseException) -> str:
    """The name confluent-kafka failed to decode, from the exception chain (a second bad name
    in one record nests a SystemError per name)."""
    seen: BaseException | None = exc
    for _ in range(100):
        if seen is None:
            break
        if isinstance(seen, UnicodeDecodeError):
            return f"e.g. {seen.object!r}"
        seen = seen.__cause__ or seen.__context__
    return f"confluent-kafka: {exc}"


def _readable_headers(poisoned: object) -> list[Header] | None:
    """The (name, value) pairs of a list left by a failed headers() call whose name is not NULL.

    Its items are looked at through the C API first: indexing a NULL from Python crashes.
    None when the list is not the expected shape.
    """
    import ctypes  # noqa: PLC0415 - only ever needed for a poisoned record

    # Own prototypes (borrowed pointer as an int, None for NULL): the shared
    # ctypes.pythonapi attributes are left as other code configured them.
    item = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_ssize_t)
    list_item = item(("PyList_GetItem", ctypes.pythonapi))
    tuple_item = item(("PyTuple_GetItem", ctypes.pythonapi))
    if type(poisoned) is not list:
        return None
    readable: list[Header] = []
    for i in range(len(poisoned)):
        if not list_item(poisoned, i):
            continue
        pair = poisoned[i]
        if type(pair) is not tuple or len(pair) != 2:
            return None
        if not tuple_item(pair, 0) or not tuple_item(pair, 1):
            continue  # the name (or, out of memory, the value) could not be made
        name, value = pair
        if type(name) is not str or (value is not None and type(value) is not bytes):
            return None
        readable.append((name, value))
    return readable


class ContinueWithoutCommit(Exception):  # noqa: N818 - the reference's name, minus "Error"
    """Raise from a handler to skip a message: it is neither retried nor committed.

    Consumption goes on with the next message. The skipped offset is not marked by itself, but
    Kafka commits a position, not single messages: once a later message of the same partition
    is handled successfully, the committed position moves past the skipped one too (as in the
    reference, where marking a later offset covers the earlier ones). So the skipped message is
    only delivered again if the service stops or loses the partition before a later message of
    that partition succeeds. For a batch handler the whole batch is skipped that way.
    """


class ConsumerMessage:
    """One Kafka record as a handler sees it (the reference's ``sarama.ConsumerMessage``).

    Attributes: ``topic`` (str), ``partition`` (int), ``offset`` (int), ``key`` and ``value``
    (bytes or None), ``headers`` (a list of ``(key, value)`` pairs in record order, names
    may repeat, key str, value bytes or None; empty when the record has none; a header whose
    name is not UTF-8 is left out with a warning, see :func:`record_headers`) and
    ``timestamp`` (milliseconds since the epoch, as Kafka stores it, or None when the record
    carries no timestamp).
    """

    __slots__ = ("_headers", "_key", "_timestamp", "_value", "offset", "partition", "topic")

    topic: str
    partition: int
    offset: int

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        *,
        key: bytes | None = None,
        value: bytes | None = None,
        headers: Sequence[Header] = (),
        timestamp: int | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self._key = key
        self._value = value
        self._headers = list(headers)
        self._timestamp = timestamp

    @property
    def key(self) -> bytes | None:
        return self._key

    @property
    def value(self) -> bytes | None:
        return self._value

    @property
    def headers(self) -> list[Header]:
        return list(self._headers)

    @property
    def timestamp(self) -> int | None:
        return self._timestamp

    def __repr__(self) -> str:
        value = self.value
        shown = f"<{len(value)} bytes>" if value is not None else "None"
        return (
            f"ConsumerMessage(topic={self.topic!r}, partition={self.partition}, "
            f"offset={self.offset}, key={self.key!r}, value={shown}, "
            f"headers={len(self.headers)}, timestamp={self.timestamp})"
        )


class WireMessage(ConsumerMessage):
    """A ConsumerMessage over a record fetched by librdkafka (built once per handled message)."""

    __slots__ = ("_m",)

    def __init__(self, topic: str, partition: int, offset: int, record: Any) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self._m = record

    @property
    def key(self) -> bytes | None:
        key: bytes | None = self._m.key()
        return key

    @property
    def value(self) -> bytes | None:
        value: bytes | None = self._m.value()
        return value

    @property
    def headers(self) -> list[Header]:
        # A copy: the list is the record's own, read again by trpcMeta and the dead letter.
        return list(record_headers(self._m))

    @property
    def timestamp(self) -> int | None:
        kind, ms = self._m.timestamp()
        return None if kind == _TIMESTAMP_NOT_AVAILABLE else int(ms)
