"""The plan step of a send: everything that needs no waiting, shared by the async and the
blocking calls of a proxy.

A call's plan (:class:`Send`) holds its operation, record, deadline, partition when it is
known without a look-up, and its delivery record (the ``on_delivery`` of a fire-and-forget
send; an acked one gets its future or waiter where it waits). Type checks raise here, before
anything is queued. What is left to the two halves of :class:`~trpc_kafka.ClientProxy` are the
waits: producer creation, partition count, queue room, acknowledgement.

The hot paths (no filters, ``random``, no headers, producer bound) build no plan: see
``ClientProxy.send_message`` and ``async_send_message``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaException

from trpc_kafka._producer.entry import ProducerEntry
from trpc_kafka._producer.errors import enqueue_error
from trpc_kafka._producer.message import (
    Headers,
    Payload,
    ProducerMessage,
    append_metadata,
    encode_error,
    headers_problem,
    payload_problem,
    topic_problem,
)
from trpc_kafka._producer.partitioner import Partitioner


class Send:
    """The plan of one send (general path only)."""

    __slots__ = (
        "acked",
        "deadline",
        "headers",
        "key",
        "on_delivery",
        "op",
        "partition",
        "timestamp",
        "topic",
        "value",
    )

    def __init__(  # noqa: PLR0917 - the record's fields, in produce()'s order
        self,
        op: str,
        acked: bool,
        topic: str,
        value: Payload,
        key: Payload,
        partition: int | None,
        timestamp: int,
        headers: Any,  # a list or dict once checked, or None
        deadline: float | None,
        on_delivery: Any,
    ) -> None:
        self.op = op
        self.acked = acked
        self.topic = topic
        self.value = value
        self.key = key
        self.partition = partition
        self.timestamp = timestamp
        self.headers = headers
        self.deadline = deadline
        self.on_delivery = on_delivery

    def place(self, entry: ProducerEntry, partitioner: Partitioner) -> bool:
        """Choose the partition from ``entry``'s cached count; False when a look-up is needed."""
        if self.partition is not None:
            return True
        count = entry.partitions_cached(self.topic)
        if count is None:
            if topic_problem(self.topic) is not None:
                raise payload_problem(self.topic, self.key, None, None)
            return False
        self.partition = partitioner.choose(self.topic, self.key, count)
        return True

    def produce(self, entry: ProducerEntry) -> bool:
        """Queue the message (placed: its partition is chosen); False while the queue is full."""
        partition = self.partition
        assert partition is not None
        try:
            if self.timestamp or self.headers is not None:
                entry.produce(
                    self.topic,
                    self.value,
                    self.key,
                    partition=partition,
                    on_delivery=self.on_delivery,
                    timestamp=self.timestamp,
                    headers=self.headers,
                )
            else:  # positional: keyword arguments cost the binding ~0.6 us a call
                entry.produce(self.topic, self.value, self.key, partition, self.on_delivery)
        except BufferError:
            return False
        except KafkaException as exc:
            raise enqueue_error(exc, self.topic, self.op) from exc
        except (TypeError, ValueError):  # ValueError: a str librdkafka cannot take
            raise payload_problem(self.topic, self.key, self.value, self.headers) from None
        return True


def checked_headers(headers: Headers | None, meta: dict[str, bytes] | None) -> Any:
    """Headers as librdkafka takes them (a list or a dict), type-checked, metadata appended."""
    problem = headers_problem(headers)
    if problem is not None:
        raise problem
    if meta:
        return append_metadata(headers, meta)
    if headers is None or type(headers) is list or type(headers) is dict:
        return headers
    return dict(headers) if isinstance(headers, Mapping) else list(headers)


def raw_fields(msg: ProducerMessage) -> tuple[str, int | None, int]:
    """Topic, partition and timestamp (ms) of a ``send_raw_message`` record, checked."""
    if not isinstance(msg, ProducerMessage):
        raise encode_error(
            "message", f"send_raw_message takes a ProducerMessage, got {type(msg).__name__}"
        )
    partition = msg.partition
    if partition is not None and (not isinstance(partition, int) or partition < 0):
        raise encode_error("partition", f"must be an int >= 0 or None, got {partition!r}")
    try:
        timestamp = msg.timestamp_ms()
    except (TypeError, ValueError, OverflowError) as exc:
        raise encode_error("timestamp", f"{msg.timestamp!r}: {exc}") from None
    if not isinstance(timestamp, int) or timestamp < 0:
        raise encode_error(
            "timestamp", f"must be ms since the epoch (int >= 0) or a datetime, got {timestamp!r}"
        )
    return msg.topic, partition, timestamp


def filtered_request(req: Any) -> ProducerMessage:
    """The request a filter chain passed on to the proxy: it must still be a ProducerMessage."""
    if not isinstance(req, ProducerMessage):
        raise encode_error(
            "request", f"a filter passed {type(req).__name__} on; expected a ProducerMessage"
        )
    return req


__all__ = ["Send", "checked_headers", "filtered_request", "raw_fields"]
