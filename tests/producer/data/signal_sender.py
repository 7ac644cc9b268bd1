"""A producer-only script for tests/producer/test_signals.py: sends until it gets a signal.

Usage: signal_sender.py async|blocking TARGET TOPIC COUNT SUMMARY_JSON

Sends COUNT fire-and-forget messages (values "0".."COUNT-1") inside ``flush_on_signals``,
printing progress, then waits inside the block for the signal. Whatever ends it, the summary
written at the end says how many sends returned ("issued") and how many callbacks each message
got.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import trpc_kafka

mode, target, topic, count_arg, summary_path = sys.argv[1:6]
count = int(count_arg)
ok = bytearray(count)
failed = bytearray(count)
issued = [0]  # sends that returned
WAIT_FOR_SIGNAL = 60.0


def on_success(topic: str, key: object, value: bytes | None, headers: object) -> None:
    ok[int(value or b"-1")] += 1


def on_error(err: BaseException, topic: str, key: object, value: bytes | None, h: object) -> None:
    failed[int(value or b"-1")] += 1


proxy = trpc_kafka.new_client_proxy(
    "signals", target=target, success_callback=on_success, error_callback=on_error
)


def write_summary() -> None:
    summary = {
        "issued": issued[0],
        "ok": [i for i in range(count) if ok[i]],
        "callbacks": {str(i): ok[i] + failed[i] for i in range(count) if ok[i] + failed[i] != 1},
        "failed": sum(failed),
    }
    with open(summary_path, "w") as out:
        json.dump(summary, out)


def progress(i: int) -> None:
    if i % 1000 == 0:
        print(i, flush=True)


def blocking() -> None:
    for i in range(count):
        proxy.async_send_message_sync(topic, None, str(i))
        issued[0] = i + 1
        progress(i)
    time.sleep(WAIT_FOR_SIGNAL)  # the signal comes while sending or here


async def asynchronous() -> None:
    async with trpc_kafka.flush_on_signals():
        for i in range(count):
            await proxy.async_send_message(topic, None, str(i))
            issued[0] = i + 1
            progress(i)
            if i % 97 == 0:
                await asyncio.sleep(0)  # a coroutine that yields now and then, as real ones do
        await asyncio.sleep(WAIT_FOR_SIGNAL)


try:
    if mode == "async":
        asyncio.run(asynchronous())
    else:
        with trpc_kafka.flush_on_signals():
            blocking()
finally:
    write_summary()
