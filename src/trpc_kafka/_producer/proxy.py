"""Client proxies: the producer calls of the reference plugin, async and blocking.

A proxy is cheap: it holds its parsed target, timeout and filter chain, and borrows the pooled
librdkafka producer of its address on first use (:mod:`trpc_kafka._producer.pool`).

Per call, without filters, the path is: pick the partition (nothing to do for ``random``),
``Producer.produce`` with a delivery callback, and for acked sends await one future that the
delivery thread completes in a batch with the others of the same poll. Fire-and-forget sends
(``async_send_message``) allocate nothing per message: one callback per proxy serves them all,
and the delivery report itself carries topic, key and value for the user callbacks. (Headers
it does not carry: a message with headers keeps them in a callback object of its own.)

Errors: past the service timeout or the context deadline (the earlier one) a call fails with
code 101; cancelling the awaiting task gives code 161; librdkafka failures give code 141 with
``kafka client transport SendMessage: <cause>``; a key, value or header of a bad type gives 121
before anything is queued.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, Message

from trpc_kafka._config.address import (
    KafkaConfig,
    redact_address,
    resolve_address,
    warn_other_side_keys,
)
from trpc_kafka._config.errors import ConfigError
from trpc_kafka._kafka_errors import kafka_error_of, timeout_with_cause
from trpc_kafka._producer import pool as _pool
from trpc_kafka._producer import syncloop
from trpc_kafka._producer.callbacks import (
    ErrorCallback,
    SuccessCallback,
    async_producer_error_callback,
    async_producer_success_callback,
)
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
from trpc_kafka._producer.partitioner import UNASSIGNED, hash_partition
from trpc_kafka._producer.pool import AckedResult, ProducerEntry, delivery_error
from trpc_kafka._runtime.context import Context, current_context
from trpc_kafka._runtime.errors import (
    RET_CLIENT_CANCELED,
    RET_CLIENT_NETWORK_ERR,
    RET_CLIENT_TIMEOUT_ERR,
    TrpcError,
    framework_error,
)
from trpc_kafka._runtime.filters import (
    Filter,
    Handler,
    chain,
    notify_delivery_failed,
    resolve_filters,
)

log = logging.getLogger("trpc_kafka.producer")

NO_OFFSET: Final = -1
"""Offset reported when none is known: ``requiredAcks=0`` or an ``async=1`` send."""
UNKNOWN_RESULT: Final[AckedResult] = (-1, NO_OFFSET)
"""``send_message`` result when the target has ``async=1``: nothing is known yet."""

_RANDOM: Final = 0
_ROUNDROBIN: Final = 1
_HASH: Final = 2
_MODES: Final = {"random": _RANDOM, "roundrobin": _ROUNDROBIN, "hash": _HASH}

_SEND: Final = "SendMessage"
_ASYNC_SEND: Final = "AsyncSendMessage"
_QUEUE_FULL: Final = "waiting for room in the producer queue (queue.buffering.max.messages)"
_PACKAGE: Final = "trpc_kafka"
_monotonic = time.monotonic
_get_running_loop = asyncio.get_running_loop
_Future = asyncio.Future  # the C future; loop.create_future() adds a Python frame per call
_get_ident = threading.get_ident


class CanceledError(TrpcError, asyncio.CancelledError):
    """Code 161: the awaiting task was cancelled.

    Both a :class:`TrpcError` (``except TrpcError`` sees code 161) and an
    ``asyncio.CancelledError``, so the task still ends cancelled when nothing catches it and
    ``asyncio.wait_for``, ``gather`` and task groups keep working.
    """


def _canceled(op: str) -> CanceledError:
    return CanceledError(RET_CLIENT_CANCELED, f"kafka client transport {op}: call canceled")


def _timeout(op: str, what: str) -> TrpcError:
    return framework_error(RET_CLIENT_TIMEOUT_ERR, f"kafka client transport {op}: timeout {what}")


DEADLINE_TICK: Final = 0.01
"""Granularity of call deadlines: a call fails at most this much after its deadline."""


class Deadlines:
    """The deadlines of the acked sends awaited on one event loop.

    One timer per 10 ms bucket instead of one per call (``loop.call_later`` per call cost about
    40% of the throughput of 1,000 concurrent sends). A completed call removes itself from its
    bucket, so nothing but pending calls is kept; a bucket's timer fails what is still pending in
    it with code 101.
    """

    __slots__ = ("buckets",)

    def __init__(self) -> None:
        self.buckets: dict[int, dict[asyncio.Future[AckedResult], str]] = {}

    def add(
        self,
        loop: asyncio.AbstractEventLoop,
        fut: asyncio.Future[AckedResult],
        deadline: float,
        op: str,
    ) -> dict[asyncio.Future[AckedResult], str]:
        """Register ``fut`` (``deadline`` on the ``time.monotonic`` clock); returns its bucket.

        ``loop`` is the running loop, the one this object belongs to.
        """
        tick = int(deadline / DEADLINE_TICK) + 1
        bucket = self.buckets.get(tick)
        if bucket is None:
            bucket = self.buckets[tick] = {}
            loop.call_later(tick * DEADLINE_TICK - _monotonic(), self._expire, tick)
        bucket[fut] = op
        return bucket

    def _expire(self, tick: int) -> None:
        bucket = self.buckets.pop(tick, None)
        if not bucket:
            return
        for fut, op in bucket.items():
            if not fut.done():
                fut.set_exception(_timeout(op, "waiting for the broker's acknowledgement"))


_DEADLINES_ATTR: Final = "_trpc_kafka_deadlines"
_deadlines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines] = (
    weakref.WeakKeyDictionary()
)
_deadlines_lock = threading.Lock()


def deadlines_of(loop: asyncio.AbstractEventLoop) -> Deadlines:
    """The deadline buckets of ``loop`` (created on first use), stored on the loop itself.

    Pending futures reference their loop; kept on the loop, the buckets die with it. Loops that
    take no attributes use a weak registry instead.
    """
    found: Deadlines | None = getattr(loop, _DEADLINES_ATTR, None)
    if found is not None:
        return found
    with _deadlines_lock:
        found = getattr(loop, _DEADLINES_ATTR, None) or _deadlines.get(loop)
        if found is None:
            found = Deadlines()
            try:
                setattr(loop, _DEADLINES_ATTR, found)
            except AttributeError:
                _deadlines[loop] = found
        return found


_ACK: Final = "waiting for the broker's acknowledgement"


def _with_cause(exc: TrpcError, entry: ProducerEntry, topic: str, op: str, what: str) -> TrpcError:
    """A timeout (101) while the producer knows why it cannot send: that cause instead."""
    if exc.code != RET_CLIENT_TIMEOUT_ERR:
        return exc
    cause = entry.known_cause()
    if cause is None:
        return exc
    return timeout_with_cause(cause, op, topic, what)


def _enqueue_error(exc: KafkaException, topic: str, op: str) -> TrpcError:
    err = kafka_error_of(exc)
    if err is None:  # pragma: no cover - librdkafka always wraps a KafkaError
        return framework_error(RET_CLIENT_NETWORK_ERR, f"kafka client transport {op}: {exc}")
    return delivery_error(err, topic, op)


def _room_pause(deadline: float | None, delay: float, op: str) -> float:
    """How long to wait for room in a full queue; a timeout error once the deadline passed."""
    if deadline is None:
        return delay
    left = deadline - _monotonic()
    if left <= 0:
        raise _timeout(op, _QUEUE_FULL)
    return min(delay, left)


def _try_produce(  # noqa: PLR0917 - the produce() arguments, in its order
    entry: ProducerEntry,
    op: str,
    topic: str,
    value: Payload,
    key: Payload,
    partition: int,
    on_delivery: Callable[[KafkaError | None, Message], None],
    timestamp: int,
    headers: Any,
) -> bool:
    """Queue one message (the queue-full retry path); False while librdkafka's queue is full."""
    try:
        entry.producer.produce(
            topic,
            value,
            key,
            partition=partition,
            on_delivery=on_delivery,
            timestamp=timestamp,
            headers=headers,
        )
    except BufferError:
        return False
    except KafkaException as exc:
        raise _enqueue_error(exc, topic, op) from None
    except (TypeError, ValueError):  # ValueError: a str librdkafka cannot take
        raise payload_problem(topic, key, value, headers) from None
    return True


class _SyncWaiter:
    """``on_delivery`` of a blocking acked send: the delivery thread releases the lock."""

    __slots__ = ("err", "lock", "msg")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.err: KafkaError | None = None
        self.msg: Message | None = None

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        self.err = err
        self.msg = msg
        self.lock.release()


class ClientProxy:
    """A producer client of one service (the reference's ``kafka.NewClientProxy``).

    Create it with :func:`new_client_proxy`. Every call has an async form and a blocking twin
    (``*_sync``) usable from any thread without an event loop; both run the proxy's filters.
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
        self._topic = config.topic
        self._async = config.async_produce
        self._trpc_meta = config.trpc_meta
        self._mode = _MODES[config.partitioner]
        self._success_cb = success_callback
        self._error_cb = error_callback
        self._entry: ProducerEntry | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the last running loop seen
        self._deadlines: tuple[asyncio.AbstractEventLoop, Deadlines] | None = None
        self._closed = False
        self._bind_lock = threading.Lock()
        # Hot paths apply: no filters, librdkafka picks the partition, no metadata headers.
        self._fast = not self.filters and self._mode == _RANDOM and not self._trpc_meta
        self._fast_acked = self._fast and not self._async
        # One delivery callback for every headerless fire-and-forget message of this proxy.
        self._deliver = _async_delivery(self)
        self._rpc_produce = f"/{name}/produce"
        self._rpc_send = f"/{name}/send"
        self._rpc_async = f"/{name}/asyncSend"
        self._rpc_raw = f"/{name}/sendRaw"
        # Filter chains, built once; None means no filters: calls go straight to the core.
        self._chains: dict[str, Handler] | None = None
        if self.filters:
            self._chains = {
                "produce": chain(self.filters, self._h_produce),
                "send": chain(self.filters, self._h_send),
                "asyncSend": chain(self.filters, self._h_async_send),
                "sendRaw": chain(self.filters, self._h_send_raw),
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
        chains = self._chains
        if chains is not None:
            ctx = self._call_ctx(self._rpc_produce, "produce")
            await chains["produce"](ctx, ProducerMessage(self._topic, value, key, headers))
            return
        topic = self._topic
        if not topic:
            raise _empty_topic()
        deadline, meta = self._call_info()
        if self._async:
            await self._send_async(topic, key, value, headers, None, 0, deadline, meta)
        else:
            await self._send_acked(topic, key, value, headers, None, 0, deadline, meta)

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
            # The hot path (no filters, random partitioner, no headers, producer bound):
            # _send_acked inlined, one future and one partial per call.
            timeout = self.timeout
            deadline = None if timeout is None else _monotonic() + timeout
            ctx = current_context()
            if (
                ctx is not None
                and ctx.deadline is not None
                and (deadline is None or ctx.deadline < deadline)
            ):
                deadline = ctx.deadline
                if deadline <= _monotonic():
                    raise _timeout(_SEND, "before sending: the context deadline has passed")
            loop = self._loop
            # asyncio.get_running_loop() costs ~0.2 us on 3.11; a loop whose run_forever runs
            # on this thread is the running loop (BaseEventLoop sets _thread_id meanwhile).
            if loop is None or loop._thread_id != _get_ident():  # type: ignore[attr-defined]
                loop = self._running_loop()
            fut: asyncio.Future[AckedResult] = _Future(loop=loop)
            try:
                entry.producer.produce(topic, value, key, on_delivery=partial(entry.collect, fut))
            except BufferError:  # queue full: the general path waits for room
                return await self._send_acked(topic, key, value, None, None, 0, deadline, None)
            except KafkaException as exc:
                raise _enqueue_error(exc, topic, _SEND) from None
            except (TypeError, ValueError):  # ValueError: a str librdkafka cannot take
                raise payload_problem(topic, key, value, None) from None
            try:
                if deadline is None:
                    return await fut
                cached = self._deadlines  # (loop, its Deadlines): one atomic read
                if cached is None or cached[0] is not loop:
                    cached = self._deadlines = (loop, deadlines_of(loop))
                bucket = cached[1].add(loop, fut, deadline, _SEND)
                try:
                    return await fut
                finally:
                    del bucket[fut]
            except asyncio.CancelledError:
                raise _canceled(_SEND) from None
            except TrpcError as exc:
                raise _with_cause(exc, entry, topic, _SEND, _ACK) from exc.__cause__
        chains = self._chains
        if chains is not None:
            ctx = self._call_ctx(self._rpc_send, "send")
            result: AckedResult = await chains["send"](
                ctx, ProducerMessage(topic, value, key, headers)
            )
            return result
        deadline, meta = self._call_info()
        if self._async:
            await self._send_async(topic, key, value, headers, None, 0, deadline, meta)
            return UNKNOWN_RESULT
        return await self._send_acked(topic, key, value, headers, None, 0, deadline, meta)

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
                entry.producer.produce(topic, value, key, on_delivery=self._deliver)
                return
            except BufferError:  # queue full: the general path waits for room
                pass
            except KafkaException as exc:
                raise _enqueue_error(exc, topic, _ASYNC_SEND) from None
            except (TypeError, ValueError):  # ValueError: a str librdkafka cannot take
                raise payload_problem(topic, key, value, None) from None
        chains = self._chains
        if chains is not None:
            ctx = self._call_ctx(self._rpc_async, "asyncSend")
            await chains["asyncSend"](ctx, ProducerMessage(topic, value, key, headers))
            return
        deadline, meta = self._call_info()
        await self._send_async(topic, key, value, headers, None, 0, deadline, meta)

    async def send_raw_message(self, msg: ProducerMessage) -> AckedResult:
        """Send a full :class:`ProducerMessage` (partition, timestamp...); ``(partition, offset)``.

        ``async=1`` applies here as for :meth:`send_message`.
        """
        chains = self._chains
        if chains is not None:
            ctx = self._call_ctx(self._rpc_raw, "sendRaw")
            result: AckedResult = await chains["sendRaw"](ctx, msg)
            return result
        deadline, meta = self._call_info()
        return await self._raw(msg, deadline, meta)

    # -- the calls (blocking twins) ----------------------------------------------------------

    def produce_sync(self, key: Payload, value: Payload, headers: Headers | None = None) -> None:
        """Blocking :meth:`produce`, for code without an event loop (any thread)."""
        if self._chains is not None:
            ctx = self._call_ctx(self._rpc_produce, "produce")
            req = ProducerMessage(self._topic, value, key, headers)
            self._run_sync(self._chains["produce"], ctx, req, "SendMessage")
            return
        topic = self._topic
        if not topic:
            raise _empty_topic()
        deadline, meta = self._call_info()
        if self._async:
            self._send_async_blocking(topic, key, value, headers, None, 0, deadline, meta)
        else:
            self._send_acked_blocking(topic, key, value, headers, None, 0, deadline, meta)

    def send_message_sync(
        self, topic: str, key: Payload, value: Payload, headers: Headers | None = None
    ) -> AckedResult:
        """Blocking :meth:`send_message`."""
        if self._chains is not None:
            ctx = self._call_ctx(self._rpc_send, "send")
            req = ProducerMessage(topic, value, key, headers)
            result: AckedResult = self._run_sync(self._chains["send"], ctx, req, _SEND)
            return result
        deadline, meta = self._call_info()
        if self._async:
            self._send_async_blocking(topic, key, value, headers, None, 0, deadline, meta)
            return UNKNOWN_RESULT
        return self._send_acked_blocking(topic, key, value, headers, None, 0, deadline, meta)

    def async_send_message_sync(
        self, topic: str, key: Payload, value: Payload, headers: Headers | None = None
    ) -> None:
        """Blocking :meth:`async_send_message` (returns once queued)."""
        if self._chains is not None:
            ctx = self._call_ctx(self._rpc_async, "asyncSend")
            req = ProducerMessage(topic, value, key, headers)
            self._run_sync(self._chains["asyncSend"], ctx, req, _ASYNC_SEND)
            return
        deadline, meta = self._call_info()
        self._send_async_blocking(topic, key, value, headers, None, 0, deadline, meta)

    def send_raw_message_sync(self, msg: ProducerMessage) -> AckedResult:
        """Blocking :meth:`send_raw_message`."""
        if self._chains is not None:
            ctx = self._call_ctx(self._rpc_raw, "sendRaw")
            result: AckedResult = self._run_sync(self._chains["sendRaw"], ctx, msg, _SEND)
            return result
        deadline, meta = self._call_info()
        topic, partition, timestamp = _raw_fields(msg)
        if self._async:
            self._send_async_blocking(
                topic, msg.key, msg.value, msg.headers, partition, timestamp, deadline, meta
            )
            return UNKNOWN_RESULT
        return self._send_acked_blocking(
            topic, msg.key, msg.value, msg.headers, partition, timestamp, deadline, meta
        )

    # -- closing -----------------------------------------------------------------------------

    async def close(self, timeout: float = 10.0) -> None:
        """Close the proxy: queued async sends are flushed within ``timeout`` seconds.

        When this was the last open proxy of its producer, the producer is closed as well:
        whatever is still undelivered at the bound is purged and reported to the error
        callback. Later calls on this proxy fail (code 141).
        """
        entry, last = self._detach(timeout)
        if entry is None:
            return
        if last:
            await entry.wait_closed_async(timeout + _pool._PURGE_GRACE)
            return
        end = _monotonic() + timeout
        # librdkafka's queue length is no asyncio primitive: poll it.
        while entry.queued() and _monotonic() < end and not entry.closed:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    def close_sync(self, timeout: float = 10.0) -> None:
        """Blocking :meth:`close`."""
        entry, last = self._detach(timeout)
        if entry is None:
            return
        if last:
            entry.wait_closed(timeout + _pool._PURGE_GRACE)
            return
        end = _monotonic() + timeout
        while entry.queued() and _monotonic() < end and not entry.closed:
            time.sleep(0.01)

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

    # -- internals: binding, context, partition ---------------------------------------------

    def _bind(self, deadline: float | None) -> ProducerEntry:
        """Borrow the pooled producer of this proxy's address (blocking; any thread)."""
        self._check_open()
        return self._adopt(_pool.acquire(self.config, deadline))

    async def _bind_async(self, deadline: float | None) -> ProducerEntry:
        self._check_open()
        return self._adopt(await _pool.acquire_async(self.config, deadline))

    def _check_open(self) -> None:
        if self._closed:
            raise framework_error(
                RET_CLIENT_NETWORK_ERR,
                f"kafka client transport: client proxy {self.name!r} is closed",
            )

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

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = _get_running_loop()
        self._loop = loop if isinstance(loop, asyncio.BaseEventLoop) else None
        return loop

    def _call_info(self) -> tuple[float | None, dict[str, bytes] | None]:
        """Deadline (the earlier of timeout and context deadline) and metadata for trpcMeta."""
        timeout = self.timeout
        deadline = None if timeout is None else _monotonic() + timeout
        ctx = current_context()
        if ctx is None:
            return deadline, None
        if ctx.deadline is not None and (deadline is None or ctx.deadline < deadline):
            deadline = ctx.deadline
        return deadline, (ctx.metadata if self._trpc_meta and ctx.metadata else None)

    def _call_ctx(self, rpc_name: str, method: str) -> Context:
        """The client context a filter chain sees (callee = this proxy's name)."""
        timeout = self.timeout
        deadline = None if timeout is None else _monotonic() + timeout
        cur = current_context()
        if cur is None:
            return Context(
                callee_service=self.name, rpc_name=rpc_name, callee_method=method, deadline=deadline
            )
        if cur.deadline is not None and (deadline is None or cur.deadline < deadline):
            deadline = cur.deadline
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

    def _pick_cached(self, entry: ProducerEntry, topic: str, key: Payload) -> int | None:
        """Partition for roundrobin/hash when the partition count is known, else None."""
        if self._mode == _HASH:
            if key is None:
                return UNASSIGNED  # keyless: random, as Sarama
            if not isinstance(key, (bytes, str)):
                raise payload_problem(topic, key, None, None)
        count = entry.partitions_cached(topic)
        if count is None:
            return None
        return _choose(self._mode, entry, topic, key, count)

    async def _partition_async(
        self, entry: ProducerEntry, topic: str, key: Payload, deadline: float | None, op: str
    ) -> int:
        picked = self._pick_cached(entry, topic, key)
        if picked is not None:
            return picked
        if topic_problem(topic) is not None:
            raise payload_problem(topic, key, None, None)
        waiter = asyncio.wrap_future(entry.lookup(topic))
        try:
            if deadline is None:
                count = await waiter
            else:
                count = await asyncio.wait_for(waiter, max(0.0, deadline - _monotonic()))
        except asyncio.TimeoutError:
            what = f"waiting for the partition count of topic {topic!r}"
            raise _with_cause(_timeout(op, what), entry, topic, op, what) from None
        except KafkaException as exc:
            raise _enqueue_error(exc, topic, op) from None
        except asyncio.CancelledError:
            raise _canceled(op) from None
        return _choose(self._mode, entry, topic, key, count)

    def _partition_blocking(
        self, entry: ProducerEntry, topic: str, key: Payload, deadline: float | None, op: str
    ) -> int:
        picked = self._pick_cached(entry, topic, key)
        if picked is not None:
            return picked
        if topic_problem(topic) is not None:
            raise payload_problem(topic, key, None, None)
        lookup = entry.lookup(topic)
        try:
            count = lookup.result(None if deadline is None else max(0.0, deadline - _monotonic()))
        except concurrent.futures.TimeoutError:
            what = f"waiting for the partition count of topic {topic!r}"
            raise _with_cause(_timeout(op, what), entry, topic, op, what) from None
        except KafkaException as exc:
            raise _enqueue_error(exc, topic, op) from None
        return _choose(self._mode, entry, topic, key, count)

    # -- internals: the cores ----------------------------------------------------------------

    async def _send_acked(  # noqa: PLR0917 - positional on purpose: hot path
        self,
        topic: str,
        key: Payload,
        value: Payload,
        headers: Any,  # Headers | None; a list or dict once checked
        partition: int | None,
        timestamp: int,
        deadline: float | None,
        meta: dict[str, bytes] | None,
    ) -> AckedResult:
        if deadline is not None and deadline <= _monotonic():
            raise _timeout(_SEND, "before sending: the deadline has passed")
        entry = self._entry
        if entry is None or entry.closed:
            entry = await self._bind_async(deadline)
        if headers is not None or meta:
            headers = _checked_headers(headers, meta)
        if partition is None:
            if self._mode == _RANDOM:
                partition = UNASSIGNED
            else:
                partition = await self._partition_async(entry, topic, key, deadline, _SEND)
        loop = _get_running_loop()
        fut: asyncio.Future[AckedResult] = loop.create_future()
        on_delivery = partial(entry.collect, fut)
        try:
            entry.producer.produce(
                topic,
                value,
                key,
                partition=partition,
                on_delivery=on_delivery,
                timestamp=timestamp,
                headers=headers,
            )
        except BufferError:
            await self._produce_when_room(
                entry,
                deadline,
                _SEND,
                topic,
                value,
                key,
                partition,
                on_delivery,
                timestamp,
                headers,
            )
        except KafkaException as exc:
            raise _enqueue_error(exc, topic, _SEND) from None
        except (TypeError, ValueError):  # ValueError: a str librdkafka cannot take
            raise payload_problem(topic, key, value, headers) from None
        try:
            if deadline is None:
                return await fut
            bucket = deadlines_of(loop).add(loop, fut, deadline, _SEND)
            try:
                return await fut
            finally:
                del bucket[fut]
        except asyncio.CancelledError:
            raise _canceled(_SEND) from None
        except TrpcError as exc:
            raise _with_cause(exc, entry, topic, _SEND, _ACK) from exc.__cause__

    async def _send_async(  # noqa: PLR0917 - positional on purpose: hot path
        self,
        topic: str,
        key: Payload,
        value: Payload,
        headers: Any,  # Headers | None; a list or dict once checked
        partition: int | None,
        timestamp: int,
        deadline: float | None,
        meta: dict[str, bytes] | None,
    ) -> None:
        entry = self._entry
        if entry is None or entry.closed:
            entry = await self._bind_async(deadline)
        if headers is not None or meta:
            headers = _checked_headers(headers, meta)
        if partition is None:
            if self._mode == _RANDOM:
                partition = UNASSIGNED
            else:
                partition = await self._partition_async(entry, topic, key, deadline, _ASYNC_SEND)
        try:
            entry.producer.produce(
                topic,
                value,
                key,
                partition=partition,
                on_delivery=self._deliver
                if headers is None
                else partial(self._on_async_delivery_with_headers, headers),
                timestamp=timestamp,
                headers=headers,
            )
        except BufferError:
            await self._produce_when_room(
                entry,
                deadline,
                _ASYNC_SEND,
                topic,
                value,
                key,
                partition,
                self._deliver
                if headers is None
                else partial(self._on_async_delivery_with_headers, headers),
                timestamp,
                headers,
            )
        except KafkaException as exc:
            raise _enqueue_error(exc, topic, _ASYNC_SEND) from None
        except (TypeError, ValueError):  # ValueError: a str librdkafka cannot take
            raise payload_problem(topic, key, value, headers) from None

    async def _produce_when_room(  # noqa: PLR0917 - positional on purpose: hot path
        self,
        entry: ProducerEntry,
        deadline: float | None,
        op: str,
        topic: str,
        value: Payload,
        key: Payload,
        partition: int,
        on_delivery: Callable[[KafkaError | None, Message], None],
        timestamp: int,
        headers: Any,  # Headers | None; a list or dict once checked
    ) -> None:
        """librdkafka's queue is full: retry as the delivery thread makes room, until deadline."""
        delay = 0.0005
        while True:
            try:
                await asyncio.sleep(_room_pause(deadline, delay, op))
            except asyncio.CancelledError:
                raise _canceled(op) from None
            except TrpcError as exc:
                raise _with_cause(exc, entry, topic, op, _QUEUE_FULL) from None
            delay = min(delay * 2, 0.01)
            if entry.closed:
                raise _closed_error(op)
            if _try_produce(
                entry, op, topic, value, key, partition, on_delivery, timestamp, headers
            ):
                return

    def _send_acked_blocking(  # noqa: PLR0917 - positional on purpose: hot path
        self,
        topic: str,
        key: Payload,
        value: Payload,
        headers: Any,  # Headers | None; a list or dict once checked
        partition: int | None,
        timestamp: int,
        deadline: float | None,
        meta: dict[str, bytes] | None,
    ) -> AckedResult:
        if deadline is not None and deadline <= _monotonic():
            raise _timeout(_SEND, "before sending: the deadline has passed")
        entry = self._entry
        if entry is None or entry.closed:
            entry = self._bind(deadline)
        if headers is not None or meta:
            headers = _checked_headers(headers, meta)
        if partition is None:
            if self._mode == _RANDOM:
                partition = UNASSIGNED
            else:
                partition = self._partition_blocking(entry, topic, key, deadline, _SEND)
        waiter = _SyncWaiter()
        self._produce_blocking(
            entry, deadline, _SEND, topic, value, key, partition, waiter, timestamp, headers
        )
        if deadline is None:
            waiter.lock.acquire()
        elif not waiter.lock.acquire(timeout=max(0.0, deadline - _monotonic())):
            raise _with_cause(_timeout(_SEND, _ACK), entry, topic, _SEND, _ACK)
        msg = waiter.msg
        assert msg is not None
        if waiter.err is not None:
            raise delivery_error(waiter.err, msg.topic(), _SEND, entry)
        offset = msg.offset()
        part = msg.partition()
        return (
            -1 if part is None else part,
            NO_OFFSET if offset is None or offset < 0 else offset,
        )

    def _send_async_blocking(  # noqa: PLR0917 - positional on purpose: hot path
        self,
        topic: str,
        key: Payload,
        value: Payload,
        headers: Any,  # Headers | None; a list or dict once checked
        partition: int | None,
        timestamp: int,
        deadline: float | None,
        meta: dict[str, bytes] | None,
    ) -> None:
        entry = self._entry
        if entry is None or entry.closed:
            entry = self._bind(deadline)
        if headers is not None or meta:
            headers = _checked_headers(headers, meta)
        if partition is None:
            if self._mode == _RANDOM:
                partition = UNASSIGNED
            else:
                partition = self._partition_blocking(entry, topic, key, deadline, _ASYNC_SEND)
        self._produce_blocking(
            entry,
            deadline,
            _ASYNC_SEND,
            topic,
            value,
            key,
            partition,
            self._deliver
            if headers is None
            else partial(self._on_async_delivery_with_headers, headers),
            timestamp,
            headers,
        )

    def _produce_blocking(  # noqa: PLR0917 - positional on purpose: hot path
        self,
        entry: ProducerEntry,
        deadline: float | None,
        op: str,
        topic: str,
        value: Payload,
        key: Payload,
        partition: int,
        on_delivery: Callable[[KafkaError | None, Message], None],
        timestamp: int,
        headers: Any,  # Headers | None; a list or dict once checked
    ) -> None:
        delay = 0.0005
        while not _try_produce(
            entry, op, topic, value, key, partition, on_delivery, timestamp, headers
        ):
            try:
                pause = _room_pause(deadline, delay, op)
            except TrpcError as exc:
                raise _with_cause(exc, entry, topic, op, _QUEUE_FULL) from None
            time.sleep(pause)
            delay = min(delay * 2, 0.01)
            if entry.closed:
                raise _closed_error(op)

    async def _raw(
        self, msg: ProducerMessage, deadline: float | None, meta: dict[str, bytes] | None
    ) -> AckedResult:
        topic, partition, timestamp = _raw_fields(msg)
        if self._async:
            await self._send_async(
                topic, msg.key, msg.value, msg.headers, partition, timestamp, deadline, meta
            )
            return UNKNOWN_RESULT
        return await self._send_acked(
            topic, msg.key, msg.value, msg.headers, partition, timestamp, deadline, meta
        )

    # -- internals: filter chain handlers (innermost) ----------------------------------------

    def _ctx_meta(self, ctx: Context) -> dict[str, bytes] | None:
        return ctx.metadata if self._trpc_meta and ctx.metadata else None

    async def _h_produce(self, ctx: Context, req: Any) -> None:
        msg = _request(req)
        if not msg.topic:
            raise _empty_topic()
        if self._async:
            await self._send_async(
                msg.topic,
                msg.key,
                msg.value,
                msg.headers,
                None,
                0,
                ctx.deadline,
                self._ctx_meta(ctx),
            )
        else:
            await self._send_acked(
                msg.topic,
                msg.key,
                msg.value,
                msg.headers,
                None,
                0,
                ctx.deadline,
                self._ctx_meta(ctx),
            )

    async def _h_send(self, ctx: Context, req: Any) -> AckedResult:
        msg = _request(req)
        meta = self._ctx_meta(ctx)
        if self._async:
            await self._send_async(
                msg.topic, msg.key, msg.value, msg.headers, None, 0, ctx.deadline, meta
            )
            return UNKNOWN_RESULT
        return await self._send_acked(
            msg.topic, msg.key, msg.value, msg.headers, None, 0, ctx.deadline, meta
        )

    async def _h_async_send(self, ctx: Context, req: Any) -> None:
        msg = _request(req)
        await self._send_async(
            msg.topic, msg.key, msg.value, msg.headers, None, 0, ctx.deadline, self._ctx_meta(ctx)
        )

    async def _h_send_raw(self, ctx: Context, req: Any) -> AckedResult:
        return await self._raw(_request(req), ctx.deadline, self._ctx_meta(ctx))

    def _run_sync(self, handler: Handler, ctx: Context, req: ProducerMessage, op: str) -> Any:
        coro: Coroutine[Any, Any, Any] = handler(ctx, req)  # type: ignore[assignment]
        try:
            # The caller's context stays current in the filters, as for the async calls; the
            # call's own context is the ``ctx`` argument they get.
            return syncloop.run(coro, current_context())
        except (concurrent.futures.CancelledError, asyncio.CancelledError):
            raise framework_error(
                RET_CLIENT_CANCELED, f"kafka client transport {op}: call canceled"
            ) from None

    # -- the delivery callback of fire-and-forget sends (delivery thread) ---------------------

    def _on_async_delivery_with_headers(
        self, headers: Any, err: KafkaError | None, msg: Message
    ) -> None:
        # librdkafka's delivery reports do not carry headers (confluent-kafka returns None), so a
        # message with headers keeps them in its own callback object; headerless ones need none.
        self._report(err, msg, headers)

    def _report(self, err: KafkaError | None, msg: Message, headers: Any) -> None:
        try:
            if err is None:
                success = self._success_cb
                if success is None:
                    success = getattr(
                        sys.modules.get(_PACKAGE), "async_producer_success_callback", None
                    )
                    if success is None or success is async_producer_success_callback:
                        return  # the do-nothing default: skip building its arguments
                success(msg.topic() or "", msg.key(), msg.value(), _reported_headers(headers))
            else:
                failure = self._error_cb
                if failure is None:
                    failure = (
                        getattr(sys.modules.get(_PACKAGE), "async_producer_error_callback", None)
                        or async_producer_error_callback
                    )
                topic = msg.topic() or ""
                error = delivery_error(err, topic, _ASYNC_SEND)
                notify_delivery_failed(self.name, topic, error.code)  # metrics, before user code
                failure(
                    error,
                    topic,
                    msg.key(),
                    msg.value(),
                    _reported_headers(headers),
                )
        except Exception:
            log.exception("kafka producer %r: async send callback raised", self.name)


def _reported_headers(headers: Any) -> list[tuple[str, bytes | None]] | None:
    """Headers for a callback as the broker got them: ``(name, bytes)`` pairs, or None."""
    if not headers:
        return None
    items = headers.items() if isinstance(headers, dict) else headers
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in items]


_package: list[dict[str, Any]] = []


def _package_attrs() -> dict[str, Any]:
    """The namespace of the top-level ``trpc_kafka`` package (where the callbacks live)."""
    if not _package:
        module = sys.modules.get(_PACKAGE)
        if module is None:  # pragma: no cover - importing this module imports the package
            return {}
        _package.append(vars(module))
    return _package[0]


def _async_delivery(proxy: ClientProxy) -> Callable[[KafkaError | None, Message], None]:
    """The ``on_delivery`` of a proxy's headerless fire-and-forget messages.

    Called once per message on the delivery thread: a success with the default (do-nothing)
    callback in place returns after two dictionary look-ups.
    """
    own_success = proxy._success_cb
    report = proxy._report
    attrs = _package_attrs()
    default = async_producer_success_callback

    def deliver(err: KafkaError | None, msg: Message) -> None:
        if err is None and own_success is None:
            cb = attrs.get("async_producer_success_callback")
            if cb is None or cb is default:
                return
        report(err, msg, None)

    return deliver


def _choose(mode: int, entry: ProducerEntry, topic: str, key: Payload, count: int) -> int:
    if mode == _ROUNDROBIN:
        return entry.roundrobin.next(topic, count)
    if key is None:
        return UNASSIGNED
    assert isinstance(key, (bytes, str))
    try:
        return hash_partition(key, count)
    except UnicodeEncodeError:  # a str key with a lone surrogate
        raise payload_problem(topic, key, None, None) from None


def _checked_headers(headers: Headers | None, meta: dict[str, bytes] | None) -> Any:
    """Headers as librdkafka takes them (a list or a dict), type-checked, metadata appended."""
    problem = headers_problem(headers)
    if problem is not None:
        raise problem
    if meta:
        return append_metadata(headers, meta)
    if headers is None or type(headers) is list or type(headers) is dict:
        return headers
    return dict(headers) if isinstance(headers, Mapping) else list(headers)


def _raw_fields(msg: ProducerMessage) -> tuple[str, int | None, int]:
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


def _request(req: Any) -> ProducerMessage:
    if not isinstance(req, ProducerMessage):
        raise encode_error(
            "request", f"a filter passed {type(req).__name__} on; expected a ProducerMessage"
        )
    return req


def _empty_topic() -> TrpcError:
    return framework_error(
        RET_CLIENT_NETWORK_ERR,
        "kafka client transport Produce: empty topic: the target has no topic= key "
        "(Produce sends to the target's topic; use send_message to name one)",
    )


def _closed_error(op: str) -> TrpcError:
    return framework_error(RET_CLIENT_NETWORK_ERR, f"kafka client transport {op}: producer closed")


# -- construction -------------------------------------------------------------------------


def new_client_proxy(
    name: str,
    *,
    target: str | None = None,
    timeout: float | None = None,
    filters: Sequence[Filter | str] | None = None,
    success_callback: SuccessCallback | None = None,
    error_callback: ErrorCallback | None = None,
) -> ClientProxy:
    """A producer proxy for the client service ``name`` (the reference's ``NewClientProxy``).

    The target is ``target=`` or else the ``target`` of the ``client.service`` entry named
    ``name`` in the loaded configuration file; neither is a ConfigError naming ``name``.
    ``timeout`` (seconds) overrides the entry's ``timeout`` (ms, which falls back to the
    ``client.timeout``); None and no configured timeout means no limit. The filters are the
    configured ones (``client.filter`` then the entry's ``filter``) followed by ``filters``
    (callables or registered client filter names). ``success_callback`` / ``error_callback``
    replace the module-level async-send callbacks for this proxy.

    Nothing connects here: the pooled producer of the address is created on the first call.
    """
    from trpc_kafka._config.file import get_global_config

    if not isinstance(name, str) or not name:
        raise ConfigError(f"client proxy name must be a non-empty string, got {name!r}", key="name")
    file_cfg = get_global_config()
    service = file_cfg.client_service(name) if file_cfg is not None else None
    where = f"client proxy {name!r}"
    if service is not None:
        line = f":{service.line}" if service.line is not None else ""
        where = f"{file_cfg.path if file_cfg else ''}{line}: client.service {name!r}"
    resolved_target = target if target is not None else (service.target if service else "")
    if not resolved_target:
        raise ConfigError(
            f"client proxy {name!r} has no target: pass target='kafka://host:port?topic=...' or "
            f"add a client.service entry named {name!r} with a target to the configuration file",
            key="target",
        )
    try:
        config = resolve_address(resolved_target)
    except ConfigError as exc:
        if target is not None or service is None or file_cfg is None:
            raise
        # From the file: where the target is (file, line of target:, the entry's name).
        raise ConfigError(
            f"client.service {name!r}: target: {exc.message}",
            key="target",
            value=exc.value,
            file=file_cfg.path,
            line=service.target_line or service.line,
        ) from None
    warn_other_side_keys(config, "producer", where)

    if timeout is None:
        timeout_ms = service.timeout_ms if service is not None else None
        if service is None and file_cfg is not None:
            timeout_ms = file_cfg.client.timeout_ms
        effective_timeout = None if not timeout_ms else timeout_ms / 1000
    else:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(
                f"client proxy {name!r}: invalid timeout {timeout!r}; allowed: seconds > 0 or None",
                key="timeout",
                value=str(timeout),
            )
        effective_timeout = float(timeout)

    names: tuple[str, ...] = ()
    if service is not None:
        names = service.filters
    elif file_cfg is not None:
        names = file_cfg.client.filters
    chain_filters: list[Filter] = resolve_filters(names, "client", where=where)
    for f in filters or ():
        if isinstance(f, str):
            chain_filters.extend(resolve_filters([f], "client", where=where))
        elif callable(f):
            chain_filters.append(f)
        else:
            raise ConfigError(
                f"{where}: filter {f!r} is neither a callable nor a registered filter name",
                key="filter",
            )
    return ClientProxy(
        name,
        config,
        target=resolved_target,
        timeout=effective_timeout,
        filters=chain_filters,
        success_callback=success_callback,
        error_callback=error_callback,
    )
