"""``keyConcurrency=N``: a partition's records of different keys handled concurrently.

A :class:`KeyedWorker` replaces the partition's :class:`PartitionWorker` when N > 1 (N = 1 is
the plain worker, untouched). Its task, the dispatcher, takes the partition's records in offset
order and appends each to the **lane** of its key (one dict lookup), a deque of the key's
records in flight. At most N lanes exist; each is run by one of at most N **slot** tasks, which
handles the lane's records one after the other (so one key keeps its offset order), then takes
the next ready lane. A record whose key has no lane while N exist waits for one to end (the
records behind it wait too: the dispatcher never reorders). Keyless records
(key ``None``) are one key among themselves; ``b""`` is a key like any other.

Each record is handled as in single mode (``Handling``: limiter, trpcMeta, timeout, retries,
dead letters), inside its lane: a failing record holds its key, the other keys go on.

Commits: the :class:`Watermark` of the partition sets ``PartitionState.handled``, which the
transport stores and commits as in single mode, to the highest offset below which every record
is finished. As in single mode, a record finished with ``ContinueWithoutCommit`` is passed but
not itself committed: the commit moves past it with the next handled record.

Stopping: as single mode, per slot. Slots inside a handler call finish that call, slots waiting
(retry interval, limiter, dead-letter send) are cancelled at once; the dispatcher's task ends
when every slot has, so the transport's grace and cancellation bound them all.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Final

from trpc_kafka._consumer.message import WireMessage
from trpc_kafka._consumer.partition import (
    MARK,
    STOP,
    HandlerSpec,
    Handling,
    PartitionState,
    PartitionWorker,
    current_worker,
)

PENDING_PER_LANE: Final = 16
"""Records dispatched but not passed by the watermark, per lane of ``keyConcurrency``..."""
PENDING_MIN: Final = 1000
PENDING_MAX: Final = 20_000
"""...within these bounds. A key stuck in retries holds the watermark: the others go on until
this many records wait behind it, then the dispatcher waits too (and the poll thread's flow
control pauses the partition), so memory stays bounded."""


class Watermark:
    """The committable position of one partition whose records finish out of order.

    ``add`` each record's offset in offset order, ``finish`` it when done: ``handled`` is the
    highest offset of a record finished with ``marked`` (handled, given up on) such that every
    record added before it is finished too (-1: none). Unmarked finishes
    (``ContinueWithoutCommit``) are passed over but never themselves become ``handled``.
    """

    __slots__ = ("_done", "_pending", "handled")

    def __init__(self, handled: int = -1) -> None:
        self._pending: deque[int] = deque()  # added, not passed yet, in offset order
        self._done: dict[int, bool] = {}  # finished ahead of the oldest pending: marked?
        self.handled = handled

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, offset: int) -> None:
        self._pending.append(offset)

    def finish(self, offset: int, marked: bool) -> int:
        """Record ``offset`` as finished; returns ``handled``."""
        pending = self._pending
        if pending[0] != offset:
            self._done[offset] = marked
            return self.handled
        pending.popleft()
        if marked:
            self.handled = offset
        done = self._done
        while done and pending:
            passed = done.pop(pending[0], None)
            if passed is None:
                break
            offset = pending.popleft()
            if passed:
                self.handled = offset
        return self.handled


class _Slot(Handling):
    """One of the at most N tasks of a partition: handles the records of one key at a time, in
    order, until the key has none left, then the next ready key (tasks are reused: a task
    per key would cost more than the rest of a record's handling)."""

    __slots__ = ("task", "waiter", "worker")

    def __init__(self, worker: KeyedWorker) -> None:
        self._spec = worker._spec
        self.state = worker.state
        self.stopping = False
        self._calm = False
        self._cancelled_by_us = False
        self.straggler = None
        self.worker = worker
        self.waiter: asyncio.Future[None] | None = None  # set while idle
        self.task: asyncio.Task[None] | None = None

    def cancel(self) -> None:
        self._cancelled_by_us = True
        if self.task is not None:
            self.task.cancel()

    async def run(self) -> None:
        current_worker.set(self)  # this task's plain def calls record their stragglers here
        worker = self.worker
        ready = worker.ready
        lanes = worker.lanes
        idle = worker.idle
        state = self.state
        watermark = worker.watermark
        topic = state.topic
        partition = state.partition
        new = object.__new__
        loop = worker._loop
        try:
            while not self.stopping:
                if not ready:
                    waiter = self.waiter = loop.create_future()
                    idle.append(self)
                    try:
                        await waiter
                    finally:
                        self.waiter = None
                    continue
                key, queue = ready.popleft()
                while queue:
                    if self.stopping:
                        return
                    record = queue[0]
                    offset = record.offset()
                    msg = new(WireMessage)  # WireMessage(...) without the __init__ frame
                    msg.topic = topic
                    msg.partition = partition
                    msg.offset = offset
                    msg._m = record
                    try:
                        await self._attempt(msg, record)
                    except BaseException as exc:
                        outcome = await self._failed(exc, [msg], 1)
                        if outcome == STOP:
                            return
                        marked = outcome == MARK
                    else:
                        marked = True
                    queue.popleft()
                    state.handled = watermark.finish(offset, marked)
                    room = worker.room
                    if room is not None and not room.done():
                        room.set_result(None)
                # No await since the queue was found empty: the dispatcher appends to the
                # lanes it finds in ``lanes`` only.
                del lanes[key]
        except asyncio.CancelledError:
            if not self._cancelled_by_us:
                raise
        except BaseException as exc:  # a bug here, or KeyboardInterrupt in a handler
            self._crashed("key task", exc)


class KeyedWorker(PartitionWorker):
    """A partition's worker with ``keyConcurrency`` > 1 (see the module docstring)."""

    __slots__ = (
        "_limit",
        "_pending_max",
        "idle",
        "lanes",
        "ready",
        "room",
        "slots",
        "watermark",
    )

    def __init__(self, spec: HandlerSpec, state: PartitionState) -> None:
        super().__init__(spec, state)
        self._limit = spec.key_concurrency
        self._pending_max = min(max(PENDING_MIN, PENDING_PER_LANE * self._limit), PENDING_MAX)
        # The keys in flight (at most N): their records not yet finished, in offset order.
        self.lanes: dict[bytes | None, deque[Any]] = {}
        self.ready: deque[tuple[bytes | None, deque[Any]]] = deque()  # lanes no slot runs yet
        self.slots: list[_Slot] = []
        self.idle: deque[_Slot] = deque()
        self.watermark = Watermark(state.handled)
        # Set while the dispatcher waits for a lane to end or the watermark to move.
        self.room: asyncio.Future[None] | None = None

    def request_stop(self) -> None:
        """Slots stop after their handler call in progress (at once if not inside one); the
        dispatcher stops taking records and waits for them."""
        self.stopping = True
        for waiter in (self._waiter, self.room):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        for slot in self.slots:
            slot.stopping = True
            waiter = slot.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            elif slot._calm:
                slot.cancel()

    def cancel(self) -> None:
        self._cancelled_by_us = True
        for slot in self.slots:
            slot.cancel()
        if self.task is not None:
            self.task.cancel()

    async def _run(self) -> None:
        try:
            await self._dispatch()
        except asyncio.CancelledError:
            if not self._cancelled_by_us:
                raise
        except BaseException as exc:  # a bug here
            self._crashed("worker", exc)
        finally:
            await self._end_slots()

    async def _end_slots(self) -> None:
        """Wait for the slots (each ends after its call in progress); if this task is
        cancelled meanwhile (the transport's grace is over), cancel them and wait briefly."""
        self.request_stop()
        tasks = {slot.task for slot in self.slots if slot.task is not None}
        if not tasks:
            return
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            for slot in self.slots:
                slot.cancel()
            await asyncio.wait(tasks, timeout=1.0)
            raise

    async def _wait_room(self) -> None:
        room = self._loop.create_future()
        self.room = room
        try:
            await room
        finally:
            self.room = None

    async def _dispatch(self) -> None:
        chunks = self._chunks
        lanes = self.lanes
        ready = self.ready
        idle = self.idle
        slots = self.slots
        pending = self.watermark._pending  # Watermark.add and len, without their frames
        limit = self._limit
        pending_max = self._pending_max
        loop = self._loop
        while not self.stopping:
            if not chunks:
                await self._idle()
                continue
            for record in self._take_chunk():
                while len(pending) >= pending_max and not self.stopping:
                    await self._wait_room()
                if self.stopping:
                    return
                # No await from this lookup to the append: a lane found here is still running.
                key = record.key()
                queue = lanes.get(key)
                if queue is None:
                    while len(lanes) >= limit and not self.stopping:
                        await self._wait_room()
                    if self.stopping:
                        return
                    queue = lanes[key] = deque()
                    ready.append((key, queue))
                    # Fewer lanes than N: a slot is idle, or fewer than N exist.
                    if idle:
                        waiter = idle.popleft().waiter
                        if waiter is not None and not waiter.done():
                            waiter.set_result(None)
                    else:
                        slot = _Slot(self)
                        slot.task = loop.create_task(slot.run())
                        slots.append(slot)
                queue.append(record)
                pending.append(record.offset())
