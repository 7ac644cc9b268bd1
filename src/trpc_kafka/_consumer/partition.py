"""One asyncio worker per assigned partition: order within it, concurrency across partitions.

The poll thread hands each worker chunks of records (lists, in offset order). The worker calls
the handler for each message (or each batch), retries failures, and records the offset of the
last message handled in its :class:`PartitionState` as a plain int; the poll thread stores
those offsets for librdkafka's auto-commit. Nothing here calls librdkafka.

Stopping (revocation, shutdown): ``request_stop()`` cancels a worker at once when it waits
(for messages, a retry interval, the rate limiter or a dead-letter send); a worker inside a
handler call finishes that call (the caller bounds it with a grace period, then cancels) and
exits without taking the next message. A failed call never retries once stopping.

(Over 600 lines on purpose: the three ways a handler runs, ``async def`` per record, plain
``def`` a chunk per thread hand-off, and batches, share one outcome logic, retry, skip, give up
or dead-letter, which must stay the same for all three.)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import sys
import sysconfig
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

from trpc_kafka._consumer.limiter import TokenBucket
from trpc_kafka._consumer.message import ContinueWithoutCommit, WireMessage, record_headers
from trpc_kafka._consumer.raw import RAW_KEY, Claim
from trpc_kafka._runtime import errors as codes
from trpc_kafka._runtime.context import Context, reset_current_context, set_current_context
from trpc_kafka._runtime.errors import framework_error
from trpc_kafka._runtime.filters import notify_gave_up, notify_retrying

logger = logging.getLogger("trpc_kafka.consumer")

RPC_NAME: Final = "/trpc.kafka.consumer.service/handle"

# Outcomes of a message (or batch) whose first handling failed.
MARK: Final = 1  # handled (or given up on): its offset may be committed
SKIP: Final = 2  # ContinueWithoutCommit: not marked, go on
STOP: Final = 3  # the worker is stopping: not marked, do not go on

Chunk = tuple[list[Any], int]
"""Records of one partition in offset order, and their value bytes."""
_NO_RECORDS: Final[list[Any]] = []


def _held_elsewhere(obj: object) -> int:
    """A reference count that never allows reuse (no exact counts on this interpreter)."""
    return 1 << 30


# A message is reused for the next record when nothing but the worker holds it any more, as
# CPython's own zip() and dict.items() reuse their result tuples: what a handler keeps (in a
# list, a task, a traceback) raises the count, and it then gets a new one. It saves the
# allocation (and CPython's cyclic GC the count) of one object per record. Exact counts only
# on CPython with the GIL.
refcount: Callable[[object], int] = (
    sys.getrefcount
    if sys.implementation.name == "cpython" and not sysconfig.get_config_var("Py_GIL_DISABLED")
    else _held_elsewhere
)


# The slot descriptors of Context that ConsumerContext fills lazily.
_METADATA_SLOT: Any = Context.__dict__["metadata"]
_VALUES_SLOT: Any = Context.__dict__["values"]


class ConsumerContext(Context):
    """The Context of one handled message, built with the fewest steps (hot path).

    ``metadata`` (empty without trpcMeta) and ``values`` (holding the raw-context claim) are
    made on first access: two dicts per message that a handler which never looks does not pay
    for (~6% of the per-message cost in bench/consumer.py). Otherwise a plain Context.
    """

    __slots__ = ("_claim", "_touched")

    def __init__(
        self,
        callee_service: str,
        callee_method: str,
        claim: Claim,
        metadata: dict[str, bytes] | None,
        deadline: float | None,
    ) -> None:
        self.caller_service = ""
        self.callee_service = callee_service
        self.rpc_name = RPC_NAME
        self.callee_method = callee_method
        if metadata is not None:
            _METADATA_SLOT.__set__(self, metadata)
        self.deadline = deadline
        self._claim = claim
        self._touched = False

    @property
    def metadata(self) -> dict[str, bytes]:
        self._touched = True
        try:
            metadata: dict[str, bytes] = _METADATA_SLOT.__get__(self, Context)
        except AttributeError:
            metadata = {}
            _METADATA_SLOT.__set__(self, metadata)
        return metadata

    @metadata.setter
    def metadata(self, metadata: dict[str, bytes]) -> None:
        self._touched = True
        _METADATA_SLOT.__set__(self, metadata)

    @property
    def values(self) -> dict[object, Any] | None:
        self._touched = True
        try:
            values: dict[object, Any] | None = _VALUES_SLOT.__get__(self, Context)
        except AttributeError:
            values = {RAW_KEY: self._claim}
            _VALUES_SLOT.__set__(self, values)
        return values

    @values.setter
    def values(self, values: dict[object, Any] | None) -> None:
        self._touched = True
        _VALUES_SLOT.__set__(self, values)

    def _forget_lazy(self) -> None:
        """Back to unread ``metadata`` and ``values``, for reuse (``_run_single``)."""
        for slot in (_METADATA_SLOT, _VALUES_SLOT):
            with contextlib.suppress(AttributeError):  # never read: not set
                slot.__delete__(self)
        self._touched = False


class PartitionState:
    """Counters one partition shares between the poll thread and its worker.

    Each field has one writer: ``delivered*``/``stored``/``paused``/``high_watermark``/
    ``seen_handled``/``progress_at`` the poll thread,
    ``taken*``/``handled`` the worker (``handled`` its thread, while it runs a plain def
    handler's chunk). Plain int reads and writes are atomic under the GIL.
    """

    __slots__ = (
        "claim",
        "delivered",
        "delivered_bytes",
        "handled",
        "high_watermark",
        "key",
        "partition",
        "paused",
        "progress_at",
        "seen_handled",
        "stored",
        "taken",
        "taken_bytes",
        "topic",
    )

    def __init__(self, topic: str, partition: int, claim: Claim) -> None:
        self.topic = topic
        self.partition = partition
        self.key = (topic, partition)
        self.claim = claim
        self.delivered = 0
        self.delivered_bytes = 0
        self.taken = 0
        self.taken_bytes = 0
        self.handled = -1  # offset of the last message handled, -1: none yet
        self.stored = -1  # offset (of the last handled message) last stored in librdkafka
        self.paused = False
        self.seen_handled = -1  # poll thread: ``handled`` at its last look, and when it changed
        self.progress_at = 0.0
        self.high_watermark: int | None = None  # librdkafka's cached value, refreshed by poll


class HandlerSpec:
    """Everything the workers of one service share, fixed when the service starts."""

    __slots__ = (
        "batch",
        "batch_flush",
        "call",
        "dead_letter",
        "executor",
        "fail",
        "hungry",
        "is_async",
        "key_concurrency",
        "limiter",
        "max_retry",
        "retry_interval",
        "service_name",
        "sync_fn",
        "timeout",
        "trpc_meta",
    )

    def __init__(
        self,
        *,
        service_name: str,
        call: Callable[[Context, Any], Awaitable[Any]],
        is_async: bool,
        batch: int,
        batch_flush: float,
        timeout: float | None,
        limiter: TokenBucket | None,
        trpc_meta: bool,
        max_retry: int,
        retry_interval: float,
        dead_letter: DeadLetterSink | None,
        fail: Callable[[BaseException], None],
        sync_fn: Callable[[Context, Any], Any] | None = None,
        executor: concurrent.futures.Executor | None = None,
        key_concurrency: int = 1,
        hungry: Callable[[], None] | None = None,
    ) -> None:
        self.service_name = service_name
        self.call = call
        self.is_async = is_async
        self.batch = batch
        self.batch_flush = batch_flush
        self.timeout = timeout
        self.limiter = limiter
        self.trpc_meta = trpc_meta
        self.max_retry = max_retry
        self.retry_interval = retry_interval
        self.dead_letter = dead_letter
        self.fail = fail
        # A plain def single-message handler without filters or limiter: the worker hands
        # whole chunks to one thread of ``executor`` (see PartitionWorker._run_sync_chunks).
        self.sync_fn = sync_fn
        self.executor = executor
        # > 1: the partition's keys are handled concurrently (keyed.KeyedWorker).
        self.key_concurrency = key_concurrency
        # Called by a worker that has run out of records (the poll thread's pace, see
        # transport.PACE_WAIT); once per chunk, not per message.
        self.hungry = hungry


class DeadLetterSink(Protocol):
    """What a worker needs of the dead-letter sender (``dead_letter.DeadLetterSender``)."""

    topic: str

    async def send(self, msgs: list[WireMessage], error: BaseException, attempts: int) -> None:
        """Return once every copy is acknowledged; raise to have the consumer retry."""


# The worker (or key slot) whose task is running: lets the plain-def handler wrapper record a
# thread that outlived its (timed out or cancelled) call, so the next attempt waits for it.
current_worker: contextvars.ContextVar[Handling | None] = contextvars.ContextVar(
    "trpc_kafka_partition_worker", default=None
)


def _timeout_error(seconds: float) -> Exception:
    return framework_error(
        codes.RET_SERVER_TIMEOUT_ERR,
        f"kafka server transport: handling exceeded its deadline ({seconds:g}s)",
    )


def bounded_by_deadline(
    call: Callable[[Context, Any], Awaitable[Any]],
) -> Callable[[Context, Any], Awaitable[Any]]:
    """The innermost handler, cancelled at ``ctx.deadline``: the service ``timeout`` bounds one
    handling. Filters sit outside, so they see the timeout as a TrpcError with code 21
    (RET_SERVER_TIMEOUT_ERR), and a filter that shortens the deadline is obeyed."""

    async def bounded(ctx: Context, req: Any) -> Any:
        deadline = ctx.deadline
        if deadline is None:
            return await call(ctx, req)
        seconds = deadline - time.monotonic()
        if sys.version_info >= (3, 11):
            cm = asyncio.timeout(max(seconds, 0.0))
            try:
                async with cm:
                    return await call(ctx, req)
            except TimeoutError:
                if cm.expired():
                    raise _timeout_error(round(seconds, 3)) from None
                raise
        else:  # pragma: no cover - Python 3.10
            try:
                return await asyncio.wait_for(call(ctx, req), max(seconds, 0.0))
            except asyncio.TimeoutError:
                raise _timeout_error(round(seconds, 3)) from None

    return bounded


def _metadata_of(record: Any) -> dict[str, bytes]:
    headers = record_headers(record)  # never record.headers(): see record_headers
    if not headers:
        return {}
    return {k: (b"" if v is None else v) for k, v in headers}


class Handling:
    """One handling of a record (or batch) with its outcome logic: the rate limit, trpcMeta,
    the timeout, retries, giving up, dead letters. Shared by a partition's worker and, with
    ``keyConcurrency``, by each of its key slots (``keyed.py``), so both fail, retry and stop
    the same way."""

    __slots__ = ("_calm", "_cancelled_by_us", "_spec", "state", "stopping", "straggler")

    _spec: HandlerSpec
    state: PartitionState
    stopping: bool
    _calm: bool  # waiting for something other than a handler: a stop cancels at once
    _cancelled_by_us: bool
    straggler: concurrent.futures.Future[Any] | None  # a plain def call that outlived it

    def _crashed(self, what: str, exc: BaseException) -> None:
        """A bug in our loop, or KeyboardInterrupt in a handler: log it, fail the service."""
        state = self.state
        logger.error(
            "kafka server transport: %s of %s partition %d failed: %r",
            what,
            state.topic,
            state.partition,
            exc,
            exc_info=exc,
        )
        self._spec.fail(exc)

    async def _calm_wait(self, aw: Awaitable[Any]) -> Any:
        """Await something that a stop request may cancel at once (sleep, limiter...)."""
        self._calm = True
        try:
            return await aw
        finally:
            self._calm = False

    async def _attempt(self, req: Any, first_record: Any, count: int = 1) -> None:
        """One handling with the optional parts: rate limit, trpcMeta, timeout."""
        spec = self._spec
        if spec.limiter is not None:
            await self._calm_wait(spec.limiter.acquire(count))
        if self.stopping:
            raise _Stopping
        state = self.state
        metadata = _metadata_of(first_record) if spec.trpc_meta else None
        timeout = spec.timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        ctx = ConsumerContext(spec.service_name, state.topic, state.claim, metadata, deadline)
        set_current_context(ctx)
        await spec.call(ctx, req)

    async def _failed(self, exc: BaseException, msgs: list[WireMessage], count: int) -> int:
        """Retry a failed handling as configured; MARK, SKIP or STOP."""
        spec = self._spec
        state = self.state
        req: Any = msgs[0] if spec.batch <= 0 else msgs
        first = msgs[0]
        where = (
            f"offset {first.offset}"
            if len(msgs) == 1
            else f"offsets {first.offset}-{msgs[-1].offset} ({len(msgs)} messages)"
        )
        attempts = 1
        while True:
            if isinstance(exc, asyncio.CancelledError) and (self._cancelled_by_us or self.stopping):
                raise exc
            if isinstance(exc, _Stopping) or self.stopping:
                return STOP
            if isinstance(exc, ContinueWithoutCommit):
                return SKIP
            if not isinstance(exc, (Exception, asyncio.CancelledError)):
                raise exc  # KeyboardInterrupt, SystemExit
            logger.error(
                "kafka server transport: handle fail: service %s topic %s partition %d %s "
                "(attempt %d): %s",
                spec.service_name,
                state.topic,
                state.partition,
                where,
                attempts,
                _describe(exc),
                exc_info=exc if attempts == 1 else None,
            )
            await self._wait_straggler()
            if spec.max_retry and attempts > spec.max_retry:
                return MARK if await self._give_up(msgs, exc, attempts, where) else STOP
            await self._calm_wait(asyncio.sleep(spec.retry_interval))
            if self.stopping:
                return STOP
            notify_retrying(spec.service_name, state.topic, state.partition, attempts + 1)
            try:
                await self._attempt(req, first._m, count)
            except BaseException as again:
                exc = again
                attempts += 1
            else:
                return MARK

    async def _wait_straggler(self) -> None:
        """A plain-def handler that outlived its call: let it finish before the next attempt."""
        straggler = self.straggler
        if straggler is None:
            return
        self.straggler = None
        if not straggler.done():
            logger.warning(
                "kafka server transport: %s partition %d: waiting for a plain def handler "
                "that outlived its call (threads cannot be interrupted)",
                self.state.topic,
                self.state.partition,
            )
            await asyncio.wrap_future(straggler)

    async def _give_up(
        self, msgs: list[WireMessage], exc: BaseException, attempts: int, where: str
    ) -> bool:
        """Log (and dead-letter) a message whose retries are exhausted; False if stopping
        before the dead letter was acknowledged (then it is not marked)."""
        spec = self._spec
        state = self.state
        sink = spec.dead_letter
        if sink is None:
            logger.error(
                "kafka server transport: service %s topic %s partition %d %s: giving up after "
                "%d attempts (maxRetry=%d), marking it consumed",
                spec.service_name,
                state.topic,
                state.partition,
                where,
                attempts,
                spec.max_retry,
            )
            notify_gave_up(spec.service_name, state.topic, len(msgs), None)
            return True
        while True:
            try:
                await self._calm_wait(sink.send(msgs, exc, attempts))
            except Exception as send_exc:
                logger.error(
                    "kafka server transport: service %s topic %s partition %d %s: cannot send "
                    "to dead letter topic %s, retrying in %gs: %s",
                    spec.service_name,
                    state.topic,
                    state.partition,
                    where,
                    sink.topic,
                    spec.retry_interval,
                    _describe(send_exc),
                )
                await self._calm_wait(asyncio.sleep(spec.retry_interval))
                if self.stopping:
                    return False
                continue
            logger.error(
                "kafka server transport: service %s topic %s partition %d %s: giving up after "
                "%d attempts (maxRetry=%d), sent to dead letter topic %s",
                spec.service_name,
                state.topic,
                state.partition,
                where,
                attempts,
                spec.max_retry,
                sink.topic,
            )
            notify_gave_up(spec.service_name, state.topic, len(msgs), sink.topic)
            return True


class PartitionWorker(Handling):
    """Handles the messages of one assigned partition, in order."""

    __slots__ = ("_abandoned", "_chunks", "_loop", "_running", "_waiter", "task")

    def __init__(self, spec: HandlerSpec, state: PartitionState) -> None:
        self._spec = spec
        self.state = state
        self._chunks: deque[Chunk] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._calm = False  # waiting for something other than a handler: cancel at once
        self._cancelled_by_us = False
        self.stopping = False
        self.straggler: concurrent.futures.Future[Any] | None = None
        self.task: asyncio.Task[None] | None = None
        # Plain def handlers (thread side reads them): stop after the call in progress,
        # and (index, message, deadline) of that call when the service has a timeout.
        self._abandoned = False
        self._running: tuple[int, WireMessage, float] | None = None

    def start(self) -> None:
        """Start the worker's task (on the running event loop)."""
        name = f"kafka {self._spec.service_name} {self.state.topic}[{self.state.partition}]"
        self.task = self._loop.create_task(self._run(), name=name)

    # -- called by the transport (event loop) --------------------------------------------------

    def push(self, chunk: Chunk) -> None:
        self._chunks.append(chunk)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def request_stop(self) -> None:
        """Stop after the handler call in progress; at once if not inside one."""
        self.stopping = True
        if self._calm and self.task is not None and not self.task.done():
            self.cancel()

    def cancel(self) -> None:
        self._cancelled_by_us = True
        if self.task is not None:
            self.task.cancel()

    # -- the task ------------------------------------------------------------------------------

    async def _run(self) -> None:
        current_worker.set(self)
        try:
            if self._spec.batch > 0:
                await self._run_batch()
            elif self._spec.sync_fn is not None:
                await self._run_sync_chunks()
            else:
                await self._run_single()
        except asyncio.CancelledError:
            if not self._cancelled_by_us:
                raise
        except BaseException as exc:  # a bug here, or KeyboardInterrupt in a handler
            self._crashed("worker", exc)

    def _take_chunk(self) -> list[Any]:
        """The next chunk of records, counted as taken (the first sets the claim's offset)."""
        chunk, nbytes = self._chunks.popleft()
        state = self.state
        state.taken += len(chunk)
        state.taken_bytes += nbytes
        if state.claim.initial_offset < 0:
            state.claim.initial_offset = chunk[0].offset()
        return chunk

    async def _idle(self, timeout: float | None = None) -> None:
        """Wait until a chunk arrives (or ``timeout`` seconds pass).

        The caller holds no finished chunk any more: the poll thread, told here that this
        worker is hungry, fetches the next records only now, so those of the last chunk are
        already freed (few records alive at once: CPython's cyclic GC stays idle)."""
        hungry = self._spec.hungry
        if hungry is not None:
            hungry()
        waiter = self._loop.create_future()
        self._waiter = waiter
        self._calm = True
        handle = None
        if timeout is not None:
            handle = self._loop.call_later(timeout, _wake, waiter)
        try:
            await waiter
        finally:
            self._calm = False
            self._waiter = None
            if handle is not None:
                handle.cancel()

    async def _run_single(self) -> None:
        spec = self._spec
        state = self.state
        chunks = self._chunks
        call = spec.call
        service = spec.service_name
        topic = state.topic
        partition = state.partition
        claim = state.claim
        fast = spec.timeout is None and spec.limiter is None and not spec.trpc_meta
        new = object.__new__
        held = refcount
        msg: WireMessage | None = None
        # Contexts: the one current, the one before (reused once nothing else holds it: a task
        # the handler started shares the context variables that held it, and so holds it),
        # and the spare freed that way.
        ctx: Any = None  # a ConsumerContext from the first record on (fast path only)
        last_ctx: ConsumerContext | None = None
        spare: ConsumerContext | None = None
        while not self.stopping:
            if not chunks:
                await self._idle()
                continue
            for record in self._take_chunk():
                if self.stopping:
                    return
                offset = record.offset()
                # The last message again if only ``msg`` holds it (2: with held's argument),
                # else WireMessage(topic, partition, offset, record) without the __init__ frame.
                if msg is None or held(msg) != 2:
                    msg = new(WireMessage)
                    msg.topic = topic
                    msg.partition = partition
                msg.offset = offset
                msg._m = record
                if fast:
                    # ConsumerContext(service, topic, claim, None, None), inlined; every field
                    # stored again on a reused one (a handler may have changed it).
                    if spare is None:
                        ctx = new(ConsumerContext)
                        ctx._touched = False
                    else:
                        ctx, spare = spare, None
                        if ctx._touched:
                            ctx._forget_lazy()
                    ctx.caller_service = ""
                    ctx.callee_service = service
                    ctx.rpc_name = RPC_NAME
                    ctx.callee_method = topic
                    ctx.deadline = None
                    ctx._claim = claim
                    set_current_context(ctx)
                    # Only now is the last context out of the context variables: free, unless
                    # a task (or anything) holds it (2: ``last_ctx`` and held's argument).
                    if last_ctx is not None and held(last_ctx) == 2:
                        spare = last_ctx
                    last_ctx = ctx
                try:
                    if fast:
                        await call(ctx, msg)
                    else:
                        await self._attempt(msg, record)
                except BaseException as exc:
                    outcome = await self._failed(exc, [msg], 1)
                    if outcome == STOP:
                        return
                    if outcome == MARK:
                        state.handled = offset
                else:
                    state.handled = offset

    async def _run_sync_chunks(self) -> None:
        """``_run_single`` for a plain def handler: one thread hand-off per chunk, not per
        message. The thread handles the chunk in order until a call fails (or the worker stops);
        the failure is then dealt with here, as for any handler, and the thread goes on with
        the rest of the chunk."""
        chunks = self._chunks
        while not self.stopping:
            if not chunks:
                await self._idle()
                continue
            if not await self._run_sync_chunk(self._take_chunk()):
                return

    async def _run_sync_chunk(self, chunk: list[Any]) -> bool:
        """One chunk of ``_run_sync_chunks``; False when the worker stops."""
        state = self.state
        start = 0
        while start < len(chunk):
            if self.stopping:
                return False
            index, exc, msg = await self._in_thread(chunk, start)
            if msg is None:
                # stopping: chunk[index] was not called
                return index >= len(chunk)
            outcome = await self._failed(exc or RuntimeError("no exception"), [msg], 1)
            if outcome == STOP:
                return False
            if outcome == MARK:
                state.handled = msg.offset
            start = index + 1
        return True

    async def _in_thread(
        self, chunk: list[Any], start: int
    ) -> tuple[int, BaseException | None, WireMessage | None]:
        """Run ``_handle_chunk`` in a thread; with a service timeout, a call that overruns it
        fails there (code 21, as an async handler's would), and its thread, which cannot be
        interrupted, becomes the straggler that the retry waits for."""
        spec = self._spec
        assert spec.executor is not None
        self._abandoned = False
        self._running = None
        cf = spec.executor.submit(self._handle_chunk, chunk, start)
        future = asyncio.wrap_future(cf)
        timeout = spec.timeout
        try:
            if timeout is None:
                return await future
            while True:
                running = self._running
                wait = timeout if running is None else running[2] - time.monotonic()
                done, _ = await asyncio.wait((future,), timeout=max(wait, 0.0))
                if done:
                    return future.result()
                if (
                    running is not None
                    and self._running is running
                    and time.monotonic() >= running[2]
                ):
                    self._abandoned = True
                    self.straggler = cf
                    return running[0], _timeout_error(timeout), running[1]
        except asyncio.CancelledError:
            self._abandoned = True  # the thread stops after the call in progress
            if not cf.cancel():
                self.straggler = cf
            raise

    def _handle_chunk(
        self, chunk: list[Any], start: int
    ) -> tuple[int, BaseException | None, WireMessage | None]:
        """Thread side of ``_run_sync_chunks``: call the handler for ``chunk[start:]`` in order.

        Returns ``(len(chunk), None, None)`` when all were handled, ``(i, None, None)`` when
        the worker stopped (or gave up on this thread) before ``chunk[i]`` was handled, and
        ``(i, exception, message)`` when the call for ``chunk[i]`` failed."""
        spec = self._spec
        state = self.state
        fn = spec.sync_fn
        assert fn is not None
        timeout = spec.timeout
        trpc_meta = spec.trpc_meta
        service = spec.service_name
        topic = state.topic
        partition = state.partition
        claim = state.claim
        new = object.__new__
        monotonic = time.monotonic
        held = refcount
        token = None
        # Messages and contexts reused once nothing else holds them, as in _run_single.
        msg: WireMessage | None = None
        last_ctx: ConsumerContext | None = None
        spare: ConsumerContext | None = None
        try:
            for i in range(start, len(chunk)):
                if self.stopping or self._abandoned:
                    return i, None, None
                record = chunk[i]
                offset = record.offset()
                if msg is None or held(msg) != 2:
                    msg = new(WireMessage)
                    msg.topic = topic
                    msg.partition = partition
                msg.offset = offset
                msg._m = record
                deadline = None if timeout is None else monotonic() + timeout
                # ConsumerContext(service, topic, claim, metadata, deadline), inlined as in
                # _run_single (a shared helper would add a call per record, ~0.1 µs).
                if spare is None:
                    ctx = new(ConsumerContext)
                    ctx._touched = False
                else:
                    ctx, spare = spare, None
                    if ctx._touched:
                        ctx._forget_lazy()
                ctx.caller_service = ""
                ctx.callee_service = service
                ctx.rpc_name = RPC_NAME
                ctx.callee_method = topic
                ctx.deadline = deadline
                ctx._claim = claim
                if trpc_meta:
                    ctx.metadata = _metadata_of(record)
                if deadline is not None:
                    self._running = (i, msg, deadline)
                # The thread's own context: set per message, reset once when the chunk ends.
                if token is None:
                    token = set_current_context(ctx)
                else:
                    set_current_context(ctx)
                if last_ctx is not None and held(last_ctx) == 2:
                    spare = last_ctx
                last_ctx = ctx
                try:
                    result = fn(ctx, msg)
                except BaseException as exc:
                    return i, exc, msg
                if result is not None and asyncio.iscoroutine(result):
                    return i, _returned_a_coroutine(fn, result), msg
                if self._abandoned:  # overran the timeout (or cancelled): counted as failed
                    return i, None, None
                state.handled = offset
            return len(chunk), None, None
        finally:
            self._running = None
            if token is not None:
                reset_current_context(token)

    async def _run_batch(self) -> None:
        spec = self._spec
        state = self.state
        chunks = self._chunks
        size = spec.batch
        flush = spec.batch_flush
        topic = state.topic
        partition = state.partition
        new = object.__new__
        held = refcount
        current: list[Any] = []
        index = 0
        msgs: list[WireMessage] = []
        while not self.stopping:
            # The last batch's messages that only its list holds (3: with the comprehension's
            # name and held's argument) are reused, if only ``msgs`` holds the list (see
            # refcount); the others are made as the records are taken, without a list of
            # records beside the list of messages (WireMessage(...) without __init__).
            spares = [m for m in msgs if held(m) == 3] if held(msgs) == 2 else []
            msgs = []
            started = 0.0
            while len(msgs) < size:
                if index < len(current):
                    end = min(index + size - len(msgs), len(current))
                    for record in current[index:end]:
                        if spares:
                            msg = spares.pop()
                        else:
                            msg = new(WireMessage)
                            msg.topic = topic
                            msg.partition = partition
                        msg.offset = record.offset()
                        msg._m = record
                        msgs.append(msg)
                    index = end
                    if not started:
                        started = time.monotonic()
                    continue
                if chunks:
                    current = self._take_chunk()
                    index = 0
                    continue
                current = _NO_RECORDS  # not kept alive while waiting (see _idle)
                if self.stopping:
                    return
                if not msgs:
                    await self._idle()
                    continue
                remaining = started + flush - time.monotonic()
                if remaining <= 0:
                    break
                await self._idle(remaining)
            if self.stopping:
                return
            try:
                await self._attempt(msgs, msgs[0]._m, len(msgs))
            except BaseException as exc:
                outcome = await self._failed(exc, msgs, len(msgs))
                if outcome == STOP:
                    return
                if outcome == MARK:
                    state.handled = msgs[-1].offset
            else:
                state.handled = msgs[-1].offset


class _Stopping(Exception):  # noqa: N818 - internal signal, never leaves this module
    """The worker was asked to stop before the handler could be called."""


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def sync_caller(
    fn: Callable[[Context, Any], Any], executor: concurrent.futures.Executor
) -> Callable[[Context, Any], Awaitable[Any]]:
    """The innermost async handler for a plain ``def`` handler: runs it in ``executor``."""

    async def call(ctx: Context, req: Any) -> Any:
        # In a copy of the task's context variables (as asyncio.to_thread does): what filters
        # set around the call, such as a trace span, is current in the handler's thread too.
        cf = executor.submit(contextvars.copy_context().run, _run_sync, fn, ctx, req)
        try:
            return await asyncio.wrap_future(cf)
        except asyncio.CancelledError:
            if not cf.cancel():  # running in its thread: it cannot be interrupted
                worker = current_worker.get()
                if worker is not None:
                    worker.straggler = cf
            raise

    return call


def _run_sync(fn: Callable[[Context, Any], Any], ctx: Context, req: Any) -> Any:
    token = set_current_context(ctx)
    try:
        result = fn(ctx, req)
    finally:
        reset_current_context(token)
    if asyncio.iscoroutine(result):
        raise _returned_a_coroutine(fn, result)
    return result


def _returned_a_coroutine(fn: Callable[[Context, Any], Any], result: Any) -> TypeError:
    result.close()
    return TypeError(
        f"handler {fn!r} returned a coroutine but is not recognised as async def; "
        f"declare it with async def (or an async __call__)"
    )
