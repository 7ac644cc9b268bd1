"""A share group member (KIP-932, address key ``groupType=share``): queues for Kafka.

Several members of a share group read the same partitions; the broker hands each record to one
member at a time, under a lock (the group config ``share.record.lock.duration.ms``, 30 s by
default), and counts its deliveries. The member acknowledges each record with the outcome of
its handling:

- handled: ACCEPT (never delivered again);
- ``ContinueWithoutCommit``: RELEASE at once (delivered again, to any member);
- failed: RELEASE ``retryInterval`` later, without holding up the next records, so the broker
  delivers it again (to any member) with its delivery count one higher. A record whose delivery
  count passed ``maxRetry`` (when set), or reached the group's ``share.delivery.count.limit``
  (5 by default; the broker archives it after that without telling anyone), is given up: sent
  to ``deadLetterTopic`` when set, then REJECTed (never delivered again);
- not handled when the service stops: RELEASE.

Threads and tasks, all owned by :class:`ShareGroupMember` (the ``kafka`` transport starts it for
a share address):

- one **poll thread** owns librdkafka's ShareConsumer (explicit acknowledgement; the share
  consumer is not thread-safe, so nothing else calls it). It polls a batch of records (at most
  ``max.poll.records``, see ``SHARE_POLL_RECORDS``), hands it to the event loop in one
  ``call_soon_threadsafe``, then acknowledges each record as its outcome arrives (a queue). It
  polls again once the whole batch is acknowledged (librdkafka requires that), which also sends
  the acknowledgements; while a batch is in progress it sends those made so far every
  ``ACK_FLUSH`` seconds (``commit_async``), so a crash later redelivers only what was not done;
- one **handler task** on the event loop handles the records one after the other in the order
  polled (a batch handler: up to ``batch`` records of one partition per call), through the
  service's filters, timeout, rate limiter and trpcMeta like a classic group's partition worker.

Stopping: no more polls; the handler call in progress may finish within the bound; every record
not acknowledged yet is released; ``close()`` sends the acknowledgements and leaves the group.
A member that dies without stopping (SIGKILL) leaves its records locked until their locks
expire; the broker then delivers them to the other members.

(Over 600 lines: one member's poll thread and its acknowledgement state, which must agree on
every record's outcome, are kept in one file.)
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from confluent_kafka import AcknowledgeType, KafkaError, KafkaException, ShareConsumer
from confluent_kafka.admin import AdminClient

# Where they are defined: confluent_kafka.admin re-exports them without declaring it for mypy.
from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource
from confluent_kafka.admin._resource import ResourceType

from trpc_kafka._config.address import KafkaConfig, redact_address
from trpc_kafka._config.rdkafka import (
    admin_settings,
    redact_settings,
    share_consumer_settings,
    share_group_configs,
)
from trpc_kafka._consumer.consume_errors import ConsumeErrors, set_done
from trpc_kafka._consumer.message import ContinueWithoutCommit, WireMessage, record_headers
from trpc_kafka._consumer.partition import ConsumerContext, HandlerSpec, _describe
from trpc_kafka._consumer.raw import Claim, GroupSessionView, RawKafkaContext
from trpc_kafka._kafka_errors import describe, kafka_error_of
from trpc_kafka._rdkafka_log import rdkafka_log
from trpc_kafka._runtime.context import set_current_context
from trpc_kafka._runtime.server import Service

logger = logging.getLogger("trpc_kafka.consumer")
rdkafka_logger = logging.getLogger("trpc_kafka.consumer.rdkafka")

ACCEPT: Final = AcknowledgeType.ACCEPT
RELEASE: Final = AcknowledgeType.RELEASE
REJECT: Final = AcknowledgeType.REJECT

POLL_TIMEOUT: Final = 0.1
"""Seconds one ``poll()`` waits when nothing comes; bounds the reaction to a stop."""
ACK_WAIT: Final = 0.1
"""Seconds the poll thread waits for the next outcome while a batch is handled."""
ACK_FLUSH: Final = 0.25
"""While a batch is handled, acknowledgements made so far are sent this often: well inside
``LOCK_MARGIN``, so an acceptance reaches the broker before the record's lock ends."""
DEFAULT_DELIVERY_LIMIT: Final = 5
"""The broker's default ``group.share.delivery.count.limit``, used when the group's cannot be
read (no permission to describe group configs)."""
DEFAULT_LOCK_MS: Final = 30_000
"""The broker's default ``group.share.record.lock.duration.ms``, likewise."""
LOCK_MARGIN: Final = 1.0
"""A record whose lock ends within this many seconds is not handled any more: it is (or is about
to be) delivered to another member, and handling it here would handle it twice."""
_ADMIN_TIMEOUT: Final = 15.0
_CLOSE_RESERVE: Final = 2.0
"""Of the stop bound, what is kept for releasing, acknowledging and leaving the group."""

Key = tuple[str, int, int]
"""(topic, partition, offset) of a record."""


class ShareClaim(Claim):
    """The claim of one delivery of a share group record: it carries the delivery count."""

    __slots__ = ("delivery_count",)

    def __init__(
        self, member: ShareGroupMember, topic: str, partition: int, delivery_count: int
    ) -> None:
        super().__init__(member, topic, partition)
        self.delivery_count = delivery_count

    def view(self) -> RawKafkaContext:
        base = super().view()
        return RawKafkaContext(base.session, base.claim, delivery_count=self.delivery_count)


class ShareGroupMember:
    """One service's membership of a share group (see the module docstring)."""

    def __init__(self, service: Service, cfg: KafkaConfig, spec: HandlerSpec) -> None:
        self._service = service
        self._cfg = cfg
        self._spec = spec
        self._consumer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._done: asyncio.Future[None] | None = None
        self._delivery_limit = DEFAULT_DELIVERY_LIMIT
        self._lock_seconds = DEFAULT_LOCK_MS / 1000
        self.settings: dict[str, Any] = {}
        """The librdkafka settings of the share consumer (after ``start()``), secrets masked."""
        # Poll thread -> loop: batches; loop -> poll thread: outcomes.
        self._acks: queue.SimpleQueue[tuple[Any, AcknowledgeType]] = queue.SimpleQueue()
        self._consume_errors = ConsumeErrors(service)
        # Event loop only.
        self._batches: deque[tuple[list[Any], float]] = deque()  # records, lock end
        self._waiter: asyncio.Future[None] | None = None
        self._unacked: dict[Key, Any] = {}
        self._delayed: dict[Key, asyncio.TimerHandle] = {}
        self._first_offsets: dict[tuple[str, int], int] = {}
        self._calm = False  # waiting for something other than a handler: cancel at once
        self._cancelled_by_us = False
        self._stopping = False
        # Set by the loop, read by the poll thread.
        self._fetching = True
        self._close_requested = False
        self._close_by = 0.0

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def delivery_limit(self) -> int:
        """The group's ``share.delivery.count.limit`` as read at start."""
        return self._delivery_limit

    # -- lifecycle (event loop) ----------------------------------------------------------------

    async def start(self) -> None:
        service = self._service
        cfg = self._cfg
        loop = asyncio.get_running_loop()
        self._loop = loop
        await loop.run_in_executor(None, self._prepare_group)
        settings = share_consumer_settings(cfg)
        settings["error_cb"] = self._on_error
        settings["logger"] = rdkafka_log(rdkafka_logger.name)
        self.settings = redact_settings(settings)
        try:
            consumer = ShareConsumer(settings)
        except KafkaException as exc:
            err = kafka_error_of(exc)
            text = err.str() if err is not None else str(exc)
            raise service.config_error(
                f"librdkafka rejected the share consumer settings: {text}",
                key="address",
                value=redact_address(service.address),
            ) from None
        try:
            consumer.set_acknowledgement_commit_callback(self._on_ack_commit)
            consumer.subscribe(list(cfg.topics))
        except BaseException:
            consumer.close()
            raise
        self._consumer = consumer
        self._done = loop.create_future()
        self._task = loop.create_task(self._run(), name=f"kafka share {service.name}")
        self._thread = threading.Thread(
            target=self._poll_main, name=f"kafka-share-{service.name}", daemon=True
        )
        self._thread.start()
        logger.info(
            "kafka server transport: service %s consuming %s as share group %s (client id %s, "
            "a record is given up after %s)",
            service.name,
            ",".join(cfg.topics),
            cfg.group,
            cfg.consumer_client_id,
            self._give_up_rule(),
        )

    def _give_up_rule(self) -> str:
        limit = self._delivery_limit
        max_retry = self._spec.max_retry
        if max_retry and max_retry + 1 < limit:
            return f"{max_retry + 1} deliveries (maxRetry={max_retry})"
        return f"{limit} deliveries (the group's share.delivery.count.limit)"

    def _prepare_group(self) -> None:
        """Off the loop: set the group configs the address asks for (initial=oldest...), read
        the group's delivery limit."""
        cfg = self._cfg
        service = self._service
        settings: dict[str, Any] = admin_settings(cfg)
        settings["logger"] = rdkafka_log(rdkafka_logger.name)
        admin = AdminClient(settings)
        configs = share_group_configs(cfg)
        if configs:
            resource = ConfigResource(
                ResourceType.GROUP,
                cfg.group,
                incremental_configs=[
                    ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
                    for name, value in configs.items()
                ],
            )
            try:
                for future in admin.incremental_alter_configs(
                    [resource], request_timeout=_ADMIN_TIMEOUT
                ).values():
                    future.result(timeout=_ADMIN_TIMEOUT)
            except Exception as exc:
                shown = ", ".join(f"{k}={v}" for k, v in configs.items())
                raise service.config_error(
                    f"a share group takes 'initial' and 'isolationLevel' from its group configs "
                    f"on the broker; setting {shown} on group {cfg.group!r} failed: "
                    f"{_text(exc)} (the user needs ALTER_CONFIGS on the group, or set them "
                    f"with kafka-configs.sh and drop the keys from the address)",
                    key="address",
                    value=redact_address(service.address),
                ) from None
        try:
            metadata = admin.list_topics(timeout=_ADMIN_TIMEOUT)
            missing = [t for t in cfg.topics if t not in metadata.topics]
            if missing:
                logger.warning(
                    "kafka server transport: service %s: topic(s) %s do not exist, and a share "
                    "consumer does not create topics: nothing is consumed from them until they "
                    "are created (trpc-kafka topics create NAME)",
                    service.name,
                    ", ".join(missing),
                )
        except KafkaException as exc:
            logger.debug("listing topics failed: %s", exc)
        try:
            futures = admin.describe_configs(
                [ConfigResource(ResourceType.GROUP, cfg.group)], request_timeout=_ADMIN_TIMEOUT
            )
            for future in futures.values():
                entries = future.result(timeout=_ADMIN_TIMEOUT)
                entry = entries.get("share.delivery.count.limit")
                if entry is not None and entry.value:
                    self._delivery_limit = int(entry.value)
                entry = entries.get("share.record.lock.duration.ms")
                if entry is not None and entry.value:
                    self._lock_seconds = int(entry.value) / 1000
        except Exception as exc:
            logger.warning(
                "kafka server transport: service %s: cannot read the delivery limit of share "
                "group %s (%s); assuming the broker's default, %d",
                service.name,
                cfg.group,
                _text(exc),
                DEFAULT_DELIVERY_LIMIT,
            )

    async def stop(self, timeout: float) -> None:
        """Stop polling, let the handler call in progress finish within ``timeout``, release
        what was not handled, send the acknowledgements and leave the group."""
        if self._thread is None or self._done is None:
            return
        deadline = time.monotonic() + timeout
        self._fetching = False
        self._stopping = True
        task = self._task
        if task is not None and not task.done():
            if self._calm:
                self._cancel()
            grace = max(0.0, timeout - min(_CLOSE_RESERVE, timeout / 2))
            _, late = await asyncio.wait({task}, timeout=grace)
            if late:
                logger.warning(
                    "kafka server transport: service %s: handler still running after %.1fs; "
                    "cancelling it (its records are released)",
                    self._service.name,
                    grace,
                )
                self._cancel()
                await asyncio.wait({task}, timeout=1.0)
        self._release_all()
        self._close_by = deadline - min(0.5, timeout / 4)
        self._close_requested = True
        try:
            await asyncio.wait_for(
                asyncio.shield(self._done), max(deadline - time.monotonic(), 0.1)
            )
        except asyncio.TimeoutError:
            logger.warning(
                "kafka server transport: service %s: acknowledging and leaving did not finish "
                "within %.1fs; leaving it to the background",
                self._service.name,
                timeout,
            )

    def _cancel(self) -> None:
        if self._task is not None:
            self._cancelled_by_us = True
            self._task.cancel()

    # -- raw context (any thread) --------------------------------------------------------------

    def session_view(self) -> GroupSessionView:
        # librdkafka's share consumer shows neither member id nor assignment: the partitions
        # are those this member has received records from.
        return GroupSessionView(self._cfg.group, "", None, tuple(sorted(self._first_offsets)))

    def high_watermark(self, topic: str, partition: int) -> int | None:
        return None  # the share consumer has no watermark getter

    # -- acknowledgements (event loop) ---------------------------------------------------------

    def _dispatch(self, records: list[Any], polled_at: float) -> None:
        unacked = self._unacked
        first = self._first_offsets
        for record in records:
            topic, partition, offset = record.topic(), record.partition(), record.offset()
            unacked[(topic, partition, offset)] = record
            first.setdefault((topic, partition), offset)
        if self._stopping:  # polled while stopping: give them back at once
            for record in records:
                self._ack(record, RELEASE)
            return
        self._batches.append((records, polled_at + self._lock_seconds - LOCK_MARGIN))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _ack(self, record: Any, kind: AcknowledgeType) -> None:
        key = (record.topic(), record.partition(), record.offset())
        if self._unacked.pop(key, None) is None:
            return  # released at stop already
        self._delayed.pop(key, None)
        self._acks.put((record, kind))

    def _release_later(self, record: Any, delay: float) -> None:
        loop = self._loop
        assert loop is not None
        key = (record.topic(), record.partition(), record.offset())
        self._delayed[key] = loop.call_later(delay, self._ack, record, RELEASE)

    def _release_all(self) -> None:
        for handle in self._delayed.values():
            handle.cancel()
        self._delayed.clear()
        for record in list(self._unacked.values()):
            self._ack(record, RELEASE)
        self._batches.clear()

    # -- the handler task (event loop) ---------------------------------------------------------

    async def _run(self) -> None:
        spec = self._spec
        try:
            while not self._stopping:
                if not self._batches:
                    await self._idle()
                    continue
                records, lock_end = self._batches.popleft()
                if spec.batch > 0:
                    groups = _batches_of(records, spec.batch)
                else:
                    groups = [[record] for record in records]
                for index, group in enumerate(groups):
                    if self._stopping:
                        return
                    if time.monotonic() >= lock_end:
                        self._expired([r for g in groups[index:] for r in g])
                        break
                    await self._handle(group)
        except asyncio.CancelledError:
            if not self._cancelled_by_us:
                raise
        except BaseException as exc:  # a bug here, or KeyboardInterrupt in a handler
            logger.error(
                "kafka server transport: share group handler of service %s failed: %r",
                spec.service_name,
                exc,
                exc_info=exc,
            )
            spec.fail(exc)

    def _expired(self, records: list[Any]) -> None:
        """Records whose lock ran out before their turn: given back unhandled."""
        for record in records:
            self._ack(record, RELEASE)
        logger.warning(
            "kafka server transport: service %s: %d record(s) from %s[%d]@%d on outlived their "
            "lock (%gs) before their turn and go back unhandled (the broker delivers them "
            "again); this member acquired more than it handles within the lock: the broker "
            "hands out whole producer batches, so make those smaller (flushMaxMessages on the "
            "producer), or lengthen the group's share.record.lock.duration.ms",
            self._service.name,
            len(records),
            records[0].topic(),
            records[0].partition(),
            records[0].offset(),
            self._lock_seconds,
        )

    async def _idle(self) -> None:
        loop = self._loop
        assert loop is not None
        waiter = loop.create_future()
        self._waiter = waiter
        self._calm = True
        try:
            await waiter
        finally:
            self._calm = False
            self._waiter = None

    async def _handle(self, records: list[Any]) -> None:
        """One handler call: one record, or a batch of one partition's records."""
        spec = self._spec
        first = records[0]
        topic, partition = first.topic(), first.partition()
        msgs = [WireMessage(topic, partition, r.offset(), r) for r in records]
        deliveries = max(r.delivery_count() or 1 for r in records)
        try:
            if spec.limiter is not None:
                self._calm = True
                try:
                    await spec.limiter.acquire(len(records))
                finally:
                    self._calm = False
                if self._stopping:
                    return  # released by stop()
            metadata = None
            if spec.trpc_meta:
                metadata = {k: (b"" if v is None else v) for k, v in record_headers(first)}
            deadline = None if spec.timeout is None else time.monotonic() + spec.timeout
            claim = ShareClaim(self, topic, partition, deliveries)
            ctx = ConsumerContext(spec.service_name, topic, claim, metadata, deadline)
            set_current_context(ctx)
            await spec.call(ctx, msgs[0] if spec.batch <= 0 else msgs)
        except BaseException as exc:
            await self._failed(exc, records, msgs, deliveries)
        else:
            for record in records:
                self._ack(record, ACCEPT)

    async def _failed(
        self, exc: BaseException, records: list[Any], msgs: list[WireMessage], deliveries: int
    ) -> None:
        spec = self._spec
        if isinstance(exc, asyncio.CancelledError) and self._cancelled_by_us:
            raise exc  # stop() releases the records
        if isinstance(exc, ContinueWithoutCommit):
            for record in records:
                self._ack(record, RELEASE)
            return
        if not isinstance(exc, (Exception, asyncio.CancelledError)):
            raise exc  # KeyboardInterrupt, SystemExit
        first = msgs[0]
        where = (
            f"offset {first.offset}"
            if len(msgs) == 1
            else f"offsets {first.offset}-{msgs[-1].offset} ({len(msgs)} messages)"
        )
        logger.error(
            "kafka server transport: handle fail: service %s share group %s topic %s "
            "partition %d %s (delivery %d): %s",
            spec.service_name,
            self._cfg.group,
            first.topic,
            first.partition,
            where,
            deliveries,
            _describe(exc),
            exc_info=exc if deliveries == 1 else None,
        )
        if self._stopping:
            return  # released by stop()
        exhausted = (spec.max_retry and deliveries > spec.max_retry) or (
            deliveries >= self._delivery_limit
        )
        if not exhausted:
            for record in records:
                self._release_later(record, spec.retry_interval)
            return
        if not await self._dead_letter(exc, msgs, deliveries, where):
            return  # stopping before the dead letter was sent: released by stop()
        for record in records:
            self._ack(record, REJECT)

    async def _dead_letter(
        self, exc: BaseException, msgs: list[WireMessage], deliveries: int, where: str
    ) -> bool:
        """Log (and dead-letter) records given up on; False if stopping before it was sent."""
        spec = self._spec
        first = msgs[0]
        sink = spec.dead_letter
        while sink is not None:
            try:
                self._calm = True
                try:
                    await sink.send(msgs, exc, deliveries)
                finally:
                    self._calm = False
                break
            except asyncio.CancelledError:
                raise
            except Exception as send_exc:
                logger.error(
                    "kafka server transport: service %s topic %s partition %d %s: cannot send "
                    "to dead letter topic %s, retrying in %gs: %s",
                    spec.service_name,
                    first.topic,
                    first.partition,
                    where,
                    sink.topic,
                    spec.retry_interval,
                    _describe(send_exc),
                )
                self._calm = True
                try:
                    await asyncio.sleep(spec.retry_interval)
                finally:
                    self._calm = False
                if self._stopping:
                    return False
        logger.error(
            "kafka server transport: service %s share group %s topic %s partition %d %s: "
            "giving up after %d deliveries (%s), %s; rejected",
            spec.service_name,
            self._cfg.group,
            first.topic,
            first.partition,
            where,
            deliveries,
            self._give_up_rule(),
            "no dead letter topic" if sink is None else f"sent to dead letter topic {sink.topic}",
        )
        return True

    # -- poll thread ---------------------------------------------------------------------------

    def _poll_main(self) -> None:
        consumer = self._consumer
        acks = self._acks
        held = 0  # records handed to the loop and not acknowledged yet
        unsent = 0  # acknowledgements not sent to the broker yet
        flush_at = 0.0
        try:
            while True:
                if held:
                    try:
                        record, kind = acks.get(timeout=ACK_WAIT)
                    except queue.Empty:
                        pass
                    else:
                        while True:
                            self._acknowledge(consumer, record, kind)
                            held -= 1
                            unsent += 1
                            if not held:
                                break
                            try:
                                record, kind = acks.get_nowait()
                            except queue.Empty:
                                break
                    now = time.monotonic()
                    if held and unsent and now >= flush_at:
                        try:
                            consumer.commit_async()
                        except KafkaException as exc:
                            logger.debug("sending acknowledgements failed: %s", exc)
                        unsent = 0
                        flush_at = now + ACK_FLUSH
                    if self._close_requested and now >= self._close_by:
                        break  # outcomes that did not come in time: their locks expire
                    continue
                if self._close_requested:
                    break
                if not self._fetching:
                    time.sleep(POLL_TIMEOUT)
                    continue
                try:
                    records = consumer.poll(POLL_TIMEOUT)  # also sends the acknowledgements
                except KafkaException as exc:
                    err = kafka_error_of(exc)
                    if err is not None:
                        self._report(err, None)
                        if err.fatal():
                            raise
                    time.sleep(POLL_TIMEOUT)
                    continue
                unsent = 0
                batch = []
                for record in records:
                    err = record.error()
                    if err is not None:  # librdkafka acknowledged it already
                        self._report(err, record.topic())
                        continue
                    batch.append(record)
                if batch:
                    if not self._call_loop(self._dispatch, batch, time.monotonic()):
                        break
                    held = len(batch)
                    flush_at = time.monotonic() + ACK_FLUSH
        except BaseException as exc:
            logger.error(
                "kafka server transport: service %s: share poll loop failed: %r",
                self._service.name,
                exc,
                exc_info=exc,
            )
            self._service.fail(exc)
        finally:
            self._finish()

    def _acknowledge(self, consumer: Any, record: Any, kind: AcknowledgeType) -> None:
        try:
            consumer.acknowledge(record, kind)
        except Exception as exc:  # IllegalStateException: no longer in flight
            logger.warning(
                "kafka server transport: service %s: acknowledging %s[%d]@%d as %s failed: %s",
                self._service.name,
                record.topic(),
                record.partition(),
                record.offset(),
                kind.name,
                _text(exc),
            )

    def _finish(self) -> None:
        try:
            self._consumer.close()  # sends the acknowledgements, leaves the group
            logger.info(
                "kafka server transport: service %s acknowledged and left share group %s",
                self._service.name,
                self._cfg.group,
            )
        except Exception as exc:
            logger.error(
                "kafka server transport: service %s: close failed: %r", self._service.name, exc
            )
        finally:
            done = self._done
            if done is not None:
                self._call_loop(set_done, done)

    def _call_loop(self, fn: Callable[..., Any], *args: Any) -> bool:
        loop = self._loop
        assert loop is not None
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody handles anything any more
            return False
        return True

    def _on_ack_commit(self, offsets: dict[Any, set[int]], exc: KafkaException | None) -> None:
        """Result of sent acknowledgements (poll thread). A failure means the records' locks
        had expired (or the member was fenced): the broker delivers them again."""
        if exc is None:
            return
        where = ", ".join(f"{tp.topic}[{tp.partition}]@{sorted(o)}" for tp, o in offsets.items())
        logger.warning(
            "kafka server transport: service %s: the broker refused acknowledgements (%s): %s; "
            "those records are delivered again",
            self._service.name,
            where,
            _text(exc),
        )

    # -- errors (poll thread) ------------------------------------------------------------------

    def _on_error(self, err: KafkaError) -> None:
        self._report(err, None)

    def _report(self, err: KafkaError, topic: str | None) -> None:
        self._consume_errors.report(err, topic)


def _batches_of(records: list[Any], size: int) -> list[list[Any]]:
    """The records of one poll as batch handler calls: per partition, in order, ``size`` each."""
    by_partition: dict[tuple[str, int], list[Any]] = {}
    for record in records:
        by_partition.setdefault((record.topic(), record.partition()), []).append(record)
    return [part[i : i + size] for part in by_partition.values() for i in range(0, len(part), size)]


def _text(exc: BaseException) -> str:
    err = kafka_error_of(exc)
    if err is not None:
        return describe(err)
    return str(exc) or type(exc).__name__
