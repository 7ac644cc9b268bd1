"""Helpers of the consumer tests: produce records, read committed offsets, run a server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, cast

from confluent_kafka import Consumer, Producer, TopicPartition

from trpc_kafka._consumer.transport import KafkaServiceTransport
from trpc_kafka._runtime.server import Server, Service

Headers = list[tuple[str, bytes]]

# Fast failure handling and group membership, for tests (keys in ``extra`` win).
FAST = {"retryInterval": "50", "groupSessionTimeout": "6000"}


def new_group() -> str:
    return f"g-{uuid.uuid4().hex[:10]}"


def address(bootstrap: str, topics: str, group: str | None = None, extra: str = "") -> str:
    """A consumer address reading from the oldest offset, with fast retries."""
    keys = {"topics": topics, "group": group or new_group(), "initial": "oldest", **FAST}
    for item in extra.split("&") if extra else ():
        key, _, value = item.partition("=")
        keys[key] = value
    return f"{bootstrap}?" + "&".join(f"{k}={v}" for k, v in keys.items())


def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes],
    *,
    partition: int | None = None,
    key: bytes | None = None,
    headers: Headers | None = None,
) -> None:
    """Produce ``values`` in order (to ``partition`` if given) and wait for every ack."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    errors: list[Any] = []

    def report(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    for value in values:
        kwargs: dict[str, Any] = {"on_delivery": report}
        if partition is not None:
            kwargs["partition"] = partition
        if headers is not None:
            kwargs["headers"] = headers
        while True:
            try:
                producer.produce(topic, value, key, **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
    left = producer.flush(30)
    assert left == 0 and not errors, f"produce failed: {errors or left}"


def produce_spread(bootstrap: str, topic: str, partitions: int, per_partition: int) -> None:
    """``per_partition`` values ``b"<partition>:<i>"`` to each partition."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(per_partition):
        for p in range(partitions):
            while True:
                try:
                    producer.produce(topic, f"{p}:{i}".encode(), partition=p)
                    break
                except BufferError:
                    producer.poll(0.05)
    assert producer.flush(60) == 0


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The committed offsets of ``group`` (partition -> offset; -1001 when none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=20)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in tps}


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": new_group()})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=20)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


async def wait_until(
    predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def transport_of(service: Service) -> KafkaServiceTransport:
    assert service.transport is not None, f"service {service.name} has no transport yet"
    return cast(KafkaServiceTransport, service.transport)


def assignment(service: Service) -> tuple[tuple[str, int], ...]:
    if service.transport is None:
        return ()
    return transport_of(service).session_view().assignment


async def wait_assigned(service: Service, count: int, timeout: float = 30.0) -> None:
    await wait_until(
        lambda: len(assignment(service)) == count, timeout, f"{count} partitions assigned"
    )


@contextlib.asynccontextmanager
async def serving(server: Server) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``server.serve()`` in a task; close the server (and check serve()) on exit."""
    task = asyncio.create_task(server.serve())
    await wait_until(
        lambda: (
            task.done()
            or all(
                s.transport is not None and transport_of(s).started
                for s in server.services.values()
            )
        ),
        what="services started",
    )
    await asyncio.sleep(0)
    if task.done():
        task.result()
    try:
        yield task
    finally:
        await server.close()
        await asyncio.wait_for(task, 30)


def one_service(
    addr: str, name: str = "consumer", timeout: float | None = None, close_wait: float = 10
) -> Server:
    server = Server(max_close_wait=close_wait)
    server.add_service(Service(name, address=addr, timeout=timeout))
    return server


def offsets_by_partition(seen: Sequence[tuple[int, int]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for partition, offset in seen:
        out.setdefault(partition, []).append(offset)
    return out


def load_factor() -> float:
    """How much slower than idle this machine runs now: the load average per core, 1 to 3
    (as the broker's start timeout scales); upper time bounds of tests are multiplied by it."""
    try:
        load = os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        load = 1.0
    return min(max(load, 1.0), 3.0)
