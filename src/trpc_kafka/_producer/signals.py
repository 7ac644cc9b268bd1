"""A graceful stop for programs that produce but serve nothing (scripts, workers, batch jobs).

A :class:`~trpc_kafka.Server` turns SIGTERM and SIGINT into a graceful shutdown that flushes
the producers. A program without one keeps Python's defaults: SIGTERM ends the process at once
(nothing flushed, queued sends get no callback, some of them may still be on the broker), and
SIGINT raises ``KeyboardInterrupt`` wherever the program is. :class:`flush_on_signals` is the
explicit opt-in for such programs::

    with trpc_kafka.flush_on_signals():          # blocking code
        for row in rows:
            proxy.async_send_message_sync("orders", row.key, row.value)

    async with trpc_kafka.flush_on_signals():    # asyncio code
        for row in rows:
            await proxy.async_send_message("orders", row.key, row.value)

Inside the block, SIGTERM and SIGINT stop the program the way SIGINT stops a plain script: as an
exception (``SystemExit(143)`` for SIGTERM, ``KeyboardInterrupt`` for SIGINT). In blocking code
it is raised where the main thread is; in asyncio code the task that entered the block is
cancelled instead (at its next ``await``: a loop that never awaits is stopped when it does).
Leaving the block, by a signal or otherwise, flushes every pooled producer within ``timeout``
seconds and closes it; what cannot be delivered is purged and reported. Every send queued before
that point thus gets exactly one callback before the exception goes on; further signals during
the flush are ignored (the flush is bounded by ``timeout``). A send the signal interrupted before
it was queued raises (code 161 in asyncio code) and gets no callback.

Handlers can only be installed from the main thread (a limit of Python's ``signal`` module);
the previous handlers come back when the block is left.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Sequence
from types import FrameType, TracebackType
from typing import Any, Final

from trpc_kafka._producer import pool
from trpc_kafka._producer.entry import never_raises

DEFAULT_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
_Handler = Any  # what signal.signal returns: a callable, SIG_DFL, SIG_IGN or None


def _stop_exception(signum: int) -> BaseException:
    """How a signal ends the program: as Python ends it on SIGINT, or with status 128 + n."""
    if signum == signal.SIGINT:
        return KeyboardInterrupt()
    return SystemExit(128 + signum)


class flush_on_signals:  # noqa: N801 - used like a function: `with trpc_kafka.flush_on_signals():`
    """SIGTERM/SIGINT become an exception, and leaving the block flushes every producer."""

    def __init__(self, timeout: float = 10.0, signals: Sequence[int] = DEFAULT_SIGNALS) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise ValueError(
                f"flush_on_signals: invalid timeout {timeout!r}; allowed: seconds >= 0"
            )
        self.timeout = float(timeout)
        self.signals = tuple(signals)
        self.received: int | None = None
        """The signal that stopped the block, if one did."""
        self._previous: dict[int, _Handler] = {}
        self._flushing = False
        self._task: asyncio.Task[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- blocking code ------------------------------------------------------------------------

    def __enter__(self) -> flush_on_signals:
        self._install(self._raise)
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._flushing = True  # from here on, signals are noted and ignored
        try:
            pool.close_all_producers_sync(self.timeout)
        finally:
            self._restore()

    def _raise(self, signum: int, frame: FrameType | None) -> None:
        if self._flushing or self.received is not None:
            return
        self.received = signum
        raise _stop_exception(signum)

    # -- asyncio code -------------------------------------------------------------------------

    async def __aenter__(self) -> flush_on_signals:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._install(self._cancel)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._flushing = True
        task = self._task
        cancelling = getattr(task, "cancelling", None)  # Python 3.11+
        if self.received is not None and cancelling is not None and cancelling():
            task.uncancel()  # type: ignore[union-attr]  # ours ends here: the flush must not see it
        try:
            await pool.close_all_producers(self.timeout)
        finally:
            self._restore()
        if self.received is not None:
            raise _stop_exception(self.received) from None

    @never_raises  # lets an event loop poll for its own acked sends (entry.poll_here)
    def _cancel(self, signum: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of the main thread, maybe inside the event loop's own
        # code: only schedule the cancellation (what asyncio.run does on SIGINT).
        if self._flushing or self.received is not None:
            return
        self.received = signum
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._cancel_task)

    def _cancel_task(self) -> None:
        task = self._task
        if not self._flushing and task is not None and not task.done():
            task.cancel()

    # -- handlers -----------------------------------------------------------------------------

    def _install(self, handler: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                "flush_on_signals must be entered in the main thread (Python delivers signals "
                "there only)"
            )
        if self._previous:
            raise RuntimeError("flush_on_signals is not reentrant: use a new one per block")
        self.received = None
        self._flushing = False
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, handler)

    def _restore(self) -> None:
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


__all__ = ["DEFAULT_SIGNALS", "flush_on_signals"]
