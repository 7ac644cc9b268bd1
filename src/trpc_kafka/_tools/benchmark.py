"""``trpc-kafka bench produce|consume``: throughput and latency of this library on a cluster.

Both go through the library's own paths (a client proxy; a consumer service with a no-op
handler), so the figures are what a service gets with the same address. A progress line goes
to stderr once a second; the result is one line on stdout. The side-by-side comparison with
raw confluent-kafka and aiokafka lives in the repository's ``bench/`` scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from typing import Any, Final

from confluent_kafka import Consumer, TopicPartition

from trpc_kafka._config.address import resolve_address
from trpc_kafka._config.rdkafka import admin_settings
from trpc_kafka._consumer import register_kafka_handler_service
from trpc_kafka._producer import new_client_proxy
from trpc_kafka._runtime.context import Context
from trpc_kafka._runtime.server import Server, Service
from trpc_kafka._tools.clients import (
    CliError,
    add_cluster_arguments,
    admin_client,
    cluster_address,
    quiet,
    topic_metadata,
)

PROGRESS_EVERY: Final = 1.0


def add_parser(commands: Any) -> None:
    bench = commands.add_parser(
        "bench", help="measure producing or consuming throughput (and send latency)"
    )
    actions = bench.add_subparsers(dest="action", required=True, metavar="ACTION")

    produce = actions.add_parser(
        "produce",
        help="send COUNT messages through a client proxy; rate, and latency with --acked",
    )
    add_cluster_arguments(produce, services=True)
    produce.add_argument("-t", "--topic", help="(default: topic= of the address)")
    produce.add_argument("-n", "--count", type=int, default=100_000, help="(default: 100000)")
    produce.add_argument("--size", type=int, default=100, help="value bytes (default: 100)")
    produce.add_argument(
        "--acked",
        action="store_true",
        help="await each acknowledgement (send_message) instead of async_send_message",
    )
    produce.add_argument(
        "--in-flight",
        type=int,
        default=1,
        help="with --acked: concurrent sends (default: 1, which measures latency)",
    )
    produce.set_defaults(handler=_bench_produce)

    consume = actions.add_parser(
        "consume",
        help="read a topic from its oldest offset with a consumer service and a no-op handler",
    )
    add_cluster_arguments(consume)
    consume.add_argument("-t", "--topic", required=True)
    consume.add_argument(
        "-n", "--count", type=int, help="messages to read (default: all the topic holds now)"
    )
    consume.set_defaults(handler=_bench_consume)


class _Progress:
    """``what: done/total (rate/s)`` on stderr, at most once per PROGRESS_EVERY seconds."""

    def __init__(self, what: str, total: int) -> None:
        self.what = what
        self.total = total
        self.started = time.perf_counter()
        self.shown = self.started
        self.tty = sys.stderr.isatty()

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if now - self.shown < PROGRESS_EVERY:
            return
        self.shown = now
        rate = done / max(now - self.started, 1e-9)
        line = f"{self.what}: {done:,}/{self.total:,} ({rate:,.0f}/s)"
        sys.stderr.write(f"\r{line}   " if self.tty else f"trpc-kafka: {line}\n")
        sys.stderr.flush()

    def end(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def _bench_produce(args: argparse.Namespace) -> int:
    if args.count < 1 or args.size < 0 or args.in_flight < 1:
        raise CliError("--count and --in-flight must be at least 1, --size at least 0")
    address = cluster_address(args)
    topic = args.topic or resolve_address(address).topic
    if not topic:
        raise CliError("no topic: give -t TOPIC (or topic= in the address)")
    return asyncio.run(_produce(address, topic, args))


async def _produce(address: str, topic: str, args: argparse.Namespace) -> int:
    value = b"x" * args.size
    done = 0
    errors: list[BaseException] = []

    def ok(*_: Any) -> None:
        nonlocal done
        done += 1

    def failed(err: BaseException, *_: Any) -> None:
        nonlocal done
        done += 1
        errors.append(err)

    proxy = new_client_proxy(
        "trpc-kafka.cli.bench", target=address, success_callback=ok, error_callback=failed
    )
    progress = _Progress("produce", args.count)
    latencies: list[float] = []
    started = time.perf_counter()
    try:
        if args.acked:
            await _acked(
                proxy,
                topic=topic,
                value=value,
                args=args,
                latencies=latencies,
                progress=progress,
            )
            done = args.count
        else:
            for i in range(args.count):
                await proxy.async_send_message(topic, None, value)
                if not i & 1023:
                    progress.update(done)
                    await asyncio.sleep(0)  # let delivery reports in
    finally:
        await proxy.close(timeout=60)  # flushes: every send ends in a callback
    seconds = time.perf_counter() - started
    progress.end()
    rate = args.count / seconds
    line = (
        f"produced {args.count:,} messages of {args.size} bytes to {topic} in {seconds:.2f} s: "
        f"{rate:,.0f} msg/s, {rate * args.size / 1e6:.1f} MB/s"
    )
    if latencies:
        latencies.sort()
        line += (
            f"; latency p50 {_ms(statistics.median(latencies))}, "
            f"p99 {_ms(latencies[int(len(latencies) * 0.99) - 1])}, max {_ms(latencies[-1])}"
        )
    if errors:
        line += f"; {len(errors)} failed, first: {errors[0]}"
    sys.stdout.write(line + "\n")
    return 1 if errors else 0


async def _acked(
    proxy: Any,
    *,
    topic: str,
    value: bytes,
    args: argparse.Namespace,
    latencies: list[float],
    progress: _Progress,
) -> None:
    remaining = args.count

    async def sender() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            begin = time.perf_counter()
            await proxy.send_message(topic, None, value)
            latencies.append(time.perf_counter() - begin)
            progress.update(len(latencies))

    await asyncio.gather(*(sender() for _ in range(args.in_flight)))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _bench_consume(args: argparse.Namespace) -> int:
    address = cluster_address(args)
    cfg = resolve_address(address)
    count = args.count
    if count is None:
        count = _messages_in(cfg, args.topic)
        if count == 0:
            raise CliError(f"topic {args.topic!r} holds no messages; produce some first")
    elif count < 1:
        raise CliError(f"--count {count}: must be at least 1")
    group = f"trpc-kafka-bench-{uuid.uuid4().hex[:12]}"
    base, _, query = address.partition("?")
    keys = [
        part
        for part in query.split("&")
        if part and not part.startswith(("topics=", "topic=", "group=", "initial="))
    ]
    service_address = "&".join(
        [f"{base}?topics={args.topic}", f"group={group}", "initial=oldest", *keys]
    )
    return asyncio.run(_consume(service_address, args.topic, count))


def _messages_in(cfg: Any, topic: str) -> int:
    admin = admin_client(cfg)
    partitions = topic_metadata(admin, topic).partitions
    lookup = Consumer(
        quiet({**admin_settings(cfg), "group.id": f"trpc-kafka-bench-{uuid.uuid4().hex}"})
    )
    try:
        total = 0
        for p in partitions:
            low, high = lookup.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
            total += high - low
        return total
    finally:
        lookup.close()


async def _consume(address: str, topic: str, count: int) -> int:
    server = Server()
    server.add_service(Service("trpc-kafka.cli.bench", address=address))
    seen = 0
    first = 0.0
    last = 0.0
    progress = _Progress("consume", count)

    async def handle(ctx: Context, msg: Any) -> None:
        nonlocal seen, first, last
        if not seen:
            first = time.perf_counter()
        seen += 1
        if not seen & 1023:
            progress.update(seen)
        if seen == count:
            last = time.perf_counter()
            asyncio.get_running_loop().create_task(server.close())

    register_kafka_handler_service(server, handle)
    await server.serve()
    progress.end()
    if seen < count:
        sys.stdout.write(f"stopped after {seen:,} of {count:,} messages\n")
        return 1
    seconds = max(last - first, 1e-9)
    sys.stdout.write(
        f"consumed {count:,} messages of {topic} in {seconds:.2f} s (from the first one): "
        f"{count / seconds:,.0f} msg/s\n"
    )
    return 0
