"""One background event loop for the blocking twins of proxies that have filters.

Filters are ``async``; a blocking call from a thread without a running loop still has to run
them. They run here, on one daemon thread that owns one loop, started on first use and stopped
by :func:`stop` (``close_all_producers``). Proxies without filters never come here: their
blocking twins talk to librdkafka directly from the calling thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from trpc_kafka._runtime.context import Context, reset_current_context, set_current_context

T = TypeVar("T")

_lock = threading.Lock()
_state: list[tuple[asyncio.AbstractEventLoop, threading.Thread] | None] = [None]


def _start() -> asyncio.AbstractEventLoop:
    with _lock:
        state = _state[0]
        if state is not None and state[1].is_alive():
            return state[0]
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            try:
                loop.run_forever()
            finally:
                # Calls still running end as cancelled (their callers get code 161), not hung.
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.close()

        thread = threading.Thread(target=run, name="trpc-kafka-sync-calls", daemon=True)
        thread.start()
        ready.wait()
        _state[0] = (loop, thread)
        return loop


def in_loop_thread() -> bool:
    state = _state[0]
    return state is not None and state[1] is threading.current_thread()


async def _with_context(ctx: Context | None, coro: Coroutine[Any, Any, T]) -> T:
    token = set_current_context(ctx)
    try:
        return await coro
    finally:
        reset_current_context(token)


def run(coro: Coroutine[Any, Any, T], ctx: Context | None) -> T:
    """Run ``coro`` on the background loop (with ``ctx`` current) and wait for its result."""
    if in_loop_thread():
        coro.close()
        raise RuntimeError(
            "a blocking producer call was made from inside a filter of a blocking call; "
            "use the async method (await proxy.send_message(...)) there"
        )
    loop = _start()
    fut: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
        _with_context(ctx, coro), loop
    )
    return fut.result()


def stop(timeout: float = 5.0) -> None:
    """Stop the background loop (it restarts on the next blocking call that needs it)."""
    with _lock:
        state = _state[0]
        _state[0] = None
    if state is None:
        return
    loop, thread = state
    if thread is threading.current_thread():
        loop.call_soon(loop.stop)
        return
    try:
        loop.call_soon_threadsafe(loop.stop)
    except RuntimeError:  # already closed
        return
    thread.join(timeout)
