"""CPU instructions per message of the consumer paths, without a broker: steady on a busy machine.

    .venv/bin/python bench/consumer_paths_cpu.py [--variants raw,async,def,batch] [--before-src DIR]

Wall-clock ratios (bench/consumer_paths.py) swing with the load of a shared machine; this counts
instructions instead (valgrind's cachegrind; valgrind must be installed). librdkafka is replaced
by a fake consumer whose ``consume(500)`` returns confluent-kafka ``Message`` objects made on the
spot (6 partitions, runs of records per partition, 100-byte values): what is counted is Python's
side of the path, ours or a raw ``consume`` + ``store_offsets`` loop. Each variant runs twice,
with ``--small`` and ``--large`` messages; the difference divided by the difference in messages
is the cost of one message, start-up excluded.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import time
from collections import deque
from pathlib import Path
from typing import Any

from harness import count_instructions

PARTITIONS = 6
CONSUME_BATCH = 500
VALUE = b"x" * 100
TOPIC = "bench-cpu"


class FakeConsumer:
    """The calls our transport makes on a librdkafka Consumer, served from memory."""

    def __init__(self, settings: dict[str, Any], n: int) -> None:
        self._left = n
        self._offsets = [0] * PARTITIONS
        self._on_assign: Any = None
        self._assigned = False
        self._next = 0

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self._on_assign = callbacks.get("on_assign")

    def consume(self, num: int = 1, timeout: float = -1) -> list[Any]:
        from confluent_kafka import Message, TopicPartition

        if not self._assigned:
            self._assigned = True
            if self._on_assign is not None:
                self._on_assign(self, [TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
            return []
        if self._left <= 0:
            time.sleep(0.001)
            return []
        take = min(num, self._left)
        self._left -= take
        out: list[Any] = []
        run = max(1, take // PARTITIONS)
        while len(out) < take:
            p = self._next
            self._next = (p + 1) % PARTITIONS
            for _ in range(min(run, take - len(out))):
                out.append(Message(topic=TOPIC, partition=p, offset=self._offsets[p], value=VALUE))
                self._offsets[p] += 1
        return out

    def store_offsets(self, offsets: Any = None, message: Any = None) -> None:
        pass

    def commit(self, offsets: Any = None, asynchronous: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def pause(self, partitions: Any) -> None:
        pass

    def resume(self, partitions: Any) -> None:
        pass

    def memberid(self) -> str:
        return "member"

    def consumer_group_metadata(self) -> Any:
        raise RuntimeError("fake")

    def get_watermark_offsets(self, tp: Any, timeout: Any = None, cached: bool = False) -> Any:
        return (0, -1)


def child(kind: str, n: int) -> None:
    if kind == "raw":
        from confluent_kafka import TopicPartition

        consumer = FakeConsumer({}, n)
        consumer.subscribe([TOPIC])
        seen = 0
        while seen < n:
            records = consumer.consume(CONSUME_BATCH, 0.1)
            last: dict[Any, Any] = {}
            for record in records:
                if record.error() is not None:
                    continue
                last[record.partition()] = record.offset()
                seen += 1
            if last:
                consumer.store_offsets(
                    offsets=[TopicPartition(TOPIC, p, o + 1) for p, o in last.items()]
                )
        return

    import trpc_kafka._consumer as kc
    from trpc_kafka._consumer import transport
    from trpc_kafka._runtime.context import Context
    from trpc_kafka._runtime.server import Server, Service

    transport.create_consumer = lambda settings: FakeConsumer(settings, n)
    address = f"127.0.0.1:9?topics={TOPIC}&group=g"
    if kind == "batch":
        address += f"&batch={CONSUME_BATCH}&batchFlush=20"
    counter = itertools.count(1)

    async def main() -> None:
        server = Server()
        server.add_service(Service("bench", address=address))
        loop = asyncio.get_running_loop()
        closing: list[asyncio.Task[None]] = []

        def count(k: int) -> None:
            if k >= n:
                loop.call_soon_threadsafe(lambda: closing.append(loop.create_task(server.close())))

        async def handle(ctx: Context, msg: kc.ConsumerMessage) -> None:
            count(next(counter))

        def handle_def(ctx: Context, msg: kc.ConsumerMessage) -> None:
            count(next(counter))

        async def handle_batch(ctx: Context, msgs: list[kc.ConsumerMessage]) -> None:
            k = 0
            for _ in range(len(msgs)):
                k = next(counter)
            count(k)

        if kind == "batch":
            kc.register_batch_handler_service(server, handle_batch)
        elif kind == "def":
            kc.register_kafka_handler_service(server, handle_def)
        else:
            kc.register_kafka_handler_service(server, handle)
        await server.serve()

    asyncio.run(main())


def instructions(kind: str, n: int, src: str | None) -> int:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = str(Path(src).resolve() / "src")
    return count_instructions([__file__, "--child", kind, "--n", str(n)], env)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--variants", default="raw,async,def,batch")
    parser.add_argument("--before-src", help="also run the service variants on this tree")
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=60_000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.n)
        return 0
    runs: deque[tuple[str, str | None]] = deque()
    for kind in args.variants.split(","):
        runs.append((kind, None))
        if args.before_src and kind != "raw":
            runs.append((f"{kind}@before", args.before_src))
    results = {}
    for name, src in runs:
        kind = name.partition("@")[0]
        small = instructions(kind, args.small, src)
        large = instructions(kind, args.large, src)
        results[name] = (large - small) / (args.large - args.small)
        print(f"{name:14s} {results[name]:>9,.0f} instructions/message", flush=True)
    raw = results.get("raw")
    if raw:
        print("over raw:", ", ".join(f"{k} +{v - raw:,.0f}" for k, v in results.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
