"""What a handler receives: :class:`ConsumerMessage`, and the :class:`ContinueWithoutCommit` signal.

A message handed to a handler is a thin view over librdkafka's record: ``topic``, ``partition``
and ``offset`` are plain attributes, ``key``, ``value``, ``headers`` and ``timestamp`` are read
from the record when asked for (nothing is copied per message for a handler that does not look).
Handlers may also build messages themselves (for unit tests of their own code) with
``ConsumerMessage(topic, partition, offset, key=..., value=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Header = tuple[str, "bytes | None"]
"""One record header: its key (text) and value (bytes, or None for a null value)."""

# librdkafka's "no timestamp" type.
_TIMESTAMP_NOT_AVAILABLE = 0


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
    (bytes or None), ``headers`` (a list of ``(key, value)`` pairs, key str, value bytes or
    None; empty when the record has none) and ``timestamp`` (milliseconds since the epoch, as
    Kafka stores it, or None when the record carries no timestamp).
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
        headers: list[Header] | None = self._m.headers()
        return [] if headers is None else headers

    @property
    def timestamp(self) -> int | None:
        kind, ms = self._m.timestamp()
        return None if kind == _TIMESTAMP_NOT_AVAILABLE else int(ms)
