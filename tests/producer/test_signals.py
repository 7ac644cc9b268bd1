"""SIGTERM in a producer-only program keeps "exactly one callback per send" (issue 9 section 2).

Without a graceful path, a script killed while sending lost callbacks (259 of 48,900 async
sends, 45 of 43,500 with the blocking twin) and tens of thousands of delivered messages never
got their success callback. ``flush_on_signals`` turns the signal into an exception and a
flushing close; these tests send 100k messages from a subprocess and signal it at a random
point, then compare the sends that returned, the callbacks and what is on the broker.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.producer._util import consume
from trpc_kafka._producer import flush_on_signals

SCRIPT = Path(__file__).parent / "data" / "signal_sender.py"
SENDS = 100_000


def _run_and_signal(
    mode: str, bootstrap: str, topic: str, tmp_path: Path, signum: int
) -> tuple[dict[str, Any], int]:
    """Start the sender, signal it once it reported a random count; its summary and status."""
    summary_path = tmp_path / "summary.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    target = f"kafka://{bootstrap}?compression=none&idempotent=true"
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), mode, target, topic, str(SENDS), str(summary_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(proc.stderr or ()), daemon=True)
    reader.start()
    threshold = random.randrange(SENDS // 20, SENDS * 6 // 10)
    assert proc.stdout is not None
    for line in proc.stdout:
        if int(line) >= threshold:
            break
    proc.send_signal(signum)
    try:
        status = proc.wait(60)
    finally:
        proc.kill()
    reader.join(5)
    assert summary_path.exists(), "".join(stderr)
    summary: dict[str, Any] = json.loads(summary_path.read_text())
    return summary, status


@pytest.mark.parametrize("mode", ["async", "blocking"])
def test_sigterm_while_sending_keeps_one_callback_per_send(
    mode: str, kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=3)
    summary, status = _run_and_signal(mode, kafka_bootstrap, topic, tmp_path, signal.SIGTERM)
    assert status == 128 + signal.SIGTERM  # ended by the signal, through the flush
    issued = summary["issued"]
    assert isinstance(issued, int) and 0 < issued <= SENDS
    # Every send that returned got exactly one callback; a send the signal interrupted (at most
    # the next one) got one or none; later ones none.
    wrong = {int(i): n for i, n in summary["callbacks"].items()}
    assert {i: n for i, n in wrong.items() if i < issued} == {}, "sends without one callback"
    assert all(n == 0 for i, n in wrong.items() if i > issued), "callbacks for unsent messages"
    assert wrong.get(issued, 0) <= 1
    assert summary["failed"] == 0  # a healthy broker: the flush delivered everything
    # What the broker has is exactly what was reported sent.
    acked = set(summary["ok"])
    assert len(acked) >= issued
    records = consume(kafka_bootstrap, topic, len(acked), timeout=60)
    values = [int(r.value or b"-1") for r in records]
    assert len(values) == len(set(values))
    assert set(values) == acked
    assert _records_on(kafka_bootstrap, topic, 3) == len(acked)  # and nothing more


def _records_on(bootstrap: str, topic: str, partitions: int) -> int:
    """How many records the topic holds (idempotent, no transactions: offsets are dense)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "signals-test"})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=20)[1]
            for p in range(partitions)
        )
    finally:
        consumer.close()


def test_sigint_is_keyboard_interrupt_and_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    guard = flush_on_signals(timeout=1.0)
    with pytest.raises(KeyboardInterrupt), guard:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # interrupted by the signal: the handler raises here
    assert guard.received == signal.SIGINT
    assert signal.getsignal(signal.SIGTERM) is before
    with pytest.raises(SystemExit) as info, flush_on_signals(timeout=1.0):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert info.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


async def test_asyncio_form_cancels_the_task_then_raises_after_the_flush() -> None:
    import asyncio

    guard = flush_on_signals(timeout=1.0)
    start = time.monotonic()
    with pytest.raises(SystemExit) as info:
        async with guard:
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.sleep(5)
    assert info.value.code == 128 + signal.SIGTERM
    assert time.monotonic() - start < 3
    task = asyncio.current_task()
    assert not getattr(task, "cancelling", lambda: 0)()  # the cancellation did not leak


def test_entering_off_the_main_thread_says_why() -> None:
    errors: list[BaseException] = []

    def enter() -> None:
        try:
            with flush_on_signals():
                pass
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert errors and "main thread" in str(errors[0])
    with pytest.raises(ValueError, match="invalid timeout -1"):
        flush_on_signals(timeout=-1)
