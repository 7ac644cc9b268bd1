"""The ``kafka`` server transport: one consumer group member per service.

Threads and tasks, all owned (started and ended) by :class:`KafkaServiceTransport`:

- one **poll thread** owns the librdkafka Consumer. It is the only caller of ``consume()``, so
  rebalance callbacks run there. It never blocks on handlers (it waits for them at most
  ``PACE_MAX``, to alternate fetching with handling while they keep up): it hands each
  ``consume()`` result to the event loop in one ``call_soon_threadsafe``, stores handled
  offsets (one ``store_offsets`` per iteration) for librdkafka's auto-commit (every 3 s), and
  pauses a partition whose buffer is full (resuming it once drained) instead of stopping the
  loop, so heartbeats, rebalances and the other partitions go on;
- one **worker task** per assigned partition (``partition.py``) on the event loop;
- a thread pool only for plain ``def`` handlers and dead-letter sends.

At-least-once: an offset is stored only after its message was handled (or deliberately
skipped/given up on); on revocation the workers of the revoked partitions are stopped, their
final offsets committed synchronously, then the partitions are released; a lost assignment is
dropped without commit; shutdown stops fetching, lets handler calls in progress finish within
the bound, commits while still subscribed (retried until the member has rejoined, when a
rebalance is under way: ``_final_commit_done``), then closes, which leaves the group.

(Over 600 lines on purpose: the poll thread, the rebalance callbacks and the commit paths share
one ownership rule, each field with one writer thread, which is checked by reading them side by
side. The per-partition work is in ``partition.py``, share groups in ``share.py``.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import groupby
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from trpc_kafka import _sdk
from trpc_kafka._config.address import KafkaConfig, redact_address, resolve_address
from trpc_kafka._config.errors import ConfigError
from trpc_kafka._config.rdkafka import consumer_settings, redact_settings
from trpc_kafka._consumer.consume_errors import ERROR_REPEAT, ConsumeErrors, set_done
from trpc_kafka._consumer.dead_letter import DeadLetterSender
from trpc_kafka._consumer.keyed import KeyedWorker
from trpc_kafka._consumer.limiter import TokenBucket
from trpc_kafka._consumer.partition import (
    HandlerSpec,
    PartitionState,
    PartitionWorker,
    bounded_by_deadline,
    sync_caller,
)
from trpc_kafka._consumer.raw import Claim, GroupSessionView, generation_of
from trpc_kafka._consumer.registration import Registration, registration_of
from trpc_kafka._consumer.share import ShareGroupMember
from trpc_kafka._consumer.threads import DaemonThreadPool
from trpc_kafka._kafka_errors import describe, kafka_error_of
from trpc_kafka._rdkafka_log import RateLimiter, rdkafka_log, suppressed_note
from trpc_kafka._runtime.filters import chain
from trpc_kafka._runtime.server import Service

logger = logging.getLogger("trpc_kafka.consumer")
rdkafka_logger = logging.getLogger("trpc_kafka.consumer.rdkafka")

CONSUME_BATCH: Final = 500
"""Most records taken from librdkafka per ``consume()`` call (one hand-over to the loop)."""
POLL_TIMEOUT: Final = 0.1
"""Seconds one ``consume()`` waits when nothing is fetched; bounds the reaction to a stop."""
AHEAD_MESSAGES: Final = 10_000
"""Flow control, level 1 (the service): while the workers of the partitions that are not
paused have this many fetched messages (or ``2 x batch``) not yet started on, the poll thread
takes no more from librdkafka. Records then stay in librdkafka's own bounded prefetch queue,
which stops fetching when full: memory stays bounded without pausing anything."""
AHEAD_BYTES: Final = 16 << 20
"""The same bound in value bytes."""
AHEAD_WAIT: Final = 0.05
"""While held back, ``consume()`` is still called this often, for one record at most, so
rebalance callbacks and errors are served without delay."""
STALL_MESSAGES: Final = 1000
"""Flow control, level 2 (a partition): a partition holding this many messages that has not
completed one for ``STALL_TIME`` (its handler is stuck, or retrying) is paused
(``consumer.pause``), so that it does not hold back the others at level 1. The poll loop goes
on. Pausing is not cheap: librdkafka drops what it prefetched for the partition and takes
~0.85 s after ``resume`` to deliver again, so only stuck or full partitions are paused."""
STALL_TIME: Final = 0.5
PAUSE_MESSAGES: Final = 20_000
"""A partition holding this many messages (or ``2 x batch + 500``) is paused whatever its
progress: the hard bound of one partition's buffer."""
PAUSE_BYTES: Final = 32 << 20
"""The same bound in value bytes per partition."""
RESUME_MESSAGES: Final = 1000
"""A paused partition is resumed once it holds at most this many messages (or ``batch``) and
half of ``PAUSE_BYTES``."""
_AHEAD_STEP: Final = 0.001
PACE_WAIT: Final = 0.005
"""After handing records to workers that had nothing else waiting, the poll thread waits for
one of them to run out of work before it takes more from librdkafka (``consume()``): fetching
then alternates with handling, as in a plain ``consume()`` loop, the records of one chunk are
freed before the next are made, so few are alive at once and CPython's cyclic GC has nothing to
collect (it cost 0.25-0.5 µs per record when the poll thread ran ahead:
bench/results/consumer-paths-2.md). It waits in steps of this many seconds for as long as the
workers make progress (a busy machine only slows them), ``PACE_MAX`` at most; once a step
passes without progress (slow handlers), or while chunks are queued anyway, it reads ahead as
before, up to ``AHEAD_MESSAGES``."""
PACE_MAX: Final = 0.02
"""Longest pause of the poll thread for workers that make progress: the most a record of an
idle partition waits, beyond librdkafka's own fetch, while another partition is busy."""
REVOKE_GRACE_MIN: Final = 1.0
"""Least time (s) a handler call in progress may still run when its partition is revoked."""
SYNC_HANDLER_THREADS: Final = 64
"""Threads of a service's pool for plain ``def`` handlers (created as needed)."""
WATERMARK_REFRESH: Final = 1.0
"""Seconds between refreshes of the cached high watermarks shown by the raw context."""
_CLOSE_RESERVE: Final = 2.0
"""Of the stop bound, what is kept for the final commit and leaving the group."""
_LEAVE_RESERVE: Final = 1.0
"""Of the stop bound, what the final commit's retries leave for ``close()`` (revoke, leave)."""
LEAVE_WAIT: Final = 1.0
"""Most seconds a member holding no partition waits to have left the group before
``close()`` (see ``_leave_holding_nothing``)."""
COMMIT_RETRY_STEP: Final = 0.2
"""Seconds between two tries of the final commit while the group finishes a rebalance."""
_REJOIN_CODES: Final = frozenset(
    {
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.STALE_MEMBER_EPOCH,
        KafkaError.FENCED_MEMBER_EPOCH,
    }
)
"""Commit errors of a member in the middle of a rebalance: the broker's group has moved to a
generation this member has not synced yet (ILLEGAL_GENERATION) or is between JoinGroup and
SyncGroup (REBALANCE_IN_PROGRESS); with the new protocol (``groupProtocol=consumer``, KIP-848)
the member's epoch is behind the broker's (STALE_MEMBER_EPOCH: the next heartbeat brings it) or
was fenced (FENCED_MEMBER_EPOCH: it rejoins). The same commit succeeds once the member has
caught up; a partition that moved meanwhile is committed by its revoke."""


def create_consumer(settings: dict[str, Any]) -> Any:
    """Seam: the librdkafka Consumer of a service (tests look at ``settings`` here)."""
    return _sdk.new_consumer(settings)


class KafkaServiceTransport:
    """The transport of one ``protocol: kafka`` service (see the module docstring)."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self._cfg: KafkaConfig | None = None
        self._consumer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._done: asyncio.Future[None] | None = None
        self._spec: HandlerSpec | None = None
        self._executor: DaemonThreadPool | None = None
        self._executor_lock = threading.Lock()
        self._dead_letter: DeadLetterSender | None = None
        # Poll thread only.
        self._states: dict[tuple[str, int], PartitionState] = {}
        self._multi_topic = False
        self._ahead = (AHEAD_MESSAGES, AHEAD_BYTES)
        self._pause_at = (PAUSE_MESSAGES, PAUSE_BYTES)
        self._resume_at = (RESUME_MESSAGES, PAUSE_BYTES // 2)
        # Consume errors and librdkafka's failed commits: once per ERROR_REPEAT s per code.
        self._consume_errors = ConsumeErrors(service)
        self._commit_log = RateLimiter(ERROR_REPEAT)
        self._all_paused = False
        self._committed: dict[tuple[str, int], int] = {}  # offset we last committed
        self._final_committed = False
        self._final_retry_at = 0.0
        # Event loop only.
        self._workers: dict[tuple[str, int], PartitionWorker] = {}
        # Fetched chunks from the poll thread to the loop; scheduled: a drain is pending.
        self._inbox: deque[list[tuple[PartitionState, list[Any], int]]] = deque()
        self._inbox_scheduled = False
        # Set by a worker that ran out of records (on the loop), waited on by the poll thread.
        self._hungry = threading.Event()
        # Set by the loop, read by the poll thread.
        self._fetching = True
        self._close_requested = False
        self._close_by = 0.0  # monotonic time by which close() must have started
        self._revoke_grace = REVOKE_GRACE_MIN
        self._session = GroupSessionView("", "", None, ())
        self._share: ShareGroupMember | None = None  # groupType=share: the member does it all
        self.settings: dict[str, Any] = {}
        """The librdkafka settings the consumer was created with (after ``start()``), with
        secret values (``sasl.password``...) masked."""

    @property
    def service(self) -> Service:
        return self._service

    @property
    def started(self) -> bool:
        """Whether ``start()`` succeeded (the poll thread runs until ``stop()``)."""
        return self._thread is not None or (self._share is not None and self._share.started)

    # -- lifecycle (event loop) ----------------------------------------------------------------

    async def start(self) -> None:
        service = self._service
        reg = registration_of(service)
        cfg = self._config(reg)
        self._cfg = cfg
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._spec = self._handler_spec(cfg, reg)
        if cfg.group_type == "share":
            self._share = ShareGroupMember(service, cfg, self._spec)
            await self._share.start()
            self.settings = self._share.settings
            return
        self._multi_topic = len(cfg.topics) > 1
        self._ahead = (max(AHEAD_MESSAGES, 2 * cfg.batch), AHEAD_BYTES)
        self._pause_at = (max(PAUSE_MESSAGES, 2 * cfg.batch + CONSUME_BATCH), PAUSE_BYTES)
        self._resume_at = (max(RESUME_MESSAGES, cfg.batch), PAUSE_BYTES // 2)
        self._revoke_grace = max(cfg.max_processing_time_ms / 1000, REVOKE_GRACE_MIN)
        self._session = GroupSessionView(cfg.group, "", None, ())
        if cfg.limiter_rate == 0:
            logger.warning(
                "service %s: limiterRate=0 lets only limiterBurst=%d message(s) through, then "
                "none (remove limiterRate for no limit)",
                service.name,
                cfg.limiter_burst,
            )
        settings = consumer_settings(cfg)
        settings["error_cb"] = self._on_error
        settings["on_commit"] = self._on_commit
        settings["logger"] = rdkafka_log(rdkafka_logger.name)  # rate-limited forwarding
        self.settings = redact_settings(settings)
        try:
            consumer = create_consumer(settings)
        except KafkaException as exc:
            err = kafka_error_of(exc)
            text = err.str() if err is not None else str(exc)
            raise service.config_error(
                f"librdkafka rejected the consumer settings: {text}",
                key="address",
                value=redact_address(service.address),
            ) from None
        try:
            consumer.subscribe(
                list(cfg.topics),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
        except BaseException:
            consumer.close()
            raise
        self._consumer = consumer
        self._done = loop.create_future()
        self._thread = threading.Thread(
            target=self._poll_main, name=f"kafka-poll-{service.name}", daemon=True
        )
        self._thread.start()
        logger.info(
            "kafka server transport: service %s consuming %s as group %s (client id %s, "
            "strategy %s)",
            service.name,
            ",".join(cfg.topics),
            cfg.group,
            cfg.consumer_client_id,
            settings.get("partition.assignment.strategy"),
        )

    def _config(self, reg: Registration | None) -> KafkaConfig:
        service = self._service
        if reg is None:
            raise service.config_error(
                "no handler registered for this kafka service; before serve() call "
                f"trpc_kafka.register_kafka_consumer_service(server.service({service.name!r}), "
                "consumer), register_kafka_handler_service(server, handle) or "
                "register_batch_handler_service(server, handle)",
                key="handler",
            )
        try:
            cfg = resolve_address(service.address)
        except ConfigError as exc:
            raise service.config_error(
                f"address: {exc.message}",
                key="address",
                value=redact_address(service.address),
            ) from None
        if not cfg.topics:
            raise service.config_error(
                "the address names no topic; add topics=topic1,topic2",
                key="address",
                value=redact_address(service.address),
            )
        if not cfg.group:
            raise service.config_error(
                "the address names no consumer group; add group=<name>",
                key="address",
                value=redact_address(service.address),
            )
        if reg.kind == "batch" and cfg.batch <= 0:
            raise service.config_error(
                f"a batch handler ({reg.name}) needs key 'batch' > 0 in the address (messages "
                f"per call, e.g. &batch=100), got batch={cfg.batch}",
                key="address",
                value=redact_address(service.address),
            )
        if reg.kind == "single" and cfg.batch > 0:
            raise service.config_error(
                f"the address sets batch={cfg.batch}, which needs a batch handler "
                f"(register_batch_handler_service); {reg.name} handles one message per call: "
                f"register it as a batch handler or remove 'batch'",
                key="address",
                value=redact_address(service.address),
            )
        return cfg

    def _handler_spec(self, cfg: KafkaConfig, reg: Registration | None) -> HandlerSpec:
        assert reg is not None
        service = self._service
        inner = reg.fn if reg.is_async else sync_caller(reg.fn, self._get_executor())
        if service.timeout:
            inner = bounded_by_deadline(inner)
        if cfg.dead_letter_topic:
            self._dead_letter = DeadLetterSender(cfg, service.name, self._get_executor)
        limiter = None
        if cfg.limiter_rate is not None:
            limiter = TokenBucket(cfg.limiter_rate, cfg.limiter_burst)
        # A plain def handler of single messages is handed whole chunks in its thread, unless
        # something async (filters, the limiter) must run around each call, or keys run
        # concurrently (each key lane hands its records over one by one).
        chunked = (
            not reg.is_async
            and cfg.batch <= 0
            and not service.filters
            and limiter is None
            and cfg.key_concurrency == 1
        )
        return HandlerSpec(
            service_name=service.name,
            call=chain(service.filters, inner),
            is_async=reg.is_async,
            batch=cfg.batch,
            batch_flush=cfg.batch_flush_ms / 1000,
            timeout=service.timeout or None,
            limiter=limiter,
            trpc_meta=cfg.trpc_meta,
            max_retry=cfg.consumer_max_retry,
            retry_interval=cfg.consumer_retry_interval_ms / 1000,
            dead_letter=self._dead_letter,
            fail=service.fail,
            sync_fn=reg.fn if chunked else None,
            executor=self._get_executor() if chunked else None,
            key_concurrency=cfg.key_concurrency,
            hungry=self._hungry.set,
        )

    def _get_executor(self) -> DaemonThreadPool:
        with self._executor_lock:
            if self._executor is None:
                # keyConcurrency=N: N plain def calls of one partition may be in flight.
                size = max(SYNC_HANDLER_THREADS, self._cfg.key_concurrency if self._cfg else 1)
                self._executor = DaemonThreadPool(size, f"kafka-handler-{self._service.name}")
            return self._executor

    async def stop(self, timeout: float) -> None:
        """Stop fetching, let handler calls finish within ``timeout``, commit, leave, close."""
        if self._share is not None:
            await self._share.stop(timeout)
            self._close_handlers()
            return
        if self._thread is None or self._done is None:
            return
        deadline = time.monotonic() + timeout
        self._fetching = False
        grace = max(0.0, timeout - min(_CLOSE_RESERVE, timeout / 2))
        await self._stop_workers(list(self._workers), grace)
        self._close_by = deadline - min(_LEAVE_RESERVE, timeout / 4)
        self._close_requested = True
        remaining = deadline - time.monotonic()
        try:
            await asyncio.wait_for(asyncio.shield(self._done), max(remaining, 0.1))
        except asyncio.TimeoutError:
            logger.warning(
                "kafka server transport: service %s: commit and close did not finish within "
                "%.1fs; leaving it to the background",
                self._service.name,
                timeout,
            )
        self._close_handlers()

    def _close_handlers(self) -> None:
        if self._dead_letter is not None:
            self._dead_letter.close(0)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        logger.info("kafka server transport: service %s stopped", self._service.name)

    # -- workers (event loop) ------------------------------------------------------------------

    def _start_workers(self, states: list[PartitionState]) -> None:
        assert self._spec is not None
        for state in states:
            if state.key in self._workers or not self._fetching:
                continue
            worker = (
                PartitionWorker(self._spec, state)
                if self._spec.key_concurrency == 1
                else KeyedWorker(self._spec, state)
            )
            worker.start()
            self._workers[state.key] = worker

    def _dispatch_inbox(self) -> None:
        # Cleared before draining: what the poll thread adds from here on is either drained
        # now or scheduled again by it.
        self._inbox_scheduled = False
        inbox = self._inbox
        workers = self._workers
        while inbox:
            for state, records, nbytes in inbox.popleft():
                worker = workers.get(state.key)
                if worker is not None and worker.state is state:
                    worker.push((records, nbytes))

    async def _stop_workers(self, keys: list[tuple[str, int]], grace: float) -> None:
        workers = [w for w in (self._workers.pop(k, None) for k in keys) if w is not None]
        for worker in workers:
            worker.request_stop()
        pending = {w.task for w in workers if w.task is not None and not w.task.done()}
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=grace)
        if late:
            for worker in workers:
                if worker.task in late:
                    state = worker.state
                    logger.warning(
                        "kafka server transport: service %s: handler of %s partition %d still "
                        "running after %.1fs; cancelling it (its message is not committed)",
                        self._service.name,
                        state.topic,
                        state.partition,
                        grace,
                    )
                    worker.cancel()
            await asyncio.wait(late, timeout=1.0)

    def _drop_workers(self, keys: list[tuple[str, int]]) -> None:
        for key in keys:
            worker = self._workers.pop(key, None)
            if worker is not None:
                worker.request_stop()
                worker.cancel()

    # -- raw context (any thread) --------------------------------------------------------------

    def session_view(self) -> GroupSessionView:
        return self._session

    def high_watermark(self, topic: str, partition: int) -> int | None:
        # Never a Consumer call here: confluent-kafka serialises calls on one consumer, so a
        # call from the event loop would wait for the poll thread's consume(). The poll thread
        # refreshes librdkafka's cached value every WATERMARK_REFRESH seconds.
        state = self._states.get((topic, partition))
        return None if state is None else state.high_watermark

    # -- poll thread ---------------------------------------------------------------------------

    def _poll_main(self) -> None:
        consumer = self._consumer
        hungry = self._hungry
        next_watermarks = 0.0
        held = 0.0
        try:
            while not (self._close_requested and self._final_commit_done()):
                take = CONSUME_BATCH
                if self._states:
                    self._store()
                    now = time.monotonic()
                    if self._fetching:
                        self._flow_control(now)
                    elif not self._all_paused:
                        self._pause_all()
                    if now >= next_watermarks:
                        next_watermarks = now + WATERMARK_REFRESH
                        self._refresh_watermarks()
                    if self._fetching and self._ahead_enough():
                        if held < AHEAD_WAIT:
                            hungry.clear()
                            hungry.wait(_AHEAD_STEP)
                            held += _AHEAD_STEP
                            continue
                        take = 1  # serve callbacks; the buffers are full
                held = 0.0
                try:
                    records = consumer.consume(take, POLL_TIMEOUT)
                except KafkaException as exc:
                    err = kafka_error_of(exc)
                    if err is not None:
                        self._report(err, None)
                        if err.fatal():
                            raise
                    time.sleep(POLL_TIMEOUT)
                    continue
                if records:
                    if self._fetching:
                        hungry.clear()
                        delivered = self._deliver(records)
                        del records  # freed by the workers, not kept alive here
                        if delivered:
                            self._pace(delivered)
                    else:
                        for record in records:
                            err = record.error()
                            if err is not None:
                                self._report(err, record.topic())
        except BaseException as exc:
            logger.error(
                "kafka server transport: service %s: poll loop failed: %r",
                self._service.name,
                exc,
                exc_info=exc,
            )
            self._service.fail(exc)
        finally:
            self._finish()

    def _deliver(self, records: list[Any]) -> int:
        """Hand one ``consume()`` result to the workers, as one chunk per partition; how many
        records were handed over.

        The per-record work runs in C (``any``/``map``, ``groupby`` with the Message type's
        own methods as keys): this thread shares the GIL with the handlers.
        """
        if any(map(_record_error, records)):  # rare: report the errors, deliver the rest
            kept = []
            for record in records:
                err = record.error()
                if err is None:
                    kept.append(record)
                else:
                    self._report(err, record.topic())
            records = kept
        states = self._states
        sized: list[tuple[PartitionState, list[Any], int]] = []
        if self._multi_topic:
            groups: Any = groupby(records, _topic_partition)
        else:
            topic = records[0].topic() if records else ""
            groups = (((topic, p), g) for p, g in groupby(records, _record_partition))
        for key, group in groups:
            state = states.get(key)
            if state is None:  # not (or no longer) assigned: stale
                continue
            chunk = list(group)
            nbytes = sum(map(len, chunk))
            state.delivered += len(chunk)
            state.delivered_bytes += nbytes
            sized.append((state, chunk, nbytes))
        if not sized:
            return 0
        # One wake-up of the loop for what arrives while it is busy: a call_soon_threadsafe
        # is a write to the loop's self-pipe (and a GIL hand-over) per call.
        self._inbox.append(sized)
        if not self._inbox_scheduled:
            self._inbox_scheduled = True
            if not self._call_loop(self._dispatch_inbox):
                self._inbox_scheduled = False
        return sum(len(chunk) for _, chunk, _ in sized)

    def _pace(self, delivered: int) -> None:
        """Wait until a worker runs out of records, while the workers make progress (see
        ``PACE_WAIT``); at once when more than the ``delivered`` records are queued."""
        hungry = self._hungry
        states = self._states.values()
        if sum(s.delivered - s.taken for s in states) > delivered:
            return  # reading ahead already: pausing would free nothing
        handled = sum(s.handled for s in states)
        waited = 0.0
        while not hungry.wait(PACE_WAIT):
            waited += PACE_WAIT
            before, handled = handled, sum(s.handled for s in states)
            if handled == before or waited >= PACE_MAX or self._close_requested:
                return

    def _call_loop(self, fn: Callable[..., Any], *args: Any) -> bool:
        loop = self._loop
        assert loop is not None
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: nobody handles anything any more
            return False
        return True

    def _store(self) -> None:
        offsets = None
        for state in self._states.values():
            handled = state.handled
            if handled > state.stored:
                if offsets is None:
                    offsets = []
                offsets.append(TopicPartition(state.topic, state.partition, handled + 1))
                state.stored = handled
        if offsets:
            try:
                self._consumer.store_offsets(offsets=offsets)
            except KafkaException as exc:
                logger.warning(
                    "kafka server transport: service %s: storing offsets failed: %s",
                    self._service.name,
                    exc,
                )

    def _ahead_enough(self) -> bool:
        """Whether the workers of unpaused partitions have enough fetched work for now."""
        msgs = nbytes = 0
        for state in self._states.values():
            if not state.paused:
                msgs += state.delivered - state.taken
                nbytes += state.delivered_bytes - state.taken_bytes
        ahead_msgs, ahead_bytes = self._ahead
        return msgs >= ahead_msgs or nbytes >= ahead_bytes

    def _flow_control(self, now: float) -> None:
        pause_msgs, pause_bytes = self._pause_at
        resume_msgs, resume_bytes = self._resume_at
        pause = resume = None
        for state in self._states.values():
            msgs = state.delivered - state.taken
            nbytes = state.delivered_bytes - state.taken_bytes
            if state.handled != state.seen_handled or not msgs:
                state.seen_handled = state.handled
                state.progress_at = now
            if state.paused:
                if msgs <= resume_msgs and nbytes <= resume_bytes:
                    state.paused = False
                    resume = resume or []
                    resume.append(TopicPartition(state.topic, state.partition))
            elif (
                msgs >= pause_msgs
                or nbytes >= pause_bytes
                or (msgs >= STALL_MESSAGES and now - state.progress_at >= STALL_TIME)
            ):
                state.paused = True
                pause = pause or []
                pause.append(TopicPartition(state.topic, state.partition))
        try:
            if pause:
                self._consumer.pause(pause)
                logger.debug("paused %s", pause)
            if resume:
                self._consumer.resume(resume)
                logger.debug("resumed %s", resume)
        except KafkaException as exc:
            logger.warning("kafka server transport: pause/resume failed: %s", exc)

    def _refresh_watermarks(self) -> None:
        consumer = self._consumer
        for state in list(self._states.values()):
            try:
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(state.topic, state.partition), cached=True
                )
            except KafkaException:
                continue
            state.high_watermark = int(high) if high >= 0 else None

    def _pause_all(self) -> None:
        parts = [TopicPartition(s.topic, s.partition) for s in self._states.values()]
        try:
            self._consumer.pause(parts)
        except KafkaException as exc:
            logger.debug("pausing at stop failed: %s", exc)
        for state in self._states.values():
            state.paused = True
        self._all_paused = True

    def _commit(
        self, states: list[PartitionState], why: str, expected: frozenset[int] = frozenset()
    ) -> int | None:
        """Store and commit, synchronously, the handled offsets of ``states`` not committed yet.

        Returns the error code of a failed commit, else None. A failure is logged as an error
        unless its code is ``expected`` (the caller deals with it).
        """
        committed = self._committed
        offsets = [
            TopicPartition(s.topic, s.partition, s.handled + 1)
            for s in states
            if s.handled >= 0 and s.handled + 1 > committed.get(s.key, -1)
        ]
        if not offsets:
            return None
        consumer = self._consumer
        try:
            consumer.store_offsets(offsets=offsets)
        except KafkaException as exc:
            logger.debug("store before commit (%s) failed: %s", why, exc)
        for state in states:
            state.stored = max(state.stored, state.handled)
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            err = kafka_error_of(exc)
            code = err.code() if err is not None else KafkaError._FAIL
            if code == KafkaError._NO_OFFSET:
                return None
            if code not in expected:
                logger.error(
                    "kafka server transport: service %s: commit on %s failed: %s",
                    self._service.name,
                    why,
                    describe(err) if isinstance(err, KafkaError) else str(exc),
                )
            return int(code)
        for tp in offsets:
            committed[(tp.topic, tp.partition)] = tp.offset
        logger.debug("committed on %s: %s", why, offsets)
        return None

    def _final_commit_done(self) -> bool:
        """At shutdown, before ``close()``: commit what was handled, while still subscribed.

        ``close()`` revokes the assignment at once, whatever the member's join state: a commit
        then, in the middle of a (cooperative) rebalance, carries an outdated generation and
        fails. Here the commit is retried while the poll loop goes on serving the rebalance
        (partitions paused, records dropped), until it succeeds or ``_close_by``. Partitions
        revoked meanwhile are committed by ``_on_revoke``; lost ones are not ours to commit.
        """
        if self._final_committed:
            return True
        now = time.monotonic()
        if now < self._final_retry_at:
            return False
        will_retry = now + COMMIT_RETRY_STEP < self._close_by
        expected = _REJOIN_CODES if will_retry else frozenset()
        code = self._commit(list(self._states.values()), "shutdown", expected)
        if code in expected:
            if not self._final_retry_at:
                logger.info(
                    "kafka server transport: service %s: the group is rebalancing (%s); the "
                    "commit on shutdown is retried once this member has rejoined",
                    self._service.name,
                    describe(KafkaError(code)),
                )
            self._final_retry_at = now + COMMIT_RETRY_STEP
            return False
        if code is None and self._final_retry_at:
            logger.info(
                "kafka server transport: service %s: committed on shutdown after the rejoin",
                self._service.name,
            )
        self._final_committed = True
        return True

    def _finish(self) -> None:
        consumer = self._consumer
        try:
            if not self._final_committed:  # the poll loop failed
                self._commit(list(self._states.values()), "shutdown")
            if not self._states:
                self._leave_holding_nothing(consumer)
            consumer.close()  # revokes (on_revoke commits only what is new: nothing) and leaves
            logger.info(
                "kafka server transport: service %s committed and left group %s",
                self._service.name,
                self._cfg.group if self._cfg is not None else "",
            )
        except Exception as exc:
            logger.error(
                "kafka server transport: service %s: close failed: %r", self._service.name, exc
            )
        finally:
            done = self._done
            if done is not None:
                self._call_loop(set_done, done)

    def _leave_holding_nothing(self, consumer: Any) -> None:
        """Leave the group before ``close()`` when this member holds no partition.

        librdkafka 2.16 sends no LeaveGroup when a cooperative-sticky member holding nothing
        closes: the broker keeps it until its session times out (10 s) and holds the other
        members' rebalance meanwhile, so their stop took 5-10 s (bench/results/scaling.md,
        finding 1). ``unsubscribe()`` does send it: poll until the member id is gone (0.05 s
        here), at most ``LEAVE_WAIT`` (librdkafka postpones it while a rebalance is under way).
        """
        try:
            consumer.unsubscribe()
            deadline = min(time.monotonic() + LEAVE_WAIT, max(self._close_by, time.monotonic()))
            while consumer.memberid() and time.monotonic() < deadline:
                for record in consumer.consume(1, 0.05):
                    err = record.error()
                    if err is not None:
                        self._report(err, record.topic())
        except Exception as exc:  # close() still leaves as it can
            logger.debug("leaving before close failed: %r", exc)

    # -- rebalance callbacks (poll thread, inside consume()) -----------------------------------

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        try:
            new = []
            for tp in partitions:
                key = (tp.topic, tp.partition)
                if key in self._states:
                    continue
                state = PartitionState(tp.topic, tp.partition, Claim(self, tp.topic, tp.partition))
                self._states[key] = state
                self._committed.pop(key, None)  # from an earlier assignment: others moved on
                new.append(state)
            self._all_paused = False
            self._update_session()
            if new:
                logger.info(
                    "kafka server transport: service %s assigned %s",
                    self._service.name,
                    _names(new),
                )
                self._call_loop(self._start_workers, new)
        except Exception as exc:
            self._callback_failed("assign", exc)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        try:
            revoked = self._pop_states(partitions)
            if revoked:
                self._stop_workers_from_thread([s.key for s in revoked])
                self._commit(revoked, "revoke")
                self._resume_paused(revoked)
                logger.info(
                    "kafka server transport: service %s revoked %s",
                    self._service.name,
                    _names(revoked),
                )
            self._update_session()
        except Exception as exc:
            self._callback_failed("revoke", exc)

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        try:
            lost = self._pop_states(partitions)
            if lost:
                self._call_loop(self._drop_workers, [s.key for s in lost])
                self._resume_paused(lost)
                logger.warning(
                    "kafka server transport: service %s lost %s (session timed out or fenced);"
                    " their handling stops without commit, the new owner re-delivers",
                    self._service.name,
                    _names(lost),
                )
            self._update_session()
        except Exception as exc:
            self._callback_failed("lost", exc)

    def _pop_states(self, partitions: list[TopicPartition]) -> list[PartitionState]:
        popped = []
        for tp in partitions:
            state = self._states.pop((tp.topic, tp.partition), None)
            if state is not None:
                popped.append(state)
        return popped

    def _stop_workers_from_thread(self, keys: list[tuple[str, int]]) -> None:
        loop = self._loop
        assert loop is not None
        grace = self._revoke_grace
        try:
            future = asyncio.run_coroutine_threadsafe(self._stop_workers(keys, grace), loop)
        except RuntimeError:  # loop closed
            return
        try:
            future.result(timeout=grace + 5.0)
        except concurrent.futures.TimeoutError:
            future.cancel()
            logger.error(
                "kafka server transport: service %s: workers did not stop in time at revoke",
                self._service.name,
            )

    def _resume_paused(self, states: list[PartitionState]) -> None:
        paused = [TopicPartition(s.topic, s.partition) for s in states if s.paused]
        if paused:
            try:
                self._consumer.resume(paused)
            except KafkaException as exc:
                logger.debug("resume of released partitions failed: %s", exc)

    def _update_session(self) -> None:
        consumer = self._consumer
        assert self._cfg is not None
        try:
            member = consumer.memberid() or ""
            generation = generation_of(consumer.consumer_group_metadata())
        except (KafkaException, RuntimeError):
            member, generation = self._session.member_id, None
        self._session = GroupSessionView(
            self._cfg.group, member, generation, tuple(sorted(self._states))
        )

    def _callback_failed(self, what: str, exc: Exception) -> None:
        logger.error(
            "kafka server transport: service %s: %s callback failed: %r",
            self._service.name,
            what,
            exc,
            exc_info=exc,
        )
        self._service.fail(exc)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """Result of a commit librdkafka made by itself: every 3 s, and of released partitions.

        A failure is logged, unless it is only about offsets our own synchronous commit (at
        revoke or shutdown) has covered since, or it is the broker saying that the group is
        rebalancing: the revoke or shutdown commit that follows commits those offsets.
        """
        failed = [tp for tp in partitions if tp.error is not None] if err is None else partitions
        if not failed:
            return
        committed = self._committed
        if all(0 <= tp.offset <= committed.get((tp.topic, tp.partition), -1) for tp in failed):
            return
        first = err or failed[0].error
        assert first is not None
        if first.code() == KafkaError._NO_OFFSET:
            return
        if first.code() in _REJOIN_CODES:
            level = logging.DEBUG
            note = ""
        else:
            suppressed = self._commit_log.admit(first.code())
            if suppressed is None:
                return
            level = logging.WARNING
            note = suppressed_note(suppressed, ERROR_REPEAT)
        logger.log(
            level,
            "kafka server transport: service %s: librdkafka's commit of stored offsets failed: "
            "%s (%s); the next commit covers them%s",
            self._service.name,
            describe(first),
            ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in failed),
            note,
        )

    # -- errors (poll thread) ------------------------------------------------------------------

    def _on_error(self, err: KafkaError) -> None:
        self._report(err, None)

    def _report(self, err: KafkaError, topic: str | None) -> None:
        self._consume_errors.report(err, topic)


# Message methods called from C (map, groupby): no Python frame per record.
_record_error = Message.error
_record_partition = Message.partition


def _topic_partition(record: Any) -> tuple[str, int]:
    return record.topic(), record.partition()


def _names(states: list[PartitionState]) -> str:
    return ", ".join(f"{s.topic}[{s.partition}]" for s in states)
