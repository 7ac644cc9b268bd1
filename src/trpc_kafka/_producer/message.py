"""The message of ``send_raw_message`` (Sarama's ``ProducerMessage``) and payload checks.

Every string that reaches librdkafka is checked here: confluent-kafka raises foreign errors for
some (UnicodeEncodeError for a lone surrogate in a topic, key or value; ValueError for NUL in a
topic), silently cuts others at a NUL (header names, str header values), and crashes the
interpreter on a header name it cannot encode. Each becomes a 121 error naming the argument.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from trpc_kafka._runtime.errors import RET_CLIENT_ENCODE_ERR, TrpcError, framework_error

Payload: TypeAlias = "bytes | str | None"
"""A key or value: bytes, str (sent UTF-8 encoded) or None (a null key or value)."""

HeaderValue: TypeAlias = "bytes | str | None"
Headers: TypeAlias = "Sequence[tuple[str, HeaderValue]] | Mapping[str, HeaderValue]"
"""Record headers: ``(name, value)`` pairs (names may repeat) or a mapping."""


@dataclass
class ProducerMessage:
    """One record with everything a producer can set, for ``send_raw_message``.

    ``partition`` None lets the proxy's partitioner choose; ``timestamp`` is milliseconds since
    the epoch (or an aware/naive ``datetime``, naive meaning local time), None meaning now.
    Filters receive this object as the request of every producer call.
    """

    topic: str
    value: Payload = None
    key: Payload = None
    headers: Headers | None = None
    partition: int | None = None
    timestamp: int | _dt.datetime | None = None

    def timestamp_ms(self) -> int:
        """The timestamp for librdkafka: ms since the epoch, 0 for "now"."""
        ts = self.timestamp
        if ts is None:
            return 0
        if isinstance(ts, _dt.datetime):
            return int(ts.timestamp() * 1000)
        return ts


_PAYLOAD_TYPES = (bytes, str)


def encode_error(what: str, detail: str) -> TrpcError:
    return framework_error(RET_CLIENT_ENCODE_ERR, f"kafka client encode {what}: {detail}")


def text_problem(text: str, *, nul: bool) -> str | None:
    """Why librdkafka cannot take ``text`` whole (None when it can): a lone surrogate cannot be
    encoded as UTF-8; with ``nul``, a NUL character would end the C string there."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            return (
                f"is not valid UTF-8 text: {exc.reason}, {text[exc.start]!r} at index {exc.start}"
            )
    if nul and "\x00" in text:
        at = text.index("\x00")
        return f"contains NUL ('\\x00') at index {at}: a C string ends there"
    return None


def topic_problem(topic: object) -> TrpcError | None:
    """None for a topic librdkafka takes, else the 121 error saying why."""
    if not isinstance(topic, str):
        return encode_error("topic", f"must be str, got {type(topic).__name__}")
    if not topic:
        return encode_error("topic", "must not be empty")
    problem = text_problem(topic, nul=True)
    if problem is not None:
        return encode_error("topic", f"{topic!r} {problem}")
    return None


def payload_problem(topic: object, key: object, value: object, headers: object) -> TrpcError:
    """The 121 error for arguments librdkafka refused (TypeError, or ValueError for a string it
    cannot encode): names what is wrong."""
    problem = topic_problem(topic)
    if problem is not None:
        return problem
    for name, obj in (("key", key), ("value", value)):
        if obj is not None and not isinstance(obj, _PAYLOAD_TYPES):
            return encode_error(name, f"must be bytes, str or None, got {type(obj).__name__}")
        if isinstance(obj, str):
            text = text_problem(obj, nul=False)  # sent with its length: NUL is fine
            if text is not None:
                return encode_error(name, f"str {text}; pass bytes or valid text")
    problem = headers_problem(headers)
    if problem is not None:
        return problem
    return encode_error("message", "librdkafka refused the arguments")


def headers_problem(headers: object) -> TrpcError | None:
    """None when ``headers`` is acceptable, else the 121 error naming the bad item."""
    if headers is None:
        return None
    items: object
    if isinstance(headers, Mapping):
        items = list(headers.items())
    elif isinstance(headers, (list, tuple)):
        items = headers
    else:
        return encode_error(
            "headers",
            f"must be a list of (name, value) pairs or a mapping, got {type(headers).__name__}",
        )
    assert isinstance(items, (list, tuple))
    for i, item in enumerate(items):
        if not isinstance(item, tuple) or len(item) != 2:
            return encode_error("headers", f"item {i} must be a (name, value) pair, got {item!r}")
        name, value = item
        problem = header_problem(i, name, value)
        if problem is not None:
            return encode_error("headers", problem)
    return None


def header_problem(i: int, name: object, value: object) -> str | None:
    """None when header ``i`` is acceptable, else what is wrong with it."""
    if not isinstance(name, str):
        return f"item {i}: name must be str, got {type(name).__name__}"
    text = text_problem(name, nul=True)
    if text is not None:
        return f"item {i}: name {name!r} {text}"
    if value is None or isinstance(value, bytes):
        return None
    if not isinstance(value, str):
        return f"item {i} ({name!r}): value must be bytes, str or None, got {type(value).__name__}"
    # confluent-kafka sends a str header value up to its first NUL (strlen).
    text = text_problem(value, nul=True)
    if text is not None:
        return f"item {i} ({name!r}): str value {text}; pass bytes"
    return None


def append_metadata(
    headers: Headers | None, metadata: Mapping[str, bytes]
) -> list[tuple[str, HeaderValue]]:
    """``headers`` as a list with the context metadata appended (``trpcMeta=true``); a metadata
    item librdkafka cannot take is a 121 error (its keys become header names)."""
    out: list[tuple[str, HeaderValue]]
    if headers is None:
        out = []
    elif isinstance(headers, Mapping):
        out = list(headers.items())
    else:
        out = list(headers)
    first = len(out)
    out.extend(metadata.items())
    for i in range(first, len(out)):
        name, value = out[i]
        problem = header_problem(i - first, name, value)
        if problem is not None:
            raise encode_error("metadata", f"(trpcMeta headers) {problem}")
    return out
