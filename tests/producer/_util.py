"""Helpers of the producer tests: read records back with a plain confluent-kafka consumer."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    timestamp: int


def consume(bootstrap: str, topic: str, count: int, timeout: float = 20.0) -> list[Record]:
    """Read ``count`` records of ``topic`` from the beginning (fails if fewer arrive in time)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"producer-tests-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    _assign_all(consumer, topic)
    out: list[Record] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue
                raise AssertionError(f"consumer error: {err}")
            raw = msg.headers() or []
            headers = list(raw.items()) if isinstance(raw, dict) else raw
            out.append(
                Record(
                    partition=msg.partition() or 0,
                    offset=msg.offset() or 0,
                    key=msg.key(),
                    value=msg.value(),
                    headers=[(k, v.encode() if isinstance(v, str) else v) for k, v in headers],
                    timestamp=msg.timestamp()[1],
                )
            )
    finally:
        consumer.close()
    assert len(out) >= count, f"expected {count} records in {topic}, got {len(out)}"
    return out


def _assign_all(consumer: Consumer, topic: str) -> None:
    """Read every partition from the start, without a consumer group (no join delay)."""
    meta = consumer.list_topics(topic, timeout=10).topics[topic]
    partitions = sorted(meta.partitions) or [0]
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])


def consume_none(bootstrap: str, topic: str, wait: float = 1.5) -> list[Record]:
    """Whatever arrives in ``wait`` seconds (for "nothing was queued" checks)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"producer-tests-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        }
    )
    _assign_all(consumer, topic)
    out: list[Record] = []
    end = time.monotonic() + wait
    try:
        while time.monotonic() < end:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append(
                    Record(msg.partition() or 0, msg.offset() or 0, msg.key(), msg.value(), [], 0)
                )
    finally:
        consumer.close()
    return out


def closed_port() -> int:
    """A local TCP port where nothing listens."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SilentPort:
    """A local port that accepts connections and never answers (a hung broker).

    librdkafka connects and then waits for its first response, so no failure is known for
    seconds: calls run into their own timeout (code 101) instead of failing with a cause.
    """

    def __init__(self) -> None:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])

    def close(self) -> None:
        self._sock.close()
