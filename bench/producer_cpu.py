"""CPU time per send of the producer hot paths, against a real broker (issue 13 §3).

Wall-clock ratios swing on a loaded machine; CPU seconds of this process do not count other
processes. For each variant: process CPU (every thread: the event loop, our delivery thread,
librdkafka's) and the calling thread's CPU, both per send, over ``--messages`` sends, from
the first send to the last delivery report. Compare code versions by running this script with
``PYTHONPATH=<other src>`` alternately.

    .venv/bin/python bench/producer_cpu.py --bootstrap HOST:PORT [--messages 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
import uuid
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

VALUE = b"x" * 100
IN_FLIGHT = 1000


def _topic(bootstrap: str) -> str:
    name = f"cpu-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, 6, 1)])[name].result(30)
    return name


def _target(bootstrap: str) -> str:
    return f"kafka://{bootstrap}?compression=none"


def _cpu() -> tuple[float, float]:
    return time.process_time(), time.thread_time()


def _per_send(begin: tuple[float, float], n: int) -> dict[str, float]:
    proc, thread = _cpu()
    return {
        "process_us": round((proc - begin[0]) / n * 1e6, 3),
        "thread_us": round((thread - begin[1]) / n * 1e6, 3),
    }


def raw_callback(bootstrap: str, topic: str, n: int) -> dict[str, float]:
    """Raw ``produce`` + ``poll(0)`` with one shared delivery callback (issue 13's yardstick)."""
    from trpc_kafka._config.address import parse_address
    from trpc_kafka._config.rdkafka import producer_settings

    # Exactly our producer's librdkafka settings, as bench/variants.py does.
    p = Producer(producer_settings(parse_address(_target(bootstrap))))
    p.produce(topic, VALUE)
    p.flush(30)
    produce, poll = p.produce, p.poll

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            raise RuntimeError(err)

    begin = _cpu()
    for _ in range(n):
        try:
            produce(topic, VALUE, on_delivery=on_delivery)
        except BufferError:
            poll(0.1)
            produce(topic, VALUE, on_delivery=on_delivery)
        poll(0)
    p.flush(120)
    return _per_send(begin, n)


async def _proxy(bootstrap: str, topic: str) -> Any:
    import trpc_kafka

    proxy = trpc_kafka.new_client_proxy(
        f"cpu.{uuid.uuid4().hex[:6]}",
        target=_target(bootstrap),
        error_callback=lambda err, *_: print("send failed:", err, file=sys.stderr),
    )
    await proxy.send_message(topic, None, VALUE)
    return proxy


def ours_async_send(bootstrap: str, topic: str, n: int) -> dict[str, float]:
    async def main() -> dict[str, float]:
        proxy = await _proxy(bootstrap, topic)
        send = proxy.async_send_message
        begin = _cpu()
        for _ in range(n):
            await send(topic, None, VALUE)
        await proxy.close()  # flushes: every report is in
        return _per_send(begin, n)

    return asyncio.run(main())


def ours_send_in_flight(bootstrap: str, topic: str, n: int) -> dict[str, float]:
    async def main() -> dict[str, float]:
        proxy = await _proxy(bootstrap, topic)
        send = proxy.send_message
        counter = itertools.count()

        async def worker() -> None:
            while next(counter) < n:
                await send(topic, None, VALUE)

        begin = _cpu()
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
        result = _per_send(begin, n)
        await proxy.close()
        return result

    return asyncio.run(main())


VARIANTS = {
    "raw_callback": raw_callback,
    "ours_async_send": ours_async_send,
    "ours_send_in_flight": ours_send_in_flight,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--only", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    import trpc_kafka

    out: dict[str, Any] = {"src": trpc_kafka.__file__, "messages": args.messages}
    for name in args.only:
        # send_message is ~5x slower per send: a fifth of the messages keeps rounds alike.
        n = args.messages // 5 if name == "ours_send_in_flight" else args.messages
        out[name] = VARIANTS[name](args.bootstrap, _topic(args.bootstrap), n)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
