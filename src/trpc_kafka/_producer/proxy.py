"""Client proxies: the producer calls of the reference plugin, async and blocking.

A proxy is cheap: it holds its parsed target, timeout, partitioner and filter chain, and borrows
the pooled librdkafka producer of its address on first use (:mod:`trpc_kafka._producer.pool`).

A call is planned first (:mod:`~trpc_kafka._producer.plan`: deadline, metadata headers, type
checks, partition when the count is cached, delivery record; no waiting), then sent by one of two
halves that keep only the waits: :meth:`ClientProxy._send` awaits (producer creation, partition
count, queue room, acknowledgement) and :meth:`ClientProxy._send_blocking` blocks the calling
thread for the same four. Every public call has an async form and a blocking twin named
``<call>_sync``. (This module is a little over 600 lines because it is the one class of the
public calls: four calls times two halves, closing and binding. Everything that is not a call
or a wait lives in the modules named above.)

The hot paths (no filters, ``random`` partitioner, no headers, producer bound) skip the plan:
an acked send is ``Producer.produce`` with one future the delivery thread completes in a batch
with the others of the same poll; a fire-and-forget send allocates nothing per message (one
``on_delivery`` per proxy serves them all, :class:`~trpc_kafka._producer.delivery.AsyncReporter`).

Errors (:mod:`~trpc_kafka._producer.errors`): past the service timeout or the context deadline
(the earlier one) a call fails with code 101; a cancelled call gives code 161
(:class:`CanceledError`, on both paths); librdkafka failures give code 141 with
``kafka client transport SendMessage: <cause>``; a key, value or header of a bad type gives 121
before anything is queued.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Coroutine, Sequence
from functools import partial
from types import TracebackType
from typing import Any, Final

from confluent_kafka import KafkaException

from trpc_kafka._config.address import KafkaConfig, redact_address
from trpc_kafka._producer import pool as _pool
from trpc_kafka._producer import syncloop
from trpc_kafka._producer.callbacks import ErrorCallback, SuccessCallback
from trpc_kafka._producer.deadlines import call_deadline, deadlines_of
from trpc_kafka._producer.delivery import NO_OFFSET, AckedResult, AsyncReporter, SyncWaiter
from trpc_kafka._producer.entry import ProducerEntry
from trpc_kafka._producer.errors import (
    ACK,
    ASYNC_SEND,
    QUEUE_FULL,
    SEND,
    CanceledError,
    canceled,
    closed_error,
    empty_topic,
    enqueue_error,
    proxy_closed,
    timeout_error,
    with_cause,
)
from trpc_kafka._producer.message import Headers, Payload, ProducerMessage, payload_problem
from trpc_kafka._producer.partitioner import parse_partitioner
from trpc_kafka._producer.plan import Send, checked_headers, filtered_request, raw_fields
from trpc_kafka._runtime.context import Context, _current, current_context
from trpc_kafka._runtime.errors import TrpcError
from trpc_kafka._runtime.filters import Filter, Handler, chain

log = logging.getLogger("trpc_kafka.producer")

UNKNOWN_RESULT: Final[AckedResult] = (-1, NO_OFFSET)
"""``send_message`` result when the target has ``async=1``: nothing is known yet."""

_monotonic = time.monotonic
_get_running_loop = asyncio.get_running_loop
_Future = asyncio.Future  # the C future; loop.create_future() adds a Python frame per call
_get_ident = threading.get_ident
_context_now = _current.get  # current_context() without its Python frame (hot path)
LOOP_POLL_BUDGET: Final = 0.001
"""How long an event loop may poll for the report of its only acked send (``entry.py``)."""
SYNC_POLL_BUDGET: Final = 0.05
"""How long a blocking acked send polls for its report at a time before it lets the delivery
thread poll (its state checks, other senders) and waits for it."""
_FIRST_ROOM_PAUSE: Final = 0.0005
_MAX_ROOM_PAUSE: Final = 0.01


def _room_pause(send: Send, delay: float, source: ProducerEntry) -> float:
    """How long to wait for room in a full queue; a timeout error once the deadline passed."""
    deadline = send.deadline
    if deadline is None:
        return delay
    left = deadline - _monotonic()
    if left <= 0:
        raise with_cause(
            timeout_error(send.op, QUEUE_FULL), source, send.topic, send.op, QUEUE_FULL
        )
    return min(delay, left)


def _count_timeout(send: Send, entry: ProducerEntry) -> TrpcError:
    what = f"waiting for the partition count of topic {send.topic!r}"
    return with_cause(timeout_error(send.op, what), entry, send.topic, send.op, what)


class ClientProxy:
    """A producer client of one service (the reference's ``kafka.NewClientProxy``).

    Create it with :func:`~trpc_kafka.new_client_proxy`. Every call has an async form and a
    blocking twin (``*_sync``) usable from any thread without an event loop; both run the
    proxy's filters.
    """

    def __init__(
        self,
        name: str,
        config: KafkaConfig,
        *,
        target: str = "",
        timeout: float | None = None,
        filters: Sequence[Filter] = (),
        success_callback: SuccessCallback | None = None,
        error_callback: ErrorCallback | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.target = redact_address(target)
        self.timeout = timeout
        self.filters: tuple[Filter, ...] = tuple(filters)
        self.partitioner = parse_partitioner(config.partitioner)
        self._topic = config.topic
        self._async = config.async_produce
        self._trpc_meta = config.trpc_meta
        self._entry: ProducerEntry | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the last running loop seen
        self._deadlines: tuple[asyncio.AbstractEventLoop, Any] | None = None
        self._closed = False
        self._bind_lock = threading.Lock()
        # Hot paths apply: no filters, librdkafka picks the partition, no metadata headers.
        self._fast = not self.filters and not self.partitioner.needs_count and not self._trpc_meta
        self._fast_acked = self._fast and not self._async
        self._reporter = AsyncReporter(name, success_callback, error_callback)
        # async=1: every send is fire-and-forget; with no success callback of its own the pool
        # may give it a producer that reports failures only (pool.acquire).
        self._quiet = self._async and success_callback is None
        self._deliver = self._reporter.deliver
        # Filter chains, built once; None means no filters: calls go straight to the core.
        self._chains: dict[str, tuple[Handler, str]] | None = None
        if self.filters:
            self._chains = {
                kind: (chain(self.filters, handler), f"/{name}/{kind}")
                for kind, handler in (
                    ("produce", self._h_produce),
                    ("send", self._h_send),
                    ("asyncSend", self._h_async_send),
                    ("sendRaw", self._h_send_raw),
                )
            }

    def __repr__(self) -> str:
        return (
            f"ClientProxy(name={self.name!r}, target={self.target!r}, timeout={self.timeout!r}, "
            f"filters={len(self.filters)}, closed={self._closed})"
        )

    # -- the calls (async) -------------------------------------------------------------------

    async def produce(self, key: Payload, value: Payload, headers: Headers | None = None) -> None:
        """Send to the target's ``topic``; waits for the acknowledgement unless ``async=1``.

        No ``topic`` in the target is code 141 ("empty topic"), as in the reference.
        """
        if self._chains is not None:
            await self._filtered("produce", ProducerMessage(self._topic, value, key, headers))
            return
        await self._send(self._plan_produce(key, value, headers, self._call_info()))

    async def send_message(
        self, topic: str, key: Payload, value: Payload, headers: Headers | None = None
    ) -> AckedResult:
        """Send and wait for the acknowledgement: ``(partition, offset)``.

        With ``requiredAcks=0`` the broker is not waited for and the offset is ``-1`` (unknown).
        With ``async=1`` the message is only queued (as :meth:`async_send_message`) and the
        result is ``(-1, -1)``.
        """
        entry = self._entry
        if self._fast_acked and headers is None and entry is not None and not entry.closed:
            # The hot path (no filters, random partitioner, no headers, producer bound): the
            # plan (call_deadline included) and _send inlined, one future and one partial per
            # call. Inlined because each function call here costs what the benchmark sees.
            timeout = self.timeout
            deadline = None if timeout is None else _monotonic() + timeout
            ctx = _context_now()
            if (
                ctx is not None
                and ctx.deadline is not None
                and (deadline is None or ctx.deadline < deadline)
            ):
                deadline = ctx.deadline
                if deadline <= _monotonic():
                    raise timeout_error(SEND, "before sending: the deadline has passed")
            loop = self._loop
            # asyncio.get_running_loop() costs ~0.2 us on 3.11; a loop whose run_forever runs
            # on this thread is the running loop (BaseEventLoop sets _thread_id meanwhile).
            if loop is None or loop._thread_id != _get_ident():  # type: ignore[attr-defined]
                loop = self._running_loop()
            fut: asyncio.Future[AckedResult] = _Future(loop=loop)
            try:
                # Positional (partition -1: librdkafka's partitioner): keyword arguments cost
                # the binding ~0.6 us a call (bench/results/producer-perf.md).
                entry.produce(topic, value, key, -1, partial(entry.collect, fut))
            except BufferError:  # queue full: the general path waits for room
                return await self._send(self._plan(True, topic, key, value, None, deadline))
            except KafkaException as exc:
                raise enqueue_error(exc, topic, SEND) from exc
            except (TypeError, ValueError):  # ValueError: a str librdkafka cannot take
                raise payload_problem(topic, key, value, None) from None
            # _ack inlined: a coroutine call per send cost 0.4 us here, 18% of this path's own
            # time (a fake producer, bench notes in bench/results/producer-redesign.md).
            try:
                # Alone in the queue, nothing else for the loop to run (its self-pipe reader
                # aside): poll for the report right here, no hand-off from the delivery thread.
                if (
                    len(entry.producer) == 1
                    and loop is self._loop
                    and len(loop._ready) <= 1  # type: ignore[attr-defined]
                    and entry.poll_here(fut.done, LOOP_POLL_BUDGET, loop)
                ):
                    return fut.result()
                if entry.parked:
                    entry.unpark()
                if deadline is None:
                    return await fut
                cached = self._deadlines  # (loop, its Deadlines): one atomic read
                if cached is None or cached[0] is not loop:
                    cached = self._deadlines = (loop, deadlines_of(loop))
                bucket = cached[1].add(loop, fut, deadline, SEND)
                try:
                    return await fut
                finally:
                    del bucket[fut]
            except asyncio.CancelledError:
                raise canceled(SEND) from None
            except TrpcError as exc:
                raise with_cause(exc, entry, topic, SEND, ACK) from exc.__cause__
        if self._chains is not None:
            result: AckedResult = await self._filtered(
                "send", ProducerMessage(topic, value, key, headers)
            )
            return result
        deadline, meta = self._call_info()
        return await self._send(
            self._plan(not self._async, topic, key, value, headers, deadline, meta)
        )

    async def async_send_message(
        self, topic: str, key: Payload, value: Payload, headers: Headers | None = None
    ) -> None:
        """Queue the message and return; the outcome goes to the callbacks (exactly one each).

        Waits only while librdkafka's queue is full; the timeout and the context deadline bound
        that wait (code 101), not the delivery (``message.timeout.ms``, 30 s unless the address
        sets it, bounds that, and an unreachable cluster fails it sooner; a failure goes to the
        error callback). A call that raises queued nothing and gets no callback.
        """
        entry = self._entry
        if self._fast and headers is None and entry is not None and not entry.closed:
            # The hot path: nothing allocated per message but what librdkafka needs.
            try:
                entry.produce(topic, value, key, -1, self._deliver)  # positional: as above
                if entry.parked:
                    entry.unpark()
                return
            except BufferError:  # queue full: the general path waits for room
                pass
            except KafkaException as exc:
                raise enqueue_error(exc, topic, ASYNC_SEND) from exc
            except (TypeError, ValueError):  # ValueError: a str librdkafka cannot take
                raise payload_problem(topic, key, value, None) from None
        if self._chains is not None:
            await self._filtered("asyncSend", ProducerMessage(topic, value, key, headers))
            return
        deadline, meta = self._call_info()
        await self._send(self._plan(False, topic, key, value, headers, deadline, meta))

    async def send_raw_message(self, msg: ProducerMessage) -> AckedResult:
        """Send a full :class:`ProducerMessage` (partition, timestamp...); ``(partition, offset)``.

        ``async=1`` applies here as for :meth:`send_message`.
        """
        if self._chains is not None:
            result: AckedResult = await self._filtered("sendRaw", msg)
            return result
        return await self._send(self._plan_raw(msg, self._call_info()))

    # -- the calls (blocking twins) ----------------------------------------------------------

    def produce_sync(self, key: Payload, value: Payload, headers: Headers | None = None) -> None:
        """Blocking :meth:`produce`, for code without an event loop (any thread)."""
        if self._chains is not None:
            req = ProducerMessage(self._topic, value, key, headers)
            self._filtered_sync("produce", req, SEND)
            return
        self._send_blocking(self._plan_produce(key, value, headers, self._call_info()))

    def send_message_sync(
        self, topic: str, key: Payload, value: Payload, headers: Headers | None = None
    ) -> AckedResult:
        """Blocking :meth:`send_message`."""
        if self._chains is not None:
            req = ProducerMessage(topic, value, key, headers)
            result: AckedResult = self._filtered_sync("send", req, SEND)
            return result
        deadline, meta = self._call_info()
        return self._send_blocking(
            self._plan(not self._async, topic, key, value, headers, deadline, meta)
        )

    def async_send_message_sync(
        self, topic: str, key: Payload, value: Payload, headers: Headers | None = None
    ) -> None:
        """Blocking :meth:`async_send_message` (returns once queued)."""
        if self._chains is not None:
            req = ProducerMessage(topic, value, key, headers)
            self._filtered_sync("asyncSend", req, ASYNC_SEND)
            return
        deadline, meta = self._call_info()
        self._send_blocking(self._plan(False, topic, key, value, headers, deadline, meta))

    def send_raw_message_sync(self, msg: ProducerMessage) -> AckedResult:
        """Blocking :meth:`send_raw_message`."""
        if self._chains is not None:
            result: AckedResult = self._filtered_sync("sendRaw", msg, SEND)
            return result
        return self._send_blocking(self._plan_raw(msg, self._call_info()))

    # -- closing -----------------------------------------------------------------------------

    async def close(self, timeout: float = 10.0) -> None:
        """Close the proxy: queued async sends are flushed within ``timeout`` seconds.

        When this was the last open proxy of its producer, the producer is closed as well:
        whatever is still undelivered at the bound is purged and reported to the error
        callback. Otherwise the call returns once the producer's queue was empty at a poll (or
        at the bound; the producer stays open for the other proxies). Later calls on this proxy
        fail (code 141).
        """
        entry, last = self._detach(timeout)
        if entry is None:
            return
        if last:
            await entry.wait_closed_async(timeout + _pool.PURGE_GRACE)
        else:
            await entry.wait_empty_async(timeout)

    def close_sync(self, timeout: float = 10.0) -> None:
        """Blocking :meth:`close`."""
        entry, last = self._detach(timeout)
        if entry is None:
            return
        if last:
            entry.wait_closed(timeout + _pool.PURGE_GRACE)
        else:
            entry.wait_empty(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> ClientProxy:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __enter__(self) -> ClientProxy:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close_sync()

    def _detach(self, timeout: float) -> tuple[ProducerEntry | None, bool]:
        with self._bind_lock:
            if self._closed:
                return None, False
            self._closed = True
            entry = self._entry
            self._entry = None
        if entry is None or entry.closed:
            return None, False
        return entry, _pool.release(entry, timeout)

    # -- the plan step (no waiting) ----------------------------------------------------------

    def _call_info(self) -> tuple[float | None, dict[str, bytes] | None]:
        """Deadline (the earlier of timeout and context deadline) and metadata for trpcMeta."""
        ctx = current_context()
        deadline = call_deadline(self.timeout, ctx)
        if ctx is None:
            return deadline, None
        return deadline, (ctx.metadata if self._trpc_meta and ctx.metadata else None)

    def _plan(  # noqa: PLR0917 - positional on purpose: every call passes them all
        self,
        acked: bool,
        topic: str,
        key: Payload,
        value: Payload,
        headers: Headers | None,
        deadline: float | None,
        meta: dict[str, bytes] | None = None,
        partition: int | None = None,
        timestamp: int = 0,
    ) -> Send:
        op = SEND if acked else ASYNC_SEND
        if acked and deadline is not None and deadline <= _monotonic():
            raise timeout_error(SEND, "before sending: the deadline has passed")
        if headers is not None or meta:
            headers = checked_headers(headers, meta)
        if partition is None:
            partition = self.partitioner.early(topic, key)
        on_delivery = None
        if not acked:
            on_delivery = self._deliver if not headers else self._reporter.with_headers(headers)
        return Send(
            op, acked, topic, value, key, partition, timestamp, headers, deadline, on_delivery
        )

    def _plan_produce(
        self,
        key: Payload,
        value: Payload,
        headers: Headers | None,
        info: tuple[float | None, dict[str, bytes] | None],
    ) -> Send:
        topic = self._topic
        if not topic:
            raise empty_topic()
        return self._plan(not self._async, topic, key, value, headers, *info)

    def _plan_raw(
        self, msg: ProducerMessage, info: tuple[float | None, dict[str, bytes] | None]
    ) -> Send:
        topic, partition, timestamp = raw_fields(msg)
        return self._plan(
            not self._async, topic, msg.key, msg.value, msg.headers, *info, partition, timestamp
        )

    # -- the async half: its waits -----------------------------------------------------------

    async def _send(self, send: Send) -> AckedResult:
        """Send a planned message; ``(partition, offset)``, or ``UNKNOWN_RESULT`` unacked."""
        entry = self._entry
        if entry is None or entry.closed:
            entry = await self._bind_async(send.deadline)
        if not send.place(entry, self.partitioner):
            send.partition = self.partitioner.choose(
                send.topic, send.key, await self._count_async(entry, send)
            )
        fut: asyncio.Future[AckedResult] | None = None
        if send.acked:
            loop = _get_running_loop()
            fut = loop.create_future()
            send.on_delivery = partial(entry.collect, fut)
        if not send.produce(entry):
            entry = await self._room_async(entry, send)
        if entry.parked:
            entry.unpark()
        if fut is None:
            return UNKNOWN_RESULT
        return await self._ack(entry, send.topic, fut.get_loop(), fut, send.deadline)

    async def _bind_async(self, deadline: float | None) -> ProducerEntry:
        self._check_open()
        entry = await _pool.acquire_async(self.config, deadline, fire_and_forget=self._quiet)
        return self._adopt(entry)

    async def _count_async(self, entry: ProducerEntry, send: Send) -> int:
        waiter = asyncio.wrap_future(entry.lookup(send.topic))
        deadline = send.deadline
        try:
            if deadline is None:
                return await waiter
            return await asyncio.wait_for(waiter, max(0.0, deadline - _monotonic()))
        except asyncio.TimeoutError:
            raise _count_timeout(send, entry) from None
        except KafkaException as exc:
            raise enqueue_error(exc, send.topic, send.op) from exc
        except asyncio.CancelledError:
            raise canceled(send.op) from None

    async def _room_async(self, entry: ProducerEntry, send: Send) -> ProducerEntry:
        """librdkafka's queue is full: retry as the delivery thread makes room, until deadline.

        Returns the entry that took the message: another one when ``entry`` retired meanwhile.
        """
        delay = _FIRST_ROOM_PAUSE
        while True:
            try:
                await asyncio.sleep(_room_pause(send, delay, entry))
            except asyncio.CancelledError:
                raise canceled(send.op) from None
            delay = min(delay * 2, _MAX_ROOM_PAUSE)
            if entry.closed:
                if not entry.retired:
                    raise closed_error(send.op)
                entry = await self._bind_async(send.deadline)  # fire-and-forget only
            if send.produce(entry):
                return entry

    async def _ack(
        self,
        entry: ProducerEntry,
        topic: str,
        loop: asyncio.AbstractEventLoop,
        fut: asyncio.Future[AckedResult],
        deadline: float | None,
    ) -> AckedResult:
        """Wait for the acknowledgement of an acked send, within its deadline."""
        try:
            if deadline is None:
                return await fut
            cached = self._deadlines  # (loop, its Deadlines): one atomic read
            if cached is None or cached[0] is not loop:
                cached = self._deadlines = (loop, deadlines_of(loop))
            bucket = cached[1].add(loop, fut, deadline, SEND)
            try:
                return await fut
            finally:
                del bucket[fut]
        except asyncio.CancelledError:
            raise canceled(SEND) from None
        except TrpcError as exc:
            raise with_cause(exc, entry, topic, SEND, ACK) from exc.__cause__

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = _get_running_loop()
        self._loop = loop if isinstance(loop, asyncio.BaseEventLoop) else None
        return loop

    # -- the blocking half: the same waits, blocking the calling thread -----------------------

    def _send_blocking(self, send: Send) -> AckedResult:
        """Blocking :meth:`_send`, from any thread."""
        entry = self._entry
        if entry is None or entry.closed:
            entry = self._bind(send.deadline)
        if not send.place(entry, self.partitioner):
            send.partition = self.partitioner.choose(
                send.topic, send.key, self._count_blocking(entry, send)
            )
        waiter: SyncWaiter | None = None
        if send.acked:
            waiter = send.on_delivery = SyncWaiter()
        delay = _FIRST_ROOM_PAUSE
        while not send.produce(entry):
            time.sleep(_room_pause(send, delay, entry))
            delay = min(delay * 2, _MAX_ROOM_PAUSE)
            if entry.closed:
                if not entry.retired:
                    raise closed_error(send.op)
                entry = self._bind(send.deadline)  # fire-and-forget only: waiter is None
        if waiter is None:
            if entry.parked:
                entry.unpark()
            return UNKNOWN_RESULT
        deadline = send.deadline
        senders = entry.blocking_senders
        me = _get_ident()
        senders.add(me)
        try:
            if len(senders) == 1 and len(entry.producer) == 1:
                # The only message and the only blocking sender: poll for the report right
                # here (entry.py).
                budget = SYNC_POLL_BUDGET
                if deadline is not None:
                    budget = min(budget, deadline - _monotonic())
                if budget > 0 and entry.poll_here(waiter.delivered, budget):
                    return waiter.result(entry)
            if entry.parked:
                entry.unpark()
            if deadline is None:
                waiter.lock.acquire()
            elif not waiter.lock.acquire(timeout=max(0.0, deadline - _monotonic())):
                raise with_cause(timeout_error(SEND, ACK), entry, send.topic, SEND, ACK)
        finally:
            senders.discard(me)
        return waiter.result(entry)

    def _bind(self, deadline: float | None) -> ProducerEntry:
        """Borrow the pooled producer of this proxy's address (blocking; any thread)."""
        self._check_open()
        return self._adopt(_pool.acquire(self.config, deadline, fire_and_forget=self._quiet))

    def _count_blocking(self, entry: ProducerEntry, send: Send) -> int:
        deadline = send.deadline
        try:
            return entry.lookup(send.topic).result(
                None if deadline is None else max(0.0, deadline - _monotonic())
            )
        except concurrent.futures.TimeoutError:
            raise _count_timeout(send, entry) from None
        except KafkaException as exc:
            raise enqueue_error(exc, send.topic, send.op) from exc

    # -- binding the pooled producer ---------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise proxy_closed(self.name)

    def _log_first_bind(self) -> None:
        if self.config.required_acks == 0:
            log.debug(
                "kafka client proxy %r: requiredAcks=0, the broker does not answer sends: "
                "send_message returns offset -1 (no offset is known)",
                self.name,
            )
        if self._async:
            log.debug(
                "kafka client proxy %r: async=1, produce/send_message only queue messages and "
                "return (-1, -1); outcomes go to the async-send callbacks",
                self.name,
            )

    def _adopt(self, entry: ProducerEntry) -> ProducerEntry:
        with self._bind_lock:
            current = self._entry
            closed = self._closed
            keep = current is not None and not current.closed and not closed
            first = current is None
            if not keep and not closed:
                self._entry = entry
        if closed or keep:  # closed meanwhile, or another call bound first: one user less
            _pool.release(entry, 10.0)
            self._check_open()
            assert current is not None
            return current
        if first:
            self._log_first_bind()
        return entry

    # -- filters: the chains' innermost handlers, and running them ----------------------------

    def _call_ctx(self, rpc_name: str, method: str) -> Context:
        """The client context a filter chain sees (callee = this proxy's name)."""
        cur = current_context()
        deadline = call_deadline(self.timeout, cur)
        if cur is None:
            return Context(
                callee_service=self.name, rpc_name=rpc_name, callee_method=method, deadline=deadline
            )
        return Context(
            # Inside a server handler, the handling service is the caller of this call.
            caller_service=cur.callee_service or cur.caller_service,
            callee_service=self.name,
            rpc_name=rpc_name,
            callee_method=method,
            metadata=dict(cur.metadata),
            deadline=deadline,
            values=None if cur.values is None else dict(cur.values),
        )

    def _filtered_call(self, kind: str, req: ProducerMessage) -> Coroutine[Any, Any, Any]:
        assert self._chains is not None
        handler, rpc_name = self._chains[kind]
        return handler(self._call_ctx(rpc_name, kind), req)  # type: ignore[return-value]

    async def _filtered(self, kind: str, req: ProducerMessage) -> Any:
        return await self._filtered_call(kind, req)

    def _filtered_sync(self, kind: str, req: ProducerMessage, op: str) -> Any:
        coro = self._filtered_call(kind, req)
        try:
            # The caller's context stays current in the filters, as for the async calls; the
            # call's own context is the ``ctx`` argument they get.
            return syncloop.run(coro, current_context())
        except (concurrent.futures.CancelledError, asyncio.CancelledError) as exc:
            if isinstance(exc, CanceledError):
                raise
            raise canceled(op) from None

    def _ctx_info(self, ctx: Context) -> tuple[float | None, dict[str, bytes] | None]:
        return ctx.deadline, (ctx.metadata if self._trpc_meta and ctx.metadata else None)

    async def _h_produce(self, ctx: Context, req: Any) -> None:
        msg = filtered_request(req)
        if not msg.topic:
            raise empty_topic()
        info = self._ctx_info(ctx)
        await self._send(
            self._plan(not self._async, msg.topic, msg.key, msg.value, msg.headers, *info)
        )

    async def _h_send(self, ctx: Context, req: Any) -> AckedResult:
        msg = filtered_request(req)
        info = self._ctx_info(ctx)
        return await self._send(
            self._plan(not self._async, msg.topic, msg.key, msg.value, msg.headers, *info)
        )

    async def _h_async_send(self, ctx: Context, req: Any) -> None:
        msg = filtered_request(req)
        info = self._ctx_info(ctx)
        await self._send(self._plan(False, msg.topic, msg.key, msg.value, msg.headers, *info))

    async def _h_send_raw(self, ctx: Context, req: Any) -> AckedResult:
        return await self._send(self._plan_raw(filtered_request(req), self._ctx_info(ctx)))


__all__ = ["NO_OFFSET", "UNKNOWN_RESULT", "CanceledError", "ClientProxy"]
