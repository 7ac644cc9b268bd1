"""The delivery thread and callers polling for their own reports (``entry.py``): one poller at
a time, every report served exactly once, fire-and-forget callbacks on the delivery thread."""

from __future__ import annotations

import asyncio
import collections
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Producer

from trpc_kafka import _sdk
from trpc_kafka._producer import new_client_proxy
from trpc_kafka._producer import pool as pool_mod
from trpc_kafka._producer.entry import ProducerEntry, callbacks_safe_here, never_raises
from trpc_kafka._producer.proxy import ClientProxy
from trpc_kafka.testing import InMemoryKafka

NewTopic = Callable[..., str]
DELIVERY_THREAD = "trpc-kafka-producer["


class PollRecorder:
    """A producer that records which threads poll, and how many poll at the same time."""

    def __init__(self, inner: Any, before_poll: Callable[[], None] | None = None) -> None:
        self._inner = inner
        self._before_poll = before_poll
        self._lock = threading.Lock()
        self._now = 0
        self.most = 0
        self.by_thread: collections.Counter[str] = collections.Counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __len__(self) -> int:
        return len(self._inner)

    def poll(self, timeout: float = -1) -> int:
        with self._lock:
            self._now += 1
            self.most = max(self.most, self._now)
            self.by_thread[threading.current_thread().name] += 1
        try:
            if self._before_poll is not None:
                self._before_poll()
            return int(self._inner.poll(timeout))
        finally:
            with self._lock:
                self._now -= 1


@pytest.fixture
def recorders() -> Iterator[list[PollRecorder]]:
    made: list[PollRecorder] = []

    def factory(settings: dict[str, Any]) -> Any:
        recorder = PollRecorder(Producer(settings))
        made.append(recorder)
        return recorder

    pool_mod.set_producer_factory(factory)
    yield made


def _proxy(bootstrap: str, topic: str, **kwargs: Any) -> ClientProxy:
    return new_client_proxy(
        "trpc.test.entry", target=f"kafka://{bootstrap}?topic={topic}", **kwargs
    )


def _in_thread(fn: Callable[[], Any], name: str = "sender") -> Any:
    """``fn()`` on a thread that is not the main one (where signal handlers may raise)."""
    result: list[Any] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    if failure:
        raise failure[0]
    return result[0]


def test_a_lone_blocking_acked_send_polls_on_its_own_thread(
    kafka_bootstrap: str, new_topic: NewTopic, recorders: list[PollRecorder]
) -> None:
    topic = new_topic()
    proxy = _proxy(kafka_bootstrap, topic)
    try:
        offsets = _in_thread(
            lambda: [proxy.send_message_sync(topic, None, b"v%d" % i) for i in range(30)]
        )
    finally:
        proxy.close_sync()
    assert len(set(offsets)) == 30 and all(offset >= 0 for _, offset in offsets)
    (recorder,) = recorders
    # The first send may wait for the delivery thread (it polls when the send comes), not all.
    assert recorder.by_thread["sender"] >= 15, recorder.by_thread
    assert recorder.most == 1


def test_blocking_sends_on_the_main_thread_leave_polling_to_the_delivery_thread(
    kafka_bootstrap: str, new_topic: NewTopic, recorders: list[PollRecorder]
) -> None:
    """Python's SIGINT handler raises: a Ctrl-C inside a callback run by the main thread's poll
    would become a SystemError (``callbacks_safe_here``), so the main thread never polls."""
    assert threading.current_thread() is threading.main_thread()
    # Python's own, set here: a run started in the background inherits SIGINT ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    topic = new_topic()
    proxy = _proxy(kafka_bootstrap, topic)
    try:
        offsets = [proxy.send_message_sync(topic, None, b"v%d" % i) for i in range(10)]
    finally:
        proxy.close_sync()
        signal.signal(signal.SIGINT, previous)
    assert len(set(offsets)) == 10
    (recorder,) = recorders
    assert recorder.by_thread[threading.current_thread().name] == 0, recorder.by_thread


def test_callbacks_are_safe_where_no_signal_handler_can_raise() -> None:
    previous = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        assert not callbacks_safe_here()
        assert _in_thread(callbacks_safe_here)  # Python runs handlers on the main thread only
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        assert callbacks_safe_here()
        signal.signal(signal.SIGINT, lambda *_: None)  # unknown: it may raise
        assert not callbacks_safe_here()
        signal.signal(signal.SIGINT, never_raises(lambda *_: None))
        assert callbacks_safe_here()
        previous_term = signal.signal(signal.SIGTERM, lambda *_: None)
        try:
            assert not callbacks_safe_here()
        finally:
            signal.signal(signal.SIGTERM, previous_term)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_in_a_script_sending_blocking_is_a_keyboard_interrupt(
    kafka_bootstrap: str, new_topic: NewTopic
) -> None:
    """A plain script, acked sends one after the other on the main thread, Ctrl-C: a
    KeyboardInterrupt where the script is (with callers' polling on the main thread it was
    "SystemError: ... poll ... returned NULL without setting an exception", 4 runs of 4)."""
    program = """
import os, signal, sys, threading, time
from trpc_kafka import new_client_proxy
# Python's default, as in a script run from a terminal (a background job inherits SIG_IGN).
signal.signal(signal.SIGINT, signal.default_int_handler)
bootstrap, topic = sys.argv[1:3]
proxy = new_client_proxy("trpc.test.script", target=f"kafka://{bootstrap}?topic={topic}")
threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
started, sent = time.monotonic(), 0
try:
    while time.monotonic() - started < 30:
        proxy.send_message_sync(topic, None, b"v")
        sent += 1
    print("no KeyboardInterrupt in 30 s")
except KeyboardInterrupt:
    print(f"interrupted after {sent} sends")
proxy.close_sync()
"""
    topic = new_topic()
    done = subprocess.run(
        [sys.executable, "-c", program, kafka_bootstrap, topic],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "SystemError" not in done.stderr
    assert done.stdout.startswith("interrupted after"), done.stdout


async def test_a_lone_acked_send_on_a_loop_polls_on_the_loop_thread(
    kafka_bootstrap: str, new_topic: NewTopic, recorders: list[PollRecorder]
) -> None:
    topic = new_topic()
    proxy = _proxy(kafka_bootstrap, topic)
    try:
        offsets = [await proxy.send_message(topic, None, b"v%d" % i) for i in range(30)]
    finally:
        await proxy.close()
    assert len(set(offsets)) == 30 and all(offset >= 0 for _, offset in offsets)
    (recorder,) = recorders
    assert recorder.by_thread[threading.current_thread().name] >= 15, recorder.by_thread
    assert recorder.most == 1


def test_several_threads_sending_blocking_get_one_report_per_message(
    kafka_bootstrap: str, new_topic: NewTopic, recorders: list[PollRecorder]
) -> None:
    """Blocking acked sends from 4 threads, fire-and-forget sends from a fifth and from an
    event loop, all on one producer: each message one result or one callback, callbacks on the
    delivery thread only, never two threads in poll."""
    topic = new_topic()
    calls: collections.Counter[bytes] = collections.Counter()
    callback_threads: set[str] = set()
    lock = threading.Lock()

    def on_success(_topic: str, _key: Any, value: bytes | None, _headers: Any) -> None:
        with lock:
            assert value is not None
            calls[value] += 1
            callback_threads.add(threading.current_thread().name)

    def on_error(err: Any, *_: Any) -> None:
        pytest.fail(f"unexpected delivery error: {err}")

    proxy = _proxy(kafka_bootstrap, topic, success_callback=on_success, error_callback=on_error)
    results: list[tuple[int, int]] = []
    failures: list[BaseException] = []

    def blocking(n: int) -> None:
        try:
            for i in range(40):
                result = proxy.send_message_sync(topic, None, b"s%d-%d" % (n, i))
                with lock:
                    results.append(result)
        except BaseException as exc:  # reported below
            failures.append(exc)

    def fire_and_forget() -> None:
        for i in range(150):
            proxy.async_send_message_sync(topic, None, b"f%d" % i)

    async def on_a_loop() -> None:
        for i in range(100):
            await proxy.async_send_message(topic, None, b"a%d" % i)
            if i % 10 == 0:
                await proxy.send_message(topic, None, b"ack%d" % i)

    threads = [threading.Thread(target=blocking, args=(n,)) for n in range(4)]
    threads.append(threading.Thread(target=fire_and_forget))
    for t in threads:
        t.start()
    asyncio.run(on_a_loop())
    for t in threads:
        t.join(60)
    proxy.close_sync()
    assert not failures, failures
    assert len(results) == 160 and len(set(results)) == 160
    assert all(offset >= 0 for _, offset in results)
    expected = {b"f%d" % i for i in range(150)} | {b"a%d" % i for i in range(100)}
    assert set(calls) == expected
    assert set(calls.values()) == {1}
    assert callback_threads and all(n.startswith(DELIVERY_THREAD) for n in callback_threads)
    (recorder,) = recorders
    assert recorder.most == 1


def test_a_callback_served_by_a_callers_poll_runs_on_the_delivery_thread() -> None:
    """A fire-and-forget report that a blocking send's own poll serves is handed to the
    delivery thread: the README's contract (callbacks there, one at a time) holds."""
    callback_threads: list[str] = []
    injected: list[str] = []
    done = threading.Event()

    def on_success(*_: Any) -> None:
        callback_threads.append(threading.current_thread().name)
        done.set()

    with InMemoryKafka():
        proxy = new_client_proxy(
            "trpc.test.entry", target="kafka://memory:9092", success_callback=on_success
        )
        sender = "sender"  # the thread _in_thread runs send() on

        def before_poll() -> None:
            # The first poll of the sending thread: a fire-and-forget report lands in it.
            if threading.current_thread().name == sender and not injected:
                injected.append(sender)
                proxy.async_send_message_sync("t", None, b"fire-and-forget")

        def factory(settings: dict[str, Any]) -> Any:
            return PollRecorder(_sdk.new_producer(settings), before_poll)

        pool_mod.set_producer_factory(factory)

        def send() -> None:
            # The first sends may find the delivery thread in poll; it steps aside after.
            for _ in range(50):
                assert proxy.send_message_sync("t", None, b"acked")[1] >= 0
                if injected:
                    break

        try:
            _in_thread(send)
            assert injected, "no blocking send polled for its own report"
            assert done.wait(10)
        finally:
            proxy.close_sync()
    assert len(callback_threads) == 1
    assert callback_threads[0].startswith(DELIVERY_THREAD)


def test_a_send_while_the_delivery_thread_steps_aside_is_reported(
    kafka_bootstrap: str, new_topic: NewTopic, recorders: list[PollRecorder]
) -> None:
    """After lone blocking sends the delivery thread stays out of poll for a moment; a
    fire-and-forget send then wakes it: its callback comes within a poll, not at close."""
    topic = new_topic()
    reported = threading.Event()
    proxy = _proxy(kafka_bootstrap, topic, success_callback=lambda *_: reported.set())
    try:
        for i in range(10):
            proxy.send_message_sync(topic, None, b"v%d" % i)
        entry = proxy._entry
        assert isinstance(entry, ProducerEntry)
        proxy.async_send_message_sync(topic, None, b"after")
        assert reported.wait(5)
    finally:
        proxy.close_sync()
