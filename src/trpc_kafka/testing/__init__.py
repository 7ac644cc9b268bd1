"""``trpc_kafka.testing``: an in-memory Kafka for the tests of services and producers.

While an :class:`InMemoryKafka` is active (``with`` or ``async with``), every client proxy and
every ``protocol: kafka`` service of the process talks to an in-memory cluster instead of
brokers: no Java, no network, a handler test in milliseconds. Only the confluent-kafka clients
are replaced (at :mod:`trpc_kafka._sdk`); proxies, filters, context and ``trpcMeta``,
partitioners, the consumer transport with its retries, ``maxRetry``, ``deadLetterTopic``,
batches, ``ContinueWithoutCommit`` and commits, and the mapping of Kafka errors to tRPC codes
all run as in production. The shared behaviour tests of this project (``tests/testing/``) run
against both the in-memory cluster and a real broker.

.. code-block:: python

    async def test_orders_are_handled() -> None:
        async with InMemoryKafka() as kafka:
            server = trpc_kafka.new_server("trpc_python.yaml")
            trpc_kafka.register_kafka_handler_service(server, handle)
            async with kafka.serving(server):
                kafka.publish("orders", b"order-1", key=b"user-1")
                await kafka.wait_handled("orders")
            ...  # assert on what the handler did, kafka.messages(...), kafka.dead_letters(...)

Every address (its hosts, SASL and TLS keys included) reaches the same in-memory cluster.
Topics are created on first use with ``partitions`` partitions (as a broker with
``auto.create.topics.enable``) unless ``auto_create_topics=False``; :meth:`create_topic` makes
one with a chosen partition count.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError

from trpc_kafka import _sdk
from trpc_kafka._consumer.dead_letter import (
    DEAD_LETTER_HEADER_ATTEMPTS,
    DEAD_LETTER_HEADER_ERROR,
    DEAD_LETTER_HEADER_OFFSET,
    DEAD_LETTER_HEADER_PARTITION,
    DEAD_LETTER_HEADER_SERVICE,
    DEAD_LETTER_HEADER_TOPIC,
)
from trpc_kafka._consumer.message import ConsumerMessage
from trpc_kafka._producer.partitioner import hash_partition
from trpc_kafka._producer.pool import close_all_producers, close_all_producers_sync
from trpc_kafka._runtime.server import Server
from trpc_kafka.testing._clients import MemoryConsumer, MemoryProducer
from trpc_kafka.testing._cluster import Cluster, Header, Record, now_ms

_DEAD_LETTER_HEADERS = frozenset(
    {
        DEAD_LETTER_HEADER_ATTEMPTS,
        DEAD_LETTER_HEADER_ERROR,
        DEAD_LETTER_HEADER_OFFSET,
        DEAD_LETTER_HEADER_PARTITION,
        DEAD_LETTER_HEADER_SERVICE,
        DEAD_LETTER_HEADER_TOPIC,
    }
)
_POLL_STEP = 0.002
"""How often the async waits look again (the in-memory cluster answers in microseconds)."""
_CLOSE_TIMEOUT = 5.0


@dataclass(frozen=True)
class DeadLetter:
    """A message a consumer service gave up on, as written to its ``deadLetterTopic``."""

    message: ConsumerMessage
    """The dead letter record, its headers without the ``trpc-kafka-*`` ones below."""
    error: str
    """The handler's last error, as text."""
    topic: str
    """Where the message was consumed from."""
    partition: int
    offset: int
    attempts: int
    """How many times the handler was called."""
    service: str
    """The consumer service that gave up."""


class InMemoryKafka:
    """An in-memory Kafka cluster that every client of the process uses while active.

    ``partitions``: partition count of topics created on first use. ``auto_create_topics``:
    False makes a send to an unknown topic fail as a broker without auto-creation does (code
    141, "topic ... does not exist"). ``topics``: topics to create now, name to partitions.

    One may be active at a time. Entering it closes (flushes) the producers the process already
    has, so every proxy re-binds to the in-memory cluster; leaving it flushes and closes the
    in-memory producers. Stop the services you started before leaving (:meth:`serving` does).
    """

    def __init__(
        self,
        *,
        partitions: int = 1,
        auto_create_topics: bool = True,
        topics: Mapping[str, int] | None = None,
    ) -> None:
        _check_partitions("partitions", partitions)
        if not isinstance(auto_create_topics, bool):
            raise TypeError(f"auto_create_topics must be True or False, got {auto_create_topics!r}")
        self._cluster = Cluster(partitions, auto_create_topics)
        self._clients = _Clients(self)
        for name, count in (topics or {}).items():
            self.create_topic(name, count)
        self._active = False
        self._servers: list[tuple[Server, asyncio.Task[None]]] = []

    def __repr__(self) -> str:
        state = "active" if self._active else "inactive"
        return f"InMemoryKafka({state}, topics={self.topics()})"

    # -- activation ---------------------------------------------------------------------------

    def _check_none_active(self) -> None:
        current = _sdk.installed()
        if current is not None:
            raise RuntimeError(
                f"another in-memory Kafka is active ({current!r}); leave it before entering "
                f"this one (one may be active at a time)"
            )

    def _install(self) -> None:
        self._check_none_active()  # again: another may have been entered meanwhile
        _sdk.install(self._clients)
        self._active = True

    def _uninstall(self) -> None:
        if _sdk.installed() is self._clients:
            _sdk.install(None)
        self._active = False

    def __enter__(self) -> InMemoryKafka:
        self._check_none_active()
        close_all_producers_sync(_CLOSE_TIMEOUT)  # proxies re-bind to in-memory producers
        self._install()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            close_all_producers_sync(_CLOSE_TIMEOUT)
        finally:
            self._uninstall()

    async def __aenter__(self) -> InMemoryKafka:
        self._check_none_active()
        await close_all_producers(_CLOSE_TIMEOUT)
        self._install()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            for server, _ in list(self._servers):
                await server.close()
            await close_all_producers(_CLOSE_TIMEOUT)
        finally:
            self._uninstall()

    # -- topics -------------------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 1) -> None:
        """Create topic ``name`` with ``partitions`` partitions (nothing if it exists)."""
        _check_topic(name)
        _check_partitions("partitions", partitions)
        self._cluster.create_topic(name, partitions)

    def topics(self) -> dict[str, int]:
        """Every topic and its partition count."""
        with self._cluster.cond:
            return {name: len(t.logs) for name, t in sorted(self._cluster.topics.items())}

    # -- records ------------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        value: bytes | str | None,
        *,
        key: bytes | str | None = None,
        headers: Sequence[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None] = (),
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> ConsumerMessage:
        """Write one record to ``topic``, as another producer would; returns it (with offset).

        Without ``partition``, a keyed record goes where a ``partitioner=hash`` producer (Go's
        Sarama or this library) puts it, a keyless one to the next partition in turn. The
        topic is created when unknown (unless ``auto_create_topics=False``).
        """
        _check_topic(topic)
        record: Record = (
            _payload("key", key),
            _payload("value", value),
            _header_list(headers),
            now_ms() if timestamp is None else _check_timestamp(timestamp),
        )
        cluster = self._cluster
        with cluster.cond:
            found = cluster.topic(topic, create=cluster.auto_create)
            if found is None:
                raise ValueError(
                    f"topic {topic!r} does not exist and auto_create_topics is off; "
                    f"create it with create_topic({topic!r}, partitions)"
                )
            count = len(found.logs)
            if partition is None:
                key_bytes = record[0]
                if key_bytes is None:
                    partition = cluster.next_roundrobin(found)
                else:
                    partition = hash_partition(key_bytes, count)
            elif (
                isinstance(partition, bool)
                or not isinstance(partition, int)
                or not 0 <= partition < count
            ):
                raise ValueError(
                    f"partition {partition!r} is not a partition of topic {topic!r}; "
                    f"allowed: 0..{count - 1}"
                )
            offset = cluster.append(found, partition, record)
        return _consumer_message(topic, partition, offset, record)

    def messages(self, topic: str, partition: int | None = None) -> list[ConsumerMessage]:
        """Every record of ``topic`` (of one ``partition`` if given) in the order written:
        what proxies sent and what was published. Empty for an unknown topic."""
        with self._cluster.cond:
            found = self._cluster.topics.get(topic)
            if found is None:
                return []
            return [
                _consumer_message(topic, p, o, found.logs[p][o])
                for p, o in found.order
                if partition is None or p == partition
            ]

    def dead_letters(self, topic: str) -> list[DeadLetter]:
        """The dead letters in ``topic`` (a service's ``deadLetterTopic``), in order."""
        letters = []
        for msg in self.messages(topic):
            ours = {k: (v or b"").decode("utf-8", "replace") for k, v in msg.headers}
            kept = [(k, v) for k, v in msg.headers if k not in _DEAD_LETTER_HEADERS]
            letters.append(
                DeadLetter(
                    message=ConsumerMessage(
                        msg.topic,
                        msg.partition,
                        msg.offset,
                        key=msg.key,
                        value=msg.value,
                        headers=kept,
                        timestamp=msg.timestamp,
                    ),
                    error=ours.get(DEAD_LETTER_HEADER_ERROR, ""),
                    topic=ours.get(DEAD_LETTER_HEADER_TOPIC, ""),
                    partition=int(ours.get(DEAD_LETTER_HEADER_PARTITION) or -1),
                    offset=int(ours.get(DEAD_LETTER_HEADER_OFFSET) or -1),
                    attempts=int(ours.get(DEAD_LETTER_HEADER_ATTEMPTS) or 0),
                    service=ours.get(DEAD_LETTER_HEADER_SERVICE, ""),
                )
            )
        return letters

    def committed(self, group: str, topic: str, partition: int = 0) -> int | None:
        """The offset ``group`` committed for ``topic[partition]`` (the next one to read),
        or None when it committed none."""
        with self._cluster.cond:
            found = self._cluster.groups.get(group)
            return None if found is None else found.committed.get((topic, partition))

    # -- failures -----------------------------------------------------------------------------

    def fail_sends(
        self, error: int | KafkaError, *, topic: str | None = None, count: int | None = 1
    ) -> None:
        """Make the next ``count`` sends (to ``topic``, or any) fail with ``error``.

        ``error``: a librdkafka error code (``confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE``,
        ``KafkaError._TRANSPORT``...) or a ``KafkaError``. The send's delivery report carries
        it, so the caller sees the tRPC error the library maps it to (141 for broker and
        network errors, 101 for ``KafkaError._MSG_TIMED_OUT``, 111 for authentication).
        ``KafkaError._QUEUE_FULL`` is raised by the send call instead (``BufferError``, as
        librdkafka's full queue): the library waits for room, each try using one ``count``,
        and fails with 101 at the call's timeout. ``count=None``: every send until
        :meth:`clear_failures`.
        """
        if isinstance(error, bool) or not isinstance(error, (int, KafkaError)):
            raise TypeError(
                f"error must be a librdkafka error code (int, e.g. KafkaError._TRANSPORT) or a "
                f"KafkaError, got {error!r}"
            )
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 1
        ):
            raise ValueError(f"count must be an int >= 1 or None (every send), got {count!r}")
        if topic is not None:
            _check_topic(topic)
        err = error if isinstance(error, KafkaError) else KafkaError(error)
        with self._cluster.cond:
            self._cluster.failures.append([err, topic, count])

    def clear_failures(self) -> None:
        """Forget the failures :meth:`fail_sends` set up and not yet used."""
        with self._cluster.cond:
            self._cluster.failures.clear()

    @contextlib.contextmanager
    def unreachable(self) -> Iterator[None]:
        """While inside, no broker answers: as a cluster that is down or refuses connections.

        Producers report the refused connection to librdkafka's error callback and hold their
        messages; the library then confirms the outage (about 1 s) and fails sends with code
        141 and "Is your cluster reachable?". Consumers log ``consume fail`` and fetch nothing.
        Leaving delivers what producers still hold.
        """
        with self._cluster.cond:
            self._cluster.down = True
            self._cluster.cond.notify_all()
        try:
            yield
        finally:
            with self._cluster.cond:
                self._cluster.down = False
                self._cluster.cond.notify_all()

    # -- waiting ------------------------------------------------------------------------------

    async def wait_handled(
        self, topic: str | None = None, *, group: str | None = None, timeout: float = 10.0
    ) -> None:
        """Wait until every record written so far was handled by the services consuming it.

        "Handled": the service's handler returned (or the message went to its dead letter
        topic, or was given up on), so its offset may be committed; a record whose handler is
        still retrying is not. ``topic``: only that topic (which some group must subscribe to);
        ``group``: only that consumer group. A record skipped by ``ContinueWithoutCommit``
        counts only once a later record of its partition was handled.

        Raises TimeoutError after ``timeout`` seconds, naming what is behind, and the error of
        a server started by :meth:`serving` that failed meanwhile.
        """
        check = self._progress(topic, group)
        end = time.monotonic() + _check_timeout(timeout)
        cond = self._cluster.cond
        with cond:
            self._cluster.waiters += 1
        try:
            while True:
                self._raise_server_failure()
                behind = check()
                if not behind:
                    return
                if time.monotonic() >= end:
                    raise TimeoutError(_behind_text(timeout, behind))
                await asyncio.sleep(_POLL_STEP)
        finally:
            with cond:
                self._cluster.waiters -= 1

    def wait_handled_sync(
        self, topic: str | None = None, *, group: str | None = None, timeout: float = 10.0
    ) -> None:
        """:meth:`wait_handled` for a thread that is not the services' event loop."""
        check = self._progress(topic, group)
        end = time.monotonic() + _check_timeout(timeout)
        cond = self._cluster.cond
        with cond:
            self._cluster.waiters += 1
            try:
                while True:
                    behind = check()
                    if not behind:
                        return
                    left = end - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(_behind_text(timeout, behind))
                    cond.notify_all()
                    cond.wait(min(left, 0.05))
            finally:
                self._cluster.waiters -= 1

    def _progress(self, topic: str | None, group: str | None) -> Callable[[], list[str]]:
        if topic is not None:
            _check_topic(topic)
        topics = None if topic is None else {topic}
        cluster = self._cluster

        def check() -> list[str]:
            with cluster.cond:
                return cluster.lagging(topics, group)

        return check

    def _raise_server_failure(self) -> None:
        for _, task in self._servers:
            if task.done() and not task.cancelled():
                failure = task.exception()
                if failure is not None:
                    raise RuntimeError(f"the server failed: {failure!r}") from failure

    @contextlib.asynccontextmanager
    async def serving(self, server: Server, *, timeout: float = 10.0) -> AsyncIterator[Server]:
        """Run ``server.serve()`` in a task; yields once every kafka service of it consumes.

        Yields when the services started and their consumer groups have assigned every
        partition, so a record published from then on is handled (even with the default
        ``initial=newest``). Leaving closes the server gracefully (handler calls finish,
        offsets are committed) and raises the server's error, if it failed.
        """
        end = time.monotonic() + _check_timeout(timeout)
        task = asyncio.get_running_loop().create_task(server.serve())
        entry = (server, task)
        self._servers.append(entry)
        try:
            while not self._started(server):
                if task.done():
                    task.result()  # raises why serve() ended
                    raise RuntimeError("the server stopped before its services started")
                if time.monotonic() >= end:
                    raise TimeoutError(
                        f"the services of the server did not start within {timeout:g}s"
                    )
                await asyncio.sleep(_POLL_STEP)
            yield server
        finally:
            await server.close()
            self._servers.remove(entry)
            if task.done() and not task.cancelled():
                task.result()
            elif not task.done():
                task.cancel()

    def _started(self, server: Server) -> bool:
        for service in server.services.values():
            if service.protocol != "kafka":
                continue
            if not getattr(service.transport, "started", False):
                return False
        with self._cluster.cond:
            return all(g.settled() for g in self._cluster.groups.values())


class _Clients:
    """What :mod:`trpc_kafka._sdk` builds clients with while an InMemoryKafka is active."""

    __slots__ = ("kafka",)

    def __init__(self, kafka: InMemoryKafka) -> None:
        self.kafka = kafka

    def __repr__(self) -> str:
        return repr(self.kafka)

    def producer(self, settings: dict[str, Any]) -> MemoryProducer:
        return MemoryProducer(self.kafka._cluster, settings)

    def consumer(self, settings: dict[str, Any]) -> MemoryConsumer:
        return MemoryConsumer(self.kafka._cluster, settings)


def _consumer_message(topic: str, partition: int, offset: int, record: Record) -> ConsumerMessage:
    key, value, headers, timestamp = record
    return ConsumerMessage(
        topic, partition, offset, key=key, value=value, headers=headers or (), timestamp=timestamp
    )


def _check_topic(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"topic must be a non-empty str, got {name!r}")


def _check_partitions(what: str, n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{what} must be an int >= 1, got {n!r}")


def _check_timeout(timeout: object) -> float:
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or timeout < 0
    ):
        raise ValueError(f"timeout must be seconds >= 0, got {timeout!r}")
    return float(timeout)


def _check_timestamp(ts: object) -> int:
    if isinstance(ts, bool) or not isinstance(ts, int) or ts < 0:
        raise ValueError(f"timestamp must be milliseconds since the epoch (int >= 0), got {ts!r}")
    return ts


def _payload(what: str, value: object) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"{what} must be bytes, str or None, got {type(value).__name__}: {value!r}")


def _header_list(
    headers: Sequence[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None],
) -> list[Header] | None:
    items = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    out: list[Header] = []
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
            raise TypeError(f"a header is a (str, bytes | str | None) pair, got {item!r}")
        out.append((item[0], _payload(f"header {item[0]!r}", item[1])))
    return out or None


def _behind_text(timeout: float, behind: list[str]) -> str:
    shown = "; ".join(behind[:10]) + (f"; and {len(behind) - 10} more" if len(behind) > 10 else "")
    return f"not handled within {timeout:g}s: {shown}"


__all__ = ["DeadLetter", "InMemoryKafka"]
