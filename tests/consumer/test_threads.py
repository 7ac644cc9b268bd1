"""The daemon thread pool of plain def handlers (threads.py)."""

from __future__ import annotations

import threading
import time

import pytest

from trpc_kafka._consumer.threads import DaemonThreadPool


def test_daemon_thread_pool() -> None:
    pool = DaemonThreadPool(2, "test-pool")
    assert pool.submit(lambda x: x * 2, 21).result(5) == 42
    failing = pool.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(5)
    gate = threading.Event()
    busy = [pool.submit(gate.wait, 5) for _ in range(2)]
    queued = pool.submit(lambda: "never")
    time.sleep(0.05)
    assert len(pool._threads) == 2, "bounded"
    assert all(t.daemon for t in pool._threads)
    pool.shutdown(wait=False, cancel_futures=True)
    assert queued.cancelled()
    gate.set()
    assert all(f.result(5) for f in busy)
    with pytest.raises(RuntimeError):
        pool.submit(print)
