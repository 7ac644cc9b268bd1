"""The two clusters of the behaviour tests: in memory and the real local broker.

Both offer the same small surface (:class:`Backend`); the tests use the library's public API for
everything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from trpc_kafka import ConsumerMessage, Server
from trpc_kafka.testing import InMemoryKafka

MEMORY_ADDRESS = "127.0.0.1:9092"
"""Any address reaches the in-memory cluster; this one looks like a real one."""


async def eventually(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait until ``condition()`` holds (generous bound: the machine may be busy)."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.005)


class Backend:
    name = ""
    bootstrap = ""

    def topic(self, partitions: int = 1) -> str:
        raise NotImplementedError

    def publish(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int = 0,
    ) -> None:
        raise NotImplementedError

    def read(self, topic: str, count: int, partitions: int = 1) -> list[ConsumerMessage]:
        """The first ``count`` records of ``topic``, sorted by (partition, offset)."""
        raise NotImplementedError

    def committed(self, group: str, topic: str, partition: int = 0) -> int | None:
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def serving(self, server: Server) -> AsyncIterator[Server]:
        raise NotImplementedError
        yield server

    @contextlib.contextmanager
    def unreachable(self) -> Iterator[str]:
        """An address no broker answers at (connections refused)."""
        raise NotImplementedError
        yield ""


class Memory(Backend):
    name = "memory"
    bootstrap = MEMORY_ADDRESS

    def __init__(self, kafka: InMemoryKafka) -> None:
        self.kafka = kafka

    def topic(self, partitions: int = 1) -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        self.kafka.create_topic(name, partitions)
        return name

    def publish(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int = 0,
    ) -> None:
        self.kafka.publish(topic, value, key=key, headers=headers or (), partition=partition)

    def read(self, topic: str, count: int, partitions: int = 1) -> list[ConsumerMessage]:
        got = self.kafka.messages(topic)
        assert len(got) >= count, f"{len(got)} record(s) in {topic}, expected {count}"
        return sorted(got[:count], key=lambda m: (m.partition, m.offset))

    def committed(self, group: str, topic: str, partition: int = 0) -> int | None:
        return self.kafka.committed(group, topic, partition)

    @contextlib.asynccontextmanager
    async def serving(self, server: Server) -> AsyncIterator[Server]:
        async with self.kafka.serving(server):
            yield server

    @contextlib.contextmanager
    def unreachable(self) -> Iterator[str]:
        with self.kafka.unreachable():
            yield self.bootstrap


class Real(Backend):
    name = "real"

    def __init__(self, bootstrap: str, new_topic: Callable[..., str]) -> None:
        self.bootstrap = bootstrap
        self._new_topic = new_topic

    def topic(self, partitions: int = 1) -> str:
        return self._new_topic(partitions)

    def publish(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        partition: int = 0,
    ) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap})
        errors: list[Any] = []
        producer.produce(
            topic,
            value,
            key,
            partition=partition,
            headers=list(headers or ()),
            on_delivery=lambda err, _m: errors.append(err),
        )
        assert producer.flush(30) == 0 and errors == [None], errors

    def read(self, topic: str, count: int, partitions: int = 1) -> list[ConsumerMessage]:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
            }
        )
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        got: list[ConsumerMessage] = []
        end = time.monotonic() + 30
        try:
            while len(got) < count and time.monotonic() < end:
                for m in consumer.consume(count, 0.2):
                    assert m.error() is None, m.error()
                    got.append(
                        ConsumerMessage(
                            str(m.topic()),
                            int(m.partition() or 0),
                            int(m.offset() or 0),
                            key=m.key(),
                            value=m.value(),
                            headers=_header_list(m.headers()),
                            timestamp=m.timestamp()[1],
                        )
                    )
        finally:
            consumer.close()
        assert len(got) >= count, f"{len(got)} record(s) in {topic}, expected {count}"
        return sorted(got, key=lambda m: (m.partition, m.offset))[:count]

    def committed(self, group: str, topic: str, partition: int = 0) -> int | None:
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        try:
            (tp,) = consumer.committed([TopicPartition(topic, partition)], timeout=30)
        finally:
            consumer.close()
        return None if tp.offset < 0 else int(tp.offset)

    @contextlib.asynccontextmanager
    async def serving(self, server: Server) -> AsyncIterator[Server]:
        task = asyncio.get_running_loop().create_task(server.serve())
        try:
            await eventually(
                lambda: (
                    task.done()
                    or all(getattr(s.transport, "started", False) for s in server.services.values())
                )
            )
            if task.done():
                task.result()
            yield server
        finally:
            await server.close()
            await task

    @contextlib.contextmanager
    def unreachable(self) -> Iterator[str]:
        yield "127.0.0.1:1"  # nothing listens on port 1: refused at once


def _header_list(raw: Any) -> list[tuple[str, bytes | None]]:
    items = raw.items() if isinstance(raw, dict) else raw or []
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in items]
