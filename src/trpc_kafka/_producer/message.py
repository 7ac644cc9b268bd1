"""The message of ``send_raw_message`` (Sarama's ``ProducerMessage``) and payload type checks."""

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


def payload_problem(topic: object, key: object, value: object, headers: object) -> TrpcError:
    """The 121 error for arguments librdkafka refused with a TypeError: names what is wrong."""
    if not isinstance(topic, str):
        return encode_error("topic", f"must be str, got {type(topic).__name__}")
    for name, obj in (("key", key), ("value", value)):
        if obj is not None and not isinstance(obj, _PAYLOAD_TYPES):
            return encode_error(name, f"must be bytes, str or None, got {type(obj).__name__}")
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
        if not isinstance(name, str):
            return encode_error("headers", f"item {i}: name must be str, got {type(name).__name__}")
        if value is not None and not isinstance(value, _PAYLOAD_TYPES):
            return encode_error(
                "headers",
                f"item {i} ({name!r}): value must be bytes, str or None, "
                f"got {type(value).__name__}",
            )
    return None


def append_metadata(
    headers: Headers | None, metadata: Mapping[str, bytes]
) -> list[tuple[str, HeaderValue]]:
    """``headers`` as a list with the context metadata appended (``trpcMeta=true``)."""
    out: list[tuple[str, HeaderValue]]
    if headers is None:
        out = []
    elif isinstance(headers, Mapping):
        out = list(headers.items())
    else:
        out = list(headers)
    out.extend(metadata.items())
    return out
