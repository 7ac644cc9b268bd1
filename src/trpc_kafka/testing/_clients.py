"""In-memory stand-ins for confluent-kafka's Producer and Consumer.

They implement the subset of the confluent-kafka API the library calls, with its semantics:
``produce`` queues and the delivery report comes from ``poll``/``flush`` on the calling thread;
rebalance callbacks, commit results and client errors are served inside ``consume``; records
and reports are real ``confluent_kafka.Message`` objects; failures are ``KafkaError`` codes as
librdkafka reports them (UNKNOWN_TOPIC_OR_PART, MSG_SIZE_TOO_LARGE, _TRANSPORT, _PURGE_QUEUE,
_MSG_TIMED_OUT...). So the code above the SDK runs exactly as it does against a broker.

(A little over 600 lines: the two classes mirror the two confluent-kafka classes, call for call.)
"""

from __future__ import annotations

import logging
import random
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin._metadata import ClusterMetadata, PartitionMetadata, TopicMetadata

from trpc_kafka.testing._cluster import Cluster, Header, Member, Record, Topic, TopicPart, now_ms

_TIMESTAMP_CREATE_TIME = 1
_OFFSET_INVALID = -1001
_UNASSIGNED = -1
_WAKE_SLICE = 0.002
"""How often a waiting ``consume()`` returns while a test waits for handling."""
_IDLE_SLICE = 0.01
"""How often ``consume()`` and ``poll()`` return otherwise, with nothing: the loops calling them
then see a stop or close request at once (librdkafka returns at the timeout, 0.1 s in this
library, which would add that to every server stop and producer close of a test)."""
_DEFAULT_MAX_BYTES = 1_000_000
_DEFAULT_MESSAGE_TIMEOUT_MS = 300_000
_DEFAULT_AUTO_COMMIT_MS = 5_000

log = logging.getLogger("trpc_kafka.testing")

Report = tuple["Callable[[KafkaError | None, Message], None] | None", "KafkaError | None", Message]


def _true(value: object, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "1", "yes")


def _bytes(value: object) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")  # a lone surrogate raises UnicodeEncodeError, as the SDK
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"a bytes-like object is required, not '{type(value).__name__}'")


def _headers(headers: object) -> list[Header] | None:
    if headers is None:
        return None
    items = headers.items() if isinstance(headers, dict) else headers
    out: list[Header] = []
    for item in items:  # type: ignore[attr-defined]
        name, value = item
        if not isinstance(name, str):
            raise TypeError(f"expected header name to be str, not {type(name).__name__}")
        out.append((name, _bytes(value)))
    return out or None


def _offset_after(message: Message) -> TopicPartition:
    """The partition of ``message`` with the offset after it (what a commit stores)."""
    return TopicPartition(
        str(message.topic()), int(message.partition() or 0), int(message.offset() or 0) + 1
    )


def _message(
    topic: str,
    partition: int,
    offset: int,
    record: Record,
    error: KafkaError | None = None,
) -> Message:
    key, value, headers, ts = record
    return Message(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        headers=None if headers is None else list(headers),
        error=error,
        timestamp=(_TIMESTAMP_CREATE_TIME, ts),
    )


def _unreachable(settings: dict[str, Any]) -> KafkaError:
    """librdkafka's report of a refused connection to the first bootstrap server."""
    first = str(settings.get("bootstrap.servers") or "localhost:9092").split(",")[0]
    return KafkaError(
        KafkaError._TRANSPORT,
        f"{first}/bootstrap: Connect to ipv4#{first} failed: Connection refused "
        f"(after 0ms in state CONNECT)",
    )


def _metadata(cluster: Cluster, topic: str | None, auto_create: bool) -> ClusterMetadata:
    """What ``list_topics`` answers (cond held)."""
    md = ClusterMetadata()
    md.cluster_id = "in-memory"  # type: ignore[assignment]
    md.controller_id = 1
    names = [topic] if topic is not None else list(cluster.topics)
    for name in names:
        found = cluster.topic(name, create=auto_create and cluster.auto_create)
        tm = TopicMetadata()
        tm.topic = name
        if found is None:
            tm.error = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
        else:
            for p in range(len(found.logs)):
                pm = PartitionMetadata()
                pm.id = p
                pm.leader = 1
                pm.replicas = [1]
                pm.isrs = [1]
                tm.partitions[p] = pm
        md.topics[name] = tm
    return md


class _Client:
    """What producer and consumer share: settings, the outage report, metadata."""

    def __init__(self, cluster: Cluster, settings: dict[str, Any]) -> None:
        self._cluster = cluster
        self._settings = settings
        self._error_cb: Callable[[KafkaError], None] | None = settings.get("error_cb")
        self._auto_create = _true(settings.get("allow.auto.create.topics"), True)
        self._down_reported = False
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("Handle has been closed")

    def _serve_outage(self) -> None:
        """Report an outage to ``error_cb`` once, as librdkafka does for a refused connection."""
        if self._cluster.down:
            if not self._down_reported:
                self._down_reported = True
                if self._error_cb is not None:
                    self._error_cb(_unreachable(self._settings))
                    self._error_cb(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
        else:
            self._down_reported = False

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> ClusterMetadata:
        self._check_open()
        with self._cluster.cond:
            if self._cluster.down:
                raise KafkaException(
                    KafkaError(
                        KafkaError._TRANSPORT,
                        "Failed to get metadata: Local: Broker transport failure",
                    )
                )
            return _metadata(self._cluster, topic, self._auto_create)


class MemoryProducer(_Client):
    """confluent_kafka.Producer over the in-memory cluster."""

    def __init__(self, cluster: Cluster, settings: dict[str, Any]) -> None:
        super().__init__(cluster, settings)
        self._max_bytes = int(settings.get("message.max.bytes") or _DEFAULT_MAX_BYTES)
        timeout_ms = settings.get("message.timeout.ms") or settings.get("delivery.timeout.ms")
        self._message_timeout = int(timeout_ms or _DEFAULT_MESSAGE_TIMEOUT_MS) / 1000
        self._default_cb: Callable[..., None] | None = settings.get("on_delivery")
        # Held back while the cluster is down: (queued at, topic, partition, record, callback).
        self._queue: deque[tuple[float, str, int, Record, Any]] = deque()
        self._reports: deque[Report] = deque()

    def __len__(self) -> int:
        return len(self._queue) + len(self._reports)

    def produce(  # noqa: PLR0917 - confluent-kafka's signature
        self,
        topic: str,
        value: object = None,
        key: object = None,
        partition: int = _UNASSIGNED,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
        timestamp: int = 0,
        headers: object = None,
        callback: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        self._check_open()
        if not isinstance(topic, str):
            raise TypeError(f"topic must be str, not {type(topic).__name__}")
        record: Record = (
            _bytes(key),
            _bytes(value),
            _headers(headers),
            int(timestamp) or now_ms(),
        )
        size = len(record[0] or b"") + len(record[1] or b"")
        if size > self._max_bytes:
            raise KafkaException(
                KafkaError(
                    KafkaError.MSG_SIZE_TOO_LARGE,
                    "Unable to produce message: Broker: Message size too large",
                )
            )
        cb = on_delivery or callback or self._default_cb
        cluster = self._cluster
        with cluster.cond:
            if cluster.take_failure(topic, queue_full=True) is not None:
                raise BufferError("Local: Queue full")  # as librdkafka's full queue
            known = cluster.topics.get(topic)
            if known is not None and partition >= len(known.logs):
                raise KafkaException(
                    KafkaError(KafkaError._UNKNOWN_PARTITION, "Local: Unknown partition")
                )
            if cluster.down:
                self._queue.append((time.monotonic(), topic, partition, record, cb))
            else:
                self._deliver(topic, partition, record, cb)
            cluster.cond.notify_all()

    def _deliver(self, name: str, partition: int, record: Record, cb: Any) -> None:
        """Write the record (or fail it), queueing its report (cond held)."""
        cluster = self._cluster
        error = cluster.take_failure(name, queue_full=False)
        if error is not None:
            self._reports.append(
                (cb, error, _message(name, partition, _OFFSET_INVALID, record, error))
            )
            return
        topic = cluster.topic(name, create=self._auto_create and cluster.auto_create)
        if topic is None:
            error = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)
            self._reports.append(
                (cb, error, _message(name, partition, _OFFSET_INVALID, record, error))
            )
            return
        if partition == _UNASSIGNED:
            partition = random.randrange(len(topic.logs))  # librdkafka's "random"
        elif partition >= len(topic.logs) or partition < 0:
            error = KafkaError(KafkaError._UNKNOWN_PARTITION, "Local: Unknown partition")
            self._reports.append(
                (cb, error, _message(name, partition, _OFFSET_INVALID, record, error))
            )
            return
        offset = cluster.append(topic, partition, record)
        self._reports.append((cb, None, _message(name, partition, offset, record)))

    def _move(self) -> None:
        """Deliver what the outage held back, or time it out (cond held)."""
        if not self._queue:
            return
        if not self._cluster.down:
            while self._queue:
                _, topic, partition, record, cb = self._queue.popleft()
                self._deliver(topic, partition, record, cb)
            return
        limit = time.monotonic() - self._message_timeout
        while self._queue and self._queue[0][0] <= limit:
            _, topic, partition, record, cb = self._queue.popleft()
            error = KafkaError(KafkaError._MSG_TIMED_OUT)
            self._reports.append(
                (cb, error, _message(topic, partition, _OFFSET_INVALID, record, error))
            )

    def poll(self, timeout: float = -1) -> int:
        self._check_open()
        cond = self._cluster.cond
        end = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        with cond:
            while True:
                self._move()
                if self._reports or (self._cluster.down and not self._down_reported):
                    break
                if not self._cluster.down:
                    self._down_reported = False
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    break
                # Back early with nothing: the delivery thread then sees a close at once.
                cond.wait(_IDLE_SLICE if left is None else min(left, _IDLE_SLICE))
                break
            reports = list(self._reports)
            self._reports.clear()
        self._serve_outage()
        for cb, err, msg in reports:
            if cb is not None:
                cb(err, msg)
        return len(reports)

    def flush(self, timeout: float = -1) -> int:
        end = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        while len(self):
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                break
            self.poll(0.05 if left is None else min(left, 0.05))
        return len(self)

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        with self._cluster.cond:
            if in_queue:
                while self._queue:
                    _, topic, partition, record, cb = self._queue.popleft()
                    error = KafkaError(KafkaError._PURGE_QUEUE)
                    self._reports.append(
                        (cb, error, _message(topic, partition, _OFFSET_INVALID, record, error))
                    )
            self._cluster.cond.notify_all()

    def close(self, timeout: float = -1) -> bool:
        self._closed = True
        return True


class MemoryConsumer(_Client):
    """confluent_kafka.Consumer over the in-memory cluster (subscribe mode)."""

    def __init__(self, cluster: Cluster, settings: dict[str, Any]) -> None:
        super().__init__(cluster, settings)
        group = settings.get("group.id")
        if not group:
            raise KafkaException(
                KafkaError(
                    KafkaError._INVALID_ARG,
                    'Failed to create consumer: "group.id" must be configured',
                )
            )
        self._group = str(group)
        reset = str(settings.get("auto.offset.reset") or "latest").lower()
        self._earliest = reset in ("earliest", "smallest", "beginning")
        self._strategy = str(settings.get("partition.assignment.strategy") or "range,roundrobin")
        self._strategy = self._strategy.split(",")[0].strip()
        self._auto_commit = _true(settings.get("enable.auto.commit"), True)
        self._auto_store = _true(settings.get("enable.auto.offset.store"), True)
        interval = settings.get("auto.commit.interval.ms")
        self._commit_interval = (
            int(_DEFAULT_AUTO_COMMIT_MS if interval is None else interval) / 1000
        )
        self._next_commit = time.monotonic() + self._commit_interval
        self._on_commit: Callable[[KafkaError | None, list[TopicPartition]], None] | None = (
            settings.get("on_commit")
        )
        self._member: Member | None = None
        self._callbacks: dict[str, Any] = {}
        self._positions: dict[TopicPart, int] = {}
        self._stored: dict[TopicPart, int] = {}
        self._paused: set[TopicPart] = set()
        self._errors: list[Message] = []
        self._commit_reports: list[tuple[KafkaError | None, list[TopicPartition]]] = []
        self._rotate = 0

    # -- group membership ---------------------------------------------------------------------

    def subscribe(
        self,
        topics: list[str],
        on_assign: Any = None,
        on_revoke: Any = None,
        on_lost: Any = None,
    ) -> None:
        self._check_open()
        cluster = self._cluster
        with cluster.cond:
            if self._member is not None:
                cluster.leave(self._member)
            create = self._auto_create and cluster.auto_create
            self._member = cluster.join(
                self._group, list(topics), self._strategy, earliest=self._earliest, create=create
            )
            for name in topics:
                if name not in cluster.topics:
                    error = KafkaError(
                        KafkaError.UNKNOWN_TOPIC_OR_PART,
                        f"Subscribed topic not available: {name}: "
                        "Broker: Unknown topic or partition",
                    )
                    self._errors.append(
                        Message(topic=name, partition=-1, offset=_OFFSET_INVALID, error=error)
                    )
        self._callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}

    def unsubscribe(self) -> None:
        self._rebalance_out()

    def _rebalance(self) -> None:
        """Serve this member's rebalance steps (revoke, then assign), as librdkafka does."""
        member = self._member
        if member is None:
            return
        cluster = self._cluster
        for _ in range(4):
            with cluster.cond:
                plan = cluster.plan(member)
                generation = member.group.generation
            if plan is None:
                return
            kind, tps = plan
            parts = [TopicPartition(t, p) for t, p in tps]
            callback = self._callbacks.get(kind)
            if kind == "revoke":
                if callback is not None:
                    callback(self, parts)
                with cluster.cond:
                    if self._auto_commit:
                        self._commit_stored([tp for tp in tps if tp in self._stored], report=True)
                    for tp in tps:
                        self._positions.pop(tp, None)
                        self._stored.pop(tp, None)
                        self._paused.discard(tp)
                    cluster.revoked(member, tps)
            else:
                with cluster.cond:
                    for tp in tps:
                        self._positions[tp] = cluster.start_offset(member, tp)
                    cluster.assigned(member, tps, generation)
                if callback is not None:
                    callback(self, parts)

    def _rebalance_out(self) -> None:
        """Give up every partition (``on_revoke``) and leave the group."""
        member = self._member
        if member is None:
            return
        owned = sorted(member.owned)
        if owned:
            callback = self._callbacks.get("revoke")
            if callback is not None:
                callback(self, [TopicPartition(t, p) for t, p in owned])
        cluster = self._cluster
        with cluster.cond:
            if self._auto_commit:
                self._commit_stored(list(self._stored), report=False)
            cluster.leave(member)
            self._member = None
            self._positions.clear()
            self._stored.clear()
            self._paused.clear()

    # -- fetching -----------------------------------------------------------------------------

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        self._check_open()
        end = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        cluster = self._cluster
        self._rebalance()
        self._serve_outage()
        self._serve_commits()
        if self._errors:
            errors, self._errors = self._errors, []
            return errors
        with cluster.cond:
            while True:
                if not cluster.down:
                    records = self._fetch(num_messages)
                    if records:
                        return records
                member = self._member
                if member is not None and cluster.plan(member) is not None:
                    break  # a rebalance to serve: the next consume() call does it
                if cluster.down and not self._down_reported:
                    break
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    break
                wait = _IDLE_SLICE if left is None else min(left, _IDLE_SLICE)
                if cluster.waiters:
                    wait = min(wait, _WAKE_SLICE)
                cluster.cond.wait(wait)
                break  # return now: the service stores what it handled meanwhile
        return []

    def _fetch(self, limit: int) -> list[Message]:
        """Up to ``limit`` records from the assigned, unpaused partitions (cond held)."""
        member = self._member
        if member is None or not member.owned:
            return []
        cluster = self._cluster
        owned = sorted(member.owned)
        self._rotate = (self._rotate + 1) % len(owned)
        out: list[Message] = []
        for tp in owned[self._rotate :] + owned[: self._rotate]:
            if tp in self._paused or len(out) >= limit:
                continue
            topic: Topic | None = cluster.topics.get(tp[0])
            if topic is None:
                continue
            log_ = topic.logs[tp[1]]
            pos = self._positions.get(tp, 0)
            if pos >= len(log_):
                continue
            take = log_[pos : pos + limit - len(out)]
            for i, record in enumerate(take):
                out.append(_message(tp[0], tp[1], pos + i, record))
            self._positions[tp] = pos + len(take)
            if self._auto_store:
                self._store(tp, pos + len(take))
        return out

    def pause(self, partitions: list[TopicPartition]) -> None:
        self._paused.update((tp.topic, tp.partition) for tp in partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        with self._cluster.cond:
            self._paused.difference_update((tp.topic, tp.partition) for tp in partitions)
            self._cluster.cond.notify_all()

    def assignment(self) -> list[TopicPartition]:
        member = self._member
        return [] if member is None else [TopicPartition(t, p) for t, p in sorted(member.owned)]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic,
                tp.partition,
                self._positions.get((tp.topic, tp.partition), _OFFSET_INVALID),
            )
            for tp in partitions
        ]

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        with self._cluster.cond:
            return 0, self._cluster.end_offset((partition.topic, partition.partition))

    def memberid(self) -> str | None:
        member = self._member
        return None if member is None else member.member_id

    def consumer_group_metadata(self) -> bytes:
        """librdkafka's serialised group metadata (``CGMDv2:``, generation, group, member)."""
        member = self._member
        generation = -1 if member is None else member.group.generation
        member_id = "" if member is None else member.member_id
        return (
            b"CGMDv2:"
            + struct.pack("=i", generation)
            + self._group.encode()
            + b"\0"
            + member_id.encode()
        )

    # -- offsets ------------------------------------------------------------------------------

    def _store(self, tp: TopicPart, offset: int) -> None:
        self._stored[tp] = offset
        group_stored = self._member.group.stored if self._member is not None else {}
        if offset > group_stored.get(tp, -1):
            group_stored[tp] = offset
        self._cluster.cond.notify_all()

    def store_offsets(
        self, message: Message | None = None, offsets: list[TopicPartition] | None = None
    ) -> None:
        self._check_open()
        if message is not None:
            offsets = [_offset_after(message)]
        member = self._member
        with self._cluster.cond:
            for tp in offsets or ():
                key = (tp.topic, tp.partition)
                if member is not None and key in member.owned:
                    self._store(key, tp.offset)

    def commit(
        self,
        message: Message | None = None,
        offsets: list[TopicPartition] | None = None,
        asynchronous: bool = True,
    ) -> list[TopicPartition] | None:
        self._check_open()
        cluster = self._cluster
        with cluster.cond:
            if cluster.down:
                raise KafkaException(
                    KafkaError(KafkaError._TRANSPORT, "Local: Broker transport failure")
                )
            if message is not None:
                offsets = [_offset_after(message)]
            if offsets is None:
                done = self._commit_stored(list(self._stored), report=asynchronous)
            else:
                done = self._commit_offsets(
                    [((tp.topic, tp.partition), tp.offset) for tp in offsets]
                )
                if asynchronous and done:
                    self._commit_reports.append((None, done))
            if not done:
                raise KafkaException(KafkaError(KafkaError._NO_OFFSET))
        return None if asynchronous else done

    def _commit_offsets(self, pairs: list[tuple[TopicPart, int]]) -> list[TopicPartition]:
        member = self._member
        if member is None:
            return []
        committed = member.group.committed
        done = []
        for tp, offset in pairs:
            if offset < 0:
                continue
            committed[tp] = offset
            done.append(TopicPartition(tp[0], tp[1], offset))
        self._cluster.cond.notify_all()
        return done

    def _commit_stored(self, tps: list[TopicPart], *, report: bool) -> list[TopicPartition]:
        member = self._member
        if member is None:
            return []
        committed = member.group.committed
        pairs = [(tp, self._stored[tp]) for tp in tps if self._stored[tp] != committed.get(tp)]
        done = self._commit_offsets(pairs)
        if report and done:
            self._commit_reports.append((None, done))
        return done

    def _serve_commits(self) -> None:
        if self._auto_commit and time.monotonic() >= self._next_commit:
            self._next_commit = time.monotonic() + self._commit_interval
            with self._cluster.cond:
                self._commit_stored(list(self._stored), report=True)
        reports, self._commit_reports = self._commit_reports, []
        if self._on_commit is not None:
            for err, parts in reports:
                self._on_commit(err, parts)

    def committed(
        self, partitions: list[TopicPartition], timeout: float = -1
    ) -> list[TopicPartition]:
        with self._cluster.cond:
            group = self._cluster.groups.get(self._group)
            committed = {} if group is None else group.committed
            return [
                TopicPartition(
                    tp.topic, tp.partition, committed.get((tp.topic, tp.partition), _OFFSET_INVALID)
                )
                for tp in partitions
            ]

    def close(self) -> None:
        if self._closed:
            return
        self._rebalance_out()
        self._serve_commits()
        self._closed = True
