"""Consumer benchmark: our kafka service against raw confluent-kafka and aiokafka, same data.

    .venv/bin/python bench/consumer.py [--bootstrap HOST:PORT] [--messages 1000000] [--rounds 3]

Without ``--bootstrap`` a local broker is started (``trpc_kafka._tools.broker``) in a temporary
directory and stopped at the end. One topic with 6 partitions is pre-loaded with ``--messages``
values of 100 bytes; then every variant drains it, each run in a fresh subprocess and a fresh
consumer group reading from the oldest offset:

a. ``raw``: confluent-kafka ``consume(500, 0.1)`` loop that stores the last offset of each
   partition once per batch (``store_offsets``) and lets librdkafka auto-commit them every 3 s:
   what our service does, without anything else. It uses exactly our librdkafka settings
   (``consumer_settings`` of the same address);
b. ``service``: our kafka service with a no-op ``async def`` handler;
c. ``batch``: our kafka service with a no-op ``async def`` batch handler, ``batch=500``
   (``batchFlush=20``, so the last partial batch of each partition does not wait 2 s);
d. ``aiokafka``: ``AIOKafkaConsumer.getmany(max_records=500)`` with auto-commit (3 s).

Throughput is messages / seconds from the first message received to the last one handled
(group join excluded; ``total_s`` includes it). Peak RSS is the child's ``VmHWM``. Runs are
interleaved over ``--rounds`` rounds; medians and ratios against (a) go to
``bench/results/consumer.json``. ``--address-extra '&rdkafka.x=y'`` adds keys to the address of
(a), (b) and (c) alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import resource
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from harness import spawn_variant

RESULTS = Path(__file__).with_name("results") / "consumer.json"
# The targets: throughput against (a), and peak RSS.
TARGETS = {"service": 0.8, "batch": 0.9}
RSS_TARGET_MB = 300
PARTITIONS = 6
VALUE_SIZE = 100
CONSUME_BATCH = 500
VARIANTS = ("raw", "service", "batch", "aiokafka")


def _address(bootstrap: str, topic: str, group: str, extra: str) -> str:
    return f"{bootstrap}?topics={topic}&group={group}&initial=oldest{extra}"


def peak_rss_mb() -> float:
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child would report the
    # peak of the (pre-loading) parent it was forked from.
    with contextlib.suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_peak_rss_mb = peak_rss_mb  # its name before bench/variants.py shared it


# -- children (one variant per process) ---------------------------------------------------


def child_raw(address: str, topic: str, n: int) -> dict[str, float]:
    from confluent_kafka import Consumer, TopicPartition

    from trpc_kafka._config.address import parse_address
    from trpc_kafka._config.rdkafka import consumer_settings

    begin = time.perf_counter()
    consumer = Consumer(consumer_settings(parse_address(address)))
    consumer.subscribe([topic])
    seen = 0
    first = 0.0
    while seen < n:
        records = consumer.consume(CONSUME_BATCH, 0.1)
        if not records:
            continue
        if not first:
            first = time.perf_counter()
            cpu0 = time.process_time()
        last: dict[Any, Any] = {}
        for record in records:
            if record.error() is not None:
                continue
            last[record.partition()] = record.offset()
            seen += 1
        consumer.store_offsets(offsets=[TopicPartition(topic, p, o + 1) for p, o in last.items()])
    end = time.perf_counter()
    cpu = time.process_time() - cpu0
    consumer.close()
    return {"messages": seen, "seconds": end - first, "total_s": end - begin, "cpu_s": cpu}


def child_service(address: str, n: int, batch: bool) -> dict[str, float]:
    import trpc_kafka._consumer as kc
    from trpc_kafka._runtime.context import Context
    from trpc_kafka._runtime.server import Server, Service

    if batch:
        # batchFlush=20: when the data ends, the last partial batch of each partition is
        # handed over after 20 ms instead of the default 2 s (full batches never wait).
        address += f"&batch={CONSUME_BATCH}&batchFlush=20"
    begin = time.perf_counter()
    first = 0.0
    end = 0.0
    seen = 0

    async def main() -> None:
        server = Server()
        server.add_service(Service("bench", address=address))

        def finish() -> None:
            nonlocal end
            end = time.perf_counter()
            asyncio.get_running_loop().create_task(server.close())

        async def handle(ctx: Context, msg: kc.ConsumerMessage) -> None:
            nonlocal seen, first
            if not seen:
                first = time.perf_counter()
            seen += 1
            if seen == n:
                finish()

        async def handle_batch(ctx: Context, msgs: list[kc.ConsumerMessage]) -> None:
            nonlocal seen, first
            if not seen:
                first = time.perf_counter()
            seen += len(msgs)
            if seen == n:
                finish()

        if batch:
            kc.register_batch_handler_service(server, handle_batch)
        else:
            kc.register_kafka_handler_service(server, handle)
        await server.serve()

    asyncio.run(main())
    return {"messages": seen, "seconds": end - first, "total_s": end - begin}


def child_aiokafka(bootstrap: str, topic: str, group: str, n: int) -> dict[str, float]:
    from aiokafka import AIOKafkaConsumer

    async def main() -> dict[str, float]:
        begin = time.perf_counter()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=True,
            auto_commit_interval_ms=3000,
        )
        await consumer.start()
        seen = 0
        first = end = cpu0 = cpu1 = 0.0
        try:
            while seen < n:
                batches = await consumer.getmany(timeout_ms=100, max_records=CONSUME_BATCH)
                for records in batches.values():
                    if records and not first:
                        first = time.perf_counter()
                        cpu0 = time.process_time()
                    seen += len(records)
            end = time.perf_counter()
            cpu1 = time.process_time()
        finally:
            await consumer.stop()
        cpu = cpu1 - cpu0
        return {"messages": seen, "seconds": end - first, "total_s": end - begin, "cpu_s": cpu}

    return asyncio.run(main())


def run_child(args: argparse.Namespace) -> int:
    group = f"bench-{args.child}-{uuid.uuid4().hex[:8]}"
    address = _address(args.bootstrap, args.topic, group, args.address_extra)
    if args.child == "raw":
        result = child_raw(address, args.topic, args.messages)
    elif args.child in ("service", "batch"):
        result = child_service(address, args.messages, args.child == "batch")
    elif args.child == "aiokafka":
        result = child_aiokafka(args.bootstrap, args.topic, group, args.messages)
    else:
        raise SystemExit(f"unknown variant {args.child!r}")
    result["rate"] = result["messages"] / result["seconds"]
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))
    return 0


# -- parent ---------------------------------------------------------------------------------


def preload(bootstrap: str, n: int, prefix: str = "bench-consumer") -> str:
    from trpc_kafka._tools.broker import create_topic

    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, partitions=PARTITIONS)
    fill(bootstrap, topic, n)
    return topic


def fill(bootstrap: str, topic: str, n: int) -> None:
    """Write ``n`` values of VALUE_SIZE bytes round-robin over the topic's partitions."""
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "compression.type": "none",
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    value = b"x" * VALUE_SIZE
    for i in range(n):
        while True:
            try:
                producer.produce(topic, value, partition=i % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    if producer.flush(120):
        raise RuntimeError("pre-load: flush timed out")


def _spawn(variant: str, bootstrap: str, topic: str, args: argparse.Namespace) -> dict[str, Any]:
    return spawn_variant(
        __file__,
        variant,
        *("--bootstrap", bootstrap, "--topic", topic, "--messages", str(args.messages)),
        *("--address-extra", args.address_extra),
        timeout=args.child_timeout,
    )


def run_parent(args: argparse.Namespace) -> int:
    from trpc_kafka._tools.broker import broker_or_temporary

    variants = [v for v in args.variants.split(",") if v]
    with broker_or_temporary(args.bootstrap) as bootstrap:
        started = time.perf_counter()
        topic = preload(bootstrap, args.messages)
        print(f"pre-loaded {args.messages} messages in {time.perf_counter() - started:.1f}s")
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        for round_no in range(args.rounds):
            for variant in variants:
                result = _spawn(variant, bootstrap, topic, args)
                runs[variant].append(result)
                print(
                    f"round {round_no + 1} {variant:9s} {result['rate']:>11,.0f} msg/s "
                    f"({result['seconds']:.2f}s, total {result['total_s']:.2f}s) "
                    f"peak RSS {result['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
    medians = {
        v: {
            "rate": statistics.median(r["rate"] for r in rs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
        }
        for v, rs in runs.items()
        if rs
    }
    raw = medians.get("raw", {}).get("rate")
    ratios = {v: m["rate"] / raw for v, m in medians.items() if raw}
    import confluent_kafka

    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "messages": args.messages,
        "value_bytes": VALUE_SIZE,
        "partitions": PARTITIONS,
        "rounds": args.rounds,
        "address_extra": args.address_extra,
        "python": platform.python_version(),
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "machine": f"{platform.machine()}, {_cpus()} CPUs",
        "medians": medians,
        "ratios_vs_raw": ratios,
        "targets": {
            **{f"{v}_ratio": t for v, t in TARGETS.items()},
            "peak_rss_mb": RSS_TARGET_MB,
        },
        "met": {
            **{f"{v}_ratio": ratios.get(v, 0) >= t for v, t in TARGETS.items() if v in ratios},
            "peak_rss_mb": all(m["peak_rss_mb"] <= RSS_TARGET_MB for m in medians.values()),
        },
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("\nvariant    median msg/s   x raw   peak RSS")
    for v, m in medians.items():
        ratio = f"{ratios[v]:.2f}" if v in ratios else "-"
        print(f"{v:9s} {m['rate']:>13,.0f} {ratio:>7s} {m['peak_rss_mb']:>7.0f} MB")
    print(f"written to {args.out}")
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", help="HOST:PORT of a running broker (default: start one)")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--address-extra", default="", help="appended to the address, '&k=v'")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child-timeout", type=float, default=600.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args)
    return run_parent(args)


if __name__ == "__main__":
    raise SystemExit(main())
